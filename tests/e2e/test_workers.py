"""``medcrowd backend serve --workers 2``: real gunicorn, a real Label Studio, a worker killed.

The backend runs as the command users run, in its own process group: a gunicorn master that
never imports torch, and two workers that each load LiteMedSAM after the fork. The kill test
sends a slow prediction (a dozen cold EM slices: one image-encoder pass each), SIGKILLs the
worker that reports it in flight, and checks that the client gets a clean error rather than a
hang, that the master replaces the worker, that Label Studio keeps getting predictions through
the surviving worker, that the next request succeeds, and that every annotation a volunteer
saved through Label Studio before, during and after the kill is there exactly once (the
backend never writes annotations; Label Studio owns them).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from medcrowd.embedded import free_port, wait_http
from medcrowd.settings import config_path
from medcrowd.studio import Studio
from tests.helpers import StudioHandle, box_context

XML = config_path("labeling_box_brush.xml").read_text()
SLOW_TASKS = 12  # cold 512×512 slices in the request that gets its worker killed


@dataclass
class Gunicorn:
    url: str
    auth: tuple[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def master(self) -> int:
        return self.proc.pid

    def children(self) -> set[int]:
        """Live worker pids: the master's child processes, read from /proc."""
        pids = set()
        for task in Path(f"/proc/{self.master}/task").iterdir():
            text = (task / "children").read_text().split()
            pids.update(int(p) for p in text)
        return {pid for pid in pids if _state(pid) not in ("Z", "X", None)}

    def health(self) -> dict[str, Any]:
        # A fresh connection each time, so gunicorn may hand it to either worker.
        resp = httpx.get(f"{self.url}/health", timeout=10, headers={"connection": "close"})
        resp.raise_for_status()
        return dict(resp.json())


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gunicorn(
    label_studio: StudioHandle, litemedsam: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads worker processes from /proc")
    root = tmp_path_factory.mktemp("workers")
    cache_dir = root / "cache"
    # The session's verified ONNX exports, so the workers boot in seconds; no embeddings, so
    # every image is cold.
    shutil.copytree(litemedsam.cache.directory.parent / "onnx", cache_dir / "onnx")
    auth = ("labelstudio", secrets.token_urlsafe(16))
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "MEDCROWD_LABEL_STUDIO_URL": label_studio.url,
            "MEDCROWD_LABEL_STUDIO_TOKEN": label_studio.token,
            "MEDCROWD_BACKEND_USER": auth[0],
            "MEDCROWD_BACKEND_PASSWORD": auth[1],
        }
    )
    cmd = [sys.executable, "-m", "medcrowd", "backend", "serve", "--workers", "2",
           "--port", str(port), "--device", "cpu", "--cache-dir", str(cache_dir)]  # fmt: skip
    log = root / "backend.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    backend = Gunicorn(f"http://127.0.0.1:{port}", auth, proc, log)
    try:
        wait_http(f"{backend.url}/health", 300, proc, log)
        wait_for(lambda: len(backend.children()) == 2, "two workers")
        yield backend
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        print(f"\nbackend log tail:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.mark.e2e
def test_two_workers_each_load_their_own_model_after_the_fork(gunicorn: Gunicorn) -> None:
    pids: set[int] = set()
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        body = gunicorn.health()
        assert body["status"] == "UP" and body["model_version"].startswith("litemedsam")
        pids.add(body["worker_pid"])
    assert pids == gunicorn.children(), "health answers come from the master's two workers"
    # CUDA-safe start: the master never imported torch (so never initialised CUDA) before
    # forking; each worker loaded it for itself.
    assert "libtorch" not in _maps(gunicorn.master)
    for pid in pids:
        assert "libtorch" in _maps(pid)
        assert "onnxruntime" in _maps(pid)


@pytest.fixture(scope="module")
def project(label_studio: StudioHandle, gunicorn: Gunicorn, shared_data: Path) -> dict[str, Any]:
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.ensure_project(f"workers {uuid.uuid4().hex[:8]}", XML)
    slices = [shared_data / "isbi2012_em" / "train" / "image" / f"{i}.png" for i in range(20)]
    # Import before connecting the backend: its import webhook would warm the embeddings,
    # and the slow request below needs cold ones.
    report = studio.import_images(project_id, [(p.name, p.read_bytes()) for p in slices])
    assert report.created == len(slices)
    ml_id = studio.connect_backend(project_id, gunicorn.url, gunicorn.auth)
    tasks = [
        {"id": task.id, "data": dict(task.data)}
        for task in studio.client.tasks.list(project=project_id, fields="all")
    ]
    assert len(tasks) == len(slices)
    return {"studio": studio, "id": project_id, "ml_id": ml_id, "tasks": tasks}


BOX = [156.0, 156.0, 356.0, 356.0]  # pixels of a 512×512 slice


def annotate(studio: Studio, ml_id: int, task_id: int) -> tuple[int, list[dict[str, Any]]]:
    """What a volunteer does: draw a box, get the mask through Label Studio, submit both.

    A prediction that fails (its worker was just killed) is asked for again, as a volunteer
    redraws the box; only a complete answer is submitted.
    """
    context = box_context(BOX, 512, 512)
    for attempt in range(5):
        try:
            answer = studio.interactive_predict(ml_id, task_id, context)
        except RuntimeError as exc:  # Label Studio answered >= 400
            answer = {"errors": [str(exc)]}
        if "errors" not in answer:
            break
        print(f"\nprediction for task {task_id} failed (attempt {attempt + 1}): {answer}")
        time.sleep(1.0)
    assert "errors" not in answer, answer
    (brush,) = answer["data"]["result"]
    assert brush["type"] == "brushlabels"
    result = [{**context["result"][0], "id": "box1"}, {**brush, "id": "mask1"}]
    created = studio.client.annotations.create(id=task_id, result=result, was_cancelled=False)
    return int(created.id), result  # type: ignore[arg-type]


def predict_body(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "project": "1.1",
        "label_config": XML,
        "params": {"login": None, "password": None, "context": box_context(BOX, 512, 512)},
    }


@pytest.mark.e2e
def test_worker_killed_mid_request(gunicorn: Gunicorn, project: dict[str, Any]) -> None:
    studio: Studio = project["studio"]
    ml_id, tasks = project["ml_id"], project["tasks"]
    saved: dict[int, tuple[int, list[dict[str, Any]]]] = {}  # task id → (annotation id, result)

    before_id = tasks[0]["id"]
    saved[before_id] = annotate(studio, ml_id, before_id)  # before the kill

    slow = tasks[-SLOW_TASKS:]
    client = httpx.Client(base_url=gunicorn.url, auth=gunicorn.auth, timeout=300)
    with ThreadPoolExecutor(2) as pool:
        doomed: Future[httpx.Response]
        doomed = pool.submit(client.post, "/predict", json=predict_body(slow))
        victim = 0

        def found_victim() -> bool:
            nonlocal victim
            body = gunicorn.health()
            if body["inflight"] >= 1:
                victim = int(body["worker_pid"])
            return victim != 0

        wait_for(found_victim, "the slow request to be in flight", timeout_s=60)
        during_id = tasks[1]["id"]
        during: Future[tuple[int, list[dict[str, Any]]]]
        during = pool.submit(annotate, studio, ml_id, during_id)
        assert not doomed.done(), "the slow request finished before its worker was killed"
        originals = gunicorn.children()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        # The client sees a clean error promptly: the connection drops (or a 5xx from a
        # proxy in front), never a hang.
        try:
            resp = doomed.result(timeout=60)
            outcome = f"HTTP {resp.status_code}"
            assert resp.status_code in (502, 503), resp.text
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            outcome = type(exc).__name__
        noticed_in = time.monotonic() - killed_at
        saved[during_id] = during.result(timeout=120)

    after_id = tasks[2]["id"]
    saved[after_id] = annotate(studio, ml_id, after_id)  # through the surviving worker

    # The master replaces the worker.
    wait_for(lambda: len(gunicorn.children() - originals) == 1 and len(gunicorn.children()) == 2,
             "the master to start a replacement worker")  # fmt: skip
    (replacement,) = gunicorn.children() - originals
    wait_for(lambda: gunicorn.health()["worker_pid"] == replacement, "the replacement to serve")
    restarted_in = time.monotonic() - killed_at

    # The next request succeeds, the retried one too.
    one = client.post("/predict", json=predict_body(tasks[3:4]))
    assert one.status_code == 200, one.text
    retried = client.post("/predict", json=predict_body(slow[:3]))
    assert retried.status_code == 200, retried.text
    assert [len(r["result"]) for r in retried.json()["results"]] == [1, 1, 1]

    # Every annotation saved through Label Studio is there exactly once, unchanged, and
    # nothing else was written.
    for task in tasks:
        annotations = studio.client.annotations.list(id=task["id"])
        if task["id"] not in saved:
            assert annotations == [], (task["id"], annotations)
            continue
        (annotation,) = annotations
        annotation_id, result = saved[task["id"]]
        assert annotation.id == annotation_id
        stored = {r["id"]: r["value"] for r in annotation.result or []}
        assert stored == {r["id"]: r["value"] for r in result}
    print(
        f"\nworker {victim} killed mid-request: client got {outcome} after {noticed_in:.2f} s; "
        f"replacement {replacement} serving {restarted_in:.1f} s after the kill; "
        f"{len(saved)} annotations saved around the kill, each present once"
    )


@pytest.mark.slow
def test_gunicorn_command_line_with_config_from_the_environment(
    litemedsam: Any, tmp_path: Path
) -> None:
    """The container recipe: gunicorn's own CLI, settings and secrets in the environment.

    ``--timeout 2`` is far shorter than a worker's model load; the workers must still boot
    and serve. (The installed gunicorn 27.0 only starts a worker's timeout clock at its first
    check-in; gunicorn versions that start it at the fork rely on the worker class's boot
    heartbeat here.)
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("reads worker processes from /proc")
    shutil.copytree(litemedsam.cache.directory.parent / "onnx", tmp_path / "cache" / "onnx")
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "MEDCROWD_BACKEND_USER": "labelstudio",
            "MEDCROWD_BACKEND_PASSWORD": secrets.token_urlsafe(12),
            "MEDCROWD_BACKEND_CACHE_DIR": str(tmp_path / "cache"),
            "MEDCROWD_BACKEND_DEVICE": "cpu",
            "MEDCROWD_BACKEND_MAX_QUEUE": "0",
        }
    )
    gunicorn_exe = shutil.which("gunicorn") or str(Path(sys.executable).parent / "gunicorn")
    cmd = [gunicorn_exe, "--workers", "2", "--timeout", "2", "--no-control-socket",
           "--worker-class", "ml_backend.workers.UvicornWorker",
           "--bind", f"127.0.0.1:{port}", "ml_backend.workers:app_from_env()"]  # fmt: skip
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    auth = ("labelstudio", env["MEDCROWD_BACKEND_PASSWORD"])
    backend = Gunicorn(f"http://127.0.0.1:{port}", auth, proc, log)
    try:
        wait_http(f"{backend.url}/health", 300, proc, log)
        pids: set[int] = set()
        wait_for(lambda: pids.add(backend.health()["worker_pid"]) or len(pids) == 2,
                 "both workers to serve", timeout_s=300)  # fmt: skip
        text = log.read_text(errors="replace")
        assert "WORKER TIMEOUT" not in text, text[-2000:]
        assert pids == backend.children()
        assert httpx.post(f"{backend.url}/setup", json={}).status_code == 401
        resp = httpx.post(f"{backend.url}/setup", json={}, auth=backend.auth)
        assert resp.status_code == 200 and resp.json()["model_version"].startswith("litemedsam")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_worker_that_cannot_load_its_model_stops_the_backend(tmp_path: Path) -> None:
    """No respawn loop: a worker failing to boot stops the master with a clear error."""
    cmd = [sys.executable, "-m", "medcrowd", "backend", "serve", "--workers", "2",
           "--port", str(free_port()), "--predictor", "medsam",
           "--cache-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "needs its weights" in output  # the worker's reason, in the operator's log
    assert "Worker failed to boot" in output
    assert "the backend workers stopped with exit status 3" in output
    assert "Traceback" not in output.split("needs its weights")[-1]  # no crash in the master


# ------------------------------------------------------------ Label Studio under gunicorn
def test_label_studio_under_gunicorn_with_sqlite_wal(tmp_path: Path, shared_data: Path) -> None:
    """``LabelStudioProcess(server="gunicorn")``: ``label-studio init`` then a gunicorn worker
    (threads) on Label Studio's WSGI app; the admin token works, SQLite is in WAL mode, the
    queue serves a task, an annotation is stored, and stopping ends every process of the
    group. Several workers on SQLite are refused (they lock each other out)."""
    import sqlite3

    from medcrowd.embedded import LabelStudioProcess

    with pytest.raises(ValueError, match="several Label Studio workers need PostgreSQL"):
        LabelStudioProcess(data_dir=tmp_path / "x", email="a@b.c", password="p", token="t",
                           server="gunicorn", workers=2)  # fmt: skip
    ls = LabelStudioProcess(
        data_dir=tmp_path / "ls",
        email="admin@example.com",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        port=free_port(),
        server="gunicorn",
        workers=1,
        threads=4,
    )
    ls.start(timeout_s=600)
    try:
        assert ls.proc is not None
        children = Path(f"/proc/{ls.proc.pid}/task/{ls.proc.pid}/children").read_text().split()
        assert len(children) == 1  # the gunicorn master's worker
        assert ls.sqlite_path is not None
        with sqlite3.connect(ls.sqlite_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        admin = Studio(ls.url, ls.token)
        assert admin.whoami()["email"] == "admin@example.com"
        pid = admin.ensure_project(f"gunicorn {uuid.uuid4().hex[:6]}", XML)
        image = shared_data / "sammed2d_demo" / "images" / "amos_0004_75.png"
        admin.import_images(pid, [(image.name, image.read_bytes())])
        task = admin.next_task(pid)
        assert task is not None
        ann = admin.create_annotation(int(task["id"]), [], was_cancelled=True)
        assert ann > 0
        served = httpx.get(f"{ls.url}/static/images/favicon.ico", timeout=30)
        assert served.status_code == 200  # static files through Label Studio's own routes
        group = ls.proc.pid
    finally:
        ls.stop()
    assert not any(_state(int(c)) not in ("Z", "X", None) for c in children)
    assert _state(group) in ("Z", "X", None)
