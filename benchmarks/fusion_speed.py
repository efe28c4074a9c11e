"""Speed of fusion.Staple vs SimpleITK's STAPLEImageFilter, and of CrowdStaple at scale.

Run: ``python benchmarks/fusion_speed.py [--repeats 3] [--seed 0]``

Cases:
  * 2D: 5 simulated raters (benchmarks/crowd_models.py: good, sloppy, dilate, erode,
    miss_small) from DRIVE test 01 manual1, 5×584×565 (skipped without the shared data).
  * 3D: synthetic ellipsoid, 5 raters with 1–10 % random flips, 5×128×256×256.
  * CrowdStaple: 10,000 tasks × 5 raters × 64×64 (disks, 5 % flips, 50 annotators).
Times are medians of ``--repeats`` runs; peak memory of ours via tracemalloc (a separate run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from crowd_models import simulate_crowd

from fusion import CrowdStaple, Staple
from fusion.metrics import dice

REPO = Path(__file__).resolve().parents[1]


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _sitk_staple(masks: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1.0)
    return sitk.GetArrayFromImage(flt.Execute(images))


def _drive_crowd(seed: int) -> np.ndarray | None:
    from PIL import Image

    root = Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = root / "drive" / "test" / "manual1" / "01_manual1.gif"
    if not path.exists():
        return None
    expert = np.array(Image.open(path)) > 0
    return simulate_crowd(expert, ["good", "sloppy", "dilate", "erode", "miss_small"], seed)


def _volume_crowd(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:128, :256, :256]
    truth = ((z - 64) / 40.0) ** 2 + ((y - 128) / 80.0) ** 2 + ((x - 120) / 60.0) ** 2 < 1
    flips = [0.01, 0.03, 0.05, 0.08, 0.10]
    return np.stack([truth ^ (rng.random(truth.shape) < f) for f in flips])


def _crowd_tasks(seed: int, n_tasks: int) -> tuple[list[np.ndarray], list[list[int]]]:
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:64, :64]
    tasks, anns = [], []
    for _ in range(n_tasks):
        cy, cx = rng.integers(16, 48, 2)
        r = rng.integers(5, 14)
        truth = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        tasks.append(np.repeat(truth[None], 5, 0) ^ (rng.random((5, 64, 64)) < 0.05))
        anns.append([int(a) for a in rng.choice(50, 5, replace=False)])
    return tasks, anns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated raters")
    parser.add_argument("--tasks", type=int, default=10_000, help="CrowdStaple task count")
    args = parser.parse_args()
    print(f"seed={args.seed} repeats={args.repeats} cpus={os.cpu_count()}")

    rows = []
    cases = [
        ("2D DRIVE 5x584x565", _drive_crowd(args.seed)),
        ("3D 5x128x256x256", _volume_crowd(args.seed)),
    ]
    for name, masks in cases:
        if masks is None:
            print(f"{name}: skipped (no shared data)")
            continue
        ours = _median_time(lambda m=masks: Staple().fit_predict(m), args.repeats)
        ref = _median_time(lambda m=masks: _sitk_staple(m), args.repeats)
        peak = _peak_mib(lambda m=masks: Staple().fit_predict(m))
        agree = dice(Staple().fit_predict(masks).mask, _sitk_staple(masks) > 0.5)
        rows.append((name, ours, ref, ref / ours, peak, agree))

    print()
    print(
        f"{'case':<22} {'ours s':>8} {'SimpleITK s':>12} {'speed-up':>9} "
        f"{'peak MiB':>9} {'Dice vs sitk':>13}"
    )
    for name, ours, ref, ratio, peak, agree in rows:
        print(f"{name:<22} {ours:>8.3f} {ref:>12.3f} {ratio:>8.1f}x {peak:>9.1f} {agree:>13.5f}")

    tasks, anns = _crowd_tasks(args.seed, args.tasks)
    t0 = time.perf_counter()
    result = CrowdStaple().fit_predict(tasks, anns)
    elapsed = time.perf_counter() - t0
    print()
    print(
        f"CrowdStaple {args.tasks} tasks x 5 raters x 64x64: {elapsed:.1f} s "
        f"({result.n_iter} EM iterations, converged={result.converged})"
    )


if __name__ == "__main__":
    main()
