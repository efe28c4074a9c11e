"""Effort per volume on ``msd_spleen_ct``: manual vs a box per slice vs one box + propagation.

Run: ``python benchmarks/volume_effort.py [--clicks 3] [--predictor litemedsam] [--seed 0]``

The same simulated annotator and cost model as ``benchmarks/annotation_effort.py``
(:mod:`medcrowd.effort`: steering-law brush strokes, per-vertex polygons, the target Dice,
default 0.90) labels every slice of the spleen volume (20 of 26 slices hold spleen) in three
workflows:

* **manual**: every spleen slice outlined from scratch (the cheaper of polygon and paint).
* **box per slice** (medcrowd without propagation): on every spleen slice a tight box, the
  model's mask, then brush fixes to the target; with ``--clicks N``, up to N refinement
  clicks first (each at the largest error, ``ml_backend.click_training.next_click``,
  ``--click-s`` seconds + the model wait; a click that does not raise Dice is undone, its
  time still spent) where clicking + brushing is cheaper than brushing alone; or reject and
  outline manually, whichever is cheapest (:func:`medcrowd.effort.assisted_correct`).
* **propagation** (the backend's webhook): a box + fixes on the middle spleen slice as
  above; then, walking up and down, each next slice gets the proposal propagated from the
  previous slice's *corrected* mask (:class:`ml_backend.propagation.Propagator`, seeded by
  that mask, what the webhook does after a submit). The volunteer reviews it
  (``--review-s``) and brush-fixes it, or rejects it and draws a box instead, whichever is
  cheaper. Where the walk stopped although the expert has spleen, the slice is done with a
  box as in the second workflow and the walk goes on from there; a proposal on a slice
  without spleen costs a review and a reject.

Looking at each slice costs the same in every workflow and is not counted. Boxes are tight
boxes of the expert mask (an oracle annotator, as in ``annotation_effort.py``). The ratio is
manual seconds / workflow seconds for the whole volume. Printed per slice and in total;
``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from propagation import load_spleen  # noqa: E402

from fusion.metrics import dice  # noqa: E402
from medcrowd.effort import (  # noqa: E402
    CostModel,
    Effort,
    assisted_correct,
    brush_correct,
    manual_effort,
    predictor_refine,
)
from ml_backend.predictors import get_predictor  # noqa: E402
from ml_backend.propagation import Propagator  # noqa: E402
from tests.helpers import shared_data_dir, tight_box  # noqa: E402


@dataclass(frozen=True)
class SliceCost:
    """One slice in one workflow: ``how`` it was done, its ``seconds``, final ``dice``."""

    index: int
    how: str
    seconds: float
    dice: float


def boxed(
    predictor: Any,
    image: np.ndarray,
    expert: np.ndarray,
    model: CostModel,
    rng: np.random.Generator,
    clicks: int,
    manual: Effort,
) -> tuple[np.ndarray, float, str]:
    """A box, up to ``clicks`` clicks, brush fixes, or reject and ``manual``: ``(final mask,
    seconds, how)`` (:func:`medcrowd.effort.assisted_correct`)."""
    predictor.set_image(image)
    box = tight_box(expert)
    answer = predictor.predict(box=box)
    mask, effort = assisted_correct(
        np.asarray(answer.mask, bool),
        expert,
        model,
        rng,
        manual,
        refine=predictor_refine(predictor, box),
        logits=answer.logits,
        clicks=clicks,
    )
    return mask, effort.seconds, f"box+{effort.tool}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    slices, truth = load_spleen(shared_data_dir())
    labelled = np.flatnonzero(truth.any(axis=(1, 2)))
    middle = int((labelled[0] + labelled[-1]) // 2)
    model = CostModel(target=args.target, click_s=args.click_s)
    rule = Propagator(max_slices=1)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = get_predictor(args.predictor, device="cpu", cache_dir=Path(tmp))

        def rng(workflow: int, z: int) -> np.random.Generator:
            return np.random.default_rng([args.seed, workflow, z])

        outlines = {int(z): manual_effort(truth[z], model, rng(0, z)) for z in labelled}
        manual = [SliceCost(z, e.tool, e.seconds, e.dice) for z, e in outlines.items()]

        def box_slice(z: int, workflow: int) -> tuple[np.ndarray, float, str]:
            # a slice without spleen is never boxed; its manual fallback would cost nothing
            fallback = outlines.get(z, Effort(0.0, 0, 1.0, True, "none"))
            return boxed(predictor, slices[z], truth[z], model, rng(workflow, z), args.clicks,
                         fallback)  # fmt: skip

        per_slice = []
        for z in labelled:
            mask, seconds, how = box_slice(int(z), 1)
            per_slice.append(SliceCost(int(z), how, seconds, dice(mask, truth[z])))

        chain: list[SliceCost] = []
        mask, seconds, how = box_slice(middle, 2)
        chain.append(SliceCost(middle, how, seconds, dice(mask, truth[middle])))
        for direction in (1, -1):
            previous, z = mask, middle + direction
            while 0 <= z < slices.shape[0]:
                has_organ = bool(truth[z].any())
                step = rule.run(predictor, slices, z - direction, None, seed_mask=previous)
                proposal = step.masks[z]
                if not proposal.any():
                    if not has_organ:
                        break  # the walk stopped where the spleen ends: nothing to do
                    done, s, h = box_slice(z, 2)
                    chain.append(SliceCost(z, "stopped→" + h, s, dice(done, truth[z])))
                elif not has_organ:
                    chain.append(SliceCost(z, "false proposal→reject", args.review_s
                                           + model.reject_s, 1.0))  # fmt: skip
                    break
                else:
                    fixed, fix = brush_correct(proposal, truth[z], model, rng(3, z))
                    fixed_s = args.review_s + fix.seconds
                    done, s, h = box_slice(z, 2)
                    reboxed_s = args.review_s + model.reject_s + s
                    if fixed_s <= reboxed_s:
                        done = fixed
                        chain.append(SliceCost(z, f"proposal+{fix.tool}", fixed_s,
                                               dice(done, truth[z])))  # fmt: skip
                    else:
                        chain.append(SliceCost(z, "reject→" + h, reboxed_s, dice(done, truth[z])))
                previous = done
                z += direction
        missing = sorted(set(labelled.tolist()) - {c.index for c in chain})
        for z in missing:  # past a stop with no spleen between: boxed like the second workflow
            done, s, h = box_slice(z, 2)
            chain.append(SliceCost(z, "unreached→" + h, s, dice(done, truth[z])))

    def total(rows: list[SliceCost]) -> float:
        return float(sum(r.seconds for r in rows))

    result = {
        "benchmark": "volume_effort",
        "predictor": args.predictor,
        "clicks": args.clicks,
        "seed": args.seed,
        "target": args.target,
        "spleen_slices": len(labelled),
        "seed_slice": middle,
        "seconds": {
            "manual": round(total(manual), 1),
            "box_per_slice": round(total(per_slice), 1),
            "propagation": round(total(chain), 1),
        },
        "slices": {
            "manual": [asdict(r) for r in manual],
            "box_per_slice": [asdict(r) for r in per_slice],
            "propagation": [asdict(r) for r in sorted(chain, key=lambda r: r.index)],
        },
    }
    secs = result["seconds"]
    result["ratio"] = {
        "box_per_slice": round(secs["manual"] / secs["box_per_slice"], 2),
        "propagation": round(secs["manual"] / secs["propagation"], 2),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictor", default="litemedsam")
    parser.add_argument("--clicks", type=int, default=0, help="refinement clicks at most")
    parser.add_argument("--click-s", type=float, default=1.0, help="seconds per click")
    parser.add_argument("--review-s", type=float, default=1.0, help="looking at a proposal")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args)
    for name in ("box_per_slice", "propagation"):
        print(f"\n{name}:")
        for row in result["slices"][name]:
            print(f"  slice {row['index']:2d}  {row['seconds']:7.1f} s  Dice {row['dice']:.3f}"
                  f"  {row['how']}")  # fmt: skip
    secs, ratio = result["seconds"], result["ratio"]
    print(
        f"\nmsd_spleen_ct, {result['spleen_slices']} spleen slices, predictor "
        f"{args.predictor}, clicks ≤ {args.clicks}, target Dice {args.target}:\n"
        f"  manual        {secs['manual']:8.1f} s\n"
        f"  box per slice {secs['box_per_slice']:8.1f} s  ({ratio['box_per_slice']:.2f}×)\n"
        f"  propagation   {secs['propagation']:8.1f} s  ({ratio['propagation']:.2f}×)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
