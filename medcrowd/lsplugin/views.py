"""The plugin's pages and staff API.

* ``GET /medcrowd/me`` — the signed-in person's page: their annotation and skip counts and a
  "label" link per project of their organisation (the labelling stream).
* ``GET /medcrowd/api/roles/`` — staff only: ``{"users": [{"id", "email", "role"}]}``.
* ``POST /medcrowd/api/roles/`` ``{"email": …, "role": "staff" | "volunteer"}`` — staff only,
  with an API token: set an account's role; answers the account as in the listing.
* ``GET /medcrowd/api/invite/`` — staff only: the live signup link (``{"url", "token",
  "expires_at", "ttl_s"}``), renewed first if it has expired; ``POST`` renews it now.

The staff API authenticates the same way as Label Studio's (session or token); writes need a
token (``Authorization: Token …``), so no CSRF token is involved.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from medcrowd.lsplugin import access, invites
from medcrowd.lsplugin.roles import is_staff, role_of, set_role

__all__ = ["invite_api", "me", "roles_api"]


def me(request: Any) -> HttpResponse:
    """The signed-in person's own page."""
    from projects.models import Project
    from tasks.models import Annotation

    people = access.identities(request)
    if not people:
        return HttpResponseRedirect(f"{reverse('user-login')}?next=/medcrowd/me")
    user = people[-1]
    mine = Annotation.objects.filter(completed_by_id=user.pk)
    projects = Project.objects.filter(organization_id=user.active_organization_id).order_by("id")
    context = {
        "email": user.email,
        "role": role_of(user),
        "annotations": mine.filter(was_cancelled=False, ground_truth=False).count(),
        "skipped": mine.filter(was_cancelled=True).count(),
        "projects": [
            {"id": p.id, "title": p.title, "url": f"/projects/{p.id}/data/?labeling=1"}
            for p in projects
        ],
    }
    return render(request, "medcrowd_lsplugin/me.html", context)


def _staff_or_refusal(request: Any, write: bool) -> tuple[Any, JsonResponse | None]:
    people = access.identities(request)
    if not people:
        return None, JsonResponse({"detail": "authentication required"}, status=401)
    if not all(is_staff(u) for u in people):
        return None, JsonResponse({"detail": "staff only"}, status=403)
    if write and not request.META.get("HTTP_AUTHORIZATION"):
        return None, JsonResponse({"detail": "writes need an API token"}, status=403)
    return people[-1], None


def _person(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "email": user.email, "role": role_of(user)}


@csrf_exempt
def roles_api(request: Any) -> JsonResponse:
    """List accounts with their roles, or set one account's role (staff only)."""
    from users.models import User

    staff, refusal = _staff_or_refusal(request, write=request.method != "GET")
    if refusal is not None:
        return refusal
    org = staff.active_organization_id
    members = User.objects.filter(om_through__organization_id=org).order_by("id")
    if request.method == "GET":
        return JsonResponse({"users": [_person(u) for u in members]})
    if request.method != "POST":
        return JsonResponse({"detail": "use GET or POST"}, status=405)
    try:
        body = json.loads(request.body or b"{}")
        email, role = str(body["email"]), str(body["role"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"detail": 'send {"email": ..., "role": ...}'}, status=400)
    user = members.filter(email__iexact=email).first()
    if user is None:
        return JsonResponse({"detail": f"no account {email} in this organisation"}, status=404)
    try:
        set_role(user, role)
    except ValueError as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    return JsonResponse(_person(user))


@csrf_exempt
def invite_api(request: Any) -> JsonResponse:
    """The live signup link (GET), or a new one (POST); staff only."""
    staff, refusal = _staff_or_refusal(request, write=request.method != "GET")
    if refusal is not None:
        return refusal
    org = staff.active_organization
    if request.method == "GET":
        invite = invites.current_invite(org)
    elif request.method == "POST":
        invite = invites.rotate(org)
    else:
        return JsonResponse({"detail": "use GET or POST"}, status=405)
    return JsonResponse(
        {
            "url": f"{reverse('user-signup')}?token={invite.token}",
            "token": invite.token,
            "expires_at": invites.expires_at(invite).isoformat(),
            "ttl_s": float(settings.MEDCROWD_INVITE_TTL_S),
        }
    )
