"""Load test: 30 virtual volunteers against Label Studio + the ML backend on loopback.

Starts Label Studio (embedded, SQLite, a temporary data directory) and the backend
(``medcrowd backend serve`` as a child process, ``--backend-workers`` processes), creates a
project with real CT slices from ``sammed2d_demo`` (the 4 slices with organ masks, each in
several orientations and shifts so that there are enough distinct images: every one is a
new embedding for the backend), signs up ``--volunteers`` accounts through the invite link
and lets them work the queue in threads for ``--duration`` seconds, each exactly as
``scripts/simulate_crowd.py`` does (the same :class:`medcrowd.volunteer_sim.Volunteer`):

1. ``GET /api/projects/{id}/next`` (the Community queue, overlap ``--overlap``);
2. think, draw a box from its perception of the organ (seeded annotator models), ask
   ``POST /api/ml/{ml}/interactive-annotating`` — the UI's call; Label Studio calls the
   backend's ``/predict`` — and correct the mask; ``--boxes`` boxes per task (a redraw);
3. think, ``POST /api/annotations`` (submit).

Think time (``--think``, default 3 s, each pause uniform in 0.5–1.5x): a fast, attentive
volunteer — about 3 s to look and draw a box, 3 s to check the mask before submitting. Real
annotators take 20–90 s per annotation (the lead times in the simulator), so the request
rate here is well above what 30 real people make; ``--think 0`` is a different test
(saturation: every volunteer fires its next request as soon as the previous one returns).

Measured per request kind: count, requests/s, p50/p95/p99 latency, errors (any exception,
any non-2xx, and an interactive answer without a mask, with reasons). Box → mask requests are
split: ``box_cold`` = the first box on an image in this run (the backend computes the
embedding; no webhook pre-warming unless ``--prewarm``), ``box_warm`` = a box on an image
whose first box had already come back, ``box_cold_wait`` = sent while that first box was
still running. RSS and CPU of the Label Studio and backend process trees (and of this
client) are sampled every second. CPU used by other processes during the run is reported;
above 10 % of the machine the result is marked "busy machine" (not a final figure).

Afterwards the project's annotations are exported and compared with the submits that
returned 2xx: every one stored, none twice, nothing else.

CPU-ms per request of each tree (its mean CPU × run time / every request of the run) is
printed next to the load average: on a shared machine it is the figure to compare, the
latencies are not (docs/performance.md).

A box the backend answers 503 ("busy", with ``Retry-After``) reaches the volunteer through
Label Studio as an error; the volunteer waits and asks again
(:meth:`medcrowd.volunteer_sim.Volunteer.ask_backend`), and the run counts those waits.

Capacity curve (issue 15): comma-separated ``--volunteers`` and ``--think`` lists (or
``--curve`` = ``5,10,20,30,50`` × ``3,20``) run every combination on the same Label Studio
and backend, a fresh project each, and write one JSON with every point and a PNG (p95 per
request kind and CPU-ms per request against volunteers, one line per think time).

Goal (issue 8): 0 errors, warm box → mask p95 <= 150 ms on 2 cores.

    python benchmarks/load_volunteers.py                     # 30 volunteers, 5 minutes
    python benchmarks/load_volunteers.py --quick             # 30 s smoke run
    python benchmarks/load_volunteers.py --think 0 --duration 120
    python benchmarks/load_volunteers.py --backend-workers 2 --out load-2w.json
    python benchmarks/load_volunteers.py --curve --duration 60 --prewarm --no-prelabel
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

from _machine import machine as machine_info  # noqa: E402
from _stack import (  # noqa: E402
    Stack,
    add_stack_arguments,
    import_tasks,
    new_project,
    running_stack,
    shared_data,
    stepper,
)

from medcrowd.studio import RetryPolicy, Studio  # noqa: E402
from medcrowd.volunteer_sim import Volunteer, make_volunteers  # noqa: E402

R = TypeVar("R")

DEFAULT_MODELS = "good,good,sloppy,dilate,erode,miss_small,partial,good,sloppy,spammer_blobs"
"""Cycled over the volunteers: 1 in 10 is a spammer (submits without asking the backend)."""
KINDS = ("next", "box_cold", "box_cold_wait", "box_warm", "submit", "skip")
GOAL_WARM_P95_MS = 150.0


# ------------------------------------------------------------------ images and truths


def shift(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate by (dy, dx) pixels, filling with zeros (air in a CT slice)."""
    out = np.zeros_like(array)
    h, w = array.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = array[ys, xs]
    return out


def variant(array: np.ndarray, index: int) -> np.ndarray:
    """Orientation ``index % 8`` (rotations x flip) and a shift growing with ``index // 8``."""
    d, k = index % 8, index // 8
    out = np.rot90(array, d % 4)
    if d >= 4:
        out = out[:, ::-1]
    return shift(np.ascontiguousarray(out), 3 * k, 5 * k)


def make_tasks(data: Path, count: int, out: Path) -> list[tuple[str, bytes]]:
    """``count`` distinct CT images with one organ's expert mask each (``out/<stem>.png``).

    Image ``v`` is base slice ``v % 4`` (those with organ masks) in :func:`variant`
    ``v // 4``, labelled for organ ``(v // 4) % organs``.
    """
    demo = data / "sammed2d_demo"
    bases: dict[str, list[Path]] = defaultdict(list)
    for image in sorted((demo / "images").glob("*.png")):
        bases[image.stem] = sorted((demo / "masks").glob(f"{image.stem}_*.png"))
    bases = {stem: masks for stem, masks in bases.items() if masks}
    if not bases:
        raise SystemExit(f"no sammed2d_demo images with masks under {data}")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    stems = sorted(bases)
    for v in range(count):
        stem = stems[v % len(stems)]
        k = v // len(stems)
        image = np.asarray(Image.open(demo / "images" / f"{stem}.png").convert("RGB"))
        organ = bases[stem][k % len(bases[stem])]
        mask = np.asarray(Image.open(organ)) > 0
        name = f"{stem}_v{v:03d}"
        Image.fromarray(variant(mask, k).astype(np.uint8) * 255).save(out / f"{name}.png")
        buf = io.BytesIO()
        Image.fromarray(variant(image, k)).save(buf, format="PNG")
        files.append((f"{name}.png", buf.getvalue()))
    return files


# ------------------------------------------------------------------ measuring


class Stopped(Exception):
    """The run's deadline passed while a volunteer was thinking."""


@dataclass
class Recorder:
    """Times every request the volunteers make (the :class:`Timed` hook) and keeps errors."""

    t0: float = field(default_factory=time.perf_counter)
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    submitted: list[int] = field(default_factory=list)
    queue_empty: int = 0
    cut_off: int = 0
    """Requests the end of the run interrupted (a volunteer waiting out a 503): not errors."""
    _first_sent: set[str] = field(default_factory=set)
    _first_done: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, call: Callable[[], R], **info: Any) -> R:
        image = info.get("image")
        first = False
        if kind == "box":
            with self._lock:
                if image not in self._first_sent:
                    self._first_sent.add(image)
                    kind, first = "box_cold", True
                else:
                    kind = "box_warm" if image in self._first_done else "box_cold_wait"
        start = time.perf_counter()
        try:
            out = call()
        except Stopped:  # the run ended while the volunteer waited out a busy answer
            with self._lock:
                self.cut_off += 1
            raise
        except Exception as exc:
            self._error(kind, f"{type(exc).__name__}: {_short(exc)}")
            raise
        finally:
            if first:
                with self._lock:
                    self._first_done.add(image)  # type: ignore[arg-type]
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        problem = None
        if kind == "next" and out is None:  # the queue has nothing more for this volunteer
            with self._lock:
                self.queue_empty += 1
            return out
        if kind.startswith("box") and not ((out or {}).get("data") or {}).get("result"):
            problem = f"no mask in the answer: {_short((out or {}).get('errors') or out)}"
        if problem is not None:
            self._error(kind, problem)
            return out
        with self._lock:
            self.samples[kind].append(elapsed_ms)
            if kind == "submit":
                self.submitted.append(int(out))  # type: ignore[call-overload]
        return out

    def _error(self, kind: str, reason: str) -> None:
        with self._lock:
            self.errors[kind][reason] += 1


def _short(value: Any, n: int = 160) -> str:
    return " ".join(str(value).split())[:n]


def summary(values: list[float], errors: int, seconds: float) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    pct = (lambda q: round(float(np.percentile(arr, q)), 1)) if arr.size else (lambda q: None)
    return {
        "count": int(arr.size),
        "errors": errors,
        "per_s": round((arr.size + errors) / seconds, 2),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(float(arr.max()), 1) if arr.size else None,
    }


class TreeSampler:
    """Every second: RSS (MiB) and CPU (% of one core) of process trees, and the machine's.

    Label Studio and the backend are children of this process: the client is measured alone.

    psutil when installed, else /proc (Linux).
    """

    def __init__(self, roots: dict[str, int], single: frozenset[str] = frozenset()) -> None:
        self.roots = roots
        self.single = single  # names measured without their children (this client)
        self.series: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ticks: dict[int, float] = {}
        self.lag_ms: list[float] = []
        self._lag_thread = threading.Thread(target=self._probe_lag, daemon=True)
        try:
            import psutil

            self._psutil: Any = psutil
        except ImportError:
            self._psutil = None

    def __enter__(self) -> TreeSampler:
        self._cpu_prev = _machine_ticks()
        self._start = self._wall_prev = time.monotonic()
        self._sample()  # baseline for the CPU deltas
        self.series.clear()
        self._thread.start()
        self._lag_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._lag_thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _probe_lag(self) -> None:
        """How late a 10 ms sleep wakes up in this client: the timing noise of the measurement
        (30 volunteer threads share one interpreter lock and the two cores)."""
        while not self._stop.is_set():
            start = time.perf_counter()
            time.sleep(0.01)
            self.lag_ms.append((time.perf_counter() - start - 0.01) * 1000.0)

    def _tree(self, pid: int) -> list[int]:
        if self._psutil is not None:
            try:
                root = self._psutil.Process(pid)
                return [pid] + [c.pid for c in root.children(recursive=True)]
            except self._psutil.Error:
                return []
        children: dict[int, list[int]] = defaultdict(list)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                children[int(fields[1])].append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def _sample(self) -> None:
        now = time.monotonic()
        wall = max(now - self._wall_prev, 1e-6)
        row: dict[str, float] = {"t": round(now - self._start, 2)}
        for name, root in self.roots.items():
            rss = cpu = 0.0
            for pid in [root] if name in self.single else self._tree(root):
                got = _proc_rss_ticks(pid)
                if got is None:
                    continue
                rss += got[0]
                prev = self._ticks.get(pid, got[1])
                cpu += (got[1] - prev) / _HZ / wall * 100.0
                self._ticks[pid] = got[1]
            row[f"{name}_rss_mib"] = round(rss / 2**20, 1)
            row[f"{name}_cpu_pct"] = round(cpu, 1)
        busy, total = _machine_ticks()
        prev_busy, prev_total = self._cpu_prev
        row["machine_cpu_pct"] = round(
            100.0 * (busy - prev_busy) / max(total - prev_total, 1) * (os.cpu_count() or 1), 1
        )
        self._cpu_prev, self._wall_prev = (busy, total), now
        self.series.append(row)


_HZ = os.sysconf("SC_CLK_TCK")


def _proc_rss_ticks(pid: int) -> tuple[float, float] | None:
    """(RSS bytes, user+system CPU clock ticks) of one process from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return rss_pages * os.sysconf("SC_PAGE_SIZE"), float(int(fields[11]) + int(fields[12]))


def _machine_ticks() -> tuple[float, float]:
    """(busy, total) CPU clock ticks of the whole machine from /proc/stat."""
    values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


# ------------------------------------------------------------------ the services


# ------------------------------------------------------------------ the run


def volunteer_loop(vol: Volunteer, stop: threading.Event, rec: Recorder) -> None:
    """Work the queue until ``stop``; a failed request (already recorded) skips the task."""
    while not stop.is_set():
        try:
            task = vol.next_task()
        except Stopped:
            return
        except Exception:  # recorded by the Recorder; a person would reload the page
            stop.wait(1.0)
            continue
        if task is None:
            return  # the queue has nothing more for this volunteer (counted)
        try:
            vol.work(task)
        except Stopped:
            return
        except Exception:  # noqa: S112 - recorded by the Recorder; on to the next task
            continue


def auto_tasks(args: argparse.Namespace) -> int:
    """Enough distinct images that the queue does not run dry (clamped to 20..400)."""
    loop_s = (args.boxes + 1) * args.think + 0.5 * args.boxes + 0.5
    needed = args.volunteers * args.duration / loop_s / args.overlap * 1.25
    return int(min(400, max(20, math.ceil(needed))))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start Label Studio and the backend once, then run every (volunteers, think) point."""
    data = shared_data()
    work = Path(tempfile.mkdtemp(prefix="medcrowd-load-"))
    step = stepper()
    results = []
    try:
        with running_stack(args, work, step) as stack:
            for volunteers in args.volunteer_list:
                for think in args.think_list:
                    point = argparse.Namespace(**{**vars(args), "volunteers": volunteers,
                                                  "think": think})  # fmt: skip
                    results.append(run_point(point, data, stack, work, step))
                    if len(args.volunteer_list) * len(args.think_list) > 1:
                        print_table(results[-1])
        return results
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


def run_point(
    args: argparse.Namespace,
    data: Path,
    stack: Stack,
    work: Path,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """One measurement: a fresh project, ``args.volunteers`` volunteers for ``args.duration``."""
    load_before = os.getloadavg()
    ls, backend, admin = stack.ls, stack.backend, stack.admin
    pid = new_project(stack, "load", args.overlap)
    tasks = args.tasks or auto_tasks(args)
    step(f"making {tasks} task images")
    truth = work / f"truth-{pid}"
    files = make_tasks(data, tasks, truth)
    # every point imports the same images (make_tasks is deterministic): embeddings a
    # previous point computed are already on disk under their content hash
    ml_id = import_tasks(stack, pid, files, prewarm=args.prewarm, step=step)
    if args.no_prelabel:
        # "Use predictions to pre-label tasks" off: /next no longer makes Label Studio call
        # the backend's /predict for the task (it answers [] anyway without a draft model)
        admin.request("PATCH", f"/api/projects/{pid}/", json={"show_collab_predictions": False})
    step(f"signing up (or reusing) {args.volunteers} volunteers")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    models = [models[i % len(models)] for i in range(args.volunteers)]
    stop = threading.Event()
    rec = Recorder()

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopped

    crowd = make_volunteers(
        admin,
        pid,
        ml_id,
        models,
        {p.stem: p for p in truth.glob("*.png")},
        work / "accounts.json",
        args.seed,
        studio_factory=lambda token: Studio(
            ls.url, token, timeout_s=args.timeout, retry=RetryPolicy(budget_s=0)
        ),
        boxes=args.boxes,
        think_s=args.think,
        timed=rec.timed,
        sleep=sleep,
    )
    roots = {
        "label_studio": ls.proc.pid,  # type: ignore[union-attr]
        "backend": backend.proc.pid,  # type: ignore[union-attr]
        "client": os.getpid(),
    }
    step(
        f"running {args.volunteers} volunteers for {args.duration:.0f} s "
        f"(think {args.think} s, {args.boxes} box(es) per task)"
    )
    threads = [
        threading.Thread(target=volunteer_loop, args=(v, stop, rec), daemon=True) for v in crowd
    ]
    with TreeSampler(roots, single=frozenset({"client"})) as sampler:
        rec.t0 = time.perf_counter()
        for thread in threads:
            thread.start()
            time.sleep(min(0.1, args.think / 10))  # people do not all click at once
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline and any(t.is_alive() for t in threads):
            time.sleep(0.5)
        stop.set()
        run_s = time.perf_counter() - rec.t0
        for thread in threads:
            thread.join(timeout=args.timeout + 30)
    step("verifying the stored annotations")
    verify = verify_annotations(admin, pid, rec.submitted)
    result = report(args, rec, sampler, run_s, verify, load_before, tasks, work)
    result["busy_answers_waited_out"] = sum(v.busy_answers for v in crowd)
    return result


def verify_annotations(admin: Studio, project_id: int, submitted: list[int]) -> dict[str, Any]:
    """Compare Label Studio's annotations with the submits that returned 2xx."""
    stored: list[int] = []
    per_person: Counter[tuple[int, Any]] = Counter()
    for task in admin.export_tasks(project_id):
        for ann in task.get("annotations") or []:
            stored.append(int(ann["id"]))
            who = ann.get("completed_by")
            per_person[(int(task["id"]), who.get("id") if isinstance(who, dict) else who)] += 1
    ok = set(submitted)
    return {
        "submits_2xx": len(submitted),
        "stored": len(stored),
        "lost": sorted(ok - set(stored)),
        "not_acknowledged": sorted(set(stored) - ok),
        "same_person_twice_on_a_task": sum(1 for n in per_person.values() if n > 1),
        "ok": sorted(stored) == sorted(submitted)
        and len(submitted) == len(ok)
        and all(n == 1 for n in per_person.values()),
    }


def report(
    args: argparse.Namespace,
    rec: Recorder,
    sampler: TreeSampler,
    run_s: float,
    verify: dict[str, Any],
    load_before: tuple[float, float, float],
    tasks: int,
    work: Path,
) -> dict[str, Any]:
    kinds = {
        k: summary(rec.samples.get(k, []), sum(rec.errors.get(k, Counter()).values()), run_s)
        for k in KINDS
    }
    kinds = {k: v for k, v in kinds.items() if v["count"] or v["errors"]}
    series = sampler.series
    lag = np.asarray(sampler.lag_ms or [0.0])
    resources: dict[str, Any] = {}
    for name in ("label_studio", "backend", "client"):
        rss = [row[f"{name}_rss_mib"] for row in series]
        cpu = [row[f"{name}_cpu_pct"] for row in series]
        resources[name] = {
            "rss_mib_peak": max(rss, default=0.0),
            "rss_mib_mean": round(float(np.mean(rss)), 1) if rss else 0.0,
            "cpu_pct_mean": round(float(np.mean(cpu)), 1) if cpu else 0.0,
        }
    total_requests = sum(v["count"] + v["errors"] for v in kinds.values()) or 1
    boxes = sum(kinds.get(k, {}).get("count", 0) for k in ("box_cold", "box_cold_wait", "box_warm"))
    for name in ("label_studio", "backend", "client"):
        cpu_ms = resources[name]["cpu_pct_mean"] / 100.0 * run_s * 1000.0
        resources[name]["cpu_ms_per_request"] = round(cpu_ms / total_requests, 1)
        resources[name]["cpu_ms_per_box"] = round(cpu_ms / boxes, 1) if boxes else None
    machine = [row["machine_cpu_pct"] for row in series]
    ours = [
        sum(row[f"{n}_cpu_pct"] for n in ("label_studio", "backend", "client")) for row in series
    ]
    cpus = os.cpu_count() or 1
    foreign = float(np.mean(np.maximum(np.asarray(machine) - np.asarray(ours), 0))) if series else 0
    busy = foreign > 10.0 * cpus
    errors_total = sum(sum(c.values()) for c in rec.errors.values())
    warm = kinds.get("box_warm", {})
    goal_met = bool(
        errors_total == 0
        and verify["ok"]
        and warm.get("p95_ms") is not None
        and warm["p95_ms"] <= GOAL_WARM_P95_MS
    )
    return {
        "benchmark": "load_volunteers",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": {
            k: v for k, v in vars(args).items() if k not in ("out", "volunteer_list", "think_list")
        }
        | {"tasks": tasks},
        "machine": {
            **machine_info(),
            "cpus": cpus,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "foreign_cpu_pct_mean": round(foreign, 1),
            "busy_machine": busy,
        },
        "client_timing_lag_ms": {
            "p50": round(float(np.percentile(lag, 50)), 1),
            "p95": round(float(np.percentile(lag, 95)), 1),
            "p99": round(float(np.percentile(lag, 99)), 1),
        },
        "run_s": round(run_s, 1),
        "requests": kinds,
        "errors": {k: dict(c) for k, c in rec.errors.items() if c},
        "errors_total": errors_total,
        "queue_empty": rec.queue_empty,
        "cut_off_by_the_end_of_the_run": rec.cut_off,
        "resources": resources,
        "verify": verify,
        "goal": {"warm_p95_ms_max": GOAL_WARM_P95_MS, "zero_errors": True, "met": goal_met},
        "series": series,
        "workdir": str(work) if args.keep else None,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['config']['volunteers']} volunteers, {result['run_s']:.0f} s, think "
        f"{result['config']['think']} s, {result['config']['boxes']} box(es)/task, overlap "
        f"{result['config']['overlap']}, {result['config']['tasks']} images, backend "
        f"workers {result['config']['backend_workers']}, {result['machine']['cpus']} CPUs"
    )
    if result["machine"]["busy_machine"]:
        print(
            f"BUSY MACHINE: other processes used {result['machine']['foreign_cpu_pct_mean']} % "
            "CPU on average during the run — not a final figure"
        )
    print(
        f"\n{'request':<15}{'count':>7}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'errors':>8}"
    )
    for kind, s in result["requests"].items():
        cells = [
            f"{s[k]:>9.1f}" if s[k] is not None else f"{'-':>9}"
            for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        ]
        print(f"{kind:<15}{s['count']:>7}{s['per_s']:>8.2f}{''.join(cells)}{s['errors']:>8}")
    for kind, reasons in result["errors"].items():
        for reason, n in reasons.items():
            print(f"  error {kind}: {n} x {reason}")
    if result["queue_empty"]:
        print(f"  the queue ran dry {result['queue_empty']} time(s): raise --tasks")
    print(
        f"\n{'process tree':<15}{'RSS peak MiB':>14}{'RSS mean MiB':>14}{'CPU mean %':>12}"
        f"{'CPU-ms/req':>12}"
    )
    for name, r in result["resources"].items():
        print(
            f"{name:<15}{r['rss_mib_peak']:>14.0f}{r['rss_mib_mean']:>14.0f}"
            f"{r['cpu_pct_mean']:>12.0f}{r.get('cpu_ms_per_request', 0):>12.1f}"
        )
    m = result["machine"]
    print(f"load average before {m['loadavg_before']}, after {m.get('loadavg_after')}")
    if result.get("busy_answers_waited_out"):
        print(
            f"busy (503) answers waited out by the volunteers: {result['busy_answers_waited_out']}"
        )
    lag = result["client_timing_lag_ms"]
    print(
        f"client timing lag (a 10 ms sleep wakes late by): p50 {lag['p50']} ms, "
        f"p95 {lag['p95']} ms, p99 {lag['p99']} ms"
    )
    v = result["verify"]
    print(
        f"\nannotations: {v['submits_2xx']} submits returned 2xx, {v['stored']} stored; lost "
        f"{len(v['lost'])}, unacknowledged {len(v['not_acknowledged'])}, same person twice "
        f"{v['same_person_twice_on_a_task']} → {'OK' if v['ok'] else 'MISMATCH'}"
    )
    g = result["goal"]
    print(
        f"goal (0 errors, warm p95 <= {g['warm_p95_ms_max']:.0f} ms): "
        f"{'met' if g['met'] else 'NOT met'}"
    )


def _numbers(text: str, kind: type) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"error: not a comma-separated list of numbers: {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise SystemExit(f"error: need non-negative numbers, got {text!r}")
    return values


def plot_curve(results: list[dict[str, Any]], path: Path) -> None:
    """p95 per request kind (and CPU-ms per request) against volunteers, one line per think."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    thinks = sorted({r["config"]["think"] for r in results})
    for think in thinks:
        rows = sorted((r for r in results if r["config"]["think"] == think),
                      key=lambda r: r["config"]["volunteers"])  # fmt: skip
        vols = [r["config"]["volunteers"] for r in rows]
        for ax, kind in zip(axes[:3], ("box_warm", "next", "submit"), strict=True):
            ys = [(r["requests"].get(kind) or {}).get("p95_ms") for r in rows]
            ax.plot(vols, [y if y is not None else float("nan") for y in ys], "o-",
                    label=f"think {think:g} s")  # fmt: skip
            ax.set_title(f"{kind} p95 (ms)")
            ax.set_yscale("log")
        cpu = [sum(r["resources"][t]["cpu_ms_per_request"] for t in ("label_studio", "backend"))
               for r in rows]  # fmt: skip
        axes[3].plot(vols, cpu, "o-", label=f"think {think:g} s")
        axes[3].set_title("CPU-ms per request (LS + backend)")
    axes[0].axhline(GOAL_WARM_P95_MS, color="grey", ls="--", lw=1)
    axes[1].axhline(300, color="grey", ls="--", lw=1)
    for ax in axes:
        ax.set_xlabel("volunteers")
        ax.legend(fontsize=8)
    load = results[0]["machine"]["loadavg_before"]
    fig.suptitle(
        f"capacity on {results[0]['machine']['cpus']} cores (load average at start {load})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--volunteers",
        default="30",
        help="volunteers; a comma-separated list makes a capacity curve (e.g. 5,10,20,30,50)",
    )
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load per point")
    ap.add_argument("--quick", action="store_true", help="a 30-s smoke run (--duration 30)")
    ap.add_argument(
        "--think",
        default="3",
        help="mean pause (s) before each box and before submitting; 0: none; a "
        "comma-separated list makes a capacity curve (e.g. 3,20)",
    )
    ap.add_argument(
        "--curve",
        action="store_true",
        help="the capacity curve: --volunteers 5,10,20,30,50 --think 3,20",
    )
    ap.add_argument("--plot", default=None, help="PNG of the curve (default: next to --out)")
    ap.add_argument("--boxes", type=int, default=2, help="boxes drawn per task (redraws)")
    ap.add_argument("--overlap", type=int, default=5, help="volunteers per task")
    ap.add_argument(
        "--tasks",
        type=int,
        default=0,
        help="distinct images (default: enough for the run, 20..400)",
    )
    ap.add_argument(
        "--models", default=DEFAULT_MODELS, help="annotator models, cycled over the volunteers"
    )
    ap.add_argument(
        "--no-prelabel",
        action="store_true",
        help="turn the project's 'use predictions to pre-label' off (a cheaper /next)",
    )
    ap.add_argument(
        "--prewarm",
        action="store_true",
        help="connect the backend before the import so its webhook pre-computes "
        "every embedding (then box_cold is rare)",
    )
    add_stack_arguments(ap)
    ap.add_argument("--timeout", type=float, default=60.0, help="client request timeout (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results (default: load_volunteers.json)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    args = ap.parse_args()
    if args.quick:
        args.duration = 30.0
    if args.curve:
        args.volunteers, args.think = "5,10,20,30,50", "3,20"
    args.volunteer_list = _numbers(args.volunteers, int)
    args.think_list = _numbers(args.think, float)
    args.volunteers, args.think = args.volunteer_list[0], args.think_list[0]
    if min(args.volunteer_list) < 1 or args.duration <= 0 or args.boxes < 1 or args.overlap < 1:
        raise SystemExit("--volunteers, --duration, --boxes and --overlap must be positive")
    results = run(args)
    out = Path(args.out or "load_volunteers.json")
    if len(results) == 1:
        out.write_text(json.dumps(results[0], indent=2))
        print_table(results[0])
    else:
        out.write_text(
            json.dumps({"benchmark": "load_volunteers curve", "points": results}, indent=2)
        )
        png = Path(args.plot) if args.plot else out.with_suffix(".png")
        plot_curve(results, png)
        print(f"\nPNG: {png}")
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
