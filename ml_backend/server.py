"""The Label Studio ML-backend HTTP server (FastAPI), speaking the contract in DESIGN.md.

Endpoints, as Label Studio 1.23.2 calls them:

* ``GET /health`` → ``{"status": "UP", "model_class": …, "model_version": …}``
* ``POST /setup`` → ``{"model_version": …}`` (the model is loaded at start, never here:
  Label Studio gives /setup 3 s)
* ``POST /predict`` → ``{"results": [{"result": [brush], "score": s, "model_version": v}]}``,
  one entry per task in order. An interactive call carries the volunteer's rectangle in
  ``params.context``; the answer is a ``brushlabels`` mask with that label. A batch call
  with no rectangle gets an empty list for the task (Label Studio then stores no
  prediction, rather than an empty one that would show as a blank tab in the UI) —
  unless a draft segmenter is configured (``draft_model``): then the call gets its
  whole-image mask as a ``draft-<hash>`` prediction (prompt-free pre-annotation).
* ``POST /webhook`` → on ``TASKS_CREATED`` the embeddings of the new tasks' images are
  computed in a background thread, so a volunteer's first box is already warm.

Every route but ``/health`` needs HTTP Basic auth (Label Studio's ``auth_method=BASIC``)
unless the server is bound to loopback with no credentials configured; that includes
``/openapi.json``, the machine-readable form of the contract. Client mistakes become a 4xx
JSON ``{"error": message}``; unexpected failures a 500 whose body says only to read the log,
where the traceback goes.

Load is bounded per process: at most ``max_inflight`` predict requests are worked on at once
(the model itself runs one call at a time) and at most ``max_queue`` wait; a request beyond
that is answered at once with 503 and ``Retry-After``. A prediction that takes longer than
``request_timeout_s`` is answered 504; its work may finish in the background, still holding
its slot, so abandoned work can never pile up threads. ``medcrowd backend serve --workers N``
runs N such processes under gunicorn (:mod:`ml_backend.workers`), each with its own model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_backend.errors import InvalidInput, UpstreamError
from ml_backend.images import ImageFetcher
from ml_backend.labeling import box_prompt_from_context, brush_result, parse_label_config

__all__ = ["BackendConfig", "create_app", "serve"]

log = logging.getLogger("ml_backend.server")

T = TypeVar("T")

MAX_LABEL_CONFIG_CHARS = 256 * 1024
"""Largest ``label_config``/``schema`` accepted; real configs are a few KiB (parsed configs
are memoised, so the bound also caps that memory)."""
MAX_WARM_PENDING = 4096
"""Most webhook embedding jobs waiting at once; further images are skipped (logged)."""
_MAX_ERROR_CHARS = 500


@dataclass
class BackendConfig:
    """Everything the backend server needs, loaded once and passed in.

    Attributes:
        host, port: where to listen. Anything but loopback requires ``basic_auth``.
        basic_auth: ``(user, password)`` Label Studio sends (``auth_method=BASIC``).
        label_studio_url: the one host images may be fetched from.
        label_studio_token: the backend's own API token for that host.
        local_files_root: Label Studio's LOCAL_FILES_DOCUMENT_ROOT when shared on disk.
        allowed_roots: directories local-file images must resolve inside.
        predictor: registry name (``litemedsam`` default, ``medsam``, ``sam_vit_b|l|h``).
        device: ``auto`` | ``cpu`` | ``cuda``.
        checkpoint: weights path for ``medsam``/``sam_*`` (never downloaded).
        draft_model: a ``medcrowd train segmenter`` file; a /predict without a drawn box
            then answers its whole-image mask as a draft (:mod:`ml_backend.draft`).
        cache_dir: on-disk embedding cache and exported ONNX models (shared by workers).
        cache_bytes: in-memory embedding cache bound (per worker).
        max_body_bytes: largest request body accepted (Label Studio's interactive calls
            embed the task with its annotations; 32 MiB is generous).
        max_image_pixels: largest image decoded.
        warm_on_import: precompute embeddings on ``TASKS_CREATED`` webhooks.
        workers: server processes; 1 serves in this process with uvicorn, more run under
            gunicorn with one model per process (see :mod:`ml_backend.workers`).
        max_inflight: predict requests one process works on at once (their image fetches
            overlap; the model runs one call at a time).
        max_queue: predict requests one process lets wait beyond ``max_inflight``; the next
            one is answered 503 with ``Retry-After`` at once.
        request_timeout_s: a predict request not answered within this many seconds gets a
            504 (below Label Studio's own 100 s ``ML_TIMEOUT_PREDICT``); also bounds how long
            a client may take to send its body (408).
    """

    host: str = "127.0.0.1"
    port: int = 9090
    basic_auth: tuple[str, str] | None = None
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    local_files_root: Path | None = None
    allowed_roots: list[Path] = field(default_factory=list)
    predictor: str = "litemedsam"
    device: str = "auto"
    checkpoint: Path | None = None
    draft_model: Path | None = None
    cache_dir: Path | None = None
    cache_bytes: int = 512 * 1024 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 8192 * 8192
    warm_on_import: bool = True
    workers: int = 1
    max_inflight: int = 2
    max_queue: int = 32
    request_timeout_s: float = 90.0

    def validate(self) -> None:
        """Refuse settings that would expose an unauthenticated backend, or make no sense."""
        if self.basic_auth is None and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without authentication: set "
                "--basic-auth-user/--basic-auth-pass (or bind to 127.0.0.1)"
            )
        if self.basic_auth is not None and (not self.basic_auth[0] or not self.basic_auth[1]):
            raise ValueError("basic auth needs both a user and a password")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be in 1..64, got {self.workers}")
        if not 1 <= self.max_inflight <= 256:
            raise ValueError(f"max_inflight must be in 1..256, got {self.max_inflight}")
        if not 0 <= self.max_queue <= 100_000:
            raise ValueError(f"max_queue must be in 0..100000, got {self.max_queue}")
        if not (math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0):
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, counted as they stream in."""

    def __init__(self, app: FastAPI, max_bytes: int) -> None:
        self.app: ASGIApp = app
        self.state = app.state  # the engine, for callers and tests
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"error": f"body larger than {self.max_bytes} bytes"})
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _send_json(send, 413, {"error": f"body larger than {self.max_bytes} bytes"})


class _TooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _ModelQueue:
    """Runs predict jobs on ``max_inflight`` threads and lets at most ``max_queue`` wait.

    A job holds its slot from admission until it really ends (or is cancelled before it
    started), so work whose client already got a 504 still counts: the number of threads
    and of queued jobs stays bounded however many requests time out.
    """

    def __init__(self, max_inflight: int, max_queue: int) -> None:
        self.max_inflight = max_inflight
        self.capacity = max_inflight + max_queue
        self._executor = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="predict")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._mean_s = 1.0  # running mean of a job's duration, for Retry-After
        self.refused = 0
        self.timed_out = 0

    def try_submit(self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """Start or queue ``fn(*args)``; None when running + waiting jobs fill the capacity."""
        with self._lock:
            if self._admitted >= self.capacity:
                self.refused += 1
                return None
            self._admitted += 1
        try:
            future = self._executor.submit(self._run, fn, *args)
        except BaseException:
            self._release(None)
            raise
        # Registered before the caller wraps the future, so the slot is free again before
        # the caller's response goes out.
        future.add_done_callback(self._release)
        return future

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._running += 1
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            elapsed = time.monotonic() - start
            with self._lock:
                self._running -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed

    def _release(self, _: object) -> None:
        with self._lock:
            self._admitted -= 1

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: mean job time × jobs ahead per thread."""
        with self._lock:
            waves = self._admitted / self.max_inflight
            return int(min(120.0, max(1.0, math.ceil(self._mean_s * waves))))

    @property
    def load(self) -> tuple[int, int]:
        """``(running, waiting)`` jobs now."""
        with self._lock:
            return self._running, self._admitted - self._running


class _Engine:
    """The predictor behind a lock, the bounded predict queue and the background warmer.

    Label Studio's ML API builds a new model object per request; here the heavy model lives
    once per process and requests stay thin.
    """

    def __init__(
        self,
        predictor: Any,
        fetcher: ImageFetcher,
        max_inflight: int = 2,
        max_queue: int = 32,
        draft: Any | None = None,
    ) -> None:
        self.predictor = predictor
        self.fetcher = fetcher
        self.draft = draft
        self.lock = threading.Lock()
        self.queue = _ModelQueue(max_inflight, max_queue)
        self.warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm")
        self.warmed = 0
        self._warm_pending = 0
        self._warm_lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return str(getattr(self.predictor, "model_id", type(self.predictor).__name__))

    def predict_tasks(
        self, tasks: list[Any], xml: str, context: Any, cancelled: threading.Event
    ) -> list[dict[str, Any] | list[Any]]:
        """One result per task, in order; stops early once the client has been answered."""
        results: list[dict[str, Any] | list[Any]] = []
        for task in tasks:
            if cancelled.is_set():
                log.info("abandoning a timed-out prediction after %d tasks", len(results))
                break
            results.append(self.predict_task(task, xml, context))
        return results

    def predict_task(
        self, task: dict[str, Any], xml: str, context: Any
    ) -> dict[str, Any] | list[Any]:
        if not isinstance(task, dict):
            raise InvalidInput("each task must be an object")
        config = parse_label_config(xml)
        if context is not None and not isinstance(context, dict):
            raise InvalidInput("params.context must be an object")
        boxless = not context or not context.get("result")
        if boxless and self.draft is None:
            return []  # no box drawn (batch call): no prediction, not an empty one
        data = task.get("data")
        if not isinstance(data, dict) or config.image_key not in data:
            raise InvalidInput(f"task has no image under data.{config.image_key}")
        if boxless or context is None:
            return self._draft(data[config.image_key], config)
        _check_rectangle_numbers(context)
        image = self.fetcher.fetch(data[config.image_key])
        height, width = image.shape[:2]
        prompt = box_prompt_from_context(context, config, width, height)
        if prompt is None:
            return []
        with self.lock:
            self.predictor.set_image(image)
            mask, score = self.predictor.predict_box(list(prompt.box_xyxy))
        result = brush_result(mask, prompt.label, config.brush_name, config.image_name)
        result["score"] = float(score)
        return {"result": [result], "score": float(score), "model_version": self.model_version}

    def _draft(self, url: Any, config: Any) -> dict[str, Any] | list[Any]:
        """The draft segmenter's whole-image mask (prompt-free pre-annotation), or ``[]``
        when it finds nothing."""
        draft = self.draft
        if draft is None:
            return []
        mask = draft.predict(self.fetcher.fetch(url))
        if not mask.any():
            return []
        label = config.brush_labels[0] if config.brush_labels else "Organ"
        result = brush_result(mask, label, config.brush_name, config.image_name)
        return {"result": [result], "model_version": draft.model_version}

    def warm_tasks(self, tasks: list[Any], image_key: str | None) -> int:
        """Queue embedding precomputation for the tasks' images; returns how many queued."""
        queued = skipped = 0
        for task in tasks:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict):
                continue
            keys = [image_key] if image_key else list(data)
            url = next((data[k] for k in keys if isinstance(data.get(k), str)), None)
            if url is None:
                continue
            with self._warm_lock:
                if self._warm_pending >= MAX_WARM_PENDING:
                    skipped += 1
                    continue
                self._warm_pending += 1
            self.warmer.submit(self._warm_one, url).add_done_callback(self._warm_done)
            queued += 1
        if skipped:
            log.warning("warm queue full: %d images not precomputed", skipped)
        return queued

    def _warm_done(self, _: object) -> None:
        with self._warm_lock:
            self._warm_pending -= 1

    def _warm_one(self, url: str) -> None:
        try:
            image = self.fetcher.fetch(url)
            warm = getattr(self.predictor, "warm", None)
            if warm is not None and warm(image):
                self.warmed += 1
        except Exception:  # a bad task must not kill the warmer; the log says which
            log.warning("could not precompute the embedding for %.200s", url, exc_info=True)


def _short(value: object) -> str:
    """A repr short enough for an error message (huge ints cannot even be repr'd)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_rectangle_numbers(context: dict[str, Any]) -> None:
    """Rectangle coordinates must be finite JSON numbers, before any arithmetic on them."""
    regions = context.get("result")
    if not isinstance(regions, list):
        return  # box_prompt_from_context says what is wrong
    for region in regions:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        for key in ("x", "y", "width", "height", "rotation"):
            raw = value.get(key)
            if raw is None and key == "rotation":
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise InvalidInput(f"rectangle value {key!r} must be a number, got {_short(raw)}")
            try:
                finite = math.isfinite(float(raw))
            except OverflowError:
                finite = False
            if not finite:
                raise InvalidInput(
                    f"rectangle value {key!r} must be a finite number, got {_short(raw)}"
                )


def _check_basic_auth(request: Request, expected: tuple[str, str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: non-ASCII input
        return False
    ok_user = secrets.compare_digest(user.encode(), expected[0].encode())
    ok_pass = secrets.compare_digest(password.encode(), expected[1].encode())
    return ok_user and ok_pass


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"request body is not valid JSON: {name} is not a JSON number")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except InvalidInput:
        raise
    except RecursionError as exc:
        raise InvalidInput("request body is not valid JSON: nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, huge integers
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc


async def _json_body(request: Request, timeout_s: float) -> dict[str, Any]:
    try:
        raw = await asyncio.wait_for(request.body(), timeout=timeout_s)
    except asyncio.TimeoutError as exc:
        raise _RequestTimeout(f"request body not received within {timeout_s:g} s") from exc
    if not raw:
        raise InvalidInput("request body is empty; expected JSON")
    # A big body would stall the event loop (and /health) while it parses.
    body = _parse_json(raw) if len(raw) < 256 * 1024 else await run_in_threadpool(_parse_json, raw)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


class _RequestTimeout(Exception):
    """The client took longer than ``request_timeout_s`` to send its body (408)."""


def _label_config(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} (the project's labeling config XML) must be a string")
    if len(value) > MAX_LABEL_CONFIG_CHARS:
        raise InvalidInput(f"{name} is longer than {MAX_LABEL_CONFIG_CHARS} characters")
    parse_label_config(value)
    return value


@contextmanager
def _exclusive(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (POSIX ``flock``); a no-op without a path or fcntl.

    Workers sharing a cache directory load their models one at a time, so the first exports
    the ONNX files and the others find them verified instead of exporting in parallel.
    """
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_predictor(config: BackendConfig) -> Any:
    from ml_backend.cache import EmbeddingCache
    from ml_backend.predictors import get_predictor

    cache_dir = config.cache_dir
    with _exclusive(cache_dir / ".model-load.lock" if cache_dir else None):
        return get_predictor(
            config.predictor,
            device=config.device,
            checkpoint=config.checkpoint,
            cache=EmbeddingCache(
                max_bytes=config.cache_bytes,
                directory=cache_dir / "embeddings" if cache_dir else None,
            ),
            cache_dir=cache_dir,
        )


# -- the contract as JSON schema (served at /openapi.json; parsing stays hand-written) ------
_STR: dict[str, Any] = {"type": "string"}
_NUM: dict[str, Any] = {"type": "number"}
_INT: dict[str, Any] = {"type": "integer"}
_TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": _INT,
        "data": {"type": "object", "properties": {"image": _STR}, "required": ["image"]},
    },
}
_RECTANGLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "value"],
    "properties": {
        "original_width": _INT,
        "original_height": _INT,
        "image_rotation": _NUM,
        "from_name": _STR,
        "to_name": _STR,
        "type": {"type": "string", "enum": ["rectanglelabels"]},
        "value": {
            "type": "object",
            "required": ["x", "y", "width", "height", "rectanglelabels"],
            "properties": {
                "x": _NUM,
                "y": _NUM,
                "width": _NUM,
                "height": _NUM,
                "rotation": _NUM,
                "rectanglelabels": {"type": "array", "items": _STR, "minItems": 1},
            },
        },
    },
}
_XML_SCHEMA: dict[str, Any] = {"type": "string", "maxLength": MAX_LABEL_CONFIG_CHARS}
_PREDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tasks", "label_config"],
    "properties": {
        "tasks": {"type": "array", "minItems": 1, "items": _TASK_SCHEMA},
        "project": _STR,
        "label_config": _XML_SCHEMA,
        "params": {
            "type": "object",
            "properties": {
                "login": {"type": ["string", "null"]},
                "password": {"type": ["string", "null"]},
                "context": {
                    "type": ["object", "null"],
                    "properties": {"result": {"type": "array", "items": _RECTANGLE_SCHEMA}},
                },
            },
        },
    },
}
_SETUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "project": _STR,
        "schema": _XML_SCHEMA,
        "hostname": _STR,
        "access_token": {"type": ["string", "null"]},
        "extra_params": {"type": ["object", "null"]},
    },
}
_WEBHOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": _STR,
        "tasks": {"type": "array", "items": _TASK_SCHEMA},
        "project": {"type": "object", "properties": {"label_config": _XML_SCHEMA}},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        },
        "security": [{"basic": []}],
    }


def _error(description: str) -> dict[str, Any]:
    schema = {"type": "object", "required": ["error"], "properties": {"error": _STR}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("missing or wrong HTTP Basic credentials"),
    408: _error("the body did not arrive within request_timeout_s"),
    413: _error("body larger than max_body_bytes"),
    422: _error("the request is malformed or asks for something impossible"),
}
_PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    502: _error("Label Studio failed to serve the task's image"),
    503: _error("too many predictions running and queued; retry after Retry-After seconds"),
    504: _error("the prediction took longer than request_timeout_s"),
}


def create_app(config: BackendConfig, predictor: Any | None = None) -> _BodyLimit:
    """Build the FastAPI app; the predictor is loaded here, once, unless one is given.

    Args:
        config: validated server settings.
        predictor: an already-built ``BoxPredictor`` (tests and benchmarks share one);
            None builds ``config.predictor`` on ``config.device``.
    """
    config.validate()
    if predictor is None:
        predictor = _load_predictor(config)
    fetcher = ImageFetcher(
        label_studio_url=config.label_studio_url,
        token=config.label_studio_token,
        local_files_root=config.local_files_root,
        allowed_roots=list(config.allowed_roots),
        max_pixels=config.max_image_pixels,
    )
    draft = None
    if config.draft_model is not None:
        from ml_backend.draft import DraftModel

        draft = DraftModel(config.draft_model, device=config.device)
    engine = _Engine(predictor, fetcher, config.max_inflight, config.max_queue, draft)
    app = FastAPI(
        title="medcrowd ML backend",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.engine = engine
    app.state.config = config

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description="Label Studio ML-backend contract (DESIGN.md); every route but "
                "/health needs HTTP Basic auth.",
                routes=app.routes,
            )
            components = schema.setdefault("components", {})
            components["securitySchemes"] = {"basic": {"type": "http", "scheme": "basic"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        # The same path the router matches on; anything else, unknown paths included, is
        # refused before routing reveals whether it exists.
        if config.basic_auth is not None and request.scope.get("path") != "/health":
            if not _check_basic_auth(request, config.basic_auth):
                return JSONResponse(
                    {"error": "authentication required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="medcrowd"'},
                )
        return await call_next(request)

    @app.exception_handler(InvalidInput)
    async def invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        message = str(exc)
        if len(message) > _MAX_ERROR_CHARS:
            message = message[: _MAX_ERROR_CHARS - 3] + "..."
        log.info("rejected request: %s", message)
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(UpstreamError)
    async def upstream(_: Request, exc: UpstreamError) -> JSONResponse:
        log.warning("upstream failure: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=502)

    @app.exception_handler(_RequestTimeout)
    async def body_timeout(_: Request, exc: _RequestTimeout) -> JSONResponse:
        log.info("slow client: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=408)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(_: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("client disconnected while sending its body")
        return JSONResponse({"error": "client disconnected"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"error": "internal error; see the backend log"}, status_code=500)

    @app.head("/health", include_in_schema=False)  # for load balancers' health checks
    @app.get("/health")
    async def health() -> dict[str, Any]:
        running, waiting = engine.queue.load
        return {
            "status": "UP",
            "model_class": "medcrowd." + config.predictor,
            "model_version": engine.model_version,
            "worker_pid": os.getpid(),
            "inflight": running,
            "queued": waiting,
        }

    @app.post("/setup", openapi_extra=_body(_SETUP_SCHEMA), responses=_ERRORS)
    async def setup(request: Request) -> dict[str, Any]:
        body = await _json_body(request, config.request_timeout_s)
        schema = body.get("schema")
        if schema is not None:
            _label_config(schema, "schema")
        return {"model_version": engine.model_version}

    @app.post("/predict", openapi_extra=_body(_PREDICT_SCHEMA), responses=_PREDICT_ERRORS)
    async def predict(request: Request) -> Any:
        body = await _json_body(request, config.request_timeout_s)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise InvalidInput("tasks must be a non-empty list")
        if "label_config" not in body:
            raise InvalidInput("label_config (the project's XML) is required")
        xml = _label_config(body["label_config"], "label_config")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidInput("params must be an object")
        context = params.get("context")
        cancelled = threading.Event()
        # Model work is blocking; it runs on the queue's threads so /health stays responsive.
        job = engine.queue.try_submit(engine.predict_tasks, tasks, xml, context, cancelled)
        if job is None:
            running, waiting = engine.queue.load
            log.warning("busy: %d running, %d queued; refusing a prediction", running, waiting)
            return JSONResponse(
                {
                    "error": f"backend busy ({running} predictions running, {waiting} queued); "
                    "retry later"
                },
                status_code=503,
                headers={"Retry-After": str(engine.queue.retry_after_s())},
            )
        try:
            results = await asyncio.wait_for(
                asyncio.wrap_future(job), timeout=config.request_timeout_s
            )
        except asyncio.TimeoutError:
            cancelled.set()  # a job still waiting was cancelled; a running one stops early
            engine.queue.timed_out += 1
            log.warning("prediction timed out after %g s", config.request_timeout_s)
            return JSONResponse(
                {
                    "error": f"prediction did not finish within {config.request_timeout_s:g} s; "
                    "the backend is overloaded or the image host is slow"
                },
                status_code=504,
            )
        return {"results": results, "model_version": engine.model_version}

    @app.post("/webhook", openapi_extra=_body(_WEBHOOK_SCHEMA), responses=_ERRORS)
    async def webhook(request: Request) -> dict[str, Any]:
        body = await _json_body(request, config.request_timeout_s)
        action = body.get("action")
        queued = 0
        if action == "TASKS_CREATED" and config.warm_on_import:
            tasks = body.get("tasks") or []
            image_key = None
            project = body.get("project")
            if isinstance(project, dict) and isinstance(project.get("label_config"), str):
                try:
                    image_key = parse_label_config(
                        _label_config(project["label_config"], "project.label_config")
                    ).image_key
                except InvalidInput:
                    image_key = None
            if isinstance(tasks, list):
                queued = engine.warm_tasks(tasks, image_key)
        return {"status": "ok", "action": action if isinstance(action, str) else None,
                "queued": queued}  # fmt: skip

    # The body limit sits outermost, before auth and routing see a byte.
    return _BodyLimit(app, config.max_body_bytes)


def serve(config: BackendConfig, log_level: str = "info") -> None:
    """Serve until interrupted (``medcrowd backend serve``).

    One worker loads the model here and serves with uvicorn; more run under gunicorn, where
    this process never imports torch and each worker loads its own model after the fork.
    """
    config.validate()
    if config.workers > 1:
        try:
            from ml_backend.workers import serve_workers
        except ImportError as exc:
            raise RuntimeError(
                f"--workers {config.workers} needs gunicorn ({exc}); "
                "install it with: pip install 'medcrowd[scale]'"
            ) from None
        serve_workers(config, log_level=log_level)
        return
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level)
