"""CrowdStaple in this process vs DaskCrowdStaple on a LocalCluster: time, peak memory, and
whether the results are identical.

Run: ``python benchmarks/fusion_dask.py [--tasks 20000] [--workers 2] [--chunk-size 1024]``

The project is synthetic and seeded: ``--tasks`` tasks of 5 raters × 64×64 (a disk per task,
100 annotators, each with their own flip rate 1–10 %, 5 of them spammers at 50 %). Each mode
runs in a fresh subprocess that builds the same crowd, so the figures do not share caches:

* time: the fit only (for Dask also with the LocalCluster's start and stop);
* peak memory: the largest sum of RSS over the process and all its children (the Dask
  workers), sampled every 20 ms with psutil — the input masks are in both figures;
* digest: SHA-256 over every fused mask, posterior map, rate and prior; equal digests mean
  bit-identical results.

Dask has a fixed cost per EM iteration (one round trip to every worker) and ships the
masks to the workers and the results back; on a 2-core machine it cannot win on compute.
It is for projects whose chunks do not fit one machine, or a cluster with many more cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion import CrowdStaple, DaskCrowdStaple
from fusion.distributed import dask_client


def synthetic_project(seed: int, n_tasks: int) -> tuple[list[np.ndarray], list[list[int]]]:
    """(T tasks of (5, 64, 64) bool, their annotator ids) — see the module docstring."""
    rng = np.random.default_rng(seed)
    flip = rng.uniform(0.01, 0.10, 100)
    flip[:5] = 0.5  # spammers
    yy, xx = np.ogrid[:64, :64]
    tasks, annotators = [], []
    for _ in range(n_tasks):
        cy, cx = rng.integers(16, 48, 2)
        r = rng.integers(5, 14)
        truth = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        ids = rng.choice(100, 5, replace=False)
        noise = rng.random((5, 64, 64)) < flip[ids][:, None, None]
        tasks.append(truth[None] ^ noise)
        annotators.append([int(a) for a in ids])
    return tasks, annotators


class _PeakRss:
    """Peak of (RSS of this process + all its descendants), sampled in a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker may exit between listing and reading
                pass
        return int(total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self._interval)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _digest(result: Any, model: CrowdStaple) -> str:
    h = hashlib.sha256()
    for mask, prob in zip(result.masks, result.probabilities, strict=True):
        h.update(np.ascontiguousarray(mask).tobytes())
        h.update(np.ascontiguousarray(prob).tobytes())
    for arr in (model.sensitivity_, model.specificity_, model.em_sensitivity_,
                model.em_specificity_, model.task_prior_):  # fmt: skip
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr((result.n_iter, result.converged, result.fallback)).encode())
    return h.hexdigest()


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process (called in a fresh subprocess per mode)."""
    tasks, annotators = synthetic_project(args.seed, args.tasks)
    out: dict[str, Any] = {"mode": mode}
    with _PeakRss() as rss:
        t0 = time.perf_counter()
        if mode == "in-process":
            model: CrowdStaple = CrowdStaple(chunk_size=args.chunk_size)
            result = model.fit_predict(tasks, annotators)
            out["fit_s"] = time.perf_counter() - t0
        else:
            with dask_client("local", n_workers=args.workers, threads_per_worker=1) as client:
                t1 = time.perf_counter()
                model = DaskCrowdStaple(chunk_size=args.chunk_size)
                result = model.fit_predict(tasks, annotators, client=client)
                out["fit_s"] = time.perf_counter() - t1
        out["with_cluster_s"] = time.perf_counter() - t0
    out.update(peak_rss_mib=rss.peak / 2**20, n_iter=result.n_iter, digest=_digest(result, model))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks in the project")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--chunk-size", type=int, default=1024, help="tasks per chunk")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic project")
    parser.add_argument("--run", choices=["in-process", "dask"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_mode(args.run, args)))
        return

    voxels = args.tasks * 5 * 64 * 64
    print(f"tasks={args.tasks} (5 raters × 64², {voxels / 1e6:.0f} M votes, masks "
          f"{voxels / 2**20:.0f} MiB) chunk_size={args.chunk_size} workers={args.workers} "
          f"seed={args.seed} cpus={os.cpu_count()}")  # fmt: skip
    rows = []
    for mode in ("in-process", "dask"):
        cmd = [sys.executable, __file__, "--run", mode, "--tasks", str(args.tasks),
               "--workers", str(args.workers), "--chunk-size", str(args.chunk_size),
               "--seed", str(args.seed)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ref = rows[0]
    print(f"{'mode':<12} {'fit s':>8} {'+cluster s':>10} {'peak RSS MiB':>13} {'iters':>6}")
    for r in rows:
        print(f"{r['mode']:<12} {r['fit_s']:>8.2f} {r['with_cluster_s']:>10.2f} "
              f"{r['peak_rss_mib']:>13.0f} {r['n_iter']:>6}")  # fmt: skip
    dask = rows[1]
    print(
        f"dask / in-process: fit time {dask['fit_s'] / ref['fit_s']:.2f}×, "
        f"with cluster start {dask['with_cluster_s'] / ref['with_cluster_s']:.2f}×, "
        f"peak memory {dask['peak_rss_mib'] / ref['peak_rss_mib']:.2f}×"
    )
    same = dask["digest"] == ref["digest"]
    print(f"results identical bit for bit: {same} (sha256 {ref['digest'][:16]}…)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
