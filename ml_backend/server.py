"""The Label Studio ML-backend HTTP server (FastAPI), speaking the contract in DESIGN.md.

Endpoints, as Label Studio 1.23.2 calls them:

* ``GET /health`` → ``{"status": "UP", "model_class": …, "model_version": …}``
* ``POST /setup`` → ``{"model_version": …}`` (the model is loaded at start, never here:
  Label Studio gives /setup 3 s)
* ``POST /predict`` → ``{"results": [{"result": [brush], "score": s, "model_version": v}]}``,
  one entry per task in order. An interactive call carries the volunteer's rectangle in
  ``params.context``; the answer is a ``brushlabels`` mask with that label. A batch call
  with no rectangle gets an empty list for the task (Label Studio then stores no
  prediction, rather than an empty one that would show as a blank tab in the UI).
* ``POST /webhook`` → on ``TASKS_CREATED`` the embeddings of the new tasks' images are
  computed in a background thread, so a volunteer's first box is already warm.

Every route but ``/health`` needs HTTP Basic auth (Label Studio's ``auth_method=BASIC``)
unless the server is bound to loopback with no credentials configured. Client mistakes
become a 4xx JSON ``{"error": message}``; unexpected failures a 500 whose body says only to
read the log, where the traceback goes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_backend.errors import InvalidInput, UpstreamError
from ml_backend.images import ImageFetcher
from ml_backend.labeling import box_prompt_from_context, brush_result, parse_label_config

__all__ = ["BackendConfig", "create_app", "serve"]

log = logging.getLogger("ml_backend.server")


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
        cache_dir: on-disk embedding cache and exported ONNX models.
        cache_bytes: in-memory embedding cache bound.
        max_body_bytes: largest request body accepted (Label Studio's interactive calls
            embed the task with its annotations; 32 MiB is generous).
        max_image_pixels: largest image decoded.
        warm_on_import: precompute embeddings on ``TASKS_CREATED`` webhooks.
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
    cache_dir: Path | None = None
    cache_bytes: int = 512 * 1024 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 8192 * 8192
    warm_on_import: bool = True

    def validate(self) -> None:
        """Refuse settings that would expose an unauthenticated backend."""
        if self.basic_auth is None and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without authentication: set "
                "--basic-auth-user/--basic-auth-pass (or bind to 127.0.0.1)"
            )
        if self.basic_auth is not None and (not self.basic_auth[0] or not self.basic_auth[1]):
            raise ValueError("basic auth needs both a user and a password")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port}")


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


class _Engine:
    """The predictor behind a lock, plus the background warmer.

    Label Studio's ML API builds a new model object per request; here the heavy model lives
    once per process and requests stay thin.
    """

    def __init__(self, predictor: Any, fetcher: ImageFetcher) -> None:
        self.predictor = predictor
        self.fetcher = fetcher
        self.lock = threading.Lock()
        self.warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm")
        self.warmed = 0

    @property
    def model_version(self) -> str:
        return str(getattr(self.predictor, "model_id", type(self.predictor).__name__))

    def predict_task(
        self, task: dict[str, Any], xml: str, context: Any
    ) -> dict[str, Any] | list[Any]:
        if not isinstance(task, dict):
            raise InvalidInput("each task must be an object")
        config = parse_label_config(xml)
        if context is not None and not isinstance(context, dict):
            raise InvalidInput("params.context must be an object")
        if not context or not context.get("result"):
            return []  # no box drawn (batch call): no prediction, not an empty one
        data = task.get("data")
        if not isinstance(data, dict) or config.image_key not in data:
            raise InvalidInput(f"task has no image under data.{config.image_key}")
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

    def warm_tasks(self, tasks: list[Any], image_key: str | None) -> int:
        """Queue embedding precomputation for the tasks' images; returns how many queued."""
        queued = 0
        for task in tasks:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict):
                continue
            keys = [image_key] if image_key else list(data)
            url = next((data[k] for k in keys if isinstance(data.get(k), str)), None)
            if url is None:
                continue
            self.warmer.submit(self._warm_one, url)
            queued += 1
        return queued

    def _warm_one(self, url: str) -> None:
        try:
            image = self.fetcher.fetch(url)
            warm = getattr(self.predictor, "warm", None)
            if warm is not None and warm(image):
                self.warmed += 1
        except Exception:  # a bad task must not kill the warmer; the log says which
            log.warning("could not precompute the embedding for %s", url, exc_info=True)


def _check_basic_auth(request: Request, expected: tuple[str, str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    ok_user = secrets.compare_digest(user.encode(), expected[0].encode())
    ok_pass = secrets.compare_digest(password.encode(), expected[1].encode())
    return ok_user and ok_pass


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        raise InvalidInput("request body is empty; expected JSON")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def create_app(config: BackendConfig, predictor: Any | None = None) -> _BodyLimit:
    """Build the FastAPI app; the predictor is loaded here, once, unless one is given.

    Args:
        config: validated server settings.
        predictor: an already-built ``BoxPredictor`` (tests and benchmarks share one);
            None builds ``config.predictor`` on ``config.device``.
    """
    config.validate()
    if predictor is None:
        from ml_backend.cache import EmbeddingCache
        from ml_backend.predictors import get_predictor

        cache_dir = config.cache_dir
        predictor = get_predictor(
            config.predictor,
            device=config.device,
            checkpoint=config.checkpoint,
            cache=EmbeddingCache(
                max_bytes=config.cache_bytes,
                directory=cache_dir / "embeddings" if cache_dir else None,
            ),
            cache_dir=cache_dir,
        )
    fetcher = ImageFetcher(
        label_studio_url=config.label_studio_url,
        token=config.label_studio_token,
        local_files_root=config.local_files_root,
        allowed_roots=list(config.allowed_roots),
        max_pixels=config.max_image_pixels,
    )
    engine = _Engine(predictor, fetcher)
    app = FastAPI(title="medcrowd ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if config.basic_auth is not None and request.url.path != "/health":
            if not _check_basic_auth(request, config.basic_auth):
                return JSONResponse(
                    {"error": "authentication required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="medcrowd"'},
                )
        return await call_next(request)

    @app.exception_handler(InvalidInput)
    async def invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        log.info("rejected request: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(UpstreamError)
    async def upstream(_: Request, exc: UpstreamError) -> JSONResponse:
        log.warning("upstream failure: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=502)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"error": "internal error; see the backend log"}, status_code=500)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "UP",
            "model_class": "medcrowd." + config.predictor,
            "model_version": engine.model_version,
        }

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        schema = body.get("schema")
        if schema is not None:
            if not isinstance(schema, str):
                raise InvalidInput("schema must be the label config XML string")
            parse_label_config(schema)
        return {"model_version": engine.model_version}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise InvalidInput("tasks must be a non-empty list")
        xml = body.get("label_config")
        if not isinstance(xml, str):
            raise InvalidInput("label_config (the project's XML) is required")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidInput("params must be an object")
        context = params.get("context")
        # Model work is blocking; run it off the event loop so /health stays responsive.
        from starlette.concurrency import run_in_threadpool

        results = [
            await run_in_threadpool(engine.predict_task, task, xml, context) for task in tasks
        ]
        return {"results": results, "model_version": engine.model_version}

    @app.post("/webhook")
    async def webhook(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        action = body.get("action")
        queued = 0
        if action == "TASKS_CREATED" and config.warm_on_import:
            tasks = body.get("tasks") or []
            image_key = None
            project = body.get("project")
            if isinstance(project, dict) and isinstance(project.get("label_config"), str):
                try:
                    image_key = parse_label_config(project["label_config"]).image_key
                except InvalidInput:
                    image_key = None
            if isinstance(tasks, list):
                queued = engine.warm_tasks(tasks, image_key)
        return {"status": "ok", "action": action, "queued": queued}

    # The body limit sits outermost, before auth and routing see a byte.
    return _BodyLimit(app, config.max_body_bytes)


def serve(config: BackendConfig, log_level: str = "info") -> None:
    """Load the model and serve until interrupted (``medcrowd backend serve``)."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level)
