"""``medcrowd up`` as a user runs it: a child process, Ctrl-C, and a second run that reuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from medcrowd.embedded import free_port
from medcrowd.settings import Instance, load_or_create_credentials, read_instance
from medcrowd.studio import Studio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            if marker in line:
                return "".join(seen)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.2)
    raise AssertionError(f"{marker!r} not printed; output so far:\n{''.join(seen)}")


def _closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except httpx.HTTPError:
        return True
    return False


def test_up_serves_reuses_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "medcrowd"
    ls_port, be_port = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "medcrowd", "up", "--data-dir", str(data_dir),
        "--port", str(ls_port), "--backend-port", str(be_port),
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    try:
        out = _read_until(proc, "medcrowd is up", timeout_s=600)
        creds, created = load_or_create_credentials(data_dir)
        assert not created
        assert creds.password in out  # printed once, on first start
        assert oct((data_dir / "credentials.json").stat().st_mode & 0o777) == "0o600"
        studio = Studio(f"http://127.0.0.1:{ls_port}", creds.token)
        project_id = studio.find_project("medcrowd demo")
        assert project_id is not None
        tasks = list(studio.client.tasks.list(project=project_id))
        assert len(tasks) == 3  # pydicom's CT (two windows) and MR slices
        (ml,) = list(studio.client.ml.list(project=project_id))
        assert ml.is_interactive and ml.state == "CO"
        # roles are on by default: Label Studio runs with medcrowd's plugin, the admin is
        # staff, volunteers get the signup link and the instructions before the first task
        roles = studio.request("GET", "/medcrowd/api/roles/").json()["users"]
        assert [r["role"] for r in roles if r["email"] == creds.email] == ["staff"]
        assert "Volunteers sign up at http://127.0.0.1:" in out
        project = studio.request("GET", f"/api/projects/{project_id}/").json()
        assert project["show_instruction"] and "Drag a box" in project["expert_instruction"]
        # the other commands find this instance from its data directory alone
        assert read_instance(data_dir) == Instance(f"http://127.0.0.1:{ls_port}", creds.token)
        assert oct((data_dir / "instance.json").stat().st_mode & 0o777) == "0o600"
        bare = {k: v for k, v in env.items() if k not in ("MEDCROWD_URL", "MEDCROWD_TOKEN")}
        status = subprocess.run(
            [sys.executable, "-m", "medcrowd", "status", "--project", str(project_id),
             "--data-dir", str(data_dir), "--json"],
            capture_output=True, text=True, timeout=120, env=bare,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["tasks"] == 3
        rejected = subprocess.run(
            [sys.executable, "-m", "medcrowd", "status", "--project", str(project_id),
             "--data-dir", str(data_dir), "--token", "0" * 40],
            capture_output=True, text=True, timeout=120, env=bare,
        )  # fmt: skip
        assert rejected.returncode == 1 and "Traceback" not in rejected.stderr
        assert rejected.stderr.strip() == f"error: token rejected by http://127.0.0.1:{ls_port}"
        # Ctrl-C stops Label Studio and the backend.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert _closed(ls_port) and _closed(be_port)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Second run: same project, no duplicate tasks, password not shown again.
    rerun = subprocess.run(
        [*cmd, "--no-wait"], capture_output=True, text=True, timeout=600, env=env
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "0 tasks imported, 3 already there" in rerun.stdout
    assert creds.password not in rerun.stdout
    assert _closed(ls_port) and _closed(be_port)
    # --no-roles: stock Label Studio (no plugin pages), and up says what that means
    stock = subprocess.run(
        [*cmd, "--no-wait", "--no-roles"], capture_output=True, text=True, timeout=600, env=env
    )
    assert stock.returncode == 0, stock.stdout + stock.stderr
    assert "Roles are off (--no-roles)" in stock.stdout
