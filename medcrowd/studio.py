"""Label Studio through its SDK: projects, image tasks and the ML-backend connection.

Every call goes through ``label_studio_sdk.LabelStudio`` or, where the SDK has no helper, the
same REST API with the same token. Works the same against the embedded instance and a lab's
hosted one.

Images are uploaded (``/api/projects/{id}/import``) under a name that starts with the first
16 hex digits of their SHA-256, so re-importing the same pixels is detected from the task
list alone and never creates a duplicate task.

Every request, the SDK's included, goes through one retrying transport (:class:`RetryPolicy`):
a Label Studio that is restarting (connection refused or reset, 502/503/504 from a proxy) is
waited for with exponential backoff instead of failing the command. Only what cannot create
anything twice is retried: any request that never reached the server (the connection was
refused), and idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) whose answer was lost or
cut off. A POST whose answer was lost is never resent: it may have been stored. When the
budget runs out the request fails with :class:`LabelStudioUnavailable`, which says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk import LabelStudio

__all__ = [
    "ImportReport",
    "LabelStudioUnavailable",
    "RetryPolicy",
    "Studio",
    "content_hash",
]

log = logging.getLogger("medcrowd.studio")

_HASH_RE = re.compile(r"(?:^|[/-])mc([0-9a-f]{16})_")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRY_STATUS = frozenset({502, 503, 504})
_NO_RETRY = "medcrowd_no_retry"
"""Request extension that turns retrying off for one request (health probes)."""


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


@dataclass
class ImportReport:
    """What an import did: tasks created, files skipped as already present, files failed."""

    created: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] | None = None


class Studio:
    """A Label Studio instance at ``url`` reached with API ``token``.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        token: a legacy API token or a personal access token.
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
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=self._transport)
        self.client = LabelStudio(
            base_url=self.url,
            api_key=token,
            timeout=timeout_s,
            max_retries=0,
            httpx_client=httpx.Client(
                timeout=timeout_s, follow_redirects=True, transport=self._transport
            ),
        )

    @property
    def retries(self) -> int:
        """Requests repeated because Label Studio did not answer, since this client was made."""
        return self._transport.retries

    # -- raw REST for what the SDK does not expose ------------------------------------
    def _headers(self) -> dict[str, str]:
        from ml_backend.images import label_studio_auth_header

        return label_studio_auth_header(self._http, self.url, self.token)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self._http.request(method, path, headers=self._headers(), **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(
                f"Label Studio {method} {path} failed: {resp.status_code} {resp.text[:300]}"
            )
        return resp

    # -- health ------------------------------------------------------------------------
    def healthy(self) -> bool:
        """One probe of ``/health``, never retried."""
        try:
            resp = self._http.get("/health", timeout=2.0, extensions={_NO_RETRY: True})
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return
            time.sleep(1.0)
        raise TimeoutError(f"Label Studio at {self.url} did not answer /health in {timeout_s} s")

    # -- projects ----------------------------------------------------------------------
    def find_project(self, title: str) -> int | None:
        projects: Iterable[Any] = self.client.projects.list()
        for project in projects:
            if project.title == title:
                return int(project.id)
        return None

    def ensure_project(self, title: str, label_config: str, maximum_annotations: int = 1) -> int:
        """The id of the project called ``title``, created with ``label_config`` if absent.

        An existing project is reused as it is (its config is not overwritten: it may hold
        annotations made against it).
        """
        existing = self.find_project(title)
        if existing is not None:
            return existing
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
        self.client.projects.update(project_id, maximum_annotations=overlap)

    # -- tasks -------------------------------------------------------------------------
    def task_hashes(self, project_id: int) -> set[str]:
        """Content hashes of the images already imported into a project."""
        hashes: set[str] = set()
        tasks: Iterable[Any] = self.client.tasks.list(project=project_id, fields="all")
        for task in tasks:
            data = task.data or {}
            for value in data.values():
                if isinstance(value, str):
                    match = _HASH_RE.search(value)
                    if match:
                        hashes.add(match.group(1))
        return hashes

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
        people: Iterable[Any] = self.client.users.list()
        return {int(u.id): str(u.email) for u in people}

    # -- ML backend --------------------------------------------------------------------
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
        import base64

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
