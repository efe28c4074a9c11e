"""Several backend processes behind one port: gunicorn with uvicorn workers, one model each.

``medcrowd backend serve --workers N`` (N > 1) calls :func:`serve_workers`. This process
becomes the gunicorn master: it binds the port, forks N workers and starts a fresh one when a
worker dies. The master never imports torch or touches CUDA and nothing is preloaded, so every
worker builds its own model *after* the fork (forking a process that has initialised CUDA
breaks CUDA in the child). Workers share ``cache_dir``: the embedding cache and the ONNX
exports are written to a temp file and renamed into place, and models are loaded one worker
at a time under a file lock (:func:`ml_backend.server.create_app`), so the first worker
exports and the others reuse its verified files.

A container or a process manager can run the same thing with gunicorn's own command line;
the configuration then comes from the environment (secrets never on a command line)::

    MEDCROWD_BACKEND_USER=labelstudio MEDCROWD_BACKEND_PASSWORD=... \\
    MEDCROWD_LABEL_STUDIO_URL=http://label-studio:8080 MEDCROWD_LABEL_STUDIO_TOKEN=... \\
    MEDCROWD_BACKEND_CACHE_DIR=/cache \\
    gunicorn --workers 4 --worker-class ml_backend.workers.UvicornWorker \\
        --bind 0.0.0.0:9090 'ml_backend.workers:app_from_env()'

See :func:`config_from_env` for every variable.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer

from ml_backend.server import BackendConfig, create_app

with warnings.catch_warnings():
    # uvicorn marks its gunicorn worker deprecated in favour of the separate ``uvicorn-worker``
    # package; the class is the same and still shipped, so medcrowd keeps one dependency less.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker as _UvicornWorker

__all__ = ["UvicornWorker", "app_from_env", "config_from_env", "serve_workers"]

ENV_PREFIX = "MEDCROWD_BACKEND_"
BOOT_TIMEOUT_S = 900.0
"""How long a worker may take to load its model (a cold ONNX export is ~20 s on 2 cores,
SAM ViT-H on a CPU minutes) before the master may kill it as hung."""


class UvicornWorker(_UvicornWorker):
    """uvicorn's gunicorn worker with medcrowd's settings (asyncio loop, no lifespan).

    In the forked worker, before the app (and the model) loads: the CPU cores are shared
    between the workers' torch thread pools, and a heartbeat keeps the master from taking
    a slow model load for a hung worker.
    """

    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "lifespan": "off"}  # noqa: RUF012

    def init_process(self) -> None:
        _limit_torch_threads(int(self.cfg.workers))
        _heartbeat_while_booting(self)
        super().init_process()


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{ENV_PREFIX}{name} must be finite, got {raw!r}")
    return value


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_PREFIX}{name} must be true or false, got {raw!r}")


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(ENV_PREFIX + name)
    return Path(raw) if raw else None


def config_from_env(env: Mapping[str, str] | None = None) -> BackendConfig:
    """Build a :class:`BackendConfig` from environment variables (for gunicorn's CLI).

    Variables (all optional; defaults as in :class:`BackendConfig`):
    ``MEDCROWD_LABEL_STUDIO_URL``, ``MEDCROWD_LABEL_STUDIO_TOKEN``,
    ``MEDCROWD_BACKEND_USER``, ``MEDCROWD_BACKEND_PASSWORD`` (the same names
    ``medcrowd backend serve`` reads), and ``MEDCROWD_BACKEND_`` + ``HOST`` (the bind address,
    only to decide whether auth is mandatory: anything but loopback needs it; default
    ``0.0.0.0``), ``PREDICTOR``, ``DEVICE``, ``CHECKPOINT``, ``DRAFT_MODEL``, ``CACHE_DIR``,
    ``LOCAL_FILES_ROOT``, ``ALLOWED_ROOTS`` (``os.pathsep``-separated), ``CACHE_BYTES``,
    ``MAX_BODY_BYTES``, ``MAX_IMAGE_PIXELS``, ``WARM_ON_IMPORT``, ``MAX_INFLIGHT``,
    ``MAX_QUEUE``, ``REQUEST_TIMEOUT_S``.

    Raises:
        ValueError: a malformed value, or settings :meth:`BackendConfig.validate` refuses.
    """
    env = os.environ if env is None else env
    defaults = BackendConfig()
    user = env.get("MEDCROWD_BACKEND_USER") or ""
    password = env.get("MEDCROWD_BACKEND_PASSWORD") or ""
    roots = env.get(ENV_PREFIX + "ALLOWED_ROOTS") or ""
    config = BackendConfig(
        host=env.get(ENV_PREFIX + "HOST") or "0.0.0.0",  # noqa: S104 - auth is then mandatory
        basic_auth=(user, password) if user or password else None,
        label_studio_url=env.get("MEDCROWD_LABEL_STUDIO_URL") or None,
        label_studio_token=env.get("MEDCROWD_LABEL_STUDIO_TOKEN") or None,
        local_files_root=_env_path(env, "LOCAL_FILES_ROOT"),
        allowed_roots=[Path(r) for r in roots.split(os.pathsep) if r],
        predictor=env.get(ENV_PREFIX + "PREDICTOR") or defaults.predictor,
        device=env.get(ENV_PREFIX + "DEVICE") or defaults.device,
        checkpoint=_env_path(env, "CHECKPOINT"),
        draft_model=_env_path(env, "DRAFT_MODEL"),
        cache_dir=_env_path(env, "CACHE_DIR"),
        cache_bytes=_env_int(env, "CACHE_BYTES", defaults.cache_bytes),
        max_body_bytes=_env_int(env, "MAX_BODY_BYTES", defaults.max_body_bytes),
        max_image_pixels=_env_int(env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels),
        warm_on_import=_env_bool(env, "WARM_ON_IMPORT", defaults.warm_on_import),
        max_inflight=_env_int(env, "MAX_INFLIGHT", defaults.max_inflight),
        max_queue=_env_int(env, "MAX_QUEUE", defaults.max_queue),
        request_timeout_s=_env_float(env, "REQUEST_TIMEOUT_S", defaults.request_timeout_s),
    )
    config.validate()
    return config


def app_from_env() -> Any:
    """The ASGI app for one worker, configured from the environment; loads the model.

    For ``gunicorn ... 'ml_backend.workers:app_from_env()'`` without ``--preload``: gunicorn
    calls it in each worker after the fork.
    """
    return create_app(config_from_env())


def _limit_torch_threads(workers: int) -> None:
    """Share the CPU cores between the workers instead of each worker using all of them."""
    import torch  # in the worker, after the fork

    per_worker = max(1, (os.cpu_count() or 1) // workers)
    if torch.get_num_threads() > per_worker:
        torch.set_num_threads(per_worker)


def _heartbeat_while_booting(worker: Any) -> None:
    """Tell the master a booting worker is alive while its model loads.

    gunicorn kills a worker that has not checked in for ``timeout`` seconds, and the model
    load happens before the worker's own check-ins start. (gunicorn 27.0 starts that clock at
    the first check-in, so a boot is never timed there; versions that start it at the fork
    would kill every worker whose model takes longer than ``timeout`` to load.) The heartbeat
    stops at boot, on exit, or after :data:`BOOT_TIMEOUT_S`, so a load that hangs is still
    killed.
    """

    # worker.timeout is half of gunicorn's --timeout; beat well inside it.
    interval = max(0.1, min(1.0, float(getattr(worker, "timeout", 2.0)) / 2))

    def beat() -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not getattr(worker, "booted", False) and worker.alive:
            if time.monotonic() > deadline:
                return
            worker.notify()
            time.sleep(interval)

    threading.Thread(target=beat, name="boot-heartbeat", daemon=True).start()


class _Gunicorn(BaseApplication):
    """gunicorn driven from Python: options from :class:`BackendConfig`, app built per worker."""

    def __init__(self, config: BackendConfig, options: dict[str, Any]) -> None:
        self.config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                self.cfg.set(key, value)

    def load(self) -> Any:
        # Runs in each worker after the fork (preload_app is off): the model loads here.
        return create_app(self.config)


def gunicorn_options(config: BackendConfig, log_level: str = "info") -> dict[str, Any]:
    """The gunicorn settings :func:`serve_workers` uses."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return {
        "bind": [f"{host}:{config.port}"],
        "workers": config.workers,
        "worker_class": "ml_backend.workers.UvicornWorker",
        "preload_app": False,  # never load the model (or CUDA) in the master
        "timeout": 30,  # a worker whose event loop stalls this long is replaced
        "graceful_timeout": max(30, math.ceil(config.request_timeout_s)),
        "keepalive": 5,
        "loglevel": log_level,
        "errorlog": "-",
        "accesslog": None,
        "proc_name": "medcrowd-backend",
        "control_socket_disable": True,  # else gunicorn 25+ makes a socket under $HOME
    }


def serve_workers(config: BackendConfig, log_level: str = "info") -> None:
    """Run ``config.workers`` backend processes under a gunicorn master until stopped.

    Raises:
        ValueError: settings :meth:`BackendConfig.validate` refuses.
        RuntimeError: gunicorn stopped with an error (a worker failed to boot, e.g. the
            model could not be loaded; the log above says why).
    """
    config.validate()
    master = os.getpid()
    try:
        _Gunicorn(config, gunicorn_options(config, log_level)).run()
    except (SystemExit, HaltServer) as exc:
        # Workers are forked inside run(): their exit (status 3 = "failed to boot", which
        # makes the master stop instead of respawning) must pass through untouched.
        if os.getpid() != master:
            raise
        # gunicorn raises HaltServer itself when a second worker fails while it halts.
        code = exc.exit_status if isinstance(exc, HaltServer) else exc.code
        reason = f" ({exc.reason})" if isinstance(exc, HaltServer) else ""
        if code not in (None, 0):
            raise RuntimeError(
                f"the backend workers stopped with exit status {code}{reason}; the log above "
                "says why (a worker that cannot load its model stops them all)"
            ) from None
