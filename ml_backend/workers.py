"""Several backend processes behind one port: gunicorn with uvicorn workers, one model each.

``medcrowd backend serve --workers N`` (N > 1) calls :func:`serve_workers` (through
:func:`ml_backend.serve.serve`). This process
becomes the gunicorn master: it binds the port, forks N workers and starts a fresh one when a
worker dies. The master never imports torch or touches CUDA and nothing is preloaded, so every
worker builds its own model *after* the fork (forking a process that has initialised CUDA
breaks CUDA in the child). Workers share ``cache_dir``: the embedding cache and the ONNX
exports are written to a temp file and renamed into place, and models are loaded one worker
at a time under a file lock (:func:`ml_backend.engine.load_predictor`), so the first worker
exports and the others reuse its verified files.

A container or a process manager can run the same thing with gunicorn's own command line;
the configuration then comes from the environment (secrets never on a command line)::

    MEDCROWD_BACKEND_USER=labelstudio MEDCROWD_BACKEND_PASSWORD=... \\
    MEDCROWD_LABEL_STUDIO_URL=http://label-studio:8080 MEDCROWD_LABEL_STUDIO_TOKEN=... \\
    MEDCROWD_BACKEND_CACHE_DIR=/cache \\
    gunicorn --workers 4 --worker-class ml_backend.workers.UvicornWorker \\
        --bind 0.0.0.0:9090 'ml_backend.workers:app_from_env()'

See :meth:`ml_backend.config.BackendConfig.from_env` for every variable.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import warnings
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer

from ml_backend.config import BackendConfig
from ml_backend.server import create_app

with warnings.catch_warnings():
    # uvicorn marks its gunicorn worker deprecated in favour of the separate ``uvicorn-worker``
    # package; the class is the same and still shipped, so medcrowd keeps one dependency less.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker as _UvicornWorker

__all__ = ["UvicornWorker", "app_from_env", "gunicorn_options", "serve_workers"]

log = logging.getLogger("ml_backend.workers")

THREADS_ENV = "MEDCROWD_BACKEND_THREADS"
"""How the master tells its forked workers ``--threads`` (the variable ``from_env`` reads)."""

WORKER_BOOT_ERROR = 3
"""gunicorn's exit status for a worker that failed to boot (the master then halts)."""
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
        _limit_threads(_threads_setting(), int(self.cfg.workers))
        _heartbeat_while_booting(self)
        super().init_process()


def app_from_env() -> Any:
    """The ASGI app for one worker, configured from the environment
    (:meth:`BackendConfig.from_env`); loads the model.

    For ``gunicorn ... 'ml_backend.workers:app_from_env()'`` without ``--preload``: gunicorn
    calls it in each worker after the fork.
    """
    return create_app(BackendConfig.from_env())


def _threads_setting() -> int:
    """``--threads`` of this backend (:class:`BackendConfig`), read in the forked worker.

    :func:`serve_workers` passes it through the environment, as gunicorn's own command line
    does (``MEDCROWD_BACKEND_THREADS``); unset or malformed: 0 (cores / workers; a malformed
    value has already been refused by :meth:`BackendConfig.from_env` in ``app_from_env``).
    """
    try:
        return max(0, int(os.environ.get(THREADS_ENV) or 0))
    except ValueError:
        return 0


def _limit_threads(threads: int, workers: int) -> None:
    """Share the CPU cores between the workers instead of each worker using all of them:
    ``threads`` per worker (0: cores / workers), PyTorch and ONNX Runtime, no spinning."""
    from ml_backend.device import configure_threads  # imports torch: in the worker, after fork

    configure_threads(threads, workers=workers)


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
        try:
            return create_app(self.config)
        except (ValueError, RuntimeError, OSError, ImportError) as exc:
            # An operator's mistake (no weights, unknown predictor, no CUDA): one log line,
            # not a traceback; status 3 makes the master stop instead of respawning.
            log.error("worker %d cannot start: %s", os.getpid(), exc)
            sys.exit(WORKER_BOOT_ERROR)


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
    os.environ[THREADS_ENV] = str(config.threads)  # read by each worker's init_process
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
