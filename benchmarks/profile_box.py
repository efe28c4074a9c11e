"""Where the CPU goes: one warm box end to end, ``/next`` and a submit, per process tree.

Starts Label Studio (embedded; ``--ls-server dev`` = ``label-studio start``, ``gunicorn`` =
its production WSGI server) and the backend (``medcrowd backend serve``), imports
``--images`` CT slices from ``sammed2d_demo`` with the backend connected first (its webhook
precomputes every embedding), warms up, then runs three phases one request at a time:

* ``box``: ``POST /api/ml/{id}/interactive-annotating`` — what the browser sends when a
  volunteer draws a box: Label Studio serialises the task, calls the backend's ``/predict``,
  the backend decodes the box on the cached embedding and answers a brush RLE, Label Studio
  passes it back;
* ``next``: ``GET /api/projects/{id}/next`` — the queue;
* ``submit``: ``POST /api/annotations`` with a brush mask.

For each phase: wall-clock p50 (contended on a shared machine: a rough figure) and the CPU
each process tree used per request, from ``/proc`` (user + system time of every process in
the tree, so helper threads and gunicorn workers count), which contention distorts far
less. With ``--py-spy`` both trees are sampled (py-spy, CPU samples only) in each phase and
written as collapsed stacks, flame-graph SVGs and CPU shares per stage. The decoder's own
compute is measured in this process on the same image (``--decoder``), and the size of the
task JSON Label Studio sends with an interactive call through a recording proxy.

    python benchmarks/profile_box.py --py-spy --out-dir docs/profile
    python benchmarks/profile_box.py --ls-server gunicorn --backend-threads 1

Every figure is printed next to the load average; on a busy machine say so.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _stack  # noqa: E402
from load_volunteers import _proc_rss_ticks, make_tasks  # noqa: E402
from profile_flame import IDLE, read_stacks, stage_shares, write_svg  # noqa: E402

from medcrowd.volunteer_sim import brush_result, rectangle  # noqa: E402

_HZ = os.sysconf("SC_CLK_TCK")

_WAIT = (
    r"leaf:EpollSelector\.select|_PollLikeSelector\.select|SocketIO\.readinto|"
    r"_worker \(concurrent/futures/thread\.py:8[01]\)|Condition\.wait|\.recv"
)
BACKEND_STAGES = [
    (IDLE, _WAIT),
    ("decoder (ONNX Runtime / torch)", r"any:_run_decoder|OnnxRunner\.__call__"),
    ("brush RLE encode", r"any:brush_result|mask_to_rle"),
    ("image hash + embedding cache", r"any:image_hash|_entry_for|cache\.py"),
    ("image fetch + decode", r"any:ml_backend/images\.py"),
    ("mask post-processing (upscale, threshold)", r"any:predict_box"),
    ("label config parse", r"any:parse_label_config"),
    ("request JSON parse", r"any:_parse_json"),
    ("HTTP server (uvicorn, h11, starlette)", r"uvicorn|h11|starlette|fastapi|anyio|asyncio"),
]
LS_STAGES = [
    (IDLE, _WAIT),
    ("Sentry SDK (URL resolver, tracing)", r"any:RavenResolver|sentry_sdk/(tracing|scope|client)"),
    ("/next: backend /predict per task (prelabel)", r"any:evaluate_predictions"),
    ("box: call to the backend (requests)", r"any:make_predictions"),
    ("box: task serialisation for the backend", r"any:InteractiveAnnotatingDataSerializer"),
    ("webhooks (serialise + send)", r"any:emit_webhooks"),
    ("SQL (Django ORM, sqlite3)", r"django/db/|sqlite3"),
    ("DRF serializers", r"rest_framework/serializers|rest_framework/fields|rest_flex_fields"),
    ("JSON", r"json/"),
    ("middleware + auth", r"middleware|authentication|permissions"),
    ("HTTP server (runserver / gunicorn)", r"wsgiref|socketserver|gunicorn|basehttp"),
    ("Django / DRF request handling", r"django/|rest_framework/"),
]


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(root: int, exclude: set[int] | frozenset[int] = frozenset()) -> float:
    """User + system CPU seconds of every live process in the tree (py-spy excluded)."""
    total = 0.0
    for pid in tree_pids(root):
        if pid in exclude:
            continue
        got = _proc_rss_ticks(pid)
        if got is not None:
            total += got[1] / _HZ
    return total


class Spy:
    """py-spy record on one process tree until stopped (SIGINT makes it write)."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise SystemExit("error: --py-spy needs py-spy (pip install py-spy)")
        self.out = out
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate),
             "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = b""
        if not self.out.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-400:]}", file=sys.stderr)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Forwards to the backend and records the size of each request body."""

    target = ""
    sizes: list[tuple[str, int]] = []  # noqa: RUF012 - set per run

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.sizes.append((self.path, len(body)))
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        resp = httpx.request(
            self.command,
            self.target + self.path,
            content=body or None,
            headers=headers,
            timeout=120,
        )
        self.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "content-encoding",
            ):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    def log_message(self, *args: Any) -> None:
        pass


def measure(
    name: str, calls: list[Any], roots: dict[str, int], spies: dict[str, Spy] | None
) -> dict[str, Any]:
    """Run the calls one after another; wall ms each and CPU ms per call per tree."""
    exclude = {s.proc.pid for s in (spies or {}).values()}
    before = {k: tree_cpu_s(pid, exclude) for k, pid in roots.items()}
    walls = []
    for call in calls:
        start = time.perf_counter()
        call()
        walls.append((time.perf_counter() - start) * 1000)
    after = {k: tree_cpu_s(pid, exclude) for k, pid in roots.items()}
    n = len(calls)
    return {
        "phase": name,
        "requests": n,
        "wall_ms_p50": round(float(np.percentile(walls, 50)), 1),
        "wall_ms_p95": round(float(np.percentile(walls, 95)), 1),
        "cpu_ms_per_request": {k: round((after[k] - before[k]) * 1000 / n, 1) for k in roots},
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def decoder_compute(
    image: np.ndarray, box: list[float], threads: int, cache_dir: Path, n: int
) -> dict[str, float]:
    """CPU ms of LiteMedSAM's per-box work in this process, on a cached embedding."""
    try:
        from ml_backend.device import configure_threads

        configure_threads(threads)
    except ImportError:  # an older tree without --threads
        pass
    from ml_backend.cache import EmbeddingCache
    from ml_backend.predictors import get_predictor

    predictor: Any = get_predictor(
        "litemedsam", device="cpu", cache=EmbeddingCache(), cache_dir=cache_dir
    )
    predictor.set_image(image)
    for _ in range(3):
        predictor.predict_box(box)
    t0 = time.process_time()
    for _ in range(n):
        predictor.predict_box(box)
    whole = (time.process_time() - t0) * 1000 / n
    entry = predictor._current
    emb = getattr(entry, "embedding", None)
    decoder_only = None
    if emb is not None and hasattr(predictor, "_run_decoder"):
        box_np = np.array([[[40.0, 60.0, 150.0, 170.0]]], np.float32)
        t0 = time.process_time()
        for _ in range(n):
            predictor._run_decoder(emb, box_np, predictor.decoder_backend)
        decoder_only = (time.process_time() - t0) * 1000 / n
    return {
        "predict_box_cpu_ms": round(whole, 1),
        "decoder_only_cpu_ms": round(decoder_only, 1) if decoder_only is not None else None,
        "decoder_backend": str(getattr(predictor, "decoder_backend", "?")),
    }


def analyse(phases: list[dict[str, Any]], roots: Any, out: Path, tag: str) -> dict[str, Any]:
    """CPU-ms per request per stage (py-spy shares × /proc CPU) and the flame graphs."""
    stages: dict[str, Any] = {}
    for ph in phases:
        for tree in roots:
            stacks_file = out / f"stacks-{ph['phase']}-{tree}{tag}.txt"
            if not stacks_file.exists():
                continue
            stacks = read_stacks(stacks_file)
            rules = BACKEND_STAGES if tree == "backend" else LS_STAGES
            shares, idle = stage_shares(stacks, rules)
            cpu = ph["cpu_ms_per_request"][tree]
            stages[f"{ph['phase']}/{tree}"] = {s: round(v * cpu, 1) for s, v in shares.items()} | {
                "(idle-wait samples set apart, %)": round(100 * idle, 1)
            }
            title = f"{tree}, {ph['phase']} ({ph['requests']} requests, {cpu} CPU-ms each)"
            write_svg(stacks, out / f"flame-{ph['phase']}-{tree}{tag}.svg", title)
    return stages


def profile(
    args: argparse.Namespace,
    data: Path,
    out: Path,
    tag: str,
    work: Path,
    stack: _stack.Stack,
    step: Callable[[str], None],
) -> None:
    """The warm-up, the phases, the payload probe; writes ``out/profile<tag>.json``."""
    ls, backend, admin, cache_dir = stack.ls, stack.backend, stack.admin, stack.cache_dir
    proxy: http.server.ThreadingHTTPServer | None = None
    try:
        pid = _stack.new_project(stack, "profile", overlap=50)
        files = make_tasks(data, args.images, work / "truth")
        ml_id = _stack.import_tasks(stack, pid, files, prewarm=True, step=step,
                             timeout_s=60 + 30 * len(files))  # fmt: skip
        tasks = admin.tasks(pid)
        masks = {p.stem: np.asarray(__import__("PIL.Image").Image.open(p)) > 0
                 for p in (work / "truth").glob("*.png")}  # fmt: skip

        def box_call(task: Any) -> Any:
            stem = Path(str(task.data.get("image", ""))).stem
            stem = next((s for s in masks if stem.endswith(s) or s in stem), next(iter(masks)))
            ys, xs = np.nonzero(masks[stem])
            h, w = masks[stem].shape
            box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
            context = {"result": [rectangle(box, w, h, "Organ")]}

            def call() -> Any:
                answer = admin.interactive_predict(ml_id, task.id, context)
                if not (answer.get("data") or {}).get("result"):
                    raise SystemExit(f"error: no mask in the answer: {str(answer)[:300]}")
                return answer

            return call, box, stem

        calls = [box_call(t) for t in tasks]
        step("warm-up: one box per image, a few /next")
        for call, _, _ in calls:
            call()
        for _ in range(3):
            admin.next_task(pid)
        roots = {"label_studio": ls.proc.pid, "backend": backend.proc.pid}  # type: ignore[union-attr]
        phases = []
        k = args.requests
        box_calls = [calls[i % len(calls)][0] for i in range(k)]
        first = tasks[0]
        stem0 = calls[0][2]

        def submit(i: int) -> Any:
            task, stem = tasks[i % len(tasks)], calls[i % len(calls)][2]
            return lambda: admin.create_annotation(
                task.id, [brush_result(masks[stem], "Organ")], lead_time=30.0
            )

        submit_calls = [submit(i) for i in range(args.submits)]

        def prelabel_off() -> None:
            # "Use predictions to pre-label tasks": on, every /next makes Label Studio call
            # the backend's /predict for the task (which answers [] without a draft model)
            admin.request("PATCH", f"/api/projects/{pid}/", json={"show_collab_predictions": False})

        plan = [
            ("box", box_calls),
            ("next", [lambda: admin.next_task(pid)] * k),
            ("next_without_prelabel", [lambda: admin.next_task(pid)] * k),
            ("submit", submit_calls),
            ("box_after_submits", box_calls),
        ]
        for name, batch in plan:
            if name == "next_without_prelabel":
                prelabel_off()
            spies = None
            if args.py_spy:
                spies = {
                    t: Spy(p, out / f"stacks-{name}-{t}{tag}.txt", args.rate)
                    for t, p in roots.items()
                }
                time.sleep(1.0)  # py-spy attaches
            step(f"phase {name}: {len(batch)} requests")
            phases.append(measure(name, batch, roots, spies))
            if spies:
                for spy in spies.values():
                    spy.stop()
            print(json.dumps(phases[-1]), file=sys.stderr)
        # the task JSON Label Studio sends with an interactive call, through a recording proxy
        _Recorder.target = backend.url
        _Recorder.sizes = []
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        probe_id = admin.connect_backend(pid, f"http://127.0.0.1:{proxy.server_port}",
                                         backend.basic_auth, title="payload probe")  # fmt: skip
        context = {"result": [rectangle(calls[0][1], *masks[stem0].shape[::-1], "Organ")]}
        answer = admin.interactive_predict(probe_id, first.id, context)
        task_json = admin.request("GET", f"/api/tasks/{first.id}").content
        predict_sizes = [n for p, n in _Recorder.sizes if p.rstrip("/").endswith("predict")]
        payload = {
            "predict_body_bytes": predict_sizes[-1] if predict_sizes else None,
            "answer_bytes": len(json.dumps(answer)),
            "task_api_json_bytes": len(task_json),
            "annotations_on_task": len(json.loads(task_json).get("annotations") or []),
            "calls_seen": [p for p, _ in _Recorder.sizes],
        }
        result: dict[str, Any] = {
            "benchmark": "profile_box",
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "cpus": os.cpu_count(),
            "phases": phases,
            "payload": payload,
        }
        if args.decoder:
            step("decoder compute in this process")
            from PIL import Image

            img = np.asarray(Image.open(__import__("io").BytesIO(dict(files)[f"{stem0}.png"])))
            threads = args.backend_threads if args.backend_threads is not None else 0
            result["decoder"] = decoder_compute(img, calls[0][1], threads, cache_dir, k)
        if args.py_spy:
            result["cpu_ms_per_request_by_stage"] = analyse(phases, roots, out, tag)
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        path = out / f"profile{tag}.json"
        path.write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "phases"}, indent=2))
        for ph in phases:
            print(json.dumps(ph))
        print(f"JSON: {path}")
    finally:
        if proxy is not None:
            proxy.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    _stack.add_stack_arguments(ap)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--requests", type=int, default=30, help="requests per phase")
    ap.add_argument("--submits", type=int, default=8)
    ap.add_argument("--py-spy", action="store_true", help="sample both trees with py-spy")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--decoder", action="store_true", help="time the decoder in this process")
    ap.add_argument("--out-dir", default="profile-out")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument(
        "--analyse",
        default=None,
        metavar="JSON",
        help="only redo the stages and flame graphs of an earlier run (its profile JSON)",
    )
    args = ap.parse_args()
    if args.analyse:
        path = Path(args.analyse)
        if not path.is_file():
            raise SystemExit(f"error: no such file: {path}")
        result = json.loads(path.read_text())
        tag = path.stem.removeprefix("profile")
        trees = ("label_studio", "backend")
        result["cpu_ms_per_request_by_stage"] = analyse(result["phases"], trees, path.parent, tag)
        path.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["cpu_ms_per_request_by_stage"], indent=1))
        return
    data = _stack.shared_data()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    work = Path(tempfile.mkdtemp(prefix="medcrowd-profile-"))
    step = _stack.stepper()
    try:
        with _stack.running_stack(args, work, step) as stack:
            profile(args, data, out, tag, work, stack, step)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
