"""The embedded deployment: Label Studio on SQLite and the ML backend, as child processes.

``medcrowd up`` and the test suite both start Label Studio through ``LabelStudioProcess``,
so the recipe that is tested is the one users run. Label Studio is told to keep every file
under the given data directory (never the user's home), to listen on loopback only, to skip
its PyPI version check and analytics, and to accept the loopback ML backend (its SSRF guard
refuses loopback/private addresses by default; we switch that off for this instance only,
which is safe because the instance itself listens on loopback — a hosted deployment keeps the
guard on and allow-lists the backend, see docker/).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

__all__ = ["BackendProcess", "LabelStudioProcess", "free_port", "wait_http"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` dies."""
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
            wait_http(f"{self.url}/health", timeout_s, self.proc, log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        _stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class LabelStudioProcess(_ChildService):
    """Label Studio on SQLite, started with an admin user and API token.

    Args:
        data_dir: everything Label Studio writes goes below it.
        email, password, token: the admin created on first start; ``token`` is a 40-hex
            legacy API token.
        port: listen port on 127.0.0.1.
        local_files_root: enables Label Studio local-file serving from this directory.
    """

    data_dir: Path
    email: str
    password: str
    token: str
    port: int = 8080
    local_files_root: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "label-studio.log"

    def environment(self) -> dict[str, str]:
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
                "DJANGO_DB": "sqlite",
            }
        )
        if self.local_files_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.local_files_root)
        return env

    def start(self, timeout_s: float = 400.0) -> None:
        """Start and wait for ``/health`` (first start runs migrations: about a minute)."""
        exe = shutil.which("label-studio") or str(Path(sys.executable).parent / "label-studio")
        data = str(self.data_dir / "label-studio")
        cmd = [exe, "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", data]  # fmt: skip
        self._launch(cmd, self.environment(), self.log_path, timeout_s)


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
