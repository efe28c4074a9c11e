"""Label Studio, through one class: every call medcrowd makes to it goes through :class:`Studio`.

:class:`Studio` wraps ``label_studio_sdk.LabelStudio`` and, where the SDK has no helper, the
same REST API with the same credentials: projects, tasks and their images, imports,
annotations, predictions, people, the labelling queue and the ML-backend connection. Nothing
else in medcrowd (CLI, sync, select, gold, import, status, the crowd simulator) talks to
Label Studio directly. Works the same against the embedded instance and a lab's hosted one.

Authentication: a legacy API token (40 hex) is sent as ``Token <t>``. A personal access
token is a JWT *refresh* token; it is exchanged at ``/api/token/refresh`` for a short-lived
access token sent as ``Bearer``, and that access token is cached until shortly before it
expires (read from its ``exp`` claim), for the SDK's requests and the raw ones alike. A
rejected token (401/403) is :class:`TokenRejected` ("token rejected by <url>").

Images are uploaded (``/api/projects/{id}/import``) under a name that starts with the first
16 hex digits of their SHA-256, so re-importing the same pixels is detected from the task
list alone and never creates a duplicate task. A task's image is found by one resolver
(:func:`task_image_url`, :meth:`Studio.image_path`): uploads (``/data/upload/…``), local
files (``/data/local-files/?d=…``) and absolute URLs on Label Studio's own host; images on
other hosts are never fetched.

Every request, the SDK's included, goes through one retrying transport (:class:`RetryPolicy`):
a Label Studio that is restarting (connection refused or reset, 502/503/504 from a proxy) is
waited for with exponential backoff instead of failing the command. Only what cannot create
anything twice is retried: any request that never reached the server (the connection was
refused), and idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) whose answer was lost or
cut off. A POST whose answer was lost is never resent: it may have been stored. When the
budget runs out the request fails with :class:`LabelStudioUnavailable`, which says so.

Errors are one line each: :class:`StudioError` (a ``RuntimeError``; Label Studio refused a
request, with its status and a shortened reason), :class:`TokenRejected` and
:class:`LabelStudioUnavailable`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

__all__ = [
    "ImportReport",
    "LabelStudioUnavailable",
    "Prediction",
    "PredictionUpdate",
    "Project",
    "RetryPolicy",
    "Studio",
    "StudioError",
    "Task",
    "TokenRejected",
    "content_hash",
    "task_image_url",
]

log = logging.getLogger("medcrowd.studio")

_HASH_RE = re.compile(r"(?:^|[/-])mc([0-9a-f]{16})_")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRY_STATUS = frozenset({502, 503, 504})
_NO_RETRY = "medcrowd_no_retry"
"""Request extension that turns retrying off for one request (health probes)."""
_SDK_PLACEHOLDER_KEY = "medcrowd-auth"
"""What the SDK is given as its API key: not a JWT, so the SDK never refreshes on its own;
the real Authorization header is set by :class:`_TokenAuth` on every request."""
_ACCESS_MARGIN_S = 30.0
"""An access token is refreshed this long before its ``exp`` (clock skew, slow requests)."""
_ACCESS_FALLBACK_S = 240.0
"""Cache time of an access token without a readable ``exp`` (Label Studio's live 5 min)."""


class StudioError(RuntimeError):
    """Label Studio refused a request; the message is one line (status and reason).

    Attributes:
        status_code: the HTTP status Label Studio answered, or None.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TokenRejected(StudioError):
    """Label Studio answered 401/403: the API token is wrong, expired or revoked."""


class LabelStudioUnavailable(httpx.TransportError, RuntimeError):
    """Label Studio did not answer a request within the retry budget.

    A ``RuntimeError`` for the CLI (a message, not a traceback) and an ``httpx.TransportError``
    for code that already handles unreachable hosts.
    """

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message, request=request)

    @classmethod
    def after(cls, exc: httpx.TransportError, note: str) -> LabelStudioUnavailable:
        """This error for ``exc`` (any transport failure) with ``note`` on what was done."""
        request = exc._request  # None when the failure had no request attached
        return cls(f"{exc} {note}", request=request)


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request waits for a Label Studio that does not answer.

    Attributes:
        budget_s: most seconds spent waiting between attempts of one request; 0 never
            retries (benchmarks, which count every failure as the UI would see it).
        first_delay_s: the first wait; each next one doubles, up to ``max_delay_s``, with
            ±20 % jitter so that many clients do not come back in lockstep.
    """

    budget_s: float = 120.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.budget_s < 0 or self.first_delay_s <= 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError(
                "retry policy needs budget_s >= 0 and 0 < first_delay_s <= max_delay_s"
            )

    def delays(self) -> Iterable[float]:
        """The successive waits, until their sum would pass ``budget_s``."""
        spent, delay = 0.0, self.first_delay_s
        while True:
            wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
            if spent + wait > self.budget_s:
                return
            spent += wait
            yield wait
            delay = min(delay * 2.0, self.max_delay_s)


class _RetryTransport(httpx.BaseTransport):
    """``httpx.HTTPTransport`` that retries what is safe to retry (see the module docstring).

    Response bodies are read inside the retry loop, so a body cut off by a restarting server
    is fetched again (for idempotent methods); streaming callers get the whole body at once.
    """

    def __init__(
        self, policy: RetryPolicy, on_retry: Callable[[str, float], None] | None = None
    ) -> None:
        self.policy = policy
        self.on_retry = on_retry
        self._inner = httpx.HTTPTransport()
        self._count = 0
        self._count_lock = threading.Lock()

    @property
    def retries(self) -> int:
        """Attempts repeated so far, over every request."""
        return self._count

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(_NO_RETRY):
            return self._inner.handle_request(request)
        delays = iter(self.policy.delays())
        idempotent = request.method in _IDEMPOTENT
        while True:
            try:
                response = self._inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                reason = f"{type(exc).__name__}: {exc}"  # never reached it: safe for any method
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if not idempotent:
                    raise  # a POST may have been stored: resending could create it twice
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in _RETRY_STATUS and idempotent:
                    response.close()
                    reason = f"HTTP {response.status_code}"
                else:
                    try:
                        raw = b"".join(response.iter_raw())
                    except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                        if not idempotent:
                            raise
                        reason = f"{type(exc).__name__} reading the body: {exc}"
                    else:
                        return httpx.Response(
                            response.status_code,
                            headers=response.headers,
                            stream=httpx.ByteStream(raw),
                            extensions=response.extensions,
                            request=request,
                        )
                    finally:
                        response.close()
            delay = next(delays, None)
            where = f"{request.method} {request.url.copy_with(query=None)}"
            if delay is None:
                raise LabelStudioUnavailable(
                    f"Label Studio did not answer {where} ({reason}) within "
                    f"{self.policy.budget_s:.0f} s of retries; is it running?",
                    request=request,
                )
            with self._count_lock:
                self._count += 1
            log.warning("Label Studio: %s on %s; retrying in %.1f s", reason, where, delay)
            if self.on_retry is not None:
                self.on_retry(reason, delay)
            time.sleep(delay)

    def close(self) -> None:
        self._inner.close()


def content_hash(data: bytes) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes (the task's identity)."""
    return hashlib.sha256(data).hexdigest()[:16]


def task_image_url(data: Mapping[str, Any] | None) -> str | None:
    """The image URL of a task's data, as Label Studio stores it, or None when it has none.

    The first string value that is an upload or local file (``/data/…``) or an absolute
    ``http(s)://`` URL; other values (text, the ``medcrowd`` metadata dict) are skipped.
    """
    for value in (data or {}).values():
        if isinstance(value, str) and value.startswith(("/data/", "http://", "https://")):
            return value
    return None


def _one_line(value: Any, limit: int = 200) -> str:
    """``value`` as a single shortened line (Label Studio's error bodies are JSON or HTML)."""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT (not verified: only to read ``exp``), or None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


class _TokenAuth(httpx.Auth):
    """Sets Label Studio's Authorization header; for a personal access token, caches the
    access token it is exchanged for until shortly before that one expires.

    A request answered 401 with a cached access token (revoked, or the clocks disagree)
    refreshes once and is sent again.
    """

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport, timeout_s: float):
        self.url = url
        self.token = token
        self.personal = _jwt_claims(token) is not None
        self.refreshes = 0
        self._transport = transport
        self._timeout_s = timeout_s
        self._access: str | None = None
        self._valid_until = 0.0
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self.personal:
            request.headers["Authorization"] = f"Token {self.token}"
            yield request
            return
        access = self.access_token()
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.access_token(stale=access)}"
            yield request

    def access_token(self, stale: str | None = None) -> str:
        """The cached access token, refreshed when missing, about to expire, or ``stale``."""
        with self._lock:
            fresh = self._access is not None and time.monotonic() < self._valid_until
            if fresh and self._access != stale:
                return str(self._access)
            self._access, self._valid_until = self._refresh()
            return self._access

    def _refresh(self) -> tuple[str, float]:
        request = httpx.Request(
            "POST",
            f"{self.url}/api/token/refresh",
            json={"refresh": self.token},
            extensions={"timeout": httpx.Timeout(self._timeout_s).as_dict()},
        )
        resp = self._transport.handle_request(request)  # the shared, retrying transport
        resp.read()
        self.refreshes += 1
        if resp.status_code in (400, 401, 403):
            raise TokenRejected(f"token rejected by {self.url}", resp.status_code)
        if resp.status_code != 200:
            raise StudioError(
                f"Label Studio at {self.url} answered {resp.status_code} to the token refresh: "
                f"{_one_line(resp.text)}",
                resp.status_code,
            )
        access = str(resp.json()["access"])
        claims = _jwt_claims(access) or {}
        lifetime = _ACCESS_FALLBACK_S
        if isinstance(claims.get("exp"), (int, float)):
            lifetime = float(claims["exp"]) - time.time() - _ACCESS_MARGIN_S
        return access, time.monotonic() + max(lifetime, 0.0)


@dataclass
class ImportReport:
    """What an import did: tasks created, files skipped as already present, files failed."""

    created: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class Project:
    """A project's settings medcrowd reads (``overlap`` is Label Studio's
    ``maximum_annotations``: different people per task)."""

    id: int
    title: str
    label_config: str
    overlap: int


@dataclass(frozen=True)
class Task:
    """One task: its data (``{"image": url, "medcrowd": {...}}``) and how far it is."""

    id: int
    data: dict[str, Any]
    total_annotations: int = 0
    is_labeled: bool = False


@dataclass(frozen=True)
class Prediction:
    """A prediction on a task (``result`` is Label Studio's list of regions)."""

    id: int
    model_version: str
    result: list[dict[str, Any]]
    score: float | None = None


@dataclass
class PredictionUpdate:
    """What :meth:`Studio.replace_predictions` did on one task.

    Attributes:
        kept: a current prediction (same version, and ``same`` held) was already there.
        created: a new prediction was created.
        removed: stale predictions deleted.
    """

    kept: bool = False
    created: bool = False
    removed: int = 0


class Studio:
    """A Label Studio instance at ``url`` reached with API ``token``.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        token: a legacy API token or a personal access token (module docstring).
        timeout_s: per-request timeout.
        retry: how long to wait for a Label Studio that does not answer (the SDK's own
            retries are off: they would resend a POST whose answer was lost).
        on_retry: called with (reason, seconds to wait) before each retry (progress output).
    """

    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.retry = retry if retry is not None else RetryPolicy()
        self._transport = _RetryTransport(self.retry, on_retry)
        self._auth = _TokenAuth(self.url, token, self._transport, timeout_s)
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, transport=self._transport, auth=self._auth
        )
        self.client = LabelStudio(
            base_url=self.url,
            api_key=_SDK_PLACEHOLDER_KEY,
            timeout=timeout_s,
            max_retries=0,
            httpx_client=httpx.Client(
                timeout=timeout_s,
                follow_redirects=True,
                transport=self._transport,
                auth=self._auth,
            ),
        )
        """The SDK client; medcrowd's own code uses the methods of this class instead."""

    @property
    def retries(self) -> int:
        """Requests repeated because Label Studio did not answer, since this client was made."""
        return self._transport.retries

    @property
    def token_refreshes(self) -> int:
        """Personal-access-token exchanges at ``/api/token/refresh`` made by this client."""
        return self._auth.refreshes

    # -- errors and raw REST for what the SDK does not expose ----------------------------
    def _refused(self, status: int | None, what: str, body: Any) -> StudioError:
        if status in (401, 403):
            return TokenRejected(f"token rejected by {self.url}", status)
        return StudioError(
            f"Label Studio at {self.url} answered {status} to {what}: {_one_line(body)}", status
        )

    @contextmanager
    def _sdk(self, what: str) -> Iterator[None]:
        """SDK errors as one-line :class:`StudioError` s."""
        try:
            yield
        except ApiError as exc:
            raise self._refused(exc.status_code, what, exc.body) from None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One REST call; an answer >= 400 raises :class:`StudioError` (or TokenRejected)."""
        resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise self._refused(resp.status_code, f"{method} {path}", resp.text)
        return resp

    # -- health and identity -----------------------------------------------------------
    def healthy(self) -> bool:
        """One probe of ``/health``, never retried."""
        try:
            resp = self._http.get("/health", timeout=2.0, extensions={_NO_RETRY: True}, auth=None)
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(
        self, timeout_s: float = 300.0, check: Callable[[], None] | None = None
    ) -> None:
        """Poll ``/health`` until it answers 200.

        Args:
            check: called before each probe; raises to give up early (a child that died).

        Raises:
            TimeoutError: no answer within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check is not None:
                check()
            if self.healthy():
                return
            time.sleep(0.5)
        raise TimeoutError(f"Label Studio at {self.url} did not answer /health in {timeout_s} s")

    def whoami(self) -> dict[str, Any]:
        """The account the token belongs to (``id``, ``email``, …); checks the token.

        Raises:
            TokenRejected: the token is not accepted.
        """
        me: dict[str, Any] = self.request("GET", "/api/current-user/whoami").json()
        return me

    # -- projects ----------------------------------------------------------------------
    def find_project(self, title: str) -> int | None:
        with self._sdk("the project list"):
            projects: Iterable[Any] = list(self.client.projects.list())
        for project in projects:
            if project.title == title:
                return int(project.id)
        return None

    def project(self, project_id: int) -> Project:
        """A project's title, labeling config and overlap.

        Raises:
            StudioError: no such project (404) or any other refusal.
        """
        try:
            with self._sdk(f"project {project_id}"):
                raw = self.client.projects.get(project_id)
        except StudioError as exc:
            if exc.status_code == 404:
                raise StudioError(f"no project {project_id} at {self.url}", 404) from None
            raise
        return Project(
            id=int(raw.id or project_id),
            title=str(raw.title or ""),
            label_config=str(raw.label_config or ""),
            overlap=int(raw.maximum_annotations or 1),
        )

    def ensure_project(self, title: str, label_config: str, maximum_annotations: int = 1) -> int:
        """The id of the project called ``title``, created with ``label_config`` if absent.

        An existing project is reused as it is (its config is not overwritten: it may hold
        annotations made against it).
        """
        existing = self.find_project(title)
        if existing is not None:
            return existing
        with self._sdk("creating a project"):
            project = self.client.projects.create(
                title=title,
                label_config=label_config,
                maximum_annotations=maximum_annotations,
                show_collab_predictions=True,
            )
        return int(project.id)  # type: ignore[arg-type]

    def set_overlap(self, project_id: int, overlap: int) -> None:
        """Each task is labelled by ``overlap`` different people (the queue enforces it)."""
        if overlap < 1:
            raise ValueError("overlap must be >= 1")
        with self._sdk(f"setting the overlap of project {project_id}"):
            self.client.projects.update(project_id, maximum_annotations=overlap)

    def set_instructions(self, project_id: int, html: str, keep_existing: bool = False) -> bool:
        """Show ``html`` to every labeller before their first task (Label Studio's
        ``expert_instruction`` with ``show_instruction``); returns whether it was set.

        With ``keep_existing``, a project that already has instructions keeps them (staff
        may have edited them in the project settings).
        """
        if keep_existing:
            current = self.request("GET", f"/api/projects/{project_id}/").json()
            if str(current.get("expert_instruction") or "").strip():
                return False
        with self._sdk(f"the instructions of project {project_id}"):
            self.client.projects.update(project_id, expert_instruction=html, show_instruction=True)
        return True

    def set_label_config(self, project_id: int, label_config: str) -> None:
        """Replace the project's labeling config (XML)."""
        with self._sdk(f"the labeling config of project {project_id}"):
            self.client.projects.update(project_id, label_config=label_config)

    def prioritise_predictions(self, project_id: int, model_version: str) -> None:
        """Serve tasks with a current ``model_version`` prediction first, lowest score first
        (Label Studio's *uncertainty sampling*); the labelling view shows that version."""
        self.request(
            "PATCH",
            f"/api/projects/{project_id}",
            json={"sampling": "Uncertainty sampling", "model_version": model_version},
        )

    # -- tasks -------------------------------------------------------------------------
    def tasks(self, project_id: int, full: bool = True) -> list[Task]:
        """Every task of a project (``full``: with data and annotation counts)."""
        with self._sdk(f"the tasks of project {project_id}"):
            if full:
                raw: list[Any] = list(self.client.tasks.list(project=project_id, fields="all"))
            else:
                raw = list(self.client.tasks.list(project=project_id))
        return [
            Task(
                id=int(t.id),
                data=dict(t.data or {}),
                total_annotations=int(getattr(t, "total_annotations", 0) or 0),
                is_labeled=bool(getattr(t, "is_labeled", False)),
            )
            for t in raw
        ]

    def task_hashes(self, project_id: int) -> set[str]:
        """Content hashes of the images already imported into a project."""
        hashes: set[str] = set()
        for task in self.tasks(project_id):
            for value in task.data.values():
                if isinstance(value, str):
                    match = _HASH_RE.search(value)
                    if match:
                        hashes.add(match.group(1))
        return hashes

    def set_task_overlap(self, task_id: int, overlap: int) -> None:
        """Different people this one task needs (gold tasks get one more)."""
        self.request("PATCH", f"/api/tasks/{task_id}/", json={"overlap": overlap})

    def export_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task that has annotations, with them, via the SDK's JSON export."""
        with self._sdk(f"the export of project {project_id}"):
            chunks = self.client.projects.exports.download_sync(
                project_id, export_type="JSON", download_all_tasks=False
            )
            body = b"".join(chunks)
        tasks = json.loads(body)
        if not isinstance(tasks, list):
            raise StudioError(f"unexpected export from Label Studio: {_one_line(tasks)}")
        return tasks

    def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The next task the labelling queue hands this token's account, or None when it
        has none left for them (``/api/projects/{id}/next``; overlap and blindness apply)."""
        resp = self._http.get(f"/api/projects/{project_id}/next")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._refused(resp.status_code, "the labelling queue", resp.text)
        task: dict[str, Any] = resp.json()
        return task

    # -- images --------------------------------------------------------------------------
    def image_path(self, data: Mapping[str, Any] | None) -> str:
        """Where this Label Studio serves a task's image: a path (with query) on its host.

        Uploads (``/data/upload/…``) and local files (``/data/local-files/?d=…``) are taken
        as they are; an absolute URL only when it is on this Label Studio's own scheme, host
        and port (its path is returned).

        Raises:
            ValueError: the task has no image URL, or it is on another host (not fetched).
        """
        url = task_image_url(data)
        if url is None:
            raise ValueError("no image URL in the task data")
        if url.startswith("/"):
            return url
        mine, theirs = urlsplit(self.url), urlsplit(url)
        same = (mine.scheme, mine.hostname, mine.port) == (
            theirs.scheme,
            theirs.hostname,
            theirs.port,
        )
        if not same or theirs.username or theirs.password:
            raise ValueError(f"image {url} is not on Label Studio's host; not fetched")
        return (theirs.path or "/") + (f"?{theirs.query}" if theirs.query else "")

    def fetch_image(self, data: Mapping[str, Any] | None) -> tuple[str, bytes]:
        """(path, file bytes) of a task's image (see :meth:`image_path`)."""
        path = self.image_path(data)
        return path, self.request("GET", path).content

    def import_images(
        self,
        project_id: int,
        files: Iterable[tuple[str, bytes]] | Iterable[tuple[str, bytes, dict[str, Any]]],
        batch: int = 20,
        image_key: str = "image",
    ) -> ImportReport:
        """Upload images as tasks, skipping content already in the project.

        Args:
            files: (name, PNG/JPEG bytes) or (name, bytes, metadata) items; metadata (e.g. the
                slice geometry from :mod:`medcrowd.imaging`) is stored in the task's data
                under ``"medcrowd"``.
            image_key: the task data key the labeling config reads (``$image``).
        """
        known = self.task_hashes(project_id)
        report = ImportReport(failed=[])
        pending: list[tuple[str, bytes, dict[str, Any] | None]] = []
        for item in files:
            name, data = item[0], item[1]
            digest = content_hash(data)
            if digest in known:
                report.skipped += 1
                continue
            known.add(digest)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-80:]
            meta = item[2] if len(item) > 2 else None
            pending.append((f"mc{digest}_{safe}", data, meta))
            if len(pending) >= batch:
                report.created += self._upload(project_id, pending, image_key)
                pending = []
        if pending:
            report.created += self._upload(project_id, pending, image_key)
        return report

    def _upload(
        self, project_id: int, files: list[tuple[str, bytes, dict[str, Any] | None]], key: str
    ) -> int:
        """Upload a batch without creating tasks, then create them in one JSON import.

        Two requests a batch instead of one upload plus a PATCH per task for the metadata.
        """
        # Label Studio reads request.FILES.items(): one distinct field name per file.
        multipart = [(f"file{i}", (name, data)) for i, (name, data, _) in enumerate(files)]
        uploaded = self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"commit_to_project": "false"},
            files=multipart,
        ).json()
        ids = uploaded.get("file_upload_ids") or []
        listed = self.request(
            "GET", f"/api/projects/{project_id}/file-uploads", params={"ids": json.dumps(ids)}
        ).json()
        url_of = {Path(u["file"]).name.split("-", 1)[-1]: "/data/" + u["file"] for u in listed}
        tasks = []
        for name, _, meta in files:
            data: dict[str, Any] = {key: url_of[name]}
            if meta is not None:
                data["medcrowd"] = meta
            tasks.append(data)
        resp = self.request("POST", f"/api/projects/{project_id}/import", json=tasks)
        return int(resp.json().get("task_count", 0))

    # -- annotations ---------------------------------------------------------------------
    def create_annotation(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        *,
        ground_truth: bool = False,
        lead_time: float | None = None,
        was_cancelled: bool = False,
    ) -> int:
        """Submit an annotation as this token's account; its id.

        ``was_cancelled`` records a skip; ``ground_truth`` marks an expert's gold answer.
        """
        extra: dict[str, Any] = {}
        if ground_truth:
            extra["ground_truth"] = True
        if lead_time is not None:
            extra["lead_time"] = lead_time
        if was_cancelled:
            extra["was_cancelled"] = True
        with self._sdk(f"an annotation on task {task_id}"):
            ann = self.client.annotations.create(task_id, result=result, **extra)
        return int(ann.id)

    def has_ground_truth(self, task_id: int) -> bool:
        """Whether a task already has a gold (ground-truth) annotation."""
        with self._sdk(f"the annotations of task {task_id}"):
            existing = list(self.client.annotations.list(task_id))
        return any(a.ground_truth for a in existing)

    # -- predictions ---------------------------------------------------------------------
    def predictions(self, task_id: int) -> list[Prediction]:
        """Every prediction on a task."""
        with self._sdk(f"the predictions of task {task_id}"):
            raw = list(self.client.predictions.list(task=task_id))
        return [
            Prediction(
                id=int(p.id),
                model_version=str(p.model_version or ""),
                result=list(p.result or []),
                score=None if p.score is None else float(p.score),
            )
            for p in raw
        ]

    def _delete_prediction(self, prediction_id: int) -> None:
        try:
            with self._sdk(f"deleting prediction {prediction_id}"):
                self.client.predictions.delete(prediction_id)
        except StudioError as exc:  # a DELETE resent after a lost answer finds it gone
            if exc.status_code != 404:
                raise

    def replace_predictions(
        self,
        task_id: int,
        prefix: str | tuple[str, ...],
        version: str | None = None,
        result: list[dict[str, Any]] | None = None,
        score: float = 0.0,
        same: Callable[[Prediction], bool] | None = None,
    ) -> PredictionUpdate:
        """Make one ``version`` prediction the only one of a task whose model version starts
        with ``prefix`` (medcrowd's own, e.g. ``consensus-staple`` or ``("sqa-", …)``).

        A prediction of that ``version`` for which ``same`` holds (default: any) is current
        and kept; every other one with the prefix is stale and deleted; when none is current,
        ``result`` is created as ``version`` with ``score``. ``version`` None deletes every
        prediction with the prefix. Annotations and predictions without the prefix are never
        touched.
        """
        ours = [p for p in self.predictions(task_id) if p.model_version.startswith(prefix)]
        current = [
            p
            for p in ours
            if version is not None and p.model_version == version and (same is None or same(p))
        ]
        update = PredictionUpdate(kept=bool(current))
        for stale in ours:
            if stale not in current:
                self._delete_prediction(stale.id)
                update.removed += 1
        if version is not None and not current:
            with self._sdk(f"a prediction on task {task_id}"):
                self.client.predictions.create(
                    task=task_id, result=result or [], model_version=version, score=float(score)
                )
            update.created = True
        return update

    # -- people --------------------------------------------------------------------------
    def signup_link(self) -> str:
        """The organisation's invite link (``/user/signup/?token=…``) for volunteers."""
        invite = self.request("GET", "/api/invite").json()
        return f"{self.url}{invite['invite_url']}"

    def create_volunteer(self, email: str, password: str) -> tuple[int, str]:
        """Create an account through the invite link, as a volunteer signing up would.

        Label Studio Community's user API makes accounts without a usable password, so the
        account is made by the same signup form volunteers use, with the organisation's
        invite token (signup without the link is disabled).

        Returns:
            (user id, the volunteer's own API token).

        Raises:
            ValueError: the signup was refused (e.g. the email is taken or the password weak).
        """
        link = self.signup_link()
        with httpx.Client(base_url=self.url, timeout=60.0) as browser:
            browser.get(link)
            csrf = browser.cookies.get("csrftoken", "")
            resp = browser.post(
                link,
                data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                headers={"Referer": link},
            )
            if resp.status_code != 302:
                raise ValueError(
                    f"signup for {email} refused (HTTP {resp.status_code}); the email may be "
                    "taken or the password too weak"
                )
            me = browser.get("/api/current-user/whoami").json()
            token = browser.get("/api/current-user/token").json()["token"]
        return int(me["id"]), str(token)

    def users(self) -> dict[int, str]:
        """{user id: email} of everyone in the organisation."""
        with self._sdk("the user list"):
            people: list[Any] = list(self.client.users.list())
        return {int(u.id): str(u.email) for u in people}

    # -- ML backend --------------------------------------------------------------------
    def ml_backend_ids(self, project_id: int) -> list[int]:
        """Ids of the ML backends connected to a project."""
        with self._sdk(f"the ML backends of project {project_id}"):
            return [int(ml.id) for ml in self.client.ml.list(project=project_id)]

    def connect_backend(
        self,
        project_id: int,
        backend_url: str,
        basic_auth: tuple[str, str] | None,
        title: str = "medcrowd MedSAM",
    ) -> int:
        """Register (or update) the ML backend for interactive pre-annotation.

        Also puts the Basic credentials on the webhook Label Studio creates for the backend,
        which it otherwise calls without any.
        """
        backend_url = backend_url.rstrip("/")
        auth: dict[str, Any] = {"auth_method": "NONE"}
        if basic_auth is not None:
            auth = {
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": basic_auth[0],
                "basic_auth_pass": basic_auth[1],
            }
        with self._sdk(f"connecting the ML backend to project {project_id}"):
            existing = [
                ml
                for ml in self.client.ml.list(project=project_id)
                if (ml.url or "").rstrip("/") == backend_url
            ]
            if existing:
                ml_id = int(existing[0].id)
                # Label Studio 1.23.2 re-runs /setup on update and needs the project in the body.
                self.client.ml.update(
                    ml_id, url=backend_url, project=project_id, is_interactive=True, **auth
                )
            else:
                ml = self.client.ml.create(
                    url=backend_url, project=project_id, is_interactive=True, title=title, **auth
                )
                ml_id = int(ml.id)
        if basic_auth is not None:
            self._authorise_webhook(project_id, backend_url + "/webhook", basic_auth)
        return ml_id

    def _authorise_webhook(self, project_id: int, url: str, basic_auth: tuple[str, str]) -> None:
        secret = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
        hooks = self.request("GET", "/api/webhooks/", params={"project": project_id}).json()
        for hook in hooks:
            if hook.get("url", "").rstrip("/") == url:
                self.request(
                    "PATCH",
                    f"/api/webhooks/{hook['id']}/",
                    json={"headers": {"Authorization": f"Basic {secret}"}},
                )

    def interactive_predict(self, ml_id: int, task_id: int, context: dict[str, Any]) -> Any:
        """What the UI does when a volunteer draws a box: Label Studio asks the backend.

        Returns Label Studio's answer (``{"data": {"result": [...]}}`` or ``{"errors": …}``).
        """
        resp = self.request(
            "POST",
            f"/api/ml/{ml_id}/interactive-annotating",
            json={"task": task_id, "context": context},
        )
        return resp.json()
