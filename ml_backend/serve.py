"""Running the backend: one uvicorn process, or a gunicorn master with N worker processes.

``medcrowd backend serve`` calls :func:`serve`. With ``workers == 1`` this process loads the
model and serves with uvicorn; with more, it becomes a gunicorn master
(:func:`ml_backend.workers.serve_workers`) that never imports torch, and every worker loads its
own model after the fork. Either way the port is checked first, so "address already in use"
is one clear error before a model spends seconds loading.
"""

from __future__ import annotations

import errno
import socket

from ml_backend.config import BackendConfig
from ml_backend.server import create_app

__all__ = ["check_port_free", "serve"]


def serve(config: BackendConfig, log_level: str = "info") -> None:
    """Serve until interrupted.

    Args:
        config: the settings; ``config.workers`` > 1 runs them under gunicorn.
        log_level: ``debug`` | ``info`` | ``warning`` for uvicorn/gunicorn.

    Raises:
        ValueError: settings :meth:`BackendConfig.validate` refuses, an unknown predictor.
        RuntimeError: the port cannot be bound, gunicorn is missing or its workers stopped;
            :class:`~ml_backend.errors.ModelUnavailable` (a ``RuntimeError``) when the
            weights, the draft model or the device cannot be used.
    """
    config.validate()
    check_port_free(config.host, config.port)
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

    from ml_backend.device import configure_threads

    configure_threads(config.threads, workers=1)
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level)


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, as the server is about to.

    ``SO_REUSEADDR`` is set as uvicorn and gunicorn set it, so a port in ``TIME_WAIT`` after
    a restart counts as free. A port taken between this check and the server's own bind
    still fails there (uvicorn/gunicorn then log why and exit non-zero).

    Raises:
        RuntimeError: the port is in use, not ours to take, or the host is not local.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "the port is already in use (another backend?); choose --port"
            elif exc.errno == errno.EACCES:
                reason = "permission denied (ports below 1024 need privileges); choose --port"
            else:
                reason = exc.strerror or str(exc)
            raise RuntimeError(f"cannot listen on {host}:{port}: {reason}") from None
