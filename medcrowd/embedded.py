"""The embedded deployment: Label Studio (SQLite or PostgreSQL) and the ML backend, as children.

``medcrowd up`` and the test suite both start Label Studio through ``LabelStudioProcess``,
so the recipe that is tested is the one users run. Label Studio is told to keep every file
under the given data directory (never the user's home), to listen on loopback only, to skip
its PyPI version check and analytics, and to accept the loopback ML backend (its SSRF guard
refuses loopback/private addresses by default; we switch that off for this instance only,
which is safe because the instance itself listens on loopback — a hosted deployment keeps the
guard on and allow-lists the backend, see docker/).

Its database is SQLite in the data directory unless a :class:`PostgresDatabase` is given
(``medcrowd up --database postgresql://…``); the database password then travels to Label
Studio in its environment only and is never printed. SQLite is switched to write-ahead
logging (WAL, a property of the database file), so readers no longer wait for a writer.

How Label Studio serves (``server=``): ``label-studio start`` runs Django's development
server, one process with a thread per request, and every request of every volunteer shares
one interpreter lock. ``server="gunicorn"`` runs what Label Studio's own deployment runs
(its ``deploy/`` folder: a WSGI server on ``core.wsgi``, uwsgi or gunicorn): first
``label-studio init`` (migrations, the admin and its token), then gunicorn with ``workers``
processes of ``threads`` threads on ``label_studio.core.wsgi`` (several processes only on
PostgreSQL: with SQLite they lock each other out). Static files are served by
Label Studio's own URL routes in both cases.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

__all__ = [
    "SERVERS",
    "BackendProcess",
    "LabelStudioProcess",
    "PostgresDatabase",
    "enable_wal",
    "free_port",
    "wait_http",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` dies (the ML backend's
    ``/health``; Label Studio is polled through :meth:`medcrowd.studio.Studio.wait_healthy`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was up\n{tail}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


_PG_SCHEMES = ("postgresql", "postgres")
_PG_FORM = "postgresql://user:password@host:port/dbname"


@dataclass(frozen=True)
class PostgresDatabase:
    """A PostgreSQL database for Label Studio, usually parsed from a URL.

    Attributes:
        name: database name. user: role Label Studio logs in as.
        password: that role's password ("" for trust/peer authentication); kept out of
            ``repr`` and of every message — use :meth:`redacted` to show the URL.
        host: host name or IP address, or an absolute directory holding the server's Unix
            socket (libpq's ``?host=/run/postgresql`` form).
        port: TCP port (also the socket file's suffix, ``.s.PGSQL.<port>``).
    """

    name: str
    user: str
    password: str = field(repr=False)
    host: str = "localhost"
    port: int = 5432

    @classmethod
    def from_url(cls, url: str) -> PostgresDatabase:
        """Parse ``postgresql://user:password@host:port/dbname`` (scheme ``postgres`` too).

        User and password may be percent-encoded (``p%40ss`` for ``p@ss``); the port
        defaults to 5432 and the host to ``localhost``. The only query parameter accepted
        is ``host=/socket/dir`` (Label Studio has no way to pass other libpq options).

        Raises:
            ValueError: another scheme, no user, no or a nested database name, a bad port,
                an unknown query parameter. Messages never contain the password.
        """
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _PG_SCHEMES:
            shown = f"scheme {scheme!r}" if scheme else "no scheme"
            raise ValueError(f"--database must be a {_PG_FORM} URL, got {shown}")
        # No message below quotes the URL: with an unescaped '/', '?', '#' or '@' in the
        # password, any part of it may hold a piece of the password.
        hint = f"want {_PG_FORM}, with '@:/?#%' in user or password percent-encoded"
        try:
            port = 5432 if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ValueError(f"--database: the port is not a number in 1..65535 ({hint})")
        if parts.fragment:
            raise ValueError(f"--database: a URL fragment ('#…') is not allowed ({hint})")
        query = parse_qs(parts.query, keep_blank_values=True)
        if set(query) - {"host"}:
            raise ValueError(
                f"--database: the only query parameter accepted is ?host=/socket/dir ({hint})"
            )
        host = unquote(parts.hostname or "")
        if "host" in query:
            (socket_dir,) = query["host"][-1:]
            if not socket_dir.startswith("/"):
                raise ValueError("--database: ?host= must be an absolute socket directory")
            host = socket_dir
        user = unquote(parts.username or "")
        if not user:
            raise ValueError(f"--database: the URL names no user ({hint})")
        name = unquote(parts.path.removeprefix("/"))
        if not name or "/" in name:
            raise ValueError(f"--database: the URL names no database, or a nested path ({hint})")
        return cls(
            name=name,
            user=user,
            password=unquote(parts.password or ""),
            host=host or "localhost",
            port=port,
        )

    def redacted(self) -> str:
        """The URL with the password replaced by ``***`` (safe to print and log)."""
        secret = ":***" if self.password else ""
        if self.host.startswith("/"):
            return f"postgresql://{self.user}{secret}@:{self.port}/{self.name}?host={self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{self.user}{secret}@{host}:{self.port}/{self.name}"

    def label_studio_environment(self) -> dict[str, str]:
        """Label Studio 1.23's settings for this database (``core/settings/base.py``)."""
        return {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": self.name,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
            "POSTGRE_HOST": self.host,
            "POSTGRE_PORT": str(self.port),
        }


def _stop(proc: subprocess.Popen[bytes] | None, grace_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class _ChildService:
    """Start a command in its own session with its output in a log; stop the whole group."""

    proc: subprocess.Popen[bytes] | None
    _log: IO[bytes] | None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _launch(self, cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout_s, log)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float, log: Path) -> None:
        """Until ``/health`` answers 200; fails early if the child dies."""
        wait_http(f"{self.url}/health", timeout_s, self.proc, log)

    def _exited(self, log: Path) -> None:
        """Raise if the child has exited (with the tail of its log)."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"process exited with {self.proc.returncode} before {self.url} was up\n{tail}"
            )

    def stop(self) -> None:
        _stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class LabelStudioProcess(_ChildService):
    """Label Studio on SQLite (or PostgreSQL), started with an admin user and API token.

    Args:
        data_dir: everything Label Studio writes goes below it (with PostgreSQL: uploads,
            exports, logs; the tables live in the database).
        email, password, token: the admin created on first start; ``token`` is a 40-hex
            legacy API token.
        port: listen port on 127.0.0.1.
        local_files_root: enables Label Studio local-file serving from this directory.
        database: PostgreSQL to use instead of SQLite in ``data_dir``; Label Studio runs its
            migrations there on first start.
        roles: run Label Studio with medcrowd's plugin (``medcrowd.lsplugin``): volunteers
            are held to their own work by an allow-list on the server (docs/security.md).
        server: ``"dev"`` — ``label-studio start`` (Django's development server, one
            process); ``"gunicorn"`` — ``label-studio init``, then gunicorn with ``workers``
            processes × ``threads`` threads (the production way, see the module docstring).
        workers, threads: gunicorn's processes and threads per process (``server="gunicorn"``);
            more than one process needs PostgreSQL (SQLite: ``ValueError``).
        sqlite_wal: switch a SQLite database to write-ahead logging before serving.
    """

    data_dir: Path
    email: str
    password: str
    token: str
    port: int = 8080
    local_files_root: Path | None = None
    database: PostgresDatabase | None = None
    roles: bool = False
    server: str = "dev"
    workers: int = 1
    threads: int = 8
    sqlite_wal: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            choices = " | ".join(SERVERS)
            raise ValueError(f"unknown Label Studio server {self.server!r}; use {choices}")
        if self.server == "gunicorn" and self.database is None and self.workers > 1:
            raise ValueError(
                "several Label Studio workers need PostgreSQL: on SQLite every write locks the "
                "whole database and Label Studio retries locked requests for minutes "
                "(docs/performance.md); use workers=1 or a PostgreSQL database"
            )
        if not (1 <= self.workers <= 64 and 1 <= self.threads <= 256):
            raise ValueError(
                f"Label Studio needs 1..64 workers and 1..256 threads, got {self.workers}, "
                f"{self.threads}"
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file (Label Studio's default name), None with PostgreSQL."""
        if self.database is not None:
            return None
        return self.data_dir / "label-studio" / "label_studio.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "label-studio.log"

    def _wait_ready(self, timeout_s: float, log: Path) -> None:
        from medcrowd.studio import Studio

        Studio(self.url, self.token).wait_healthy(timeout_s, check=lambda: self._exited(log))

    def environment(self) -> dict[str, str]:
        """The child's environment: ours plus Label Studio's settings (secrets included)."""
        env = dict(os.environ)
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir / "label-studio"),
                "LABEL_STUDIO_USERNAME": self.email,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "LATEST_VERSION_CHECK": "false",
                "COLLECT_ANALYTICS": "false",
            }
        )
        # Label Studio sends errors and 2 % of request traces to HumanSignal's Sentry unless
        # told otherwise (core/settings/label_studio.py), and Sentry's Django integration
        # wraps every request: a third of Label Studio's CPU on an interactive box call went
        # to its URL resolver (docs/performance.md). Off, unless the operator set a DSN.
        for name in ("SENTRY_DSN", "FRONTEND_SENTRY_DSN"):
            if not any(prefix + name in env for prefix in ("LABEL_STUDIO_", "HEARTEX_", "")):
                env[name] = ""
        if self.database is None:
            db = {"DJANGO_DB": "sqlite"}
        else:
            db = self.database.label_studio_environment()
        for key in [*db, "DATABASE_NAME"]:
            # Label Studio reads LABEL_STUDIO_<KEY> and HEARTEX_<KEY> before <KEY>: a stray
            # one in the caller's environment would silently pick another database.
            for prefix in ("LABEL_STUDIO_", "HEARTEX_", ""):
                env.pop(prefix + key, None)
        env.update(db)
        # Label Studio only defaults DJANGO_SETTINGS_MODULE, so ours (which extends its own
        # settings with the roles app and middleware) is taken when set; never inherit one.
        env.pop("DJANGO_SETTINGS_MODULE", None)
        if self.roles:
            env["DJANGO_SETTINGS_MODULE"] = "medcrowd.lsplugin.settings"
        elif self.server == "gunicorn":  # what `label-studio start` defaults it to
            env["DJANGO_SETTINGS_MODULE"] = "label_studio.core.settings.label_studio"
        if self.local_files_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.local_files_root)
        return env

    def start(self, timeout_s: float = 400.0) -> None:
        """Start and wait for ``/health`` (first start runs migrations: about a minute)."""
        exe = shutil.which("label-studio") or str(Path(sys.executable).parent / "label-studio")
        data = str(self.data_dir / "label-studio")
        env = self.environment()
        try:
            if self.server == "dev":
                if self.sqlite_wal:
                    enable_wal(self.sqlite_path)  # an existing database; a new one after start
                cmd = [exe, "start", "--no-browser", "--internal-host", "127.0.0.1",
                       "--port", str(self.port), "--data-dir", data]  # fmt: skip
                self._launch(cmd, env, self.log_path, timeout_s)
                if self.sqlite_wal:
                    enable_wal(self.sqlite_path)
                return
            started = time.monotonic()
            self._init(exe, data, env, timeout_s)
            if self.sqlite_wal:
                enable_wal(self.sqlite_path)
            env["LABEL_STUDIO_PORT"] = str(self.port)
            left = max(30.0, timeout_s - (time.monotonic() - started))
            self._launch(self._gunicorn_command(), env, self.log_path, left)
        except RuntimeError as exc:  # the message carries the log's tail: scrub the secret
            secret = self.database.password if self.database else ""
            if secret and secret in str(exc):
                raise RuntimeError(str(exc).replace(secret, "***")) from None
            raise

    def _init(self, exe: str, data: str, env: dict[str, str], timeout_s: float) -> None:
        """``label-studio init``: migrations, the admin and its token, then exit."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                done = subprocess.run(
                    [exe, "init", "--no-browser", "--quiet", "--data-dir", data],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=timeout_s, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"label-studio init did not finish within {timeout_s:.0f} s"
                ) from None
        if done.returncode != 0:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"label-studio init exited with {done.returncode}\n{tail}")

    def _gunicorn_command(self) -> list[str]:
        """gunicorn on Label Studio's WSGI app; its package folder is on the path because
        Label Studio imports its apps as top-level modules (``core``, ``tasks``…)."""
        import label_studio

        ls_path = str(Path(label_studio.__file__).resolve().parent)
        return [sys.executable, "-m", "gunicorn",
                "--bind", f"127.0.0.1:{self.port}",
                "--workers", str(self.workers),
                "--threads", str(self.threads),
                "--worker-class", "gthread",
                "--timeout", "120",  # above Label Studio's 100 s ML predict timeout
                "--graceful-timeout", "15",
                "--keep-alive", "5",
                "--pythonpath", ls_path,
                "--no-control-socket",
                "label_studio.core.wsgi:application"]  # fmt: skip


SERVERS = ("dev", "gunicorn")
"""How :class:`LabelStudioProcess` serves: ``label-studio start`` or gunicorn workers."""


def enable_wal(database: Path | None) -> bool:
    """Switch a SQLite database to write-ahead logging (kept in the file); False when there
    is no such file yet or it is busy (then it stays as it was)."""
    if database is None or not database.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error:
        return False
    return str(mode).lower() == "wal"


@dataclass
class BackendProcess(_ChildService):
    """``medcrowd backend serve`` as a child process; secrets travel in its environment."""

    port: int
    label_studio_url: str
    token: str
    basic_auth: tuple[str, str]
    log_path: Path
    cache_dir: Path
    predictor: str = "litemedsam"
    device: str = "auto"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300.0) -> None:
        env = dict(os.environ)
        env.update(
            {
                "MEDCROWD_LABEL_STUDIO_URL": self.label_studio_url,
                "MEDCROWD_LABEL_STUDIO_TOKEN": self.token,
                "MEDCROWD_BACKEND_USER": self.basic_auth[0],
                "MEDCROWD_BACKEND_PASSWORD": self.basic_auth[1],
            }
        )
        cmd = [sys.executable, "-m", "medcrowd", "backend", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--predictor", self.predictor, "--device", self.device,
               "--cache-dir", str(self.cache_dir)]  # fmt: skip
        self._launch(cmd, env, self.log_path, timeout_s)
