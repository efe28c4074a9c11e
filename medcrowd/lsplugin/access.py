"""Who is asking, whether the objects a volunteer names are theirs, and what they may read.

Everything here runs inside Label Studio's Django process; Label Studio's models are imported
lazily (its apps are top-level packages: ``tasks``, ``projects``, ``ml``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from medcrowd.lsplugin.models import ServedTask

__all__ = [
    "ML_BACKEND_KEYS",
    "PROJECT_KEYS",
    "TASK_KEYS",
    "annotation_body_problem",
    "filter_json",
    "identities",
    "object_allowed",
    "project_from_query",
    "record_served",
    "stand_in",
]

#: The keys of a task a volunteer reads; the rest (annotators, counts, who updated it, meta,
#: storage file names, ...) is dropped.
TASK_KEYS = frozenset(
    {"id", "data", "project", "annotations", "drafts", "predictions", "created_at", "inner_id"}
)
#: The keys of a project a volunteer reads: what the labelling page needs, nothing about
#: other people (``created_by`` holds an e-mail), counts, storages or the ML backend.
PROJECT_KEYS = frozenset(
    {
        "id",
        "title",
        "description",
        "label_config",
        "parsed_label_config",
        "expert_instruction",
        "show_instruction",
        "show_skip_button",
        "enable_empty_annotation",
        "show_annotation_history",
        "show_collab_predictions",
        "maximum_annotations",
        "reveal_preannotations_interactively",
        "config_has_control_tags",
        "skip_queue",
        # the labelling stream's position display (the volunteer's own queue)
        "queue_total",
        "queue_done",
        "queue_left",
    }
)
#: The keys of an ML backend a volunteer reads: enough for the labelling page to ask it for
#: an interactive prediction (no URL, no credentials, no state).
ML_BACKEND_KEYS = frozenset({"id", "is_interactive", "title"})

#: The keys of ``whoami`` a volunteer reads (their own account; not the permission list).
_WHOAMI_KEYS = frozenset(
    {"id", "first_name", "last_name", "username", "email", "avatar", "initials",
     "active_organization", "custom_hotkeys", "date_joined", "last_activity"}
)  # fmt: skip


# -- identity ------------------------------------------------------------------------------
def identities(request: Any) -> list[Any]:
    """Every user the request authenticates as: its session's and its token's (DRF order).

    Label Studio's API accepts ``Authorization: Token …`` (legacy), ``Bearer …`` (JWT, also
    set by ``X-Api-Key``) and the session; a Django middleware only sees the session's user,
    so the token is resolved here with the same DRF authenticators. An invalid token adds
    nobody (Label Studio answers 401 itself).
    """
    found: list[Any] = []
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        found.append(user)
    if request.META.get("HTTP_AUTHORIZATION"):
        from rest_framework.authentication import TokenAuthentication
        from rest_framework.exceptions import APIException
        from rest_framework_simplejwt.authentication import JWTAuthentication
        from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

        for auth in (TokenAuthentication(), JWTAuthentication()):
            try:
                result = auth.authenticate(request)
            except (APIException, InvalidToken, TokenError):
                continue
            if result is not None and all(result[0].pk != u.pk for u in found):
                found.append(result[0])
    return found


# -- object checks -------------------------------------------------------------------------
def _org(user: Any) -> int | None:
    org = getattr(user, "active_organization_id", None)
    return int(org) if org is not None else None


def _project_ok(user: Any, pk: int) -> bool:
    from projects.models import Project

    return bool(Project.objects.filter(pk=pk, organization_id=_org(user)).exists())


def _task_ids_of(user: Any) -> set[int]:
    """Tasks served to ``user`` by the queue, or holding their annotations or drafts."""
    from tasks.models import Annotation, AnnotationDraft

    ids = set(ServedTask.objects.filter(user_id=user.pk).values_list("task_id", flat=True))
    ids |= set(Annotation.objects.filter(completed_by_id=user.pk).values_list("task_id", flat=True))
    ids |= set(AnnotationDraft.objects.filter(user_id=user.pk).values_list("task_id", flat=True))
    return {int(i) for i in ids}


def _task_ok(user: Any, pk: int) -> bool:
    from tasks.models import Annotation, AnnotationDraft, Task

    if not Task.objects.filter(pk=pk, project__organization_id=_org(user)).exists():
        return False
    return bool(
        ServedTask.objects.filter(user_id=user.pk, task_id=pk).exists()
        or Annotation.objects.filter(task_id=pk, completed_by_id=user.pk).exists()
        or AnnotationDraft.objects.filter(task_id=pk, user_id=user.pk).exists()
    )


def _own_annotation(user: Any, pk: int) -> bool:
    from tasks.models import Annotation

    mine = Annotation.objects.filter(pk=pk, completed_by_id=user.pk, ground_truth=False)
    return bool(mine.exists())


def _own_draft(user: Any, pk: int) -> bool:
    from tasks.models import AnnotationDraft

    return bool(AnnotationDraft.objects.filter(pk=pk, user_id=user.pk).exists())


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _referenced_by_own_task(user: Any, needle: str) -> bool:
    """True when one of the user's tasks has a data value containing ``needle``."""
    from tasks.models import Task

    needles = {needle, unquote(needle)}
    ids = _task_ids_of(user)
    for data in Task.objects.filter(pk__in=ids).values_list("data", flat=True).iterator():
        for text in _strings(data):
            if any(n in text or n in unquote(text) for n in needles):
                return True
    return False


def _json_body(request: Any) -> Any:
    if not request.body:
        return {}
    return json.loads(request.body)


def object_allowed(check: str, user: Any, request: Any, kwargs: dict[str, Any]) -> bool:
    """Run the policy's object ``check`` for ``user`` on the view's URL ``kwargs``."""
    pk = int(kwargs["pk"]) if "pk" in kwargs else 0
    if check == "none":
        return True
    if check == "project":
        return _project_ok(user, pk)
    if check == "task":
        return _task_ok(user, pk)
    if check == "own_annotation":
        return _own_annotation(user, pk)
    if check == "own_draft":
        return _own_draft(user, pk)
    if check == "task_and_own_annotation":
        return _task_ok(user, pk) and _own_annotation(user, int(kwargs["annotation_id"]))
    if check == "ml_backend":
        from ml.models import MLBackend

        ml = MLBackend.objects.filter(pk=pk, project__organization_id=_org(user)).first()
        if ml is None:
            return False
        try:
            body = _json_body(request)
            task = int(body.get("task"))
        except (ValueError, TypeError, AttributeError):
            return False
        from tasks.models import Task

        same_project = Task.objects.filter(pk=task, project_id=ml.project_id).exists()
        return bool(same_project and _task_ok(user, task))
    if check == "project_query":
        project = project_from_query(request)
        return project is not None and _project_ok(user, project)
    if check == "upload":
        return _referenced_by_own_task(user, "/data/upload/" + str(kwargs["filename"]))
    if check == "local_file":
        path = request.GET.get("d", "")
        return bool(path) and _referenced_by_own_task(user, "?d=" + path)
    raise ValueError(f"unknown object check {check!r}")


def project_from_query(request: Any) -> int | None:
    """The ``?project=`` of a Data Manager call, or None when absent or not a number."""
    try:
        return int(request.GET.get("project", ""))
    except ValueError:
        return None


def _user_id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


def annotation_body_problem(request: Any, user: Any, kwargs: dict[str, Any]) -> str | None:
    """Why a volunteer's annotation write is refused, or None when it may go through.

    Volunteers write their own, non-gold annotations on the task in the URL: the body may not
    set ``ground_truth``, name another author, or move the annotation to another task.
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    try:
        body = _json_body(request)
    except (ValueError, UnicodeDecodeError):
        return "annotation writes must be a JSON object"
    if not isinstance(body, dict):
        return "annotation writes must be a JSON object"
    if body.get("ground_truth"):
        return "volunteers cannot make gold (ground-truth) annotations"
    for key in ("completed_by", "updated_by"):
        if key in body and body[key] is not None and _user_id(body[key]) != user.pk:
            return f"{key} must be yourself"
    if "task" in body and body["task"] is not None:
        if request.resolver_match.route.startswith("^api/tasks/"):
            expected = int(kwargs["pk"])
        else:
            from tasks.models import Annotation

            expected = int(Annotation.objects.get(pk=int(kwargs["pk"])).task_id)
        if _user_id(body["task"]) != expected:
            return "an annotation cannot be moved to another task"
    return None


def record_served(user: Any, task: Any) -> None:
    """Remember that the queue served ``task`` (a task JSON dict) to ``user``."""
    if isinstance(task, dict) and isinstance(task.get("id"), int):
        ServedTask.objects.get_or_create(
            user_id=user.pk,
            task_id=int(task["id"]),
            defaults={"project_id": int(_user_id(task.get("project")) or 0)},
        )


# -- response filters ----------------------------------------------------------------------
def _is_me(value: Any, user: Any) -> bool:
    """Whether an author field (an id, ``{"id": …}``, or a draft's ``str(user)``) is ``user``."""
    if isinstance(value, str):
        return value in {str(user), user.email}
    return bool(_user_id(value) == user.pk)


def _own(items: Any, user: Any, key: str) -> list[Any]:
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict) and _is_me(i.get(key), user)]


def _task(task: Any, user: Any) -> Any:
    if not isinstance(task, dict):
        return task
    out = {k: v for k, v in task.items() if k in TASK_KEYS}
    if "annotations" in out:
        out["annotations"] = [
            a for a in _own(out["annotations"], user, "completed_by") if not a.get("ground_truth")
        ]
    if "drafts" in out:
        out["drafts"] = _own(out["drafts"], user, "user")
    if "predictions" in out:
        # Stored predictions are fused consensus (medcrowd push) or imported pre-annotations:
        # other people's work. Interactive predictions come from interactive-annotating.
        out["predictions"] = []
    return out


def _listing(payload: Any, user: Any, key: str) -> Any:
    if isinstance(payload, dict) and isinstance(payload.get("results"), list):
        return {**payload, "results": _own(payload["results"], user, key)}
    return _own(payload, user, key)


def filter_json(kind: str, payload: Any, user: Any) -> Any:
    """Apply the policy's response filter ``kind`` to a decoded JSON body."""
    if kind == "task":
        return _task(payload, user)
    if kind == "project":
        if isinstance(payload, dict):
            return {k: v for k, v in payload.items() if k in PROJECT_KEYS}
        return payload
    if kind == "own_annotations":
        own = _listing(payload, user, "completed_by")
        return [a for a in own if not a.get("ground_truth")] if isinstance(own, list) else own
    if kind == "own_drafts":
        return _listing(payload, user, "user")
    if kind == "ml_backends":
        items = payload.get("results") if isinstance(payload, dict) else payload
        if not isinstance(items, list):
            return []
        return [
            {k: v for k, v in m.items() if k in ML_BACKEND_KEYS}
            for m in items
            if isinstance(m, dict)
        ]
    if kind == "whoami":
        if isinstance(payload, dict):
            out = {k: v for k, v in payload.items() if k in _WHOAMI_KEYS}
            meta = payload.get("active_organization_meta")
            if isinstance(meta, dict):  # its "email" is the organisation owner's
                out["active_organization_meta"] = {"title": meta.get("title", "")}
            return out
        return payload
    return payload


# -- stand-in answers ----------------------------------------------------------------------
#: The one Data Manager view (tab) a volunteer's labelling stream gets: no filters, no
#: ordering, nothing saved. Its id is the project's id (the stand-in never reaches the views
#: table; the stream only echoes the id back in later calls, which get stand-ins too).
_VIEW_DATA = {
    "title": "Labelling",
    "type": "list",
    "target": "tasks",
    "hiddenColumns": {"explore": [], "labeling": []},
    "columnsWidth": {},
    "columnsDisplayType": {},
    "gridWidth": 4,
    "filters": {"conjunction": "and", "items": []},
}


def _me(user: Any) -> dict[str, Any]:
    return {
        "id": user.pk,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "username": user.username,
        "email": user.email,
        "avatar": None,
        "initials": (user.email or "?")[:2],
    }


def stand_in(kind: str, request: Any, user: Any) -> tuple[Any, int]:
    """The (JSON payload, status) the middleware answers for a stand-in ``kind``."""
    project = project_from_query(request)
    if kind == "one_view":
        view = {"id": project, "data": _VIEW_DATA, "order": 0, "user": user.pk, "project": project}
        return ([view], 200) if request.method == "GET" else (view, 201)
    if kind == "only_me":
        return [_me(user)], 200
    if kind == "no_tasks":
        return {"total_annotations": 0, "total_predictions": 0, "total": 0, "tasks": []}, 200
    if kind == "no_version":
        package = {
            "version": "",
            "latest_version_from_pypi": "",
            "current_version_is_outdated": False,
            "latest_version_upload_time": None,
        }
        return {"label-studio-os-package": package}, 200
    if kind == "no_label_links":
        return {"count": 0, "next": None, "previous": None, "results": []}, 200
    raise ValueError(f"unknown stand-in {kind!r}")
