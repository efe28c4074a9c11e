"""The Label Studio ML-backend HTTP server (FastAPI): routes, auth, limits, error mapping.

Endpoints, as Label Studio 1.23.2 calls them (the contract in DESIGN.md; the JSON schemas in
:mod:`ml_backend.contract`):

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
  computed in a background thread, so a volunteer's first box is already warm. On
  ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` for a task imported from a volume
  (``data.medcrowd`` from ``medcrowd import``), the submitted brush mask is propagated to
  the neighbouring slices in the background and stored on their tasks as ``propagated-…``
  predictions (:meth:`~ml_backend.engine.Engine.propagate_annotation`).

Every route but ``/health`` needs HTTP Basic auth (Label Studio's ``auth_method=BASIC``)
unless the server is bound to loopback with no credentials configured; that includes
``/openapi.json``, the machine-readable form of the contract. Client mistakes become a 4xx
JSON ``{"error": message}``; unexpected failures a 500 whose body says only to read the log,
where the traceback goes.

The work behind ``/predict`` — the bounded queue (503 + ``Retry-After`` when full, 504 past
``request_timeout_s``) and box → mask — is :mod:`ml_backend.engine`; this module only turns
HTTP into engine calls and answers back. A body slower than ``request_timeout_s`` is 408.
Running the app (uvicorn, or gunicorn with N workers) is :mod:`ml_backend.serve`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import secrets
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_backend.config import BackendConfig
from ml_backend.contract import (
    ERRORS,
    MAX_LABEL_CONFIG_CHARS,
    PREDICT_ERRORS,
    PREDICT_SCHEMA,
    SETUP_SCHEMA,
    TITLE,
    VERSION,
    WEBHOOK_SCHEMA,
    json_body,
    openapi_document,
)
from ml_backend.engine import build_engine
from ml_backend.errors import InvalidInput, UpstreamError
from ml_backend.labeling import parse_label_config

__all__ = ["create_app"]

log = logging.getLogger("ml_backend.server")

_MAX_ERROR_CHARS = 500


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


def create_app(config: BackendConfig, predictor: Any | None = None) -> _BodyLimit:
    """Build the ASGI app; the predictor is loaded here, once, unless one is given.

    Args:
        config: server settings (validated again here).
        predictor: an already-built ``BoxPredictor`` (tests and benchmarks share one);
            None builds ``config.predictor`` on ``config.device``.

    Returns:
        The app wrapped in the body-size limit; ``.state.engine`` is its
        :class:`~ml_backend.engine.Engine`, ``.state.config`` the config.

    Raises:
        ValueError: settings :meth:`BackendConfig.validate` refuses, an unknown predictor.
        ModelUnavailable: weights or draft model missing or unusable, device unavailable.
    """
    config.validate()
    engine = build_engine(config, predictor)
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.engine = engine
    app.state.config = config

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app.routes)
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

    @app.post("/setup", openapi_extra=json_body(SETUP_SCHEMA), responses=ERRORS)
    async def setup(request: Request) -> dict[str, Any]:
        body = await _json_body(request, config.request_timeout_s)
        schema = body.get("schema")
        if schema is not None:
            _label_config(schema, "schema")
        return {"model_version": engine.model_version}

    @app.post("/predict", openapi_extra=json_body(PREDICT_SCHEMA), responses=PREDICT_ERRORS)
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

    @app.post("/webhook", openapi_extra=json_body(WEBHOOK_SCHEMA), responses=ERRORS)
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
        elif action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            # a submitted slice of an imported volume: propose masks on its neighbours
            queued = int(engine.propagate_submitted(body))
        return {"status": "ok", "action": action if isinstance(action, str) else None,
                "queued": queued}  # fmt: skip

    # The body limit sits outermost, before auth and routing see a byte.
    return _BodyLimit(app, config.max_body_bytes)
