"""Label Studio + the ML backend on loopback, started once for a benchmark.

Shared by ``load_volunteers.py`` and ``profile_box.py`` (both drive the two real servers over
HTTP): the command-line options that choose how Label Studio and the backend run
(:func:`add_stack_arguments`), the start-up in a work folder (:func:`running_stack`: Label
Studio embedded, then ``medcrowd backend serve`` as a child process with its own cache, the
exported ONNX models optionally kept in ``--model-cache``), a project with the backend
connected before the import so that its webhook pre-computes every embedding
(:func:`import_tasks`), and the shared-data check.

    with running_stack(args, work, step) as stack:
        pid = new_project(stack, "profile", overlap=50)
        ml_id = import_tasks(stack, pid, files, prewarm=True, step=step)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from medcrowd.embedded import BackendProcess, LabelStudioProcess, free_port  # noqa: E402
from medcrowd.settings import config_path  # noqa: E402
from medcrowd.studio import Studio  # noqa: E402

__all__ = [
    "BenchBackend",
    "Stack",
    "add_stack_arguments",
    "credentials",
    "import_tasks",
    "new_project",
    "running_stack",
    "shared_data",
    "stepper",
    "wait_for_embeddings",
]


@dataclass
class BenchBackend(BackendProcess):
    """:class:`BackendProcess` with extra ``medcrowd backend serve`` arguments."""

    extra_args: list[str] = field(default_factory=list)

    def _launch(self, cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> None:
        super()._launch([*cmd, *self.extra_args], env, log, timeout_s)


@dataclass
class Stack:
    """The two running servers and the admin's client."""

    ls: LabelStudioProcess
    backend: BenchBackend
    admin: Studio

    @property
    def cache_dir(self) -> Path:
        """The backend's cache (``embeddings/`` and ``onnx/``)."""
        return Path(self.backend.cache_dir)


def shared_data() -> Path:
    """``MEDCROWD_SHARED_DATA`` (default ``../shared/data``); exits when ``sammed2d_demo`` is
    not there."""
    data = Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (data / "sammed2d_demo").is_dir():
        raise SystemExit(f"error: sammed2d_demo not found under {data}; set MEDCROWD_SHARED_DATA")
    return data


def stepper() -> Callable[[str], None]:
    """A progress printer: ``[  12.3 s] message`` on stderr, seconds since it was made."""
    start = time.monotonic()

    def step(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    return step


def credentials(data_dir: Path) -> dict[str, str]:
    """The admin of a (possibly reused) Label Studio data directory, kept there (0600)."""
    path = data_dir / "bench-credentials.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = {
        "email": "admin@example.com",
        "password": secrets.token_urlsafe(12),
        "token": secrets.token_hex(20),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    return creds


def add_stack_arguments(ap: argparse.ArgumentParser) -> None:
    """The options :func:`running_stack` reads: how Label Studio and the backend run."""
    ap.add_argument(
        "--ls-server",
        default="dev",
        choices=["dev", "gunicorn"],
        help="dev: label-studio start; gunicorn: its WSGI app under gunicorn",
    )
    ap.add_argument(
        "--ls-workers", type=int, default=1, help="gunicorn processes (>1 needs PostgreSQL)"
    )
    ap.add_argument("--ls-threads", type=int, default=8, help="gunicorn threads per process")
    ap.add_argument(
        "--postgres",
        action="store_true",
        help="Label Studio on a private, throwaway PostgreSQL cluster (needs initdb/pg_ctl; "
        "tests.helpers.postgres_cluster) instead of SQLite",
    )
    ap.add_argument("--no-wal", action="store_true", help="leave SQLite in rollback-journal mode")
    ap.add_argument(
        "--ls-data-dir",
        default=None,
        help="keep Label Studio's data here between runs (restarts skip migrations)",
    )
    ap.add_argument(
        "--backend-workers",
        type=int,
        default=1,
        help="backend processes (passed as --workers when > 1)",
    )
    ap.add_argument(
        "--backend-threads",
        type=int,
        default=None,
        help="the backend's --threads (default: its own)",
    )
    ap.add_argument(
        "--backend-extra",
        default="",
        help="more `medcrowd backend serve` options, e.g. '--max-queue 4'",
    )
    ap.add_argument("--predictor", default="litemedsam", help="the backend's --predictor")
    ap.add_argument(
        "--model-cache",
        default=None,
        help="folder for the backend's exported ONNX models, reused between runs",
    )


@contextmanager
def running_stack(
    args: argparse.Namespace, work: Path, step: Callable[[str], None]
) -> Iterator[Stack]:
    """Start Label Studio, then the backend connected to it, as ``args`` says
    (:func:`add_stack_arguments`); both are stopped on exit.

    Args:
        args: the parsed options of :func:`add_stack_arguments`.
        work: the run's folder: Label Studio's data (unless ``--ls-data-dir``), the
            backend's cache and log.
        step: progress printer (:func:`stepper`).
    """
    with ExitStack() as cleanup:
        database = None
        if getattr(args, "postgres", False):
            from medcrowd.embedded import PostgresDatabase
            from tests.helpers import postgres_cluster

            step("starting a private PostgreSQL cluster")
            server = cleanup.enter_context(postgres_cluster())
            url = server.create_database("labelstudio", secrets.token_hex(12), "labelstudio")
            database = PostgresDatabase.from_url(url)
        with _stack(args, work, step, database) as stack:
            yield stack


@contextmanager
def _stack(
    args: argparse.Namespace, work: Path, step: Callable[[str], None], database: Any
) -> Iterator[Stack]:
    ls_dir = Path(args.ls_data_dir) if args.ls_data_dir else work / "label-studio"
    creds = credentials(ls_dir)
    ls_kwargs: dict[str, Any] = {}
    if args.ls_server != "dev" or args.no_wal:  # keeps the scripts runnable on older trees
        ls_kwargs = {"server": args.ls_server, "workers": args.ls_workers,
                     "threads": args.ls_threads, "sqlite_wal": not args.no_wal}  # fmt: skip
    if database is not None:
        ls_kwargs["database"] = database
    ls = LabelStudioProcess(
        data_dir=ls_dir,
        email=creds["email"],
        password=creds["password"],
        token=creds["token"],
        port=free_port(),
        **ls_kwargs,
    )
    backend: BenchBackend | None = None
    try:
        db = "PostgreSQL" if database is not None else "SQLite"
        step(f"starting Label Studio ({args.ls_server}, {args.ls_workers} worker(s), {db})")
        ls.start()
        cache_dir = work / "backend-cache"
        cache_dir.mkdir(parents=True)
        if args.model_cache:
            shared = Path(args.model_cache).expanduser().resolve() / "onnx"
            shared.mkdir(parents=True, exist_ok=True)
            (cache_dir / "onnx").symlink_to(shared, target_is_directory=True)
        extra = ["--workers", str(args.backend_workers)] if args.backend_workers > 1 else []
        if args.backend_threads is not None:
            extra += ["--threads", str(args.backend_threads)]
        extra += shlex.split(args.backend_extra)
        backend = BenchBackend(
            port=free_port(),
            label_studio_url=ls.url,
            token=ls.token,
            basic_auth=("labelstudio", secrets.token_urlsafe(16)),
            log_path=work / "backend.log",
            cache_dir=cache_dir,
            predictor=args.predictor,
            extra_args=extra,
        )
        step(f"starting the backend ({args.backend_workers} worker(s))")
        backend.start(timeout_s=600)
        yield Stack(ls, backend, Studio(ls.url, ls.token, timeout_s=120))
    finally:
        if backend is not None:
            backend.stop()
        ls.stop()


def wait_for_embeddings(folder: Path, count: int, timeout_s: float) -> None:
    """Until ``folder`` holds ``count`` embedding files (``*.npz``); exits after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.glob("*.npz"))) >= count:
            return
        time.sleep(1.0)
    raise SystemExit(f"the backend pre-computed fewer than {count} embeddings in {timeout_s} s")


def new_project(stack: Stack, title: str, overlap: int) -> int:
    """A fresh project (``title`` + a random suffix) with medcrowd's labelling config."""
    return stack.admin.ensure_project(
        f"{title} {uuid.uuid4().hex[:8]}",
        config_path("labeling_box_brush.xml").read_text(),
        maximum_annotations=overlap,
    )


def import_tasks(
    stack: Stack,
    pid: int,
    files: list[tuple[str, bytes]],
    *,
    prewarm: bool,
    step: Callable[[str], None],
    timeout_s: float | None = None,
) -> int:
    """Import ``files`` into project ``pid`` and connect the backend; returns its ML id.

    With ``prewarm`` the backend is connected *before* the import, so its ``TASKS_CREATED``
    webhook pre-computes every embedding, and this returns once they are on disk (an image
    an earlier project imported is there already, under its content hash); without it the
    backend is connected after the import and computes each embedding on the first box.

    Args:
        timeout_s: how long to wait for the embeddings (default 30 s + 10 s per image);
            exits when they are not there by then.
    """
    admin, backend = stack.admin, stack.backend
    embeddings = stack.cache_dir / "embeddings"
    before = len(list(embeddings.glob("*.npz")))
    if prewarm:
        ml_id = admin.connect_backend(pid, backend.url, backend.basic_auth)
    step(f"importing {len(files)} images")
    imported = admin.import_images(pid, files)
    if imported.created != len(files):
        raise SystemExit(f"{imported.created} of {len(files)} tasks imported: {imported.failed}")
    if not prewarm:
        return admin.connect_backend(pid, backend.url, backend.basic_auth)
    step("waiting for the backend to pre-compute the embeddings (webhook)")
    wait = 30 + 10 * len(files) if timeout_s is None else timeout_s
    wait_for_embeddings(embeddings, max(before, len(files)), timeout_s=wait)
    return ml_id
