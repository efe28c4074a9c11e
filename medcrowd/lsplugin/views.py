"""The plugin's pages and staff API.

* ``GET /medcrowd/me`` — the signed-in person's page: their task and skip counts, their gold
  feedback (Dice against the expert mask per submitted gold task, with an overlay), their
  agreement with the crowd and reliability (:mod:`.feedback`), the shortcuts, and a "label"
  link per project of their organisation (the labelling stream).
* ``GET /medcrowd/me/overlay/<annotation id>.png`` — the overlay of one of their own
  submitted gold annotations (404 for anything else).
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

from medcrowd.lsplugin import access, feedback, invites
from medcrowd.lsplugin.roles import is_staff, role_of, set_role

__all__ = ["SHORTCUTS", "invite_api", "me", "overlay", "roles_api"]

#: The labelling page's keyboard shortcuts a volunteer needs (Label Studio's defaults).
SHORTCUTS = [
    ("1, 2, 3, …", "pick a label: the number is shown on each label under the image"),
    ("B", "brush: paint to add to the mask (pick its label in the brush's row first)"),
    ("E", "eraser: remove wrong pixels"),
    ("[ / ]", "smaller / bigger brush"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+Enter", "submit"),
    ("Ctrl+Space", "skip the image"),
]


def me(request: Any) -> HttpResponse:
    """The signed-in person's own page."""
    from projects.models import Project

    people = access.identities(request)
    if not people:
        return HttpResponseRedirect(f"{reverse('user-login')}?next=/medcrowd/me")
    user = people[-1]
    projects = Project.objects.filter(organization_id=user.active_organization_id).order_by("id")
    work = feedback.summary(user)
    context = {
        "email": user.email,
        "role": role_of(user),
        "annotations": work.tasks,
        "skipped": work.skipped,
        "work": work,
        "gold": [
            {
                "task": g.task_id,
                "dice": f"{g.dice:.3f}",
                "overlay": f"/medcrowd/me/overlay/{g.annotation_id}.png",
            }
            for g in work.gold
        ],
        "mean_gold_dice": _fmt(work.mean_gold_dice),
        "sensitivity": _fmt(work.sensitivity),
        "specificity": _fmt(work.specificity),
        "crowd_agreement": _fmt(work.crowd_agreement),
        "shortcuts": SHORTCUTS,
        "projects": [
            {"id": p.id, "title": p.title, "url": f"/projects/{p.id}/data/?labeling=1"}
            for p in projects
        ],
    }
    return render(request, "medcrowd_lsplugin/me.html", context)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def overlay(request: Any, annotation_id: int) -> HttpResponse:
    """The overlay PNG of the signed-in person's own submitted gold annotation."""
    people = access.identities(request)
    if not people:
        return JsonResponse({"detail": "authentication required"}, status=401)
    png = feedback.overlay_png(people[-1], int(annotation_id))
    if png is None:
        return JsonResponse({"detail": "no feedback for this annotation"}, status=404)
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response


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
