"""Active learning on real data: does SQA selection reach the full-data Dice with few labels?

Goal (medcrowd issue 7): with at most 10 % of the pool labelled, SQA selection reaches
>= 97 % of the Dice of a network trained on the whole pool, and beats random selection.

    nice -n 10 python benchmarks/active_learning.py --data isbi --seeds 0 1 2 \
        --out /tmp/medcrowd-al/isbi
    python benchmarks/active_learning.py --data isbi --quick --out /tmp/medcrowd-al/quick

Data (``MEDCROWD_SHARED_DATA``, default ``../shared/data``):

* ``isbi`` — ISBI 2012 EM, 30 slices 512², membranes (label 0). Whole slices are held out:
  test = slices 24–29, pool = slices 0–23 cut into native-resolution ``--size`` tiles.
  ``--split dev`` instead evaluates on slices 18–23 with pool 0–17 (for choosing settings
  without looking at the test slices).
* ``drive`` — DRIVE retinal vessels, green channel. Pool = the 20 training images cut into
  tiles (tiles with < 25 % field of view dropped); test = the 14 test images with the first
  rater's masks, cropped to a multiple of 8 px (the crop removes only black border).
  ``--split dev``: pool = training ids 21–34, evaluation = training ids 35–40.

Schedule: the initial set and every round are ``--round-frac`` of the pool (default 2 %),
``--rounds`` rounds (default 4, so the last point is <= 10 %). Every strategy starts from
the same initial network; the reference network trains on the whole pool for the same total
number of steps. Test Dice = mean over the held-out whole images.

Writes ``curves.png`` (mean over seeds), ``curves-seed<k>.png`` and ``results.json`` to
``--out``; prints a table and one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcrowd.pairs import Pair, binary_arrays, load_pairs  # noqa: E402
from medcrowd.simulate import plot_curves  # noqa: E402
from ml_backend.device import resolve_device  # noqa: E402
from segmenter.active import ALResult, SQASettings, simulate_active_learning  # noqa: E402
from segmenter.data import tiles, to_gray  # noqa: E402
from segmenter.model import SegmenterConfig  # noqa: E402


def _data_root() -> Path:
    return Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))


def _crop8(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    return arr[: h - h % 8, : w - w % 8]


def load_isbi(size: int, split: str) -> dict[str, Any]:
    root = _data_root() / "isbi2012_em" / "train"
    if not root.is_dir():
        sys.exit(f"ISBI 2012 data not found at {root}; set MEDCROWD_SHARED_DATA")
    names, images, masks = binary_arrays(load_pairs(root, invert_masks=True))  # 1 = membrane
    if split == "test":
        pool_ids, test_ids = list(range(24)), list(range(24, 30))
    else:
        pool_ids, test_ids = list(range(18)), list(range(18, 24))
    px, py = tiles([images[i] for i in pool_ids], [masks[i] for i in pool_ids], size)
    return {
        "pool_images": px,
        "pool_masks": py,
        "test_images": np.stack([images[i] for i in test_ids]),
        "test_masks": np.stack([masks[i] for i in test_ids]),
        "pool_slices": [names[i] for i in pool_ids],
        "test_slices": [names[i] for i in test_ids],
    }


def _fov(pair: Pair) -> np.ndarray:
    """A DRIVE pair's field of view, HW uint8 {0, 1}."""
    if pair.fov is None:
        sys.exit(f"no field-of-view mask for DRIVE image {pair.name}")
    return pair.fov.astype(np.uint8)


def load_drive(size: int, split: str) -> dict[str, Any]:
    root = _data_root() / "drive"
    if not (root / "train").is_dir():
        sys.exit(f"DRIVE data not found at {root}; set MEDCROWD_SHARED_DATA")
    train = load_pairs(root / "train")
    names, images, masks = binary_arrays(train, gray=False)  # RGB kept: green channel below
    fov = [_fov(p) for p in train]
    gray = [to_gray(im, "green") for im in images]
    if split == "test":
        pool = list(range(len(names)))
        t_names, t_images, t_masks = binary_arrays(load_pairs(root / "test"), gray=False)
        test_images = [to_gray(im, "green") for im in t_images]
        test_masks = list(t_masks)
        test_names = t_names
    else:
        pool = list(range(14))
        test_images = [gray[i] for i in range(14, 20)]
        test_masks = [masks[i] for i in range(14, 20)]
        test_names = names[14:]
    px, py = tiles([gray[i] for i in pool], [masks[i] for i in pool], size)
    pf, _ = tiles([fov[i] * 255 for i in pool], [fov[i] for i in pool], size)
    keep = (pf > 0).mean(axis=(1, 2)) >= 0.25
    return {
        "pool_images": px[keep],
        "pool_masks": py[keep],
        "test_images": np.stack([_crop8(t) for t in test_images]),
        "test_masks": np.stack([_crop8(m) for m in test_masks]),
        "pool_slices": [names[i] for i in pool],
        "test_slices": list(test_names),
    }


def _mean_results(per_seed: list[list[ALResult]]) -> list[ALResult]:
    out = []
    for k, first in enumerate(per_seed[0]):
        runs = [seed_results[k] for seed_results in per_seed]
        out.append(
            ALResult(
                first.strategy,
                [float(np.mean(v)) for v in zip(*(r.fractions for r in runs), strict=True)],
                [float(np.mean(v)) for v in zip(*(r.dice for r in runs), strict=True)],
            )
        )
    return out


class _Say:
    """Progress on stderr: a line per simulation event (``on_log``), and the step count at
    most every 20 s (``progress``)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.last = 0.0
        self.t0 = time.perf_counter()

    def _print(self, text: str) -> None:
        now = time.perf_counter()
        print(f"[{now - self.t0:7.1f}s] seed {self.seed}: {text}", file=sys.stderr, flush=True)
        self.last = now

    def progress(self, done: int, total: int) -> None:
        if time.perf_counter() - self.last > 20 or done == total:
            self._print(f"{done}/{total} steps")

    def log(self, event: dict[str, Any]) -> None:
        dice = f": Dice {event['dice']:.4f}" if "dice" in event else ""
        self._print(f"{event['stage']}{dice}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("isbi", "drive"), default="isbi")
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--size", type=int, default=64, help="tile side in pixels")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--strategies", nargs="+", default=["sqa", "random", "mc-dropout"])
    parser.add_argument("--round-frac", type=float, default=0.02, help="initial set and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400, help="initial training steps")
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--res-units", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--candidates", type=int, default=512, help="scored per round")
    parser.add_argument("--sqa-folds", type=int, default=3)
    parser.add_argument("--sqa-fold-steps", type=int, default=200)
    parser.add_argument("--sqa-error-steps", type=int, default=200)
    parser.add_argument("--sqa-acquisition", choices=("error", "dice"), default="error")
    parser.add_argument("--sqa-power", type=float, default=1.0, help="power sampling β; 0 = top-k")
    parser.add_argument("--quick", action="store_true", help="tiny schedule: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/medcrowd-al"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.finetune_steps, args.rounds = 60, 30, 2
        args.sqa_fold_steps, args.sqa_error_steps = 30, 30
        args.channels, args.seeds = [8, 16, 32], args.seeds[:1]
    torch.set_num_threads(args.threads)
    data = (load_isbi if args.data == "isbi" else load_drive)(args.size, args.split)
    pool_x, pool_y = data["pool_images"], data["pool_masks"]
    if args.quick:
        pool_x, pool_y = pool_x[::4], pool_y[::4]
    n = len(pool_x)
    per_round = max(1, int(args.round_frac * n))
    config = SegmenterConfig(
        size=args.size,
        channels=tuple(args.channels),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        res_units=args.res_units,
        input_mode="tile",
        gray="green" if args.data == "drive" else "luminance",
        device=resolve_device("auto"),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.data} ({args.split}): pool {n} tiles of {args.size}² from "
        f"{len(data['pool_slices'])} images, test {len(data['test_images'])} whole images; "
        f"initial {per_round}, +{per_round} × {args.rounds} rounds",
        file=sys.stderr,
    )
    per_seed: list[list[ALResult]] = []
    fulls: list[float] = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        say = _Say(seed)
        results, full = simulate_active_learning(
            pool_x,
            pool_y,
            data["test_images"],
            data["test_masks"],
            strategies=tuple(args.strategies),
            initial=per_round,
            per_round=per_round,
            rounds=args.rounds,
            config=config,
            finetune_steps=args.finetune_steps,
            seed=seed,
            progress=say.progress,
            on_log=say.log,
            candidates=args.candidates,
            sqa=SQASettings(
                args.sqa_folds,
                args.sqa_fold_steps,
                args.sqa_error_steps,
                args.sqa_acquisition,
                args.sqa_power or None,
            ),
        )
        per_seed.append(results)
        fulls.append(full)
        plot_curves(results, full, args.out / f"curves-seed{seed}.png", title=f"seed {seed}")
    seconds = time.perf_counter() - t0
    mean = _mean_results(per_seed)
    full_mean = float(np.mean(fulls))
    title = f"{args.data.upper()} ({args.split}), mean of {len(args.seeds)} seed(s)"
    plot_curves(mean, full_mean, args.out / "curves.png", title=title)

    # the last point at or below 10 % of the pool
    points = [i for i, f in enumerate(mean[0].fractions) if f <= 0.10 + 1e-9]
    at = points[-1]
    by_name = {r.strategy: r for r in mean}
    summary: dict[str, Any] = {
        "data": args.data,
        "split": args.split,
        "seeds": args.seeds,
        "pool_tiles": n,
        "test_images": data["test_slices"],
        "fraction_at_goal": mean[0].fractions[at],
        "full_dice": full_mean,
        "full_dice_per_seed": fulls,
        "dice_at_goal": {r.strategy: r.dice[at] for r in mean},
        "ratio_to_full": {r.strategy: r.dice[at] / full_mean for r in mean},
        "seconds": round(seconds, 1),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
    }
    if "sqa" in by_name and "random" in by_name:
        wins = [
            seed_res[args.strategies.index("sqa")].dice[at]
            > seed_res[args.strategies.index("random")].dice[at]
            for seed_res in per_seed
        ]
        summary["sqa_beats_random_seeds"] = f"{sum(wins)}/{len(wins)}"
        summary["goal_97pct"] = summary["ratio_to_full"]["sqa"] >= 0.97
        summary["goal_beats_random"] = by_name["sqa"].dice[at] > by_name["random"].dice[at]
    document = {
        "summary": summary,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "config": config.to_dict(),
        "per_seed": [[r.to_dict() for r in res] for res in per_seed],
        "mean": [r.to_dict() for r in mean],
    }
    (args.out / "results.json").write_text(json.dumps(document, indent=2) + "\n")

    header = "| % labelled | " + " | ".join(r.strategy for r in mean) + " |"
    print(header)
    print("|" + "---|" * (len(mean) + 1))
    for i, frac in enumerate(mean[0].fractions):
        print(f"| {100 * frac:.1f} | " + " | ".join(f"{r.dice[i]:.4f}" for r in mean) + " |")
    print(f"full pool ({n} tiles): Dice {full_mean:.4f}; seeds {args.seeds}; {seconds:.0f} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
