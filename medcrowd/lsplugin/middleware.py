"""The middleware that enforces the volunteer allow-list on every request.

It sits just before Django's CSRF check in Label Studio's middleware chain (so a refused request
is answered by the policy, not by whatever else is wrong with it) and works in ``process_view``,
which Django calls after every middleware's request phase: Django has resolved the URL
(``request.resolver_match.route`` is the key of :mod:`medcrowd.lsplugin.policy`), the
session's user is known and the token is resolved here (:func:`.access.identities`). For a
request made as a volunteer (by session or by token; if either identity is a volunteer, the
request is treated as the volunteer's):

1. the (route, method) must be allowed by the policy — otherwise 403 ``{"detail": …}``,
   logged on ``medcrowd.lsplugin``; the two landing pages redirect to ``/medcrowd/me``;
2. the route's object check must pass (their project, a task the queue served them, their own
   annotation or draft, that task's image) — otherwise 403;
3. annotation writes may not make gold, name another author, or move to another task;
4. the Data Manager's lists (views, users, tasks, label links) are answered with stand-ins
   that hold nothing of anybody else's, and its "next task" action is sent (303) to the
   Community queue ``/api/projects/{id}/next/``, so the stock labelling stream works;
5. the labelling page gets a small script that turns on the smart box (Auto-Annotation, the
   smart rectangle tool, auto-accepted suggestions) for a browser that has never chosen
   otherwise, so the box asks the backend the first time; a new volunteer's first tasks may
   be gold (``MEDCROWD_ONBOARDING_GOLD``), and an annotation on a gold task is frozen once
   submitted (its author has seen the expert's mask on their page);
6. after the view, the JSON answer is filtered (no other people's annotations, drafts or the
   stored predictions; no e-mails) and a task handed out by ``/next`` is recorded as served.

For everybody (volunteer, staff or not logged in): login and signup POSTs are rate-limited
per client IP, and a signup link must carry a live invitation token. Staff are otherwise not
touched; their reading of the invite link renews an expired one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse

from medcrowd.lsplugin import access, feedback, invites, policy
from medcrowd.lsplugin.roles import is_staff

__all__ = ["RoleMiddleware", "refuse"]

logger = logging.getLogger("medcrowd.lsplugin")

_INVITE_ROUTE = "^api/invite"
_INVITE_RESET_ROUTE = "^api/invite/reset-token"
_RATE_WINDOW_S = 60.0
_rate_lock = threading.Lock()


def refuse(request: Any, detail: str, user: Any = None, status: int = 403) -> JsonResponse:
    """A JSON refusal, logged with who asked for what."""
    match = getattr(request, "resolver_match", None)
    logger.warning(
        "medcrowd refused %s %s (route %r, user %s): %s",
        request.method,
        request.path,
        getattr(match, "route", None),
        getattr(user, "pk", None),
        detail,
    )
    return JsonResponse({"detail": detail}, status=status)


def _client_ip(request: Any) -> str:
    # Only the socket's address: X-Forwarded-For is the client's to forge. Behind a reverse
    # proxy, that proxy must do the per-client limiting.
    return str(request.META.get("REMOTE_ADDR", "unknown"))


def _rate_limited(scope: str, request: Any) -> bool:
    """Count one attempt; True when the client already made the limit within the window."""
    limit = int(settings.MEDCROWD_AUTH_RATE_PER_MINUTE)
    key = f"medcrowd-rate:{scope}:{_client_ip(request)}"
    now = time.time()
    with _rate_lock:
        hits = [t for t in cache.get(key, []) if now - t < _RATE_WINDOW_S]
        if len(hits) >= limit:
            cache.set(key, hits, _RATE_WINDOW_S)
            return True
        hits.append(now)
        cache.set(key, hits, _RATE_WINDOW_S)
    return False


FROZEN_DETAIL = "this is a gold task you have had feedback on; your annotation cannot change"

_IMAGE_NAME = re.compile(r"<Image\b[^>]*?\bname=[\"']([^\"']+)[\"']", re.IGNORECASE)

#: Set once per browser (``medcrowd:defaults``), so a volunteer who turns something off later
#: keeps their choice; the smart rectangle is the selected tool on every page load.
_DEFAULTS_JS = (
    "(function(){{try{{var s=window.localStorage;"
    "if(s.getItem('medcrowd:defaults')===null){{s.setItem('autoAnnotation','true');"
    "s.setItem('autoAcceptSuggestions','true');s.setItem('medcrowd:defaults','1');}}"
    "{names}.forEach(function(n){{s.setItem('selected-tool:'+n,'RectangleTool-dynamic');}});"
    "}}catch(e){{}}}})();"
)


def _with_labelling_defaults(request: Any, response: HttpResponse) -> HttpResponse:
    """The labelling page with the defaults script at the top of its ``<head>``."""
    from projects.models import Project

    if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
        return response
    pk = int(request.resolver_match.kwargs["pk"])
    config = Project.objects.filter(pk=pk).values_list("label_config", flat=True).first() or ""
    names = json.dumps(sorted(set(_IMAGE_NAME.findall(config)))).replace("<", "\\u003c")
    nonce = getattr(request, "csp_nonce", "")
    script = f'<script nonce="{nonce}">{_DEFAULTS_JS.format(names=names)}</script>'
    html = response.content.decode(response.charset or "utf-8")
    html = html.replace("<head>", "<head>" + script, 1)
    response.content = html.encode(response.charset or "utf-8")
    if response.has_header("Content-Length"):  # set before us: it must grow with the page
        response["Content-Length"] = str(len(response.content))
    return response


class RoleMiddleware:
    """Volunteers reach only what :mod:`medcrowd.lsplugin.policy` allows (see module doc)."""

    def __init__(self, get_response: Callable[[Any], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> HttpResponse:
        response = self.get_response(request)
        state = getattr(request, "_medcrowd_volunteer", None)
        if state is not None:
            user, rule = state
            response = self._after_volunteer(request, response, user, rule)
        elif getattr(request, "_medcrowd_staff_reset", None) is not None:
            if response.status_code == 200:
                org = request._medcrowd_staff_reset.active_organization
                org.refresh_from_db()
                invites.current_invite(org)
        return response

    # -- before the view -------------------------------------------------------------------
    def process_view(
        self, request: Any, view_func: Any, view_args: Any, view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        match = request.resolver_match
        route = str(match.route)
        rule = policy.ALLOWED.get(route)
        if rule is not None and rule.rate_limited and request.method == "POST":
            if _rate_limited(route, request):
                return refuse(request, "too many attempts; wait a minute and try again", None, 429)
        if rule is not None and rule.invite and "token" in request.GET:
            if not invites.token_is_live(request.GET["token"]):
                return refuse(request, "this signup link has expired; ask for a new one")

        people = access.identities(request)
        volunteers = [u for u in people if not is_staff(u)]
        if not volunteers:
            if people:
                self._staff_hooks(request, route, people[0])
            return None
        user = volunteers[0]
        decision = policy.decide(route, request.method)
        if decision == "redirect":
            return HttpResponseRedirect(policy.REDIRECTS[route])
        if decision != "allowed" or rule is None:
            return refuse(request, policy.REFUSED_DETAIL, user)
        if not access.object_allowed(rule.check, user, request, view_kwargs):
            return refuse(request, policy.NOT_YOURS_DETAIL, user)
        if rule.body == "annotation":
            problem = access.annotation_body_problem(request, user, view_kwargs)
            if problem is not None:
                return refuse(request, problem, user)
        if rule.frozen_gold and request.method in ("PATCH", "PUT"):
            if feedback.is_frozen(int(view_kwargs["pk"])):
                return refuse(request, FROZEN_DETAIL, user)
        if rule.onboarding and int(settings.MEDCROWD_ONBOARDING_GOLD) > 0:
            task = feedback.onboarding_task(
                user, int(view_kwargs["pk"]), int(settings.MEDCROWD_ONBOARDING_GOLD)
            )
            if task is not None:
                payload = {"id": task.id, "data": task.data, "project": task.project_id,
                           "annotations": [], "drafts": [], "predictions": [],
                           "inner_id": task.inner_id}  # fmt: skip
                access.record_served(user, payload)
                return JsonResponse(access.filter_json("task", payload, user))
        if rule.answer == "next_task":
            if request.GET.get("id") != "next_task":
                return refuse(request, policy.REFUSED_DETAIL, user)
            project = access.project_from_query(request)
            see_other = HttpResponse(status=303)  # fetch follows a 303 with a GET
            see_other["Location"] = f"/api/projects/{project}/next/"
            return see_other
        if rule.answer != "none":
            payload, status = access.stand_in(rule.answer, request, user)
            return JsonResponse(payload, status=status, safe=False)
        request._medcrowd_volunteer = (user, rule)
        return None

    @staticmethod
    def _staff_hooks(request: Any, route: str, user: Any) -> None:
        org = getattr(user, "active_organization", None)
        if org is None:
            return
        if route == _INVITE_ROUTE and request.method == "GET":
            invites.current_invite(org)  # starts the clock, or renews an expired link
        elif route == _INVITE_RESET_ROUTE and request.method == "POST":
            request._medcrowd_staff_reset = user

    # -- after the view --------------------------------------------------------------------
    @staticmethod
    def _after_volunteer(
        request: Any, response: HttpResponse, user: Any, rule: policy.Rule
    ) -> HttpResponse:
        if rule.page_defaults:
            return _with_labelling_defaults(request, response)
        if rule.filter == "none" and not rule.served:
            return response
        if response.status_code != 200 or getattr(response, "streaming", False):
            return response
        if "json" not in response.get("Content-Type", ""):
            return response
        try:
            payload = json.loads(response.content)
        except ValueError:
            return response
        if rule.served:
            access.record_served(user, payload)
        filtered = access.filter_json(rule.filter, payload, user)
        out = JsonResponse(filtered, status=response.status_code, safe=False)
        out.cookies = response.cookies
        for header in ("Cache-Control", "Vary"):
            if header in response:
                out[header] = response[header]
        return out
