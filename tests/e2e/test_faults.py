"""Faults between medcrowd and Label Studio: a restart during a pull or a push.

Label Studio is killed (SIGKILL: no goodbye, connections reset) while ``medcrowd pull`` or
``push`` is running, and started again on the same data directory and port, as a crashed
or redeployed server comes back. What must hold:

* the command either waits for it (retries with backoff) and completes, or, when it stays
  away longer than the retry budget, stops with a clear message — and a re-run completes;
* the manifest then holds every annotation version exactly once (none lost, none twice),
  and Label Studio's annotations are unchanged (a pull only reads);
* a push leaves exactly one consensus prediction per task, however often it is re-run.

These tests start their own Label Studio (the session one is shared by other tests and must
not be killed). The first start runs the migrations (about a minute); restarts on the same
data directory skip them (about ten seconds).

The first tests need no Label Studio: a scripted loopback server shows what the retrying
transport resends and what it never resends (a POST whose answer was lost).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from medcrowd.dataset import Dataset
from medcrowd.embedded import LabelStudioProcess, free_port
from medcrowd.settings import config_path
from medcrowd.studio import LabelStudioUnavailable, RetryPolicy, Studio
from medcrowd.sync import pull, push
from ml_backend.labeling import brush_result

# ------------------------------------------------------------------ the retrying transport


class ScriptedServer:
    """A loopback HTTP/1.1 server whose n-th request gets ``script[n]``.

    Each step is ``"ok"`` (200 with a JSON body), ``"drop"`` (read the request, close without
    answering: the answer is lost) or ``"cut"`` (headers promise 2000 bytes, 10 are sent).
    Requests past the script get ``"ok"``. ``seen`` lists (method, path) in arrival order.
    """

    def __init__(self, script: list[str], port: int | None = None, delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.port = port or free_port()
        self.seen: list[tuple[str, str]] = []
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(delay_s,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self, delay_s: float) -> None:
        time.sleep(delay_s)  # until then: connection refused
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(16)
            sock.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                with conn:
                    self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = next((int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                       if k.lower() == "content-length"), 0)  # fmt: skip
        while len(body) < length:
            body += conn.recv(65536)
        step = self.script[len(self.seen)] if len(self.seen) < len(self.script) else "ok"
        self.seen.append((method, path))
        if step == "drop":
            return
        if step == "cut":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n")
            conn.sendall(b"0123456789")
            return
        payload = json.dumps({"ok": True, "n": len(self.seen)}).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        conn.sendall(head.encode() + payload)


FAST = RetryPolicy(budget_s=3.0, first_delay_s=0.1, max_delay_s=0.5)


def test_a_post_whose_answer_was_lost_is_never_resent() -> None:
    """It may have been stored: resending could create an annotation twice."""
    with ScriptedServer(["drop"] * 50) as server:
        studio = Studio(server.url, "0" * 40, retry=FAST)
        with pytest.raises(httpx.RemoteProtocolError):
            studio.request("POST", "/api/annotations", json={"result": []})
        assert server.seen == [("POST", "/api/annotations")]
        with pytest.raises(LabelStudioUnavailable, match=r"did not answer GET .*within 3 s"):
            studio.request("GET", "/api/projects/1")
        assert len(server.seen) > 3  # the GET was retried until the budget ran out
        assert set(server.seen[1:]) == {("GET", "/api/projects/1")}


def test_a_refused_request_waits_for_the_server_and_is_sent_once() -> None:
    """Connection refused means nothing arrived: even a POST is safe to send again."""
    with ScriptedServer([], delay_s=1.0) as server:
        studio = Studio(server.url, "0" * 40, retry=FAST)
        resp = studio.request("POST", "/api/annotations", json={"result": []})
        assert resp.json() == {"ok": True, "n": 1}
        assert server.seen == [("POST", "/api/annotations")]
        assert studio.retries >= 1


def test_a_body_cut_off_is_fetched_again() -> None:
    with ScriptedServer(["cut", "drop", "ok"]) as server:
        studio = Studio(server.url, "0" * 40, retry=FAST)
        assert studio.request("GET", "/api/projects/1/export").json()["n"] == 3
        assert studio.retries == 2
        # The SDK goes through the same transport (its own retries, which resend POSTs, are off).
        server.script += ["drop", "ok"]
        assert studio.client.projects.get(1) is not None
        assert len(server.seen) == 5


def test_no_budget_means_no_retry() -> None:
    with ScriptedServer(["drop"] * 5) as server:
        studio = Studio(server.url, "0" * 40, retry=RetryPolicy(budget_s=0))
        with pytest.raises(LabelStudioUnavailable):
            studio.request("GET", "/api/projects/1")
        assert len(server.seen) == 1


# ------------------------------------------------------------------ a real Label Studio


TASK_IMAGES = 12
ANNOTATIONS_PER_TASK = 3


@pytest.fixture(scope="module")
def own_ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioProcess]:
    """A Label Studio for this module alone: these tests kill it."""
    proc = LabelStudioProcess(
        data_dir=tmp_path_factory.mktemp("ls-faults"),
        email="admin@example.com",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        port=free_port(),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def kill(ls: LabelStudioProcess) -> None:
    """SIGKILL the whole Label Studio process group: a crash, not a shutdown."""
    assert ls.proc is not None
    os.killpg(ls.proc.pid, signal.SIGKILL)
    ls.proc.wait(timeout=30)
    ls.stop()  # closes the log handle; the process is already gone


def restart(ls: LabelStudioProcess) -> float:
    """Start it again on the same data directory and port; seconds until /health."""
    start = time.monotonic()
    ls.start(timeout_s=300)
    return time.monotonic() - start


@pytest.fixture
def ls(own_ls: LabelStudioProcess) -> LabelStudioProcess:
    """``own_ls``, started again first if an earlier test failed while it was down."""
    if own_ls.proc is None or own_ls.proc.poll() is not None:
        restart(own_ls)
    return own_ls


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A blob-like mask: an ellipse at a random place and size."""
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    ry, rx = rng.uniform(0.1, 0.25) * height, rng.uniform(0.1, 0.25) * width
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


@pytest.fixture(scope="module")
def project(own_ls: LabelStudioProcess, shared_data: Path) -> dict[str, Any]:
    """12 real images (5 CT slices, 7 EM sections), 3 brush annotations each: 36 in all."""
    admin = Studio(own_ls.url, own_ls.token)
    title = f"faults {uuid.uuid4().hex[:8]}"
    pid = admin.ensure_project(title, config_path("labeling_box_brush.xml").read_text(),
                               maximum_annotations=ANNOTATIONS_PER_TASK)  # fmt: skip
    ct = sorted((shared_data / "sammed2d_demo" / "images").glob("*.png"))
    em = sorted((shared_data / "isbi2012_em" / "train" / "image").glob("*.png"))
    paths = (ct + em)[:TASK_IMAGES]
    admin.import_images(pid, [(p.name, p.read_bytes()) for p in paths])
    rng = np.random.default_rng(8)
    sizes = {p.name: Image.open(p).size for p in paths}
    tasks = list(admin.client.tasks.list(project=pid, fields="all"))
    assert len(tasks) == TASK_IMAGES
    for task in tasks:
        name = next(n for n in sizes if task.data["image"].endswith(n))
        width, height = sizes[name]
        for _ in range(ANNOTATIONS_PER_TASK):
            mask = random_mask(rng, height, width)
            admin.client.annotations.create(task.id, result=[brush_result(mask, "Organ")],
                                            lead_time=12.5)  # fmt: skip
    env = {**os.environ, "MEDCROWD_URL": own_ls.url, "MEDCROWD_TOKEN": own_ls.token,
           "COLUMNS": "200"}  # fmt: skip
    return {"admin": admin, "id": pid, "title": title, "env": env}


def annotations_in(ls: LabelStudioProcess, project_id: int) -> dict[int, tuple[str, str]]:
    """{annotation id: (updated_at, result JSON)} as Label Studio exports them now."""
    studio = Studio(ls.url, ls.token)
    out = {}
    for task in studio.export_tasks(project_id):
        for ann in task["annotations"]:
            out[int(ann["id"])] = (
                str(ann["updated_at"]),
                json.dumps(ann["result"], sort_keys=True),
            )
    return out


def assert_exactly_once(out: Path, expected: dict[int, tuple[str, str]]) -> None:
    """The manifest holds each (annotation, updated_at) of Label Studio once, nothing else."""
    records = Dataset(out).records()
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)), "an annotation was written twice"
    assert set(keys) == {(ann, upd) for ann, (upd, _) in expected.items()}, "lost or foreign"
    for rec in records:
        assert rec.mask is not None and (out / rec.mask).is_file()
        assert rec.lead_time == pytest.approx(12.5)


@pytest.mark.e2e
@pytest.mark.slow
def test_cli_pull_rides_out_a_label_studio_crash(
    ls: LabelStudioProcess, project: dict[str, Any], tmp_path: Path
) -> None:
    """SIGKILL Label Studio right after the first record; the CLI pull waits and completes."""
    before = annotations_in(ls, project["id"])
    assert len(before) == TASK_IMAGES * ANNOTATIONS_PER_TASK
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "medcrowd", "pull", str(out), "--project", str(project["id"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=project["env"])  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("pulled task"):
            kill(ls)
            break
    written_at_kill = len(Dataset(out).records())
    time.sleep(2.0)  # down long enough for the pull to meet refused connections
    restart(ls)
    err = "".join(lines) + proc.stderr.read()
    stdout = proc.stdout.read()
    assert proc.wait(timeout=300) == 0, stdout + err
    assert written_at_kill < len(before), "the pull had finished before the crash"
    assert "retrying in" in err, "the pull never met the outage"
    assert "Traceback" not in err
    assert f"{len(before)} new annotations from {TASK_IMAGES} tasks" in stdout, stdout
    assert_exactly_once(out, before)
    assert annotations_in(ls, project["id"]) == before  # a pull only reads


@pytest.mark.e2e
@pytest.mark.slow
def test_pull_stops_clearly_when_label_studio_stays_down_and_a_rerun_completes(
    ls: LabelStudioProcess, project: dict[str, Any], tmp_path: Path
) -> None:
    before = annotations_in(ls, project["id"])
    out = tmp_path / "ds"
    studio = Studio(ls.url, ls.token, retry=RetryPolicy(budget_s=3.0))
    written = 0

    def crash_at_fifth(_: Any) -> None:
        nonlocal written
        written += 1
        if written == 5:
            kill(ls)

    with pytest.raises(LabelStudioUnavailable) as info:
        pull(studio, project["id"], out, on_record=crash_at_fifth)
    partial = Dataset(out).records()
    message = str(info.value)
    assert "did not answer GET" in message and "within 3 s" in message
    assert f"stopped after {len(partial)} new annotation(s)" in message
    assert "Run the same pull again" in message
    assert 5 <= len(partial) < len(before)
    restart(ls)
    report = pull(Studio(ls.url, ls.token), project["id"], out)
    assert (report.new, report.unchanged) == (len(before) - len(partial), len(partial))
    records = Dataset(out).records()
    assert [r.key for r in records[: len(partial)]] == [r.key for r in partial]
    assert_exactly_once(out, before)
    assert annotations_in(ls, project["id"]) == before


@pytest.mark.e2e
@pytest.mark.slow
def test_push_rides_out_a_crash_and_never_duplicates(
    ls: LabelStudioProcess, project: dict[str, Any], tmp_path: Path
) -> None:
    """Kill Label Studio after the third task is pushed; restart it from another thread."""
    before = annotations_in(ls, project["id"])
    studio = Studio(ls.url, ls.token)
    pull(studio, project["id"], tmp_path / "ds")
    dataset = Dataset(tmp_path / "ds")
    fused = {task: (dataset.load_mask(recs[0].mask or ""), 0.5) for task, recs in dataset.by_task()}
    assert len(fused) == TASK_IMAGES
    restarter: list[threading.Thread] = []

    def crash_at_third(task: int) -> None:
        if len(restarter) == 0 and task == sorted(fused)[2]:
            kill(ls)
            restarter.append(threading.Thread(target=lambda: (time.sleep(2.0), restart(ls))))
            restarter[0].start()

    report = push(studio, fused, "faulttest", on_task=crash_at_third)
    restarter[0].join(timeout=300)
    assert studio.retries >= 1, "the push never met the outage"
    assert (report.pushed, report.unchanged) == (TASK_IMAGES, 0)
    again = push(Studio(ls.url, ls.token), fused, "faulttest")
    assert (again.pushed, again.unchanged, again.replaced) == (0, TASK_IMAGES, 0)
    for task in fused:
        versions = [p.model_version for p in studio.client.predictions.list(task=task)]
        assert versions.count("consensus-faulttest") == 1
    assert annotations_in(ls, project["id"]) == before
