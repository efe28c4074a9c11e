"""The volunteer allow-list: which Label Studio routes a volunteer may call, and how.

Pure data and one function, no Django import: the middleware consults it on every request,
and the permission test classifies every route of the live URL configuration with it.

A route is the string :attr:`django.urls.ResolverMatch.route` gives for a request (the joined
patterns, e.g. ``"^api/tasks/<int:pk>/"``). For a volunteer each (route, method) is exactly one
of:

* **allowed** — listed in :data:`ALLOWED`, with the object check the middleware runs before
  the view (``check``) and the response filter it runs after (``filter``);
* **redirect** — a page a volunteer lands on by habit (``/``, the project list), sent to
  ``/medcrowd/me`` instead;
* **refused** — everything else: a 403 ``{"detail": ...}``. Routes not allowed are covered by
  :data:`REFUSED_PREFIXES` / :data:`REFUSED_EXACT`, each family with its reason;
* **unclassified** — a route neither list knows (a route a Label Studio upgrade added). The
  middleware refuses it like any other; the permission test fails on it, so that somebody
  decides.

Staff (admin and experts) are not filtered at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALLOWED",
    "METHODS",
    "ME_URL",
    "NOT_YOURS_DETAIL",
    "REDIRECTS",
    "REFUSED_DETAIL",
    "REFUSED_EXACT",
    "REFUSED_PREFIXES",
    "Answer",
    "Decision",
    "Rule",
    "decide",
    "refusal_reason",
]

ME_URL = "/medcrowd/me"

#: The ``detail`` of the 403 a volunteer gets on a route the allow-list does not give them.
REFUSED_DETAIL = "volunteers cannot use this part of Label Studio"
#: The ``detail`` when the route is theirs but the object (task, annotation, ...) is not.
NOT_YOURS_DETAIL = "this is not one of your tasks, annotations or projects"

#: The methods the permission matrix exercises for every route (HEAD is treated as GET).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

Check = Literal[
    "none",
    "project",  # the project (kwarg pk) belongs to the volunteer's organisation
    "task",  # the task (kwarg pk) was served to the volunteer (or holds their work)
    "own_annotation",  # annotation (kwarg pk) completed by the volunteer, not gold
    "own_draft",  # draft (kwarg pk) of the volunteer
    "task_and_own_annotation",  # task pk served, annotation_id theirs
    "ml_backend",  # ML backend pk of an organisation project; body "task" served
    "upload",  # /data/upload/<filename> referenced by a served task
    "local_file",  # /data/local-files/?d=<path> referenced by a served task
    "project_query",  # the ?project= query parameter names an organisation project
]
Filter = Literal[
    "none", "task", "project", "own_annotations", "own_drafts", "whoami", "ml_backends"
]
#: Answers the middleware gives itself, without calling Label Studio's view (the Data
#: Manager's labelling stream asks for lists a volunteer must not read; it gets a stand-in).
Answer = Literal[
    "none", "one_view", "only_me", "no_tasks", "no_label_links", "next_task", "no_version"
]


@dataclass(frozen=True)
class Rule:
    """What a volunteer may do on one route.

    Attributes:
        methods: the HTTP methods allowed (HEAD counts as GET).
        check: the object check run before the view (see ``Check``).
        filter: the JSON response filter run after it (see ``Filter``).
        body: ``"annotation"`` when a write's JSON body is vetted (no gold, no other author,
            no moving to another task).
        served: record the task in the response as served to the volunteer (``/next``).
        rate_limited: POSTs count against the per-IP login/signup limit.
        invite: the signup link's ``token`` must be a live (unexpired) invitation.
        answer: a stand-in answer given instead of Label Studio's view (see ``Answer``).
        page_defaults: an HTML page that gets the labelling defaults script (the smart box
            and auto-accepted suggestions on, before the first task).
        onboarding: the queue; a new volunteer's first tasks may be gold (onboarding).
        frozen_gold: writes are refused on an annotation of a gold task (its author has seen
            the gold feedback).
    """

    methods: frozenset[str]
    check: Check = "none"
    filter: Filter = "none"
    body: Literal["none", "annotation"] = "none"
    served: bool = False
    rate_limited: bool = False
    invite: bool = False
    answer: Answer = "none"
    page_defaults: bool = False
    onboarding: bool = False
    frozen_gold: bool = False


def _rule(methods: str, **kwargs: object) -> Rule:
    return Rule(frozenset(methods.split()), **kwargs)  # type: ignore[arg-type]


_STATIC = _rule("GET")

#: route → rule, for every route a volunteer may use.
ALLOWED: dict[str, Rule] = {
    # -- account ---------------------------------------------------------------------------
    "^user/login/": _rule("GET POST", rate_limited=True),
    "^user/signup/": _rule("GET POST", rate_limited=True, invite=True),
    "^logout/?$": _rule("GET POST"),
    "^api/current-user/whoami": _rule("GET", filter="whoami"),
    "^api/current-user/token": _rule("GET"),
    # their own API tokens (legacy token reset, personal access tokens): self-only views
    "^api/current-user/reset-token/": _rule("POST"),
    "^api/token/": _rule("GET POST"),
    "^api/token/refresh/": _rule("POST"),
    "^api/token/blacklist/": _rule("POST"),
    "medcrowd/me": _rule("GET"),
    # the overlay of one of their submitted gold annotations (the view checks whose it is)
    "medcrowd/me/overlay/<int:annotation_id>.png": _rule("GET"),
    # -- the labelling page and what it reads ------------------------------------------------
    "^projects/<int:pk>/": _rule("GET", check="project"),
    "^projects/<int:pk>/data/": _rule("GET", check="project", page_defaults=True),
    "^api/projects/<int:pk>/": _rule("GET", check="project", filter="project"),
    "^api/projects/<int:pk>/next/": _rule(
        "GET", check="project", filter="task", served=True, onboarding=True
    ),
    "^api/tasks/<int:pk>/": _rule("GET", check="task", filter="task"),
    # -- the stock labelling stream (/projects/{id}/data/?labeling=1) -----------------------
    # What the Data Manager's "Label All Tasks" stream calls before it shows a task. Lists of
    # other people's things are answered by stand-ins; the next task comes from the queue.
    "^api/ml/": _rule("GET", check="project_query", filter="ml_backends"),
    "^api/dm/columns/": _rule("GET", check="project_query"),
    "^api/dm/project/": _rule("GET", check="project_query", filter="project"),
    "^api/dm/views/$": _rule("GET POST", check="project_query", answer="one_view"),
    "^api/users/$": _rule("GET", check="project_query", answer="only_me"),
    "^api/tasks/": _rule("GET", check="project_query", answer="no_tasks"),
    "^api/label_links/$": _rule("GET", check="project_query", answer="no_label_links"),
    "^api/projects/<int:pk>/label-stream-history/": _rule("GET", check="project"),
    "^api/dm/actions/": _rule("POST", check="project_query", answer="next_task"),
    # every page asks for /api/version (an error toast if refused): no version is given
    # away. Label Studio's ``re_path(r"version/")`` is unanchored, so it is the route of both
    # /version/ and /api/version/.
    "version/": _rule("GET", answer="no_version"),
    # -- own annotations, skips (cancelled annotations) and drafts ---------------------------
    "^api/tasks/<int:pk>/annotations/": _rule(
        "GET POST", check="task", filter="own_annotations", body="annotation"
    ),
    "^api/annotations/<int:pk>/": _rule(
        "GET PATCH PUT", check="own_annotation", body="annotation", frozen_gold=True
    ),
    "^api/tasks/<int:pk>/drafts": _rule("GET POST", check="task", filter="own_drafts"),
    "^api/tasks/<int:pk>/annotations/<int:annotation_id>/drafts": _rule(
        "GET POST", check="task_and_own_annotation", filter="own_drafts"
    ),
    "^api/drafts/<int:pk>/": _rule("GET PATCH PUT DELETE", check="own_draft"),
    # -- interactive segmentation and the image ----------------------------------------------
    "^api/ml/<int:pk>/interactive-annotating": _rule("POST", check="ml_backend"),
    "^data/upload/<path:filename>": _rule("GET", check="upload"),
    "^data/local-files/": _rule("GET", check="local_file"),
    # -- static files the pages load ---------------------------------------------------------
    "^static/(?P<path>.*)$": _STATIC,
    "^static/fonts/roboto/roboto.css$": _STATIC,
    "^react-app/(?P<path>.*)$": _STATIC,
    "^label-studio-frontend/(?P<path>.*)$": _STATIC,
    "^dm/(?P<path>.*)$": _STATIC,
    "^sw\\.js$": _STATIC,
    "^sw-fallback\\.js$": _STATIC,
    "^favicon\\.ico$": _STATIC,
    "health/": _STATIC,
}

#: route → where a volunteer's GET is redirected.
REDIRECTS: dict[str, str] = {"^$": ME_URL, "^projects/": ME_URL}

#: Families of routes refused to volunteers (route prefix → reason), checked after ALLOWED.
REFUSED_PREFIXES: dict[str, str] = {
    "admin/": "Django admin",
    "django-rq/": "background job dashboard",
    "medcrowd/api/": "medcrowd staff API (roles, invitations)",
    "^api/organizations/": "organisation settings and members",
    "^api/invite": "invitation links",
    "^api/projects/": "project settings, imports, exports, statistics, task lists",
    "^api/templates/": "project templates",
    "^api/import/": "imports",
    "^api/dm/": "Data Manager (task lists, filters, actions)",
    "^api/auth/export/": "exports",
    "^api/users": "user accounts (e-mails)",
    "^api/tasks/": "task lists and task edits",
    "^api/annotations/": "annotation conversion, deletion",
    "^api/drafts/": "draft creation outside a task",
    "^api/predictions": "stored predictions",
    "^api/labels": "labels manager",
    "^api/label_links": "labels manager",
    "^api/storages/": "cloud and local storages",
    "^api/webhooks/": "webhooks",
    "^api/ml/": "ML backend settings, training, versions",
    "^api/fsm/": "state-machine history",
    "^api/current-user/": "token reset, hotkeys, product tour",
    "^api/jwt/": "API token settings",
    "^api/token/": "personal access tokens",
    "^api/session-policy/": "session policy",
    "^api-auth/": "browsable API login (use /user/login/)",
    "^organization/": "organisation pages",
    "^people/": "the members page (e-mails)",
    "^models/": "model pages",
    "^projects/": "project settings and Data Manager pages",
    "^tasks/<int:task_id>/": "storage proxy (cloud URIs)",
    "^storage-data/": "storage data download",
    "^data/avatars/": "other people's avatars",
    "^user/account/": "account settings",
    "docs/": "API documentation",
    "^swagger": "API documentation",
    "samples/": "sample data",
    "feature-flags/": "feature flags",
    "heidi-tips/": "tips",
    "__lsa/": "analytics",
    "version/": "version page",
    "api/version/": "version page",
    "metrics/": "metrics",
    "trigger500/": "error trigger",
}

#: Single routes refused to volunteers (route → reason).
REFUSED_EXACT: dict[str, str] = {
    "^api/": "API root",
    "^api/<drf_format_suffix:format>": "API root",
}

Decision = Literal["allowed", "redirect", "refused", "unclassified"]


def refusal_reason(route: str) -> str | None:
    """Why ``route`` is refused to volunteers, or None when no refused family covers it."""
    if route in REFUSED_EXACT:
        return REFUSED_EXACT[route]
    for prefix, reason in REFUSED_PREFIXES.items():
        if route.startswith(prefix):
            return reason
    return None


def decide(route: str, method: str) -> Decision:
    """The volunteer's fate for ``method`` on ``route`` (see the module docstring)."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    rule = ALLOWED.get(route)
    if rule is not None and method in rule.methods:
        return "allowed"
    if route in REDIRECTS and method == "GET":
        return "redirect"
    if rule is not None or route in REDIRECTS or refusal_reason(route) is not None:
        return "refused"
    return "unclassified"
