"""3-D propagation from one box on ``msd_spleen_ct``: volume Dice and false-positive slices.

The volume (164×166×26, spleen on 20 of 26 axial slices) is windowed as ``medcrowd import``
does (CT soft tissue, W400 L40) and given to :func:`ml_backend.propagate` with the tight box
of the expert mask on one slice (default: the middle of the labelled range). Printed:

* per slice: expert pixels, raw model pixels, kept pixels, predicted IoU, area ratio,
  intensity-consistent share, slice Dice, accepted / the stop reason;
* volume Dice, false-positive slices (a mask where the expert has none), missed slices;
* the same for the naive rule of the issue (previous mask's box + 3 px, stop when empty) as
  the reference;
* ``--all-seeds``: volume Dice and false-positive slices with the box on every labelled
  slice in turn (a robustness check of the fixed rule, not a tuning loop).

    python benchmarks/propagation.py [--index K] [--all-seeds]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusion.metrics import dice  # noqa: E402
from medcrowd.imaging import read_volume, window_to_uint8  # noqa: E402
from ml_backend.predictors import get_predictor  # noqa: E402
from ml_backend.propagation import Propagator  # noqa: E402
from tests.helpers import shared_data_dir, tight_box  # noqa: E402


def load_spleen(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """``((D, H, W) uint8 soft-tissue-windowed slices, (D, H, W) bool expert mask)``."""
    folder = root / "msd_spleen_ct"
    ct = read_volume(folder / "spleen2_ct.nii.gz").array
    label = read_volume(folder / "spleen2_label.nii.gz").array > 0
    return window_to_uint8(ct, "CT", "soft_tissue"), label


def naive(predictor: object, slices: np.ndarray, index: int, box: list[float]) -> np.ndarray:
    """The issue's reference: previous mask's box + 3 px, stop when the mask is empty."""
    rule = Propagator(intensity_k=None, min_pixels=1, min_area_ratio=0.0, min_overlap=0.0)
    return rule.run(predictor, slices, index, box).masks


def volume_numbers(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int, int]:
    """``(volume Dice, false-positive slices, missed slices)``."""
    has_pred = pred.any(axis=(1, 2))
    has_truth = truth.any(axis=(1, 2))
    fp = int((has_pred & ~has_truth).sum())
    missed = int((~has_pred & has_truth).sum())
    return float(dice(pred, truth)), fp, missed


def _slice_dice(pred: np.ndarray, truth: np.ndarray) -> str:
    if not pred.any() and not truth.any():
        return "     -"
    return f"{dice(pred, truth):6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=None, help="seed slice (default: middle)")
    parser.add_argument("--all-seeds", action="store_true", help="every labelled slice as seed")
    args = parser.parse_args()

    root = shared_data_dir()
    if not (root / "msd_spleen_ct").is_dir():
        raise SystemExit(f"shared data not found at {root} (set MEDCROWD_SHARED_DATA)")
    slices, truth = load_spleen(root)
    labelled = np.flatnonzero(truth.any(axis=(1, 2)))
    index = args.index if args.index is not None else int((labelled[0] + labelled[-1]) // 2)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = get_predictor("litemedsam", device="cpu", cache_dir=Path(tmp))
        rule = Propagator()
        box = tight_box(truth[index])
        result = rule.run(predictor, slices, index, box)
        print(f"msd_spleen_ct: {slices.shape[0]} slices, spleen on {len(labelled)} "
              f"({labelled[0]}..{labelled[-1]}); one tight box on slice {index} {box}")  # fmt: skip
        print(f"rule: {rule}")
        header = "slice  expert    raw   kept  score  ratio  consist   dice  decision"
        print(header)
        for step in sorted(result.steps, key=lambda s: s.index):
            z = step.index
            print(
                f"{z:5d} {int(truth[z].sum()):7d} {step.raw_pixels:6d} {step.kept_pixels:6d} "
                f"{step.score:6.3f} {step.area_ratio:6.2f} {step.consistent:8.2f} "
                f"{_slice_dice(result.masks[z], truth[z])}  "
                f"{'accepted' if step.accepted else 'stop: ' + step.reason}"
            )
        vd, fp, missed = volume_numbers(result.masks, truth)
        print(f"propagate: volume Dice {vd:.3f}, false-positive slices {fp}, "
              f"missed slices {missed}, proposed {result.proposed}")  # fmt: skip
        nd, nfp, nmissed = volume_numbers(naive(predictor, slices, index, box), truth)
        print(f"naive (box + 3 px, stop when empty): volume Dice {nd:.3f}, "
              f"false-positive slices {nfp}, missed slices {nmissed}")  # fmt: skip
        if args.all_seeds:
            print("seed  volume_dice  fp_slices  missed")
            rows = []
            for seed in labelled:
                masks = rule.run(predictor, slices, int(seed), tight_box(truth[seed])).masks
                rows.append(volume_numbers(masks, truth))
                print(f"{seed:4d}  {rows[-1][0]:11.3f}  {rows[-1][1]:9d}  {rows[-1][2]:6d}")
            dices = np.array([r[0] for r in rows])
            over = sum(r[1] > 1 for r in rows)
            print(f"all seeds: volume Dice mean {dices.mean():.3f} min {dices.min():.3f}; "
                  f"seeds with > 1 false-positive slice: {over}")  # fmt: skip
    print(f"(CPU threads {os.cpu_count()}; timings not measured here)")


if __name__ == "__main__":
    main()
