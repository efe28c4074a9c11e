"""Simulated annotation effort: LiteMedSAM-assisted (box + brush fixes) vs manual outlining.

Run: ``python benchmarks/annotation_effort.py [--quick] [--seed 0] [--json out.json]
[--predictor litemedsam-clicks --clicks 3]``

Measures the "N× annotation efficiency" of box-prompted assistance with simulated
interactions. For every structure the simulated annotator reaches Dice ≥ ``--target``
(default 0.90) against the expert mask in two ways:

* **assisted**: draws a box (``--box-s``), waits for the LiteMedSAM mask
  (``--model-wait-s``), then fixes it with brush strokes, largest error component first;
  if discarding the mask (``--reject-s``) and annotating manually is cheaper, it does that.
  With ``--clicks N`` it first clicks up to N times at the largest error (``--click-s`` +
  the model wait each; a click that does not raise Dice is undone) and brushes what is
  left (:func:`medcrowd.effort.assisted_correct`).
* **manual**: the cheaper of (a) polygons from scratch (Douglas–Peucker-simplified expert
  contours, jittered clicks, cheapest tolerance that reaches the target) and (b) painting
  from an empty mask with the same brush-stroke model as the corrections.

The cost model (steering-law brush strokes, per-vertex polygon clicks, NoC@90-style
stopping rule, imperfect strokes from ``crowd_models.py``) is documented in
``medcrowd/effort.py`` (re-exported by ``benchmarks/_effort_model.py``); every constant is a
flag here. Both modes are simulated by the same oracle-optimal annotator, so the ratio
isolates what the model's mask saves.

Data (``MEDCROWD_SHARED_DATA``, default ``../shared/data``):
  * SAM-Med2D demo: all 30 organ masks, tight box around each mask (``tests/helpers``);
    the embedding is computed once per slice and reused for its masks.
  * ISBI 2012 EM: membranes (``label == 0``) of each slice as one structure, box = the
    whole image (default all 30 slices).
  * DRIVE test: vessels of ``manual1`` per image as one structure, box = the bounding box
    of the field-of-view mask (default images 01–05).

Effort ratio = total manual seconds / total assisted seconds (the throughput gain over the
dataset); the table also gives the median per-structure ratio and the ratio in actions
(clicks + strokes). A structure whose annotation does not reach the target within
``--max-strokes`` is still counted with the effort spent (a lower bound); the "reached"
columns say how often that happened. LiteMedSAM runs on the CPU with ONNX files and
embeddings in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusion.metrics import dice  # noqa: E402
from medcrowd.effort import (  # noqa: E402
    CostModel,
    Effort,
    assisted_correct,
    manual_effort,
    predictor_refine,
)
from ml_backend.predictors import BoxPredictor, get_predictor  # noqa: E402
from tests.helpers import sammed2d_masks, tight_box  # noqa: E402

DATASETS = ("sammed2d", "isbi_em", "drive")


@dataclass(frozen=True)
class Structure:
    """One structure to annotate: ``image`` (H, W) or (H, W, 3) uint8, ``expert`` (H, W)
    bool, ``box`` XYXY pixel edges in the image; ``image_key`` groups masks of one image."""

    dataset: str
    name: str
    image_key: str
    image: np.ndarray
    expert: np.ndarray
    box: list[float]


@dataclass(frozen=True)
class Row:
    dataset: str
    name: str
    box_dice: float
    assisted: Effort
    manual: Effort


def _data_root() -> Path:
    return Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_sammed2d(root: Path, limit: int | None) -> list[Structure]:
    out = []
    for organ in sammed2d_masks(root)[:limit]:
        image, mask = organ.load()
        stem = organ.image_path.stem
        out.append(
            Structure("sammed2d", f"{stem}/{organ.structure}", stem, image, mask, tight_box(mask))
        )
    return out


def load_isbi(root: Path, limit: int | None) -> list[Structure]:
    base = root / "isbi2012_em" / "train"
    paths = sorted((base / "label").glob("*.png"), key=lambda p: int(p.stem))[:limit]
    out = []
    for path in paths:
        image = np.asarray(Image.open(base / "image" / path.name).convert("L"))
        membrane = np.asarray(Image.open(path)) == 0
        h, w = membrane.shape
        box = [0.0, 0.0, float(w), float(h)]
        out.append(Structure("isbi_em", f"slice {path.stem}", path.stem, image, membrane, box))
    return out


def load_drive(root: Path, limit: int | None) -> list[Structure]:
    base = root / "drive" / "test"
    paths = sorted((base / "images").glob("*_test.tif"))[:limit]
    out = []
    for path in paths:
        ident = path.stem.split("_")[0]
        image = np.asarray(Image.open(path).convert("RGB"))
        vessels = np.array(Image.open(base / "manual1" / f"{ident}_manual1.gif")) > 0
        fov = np.array(Image.open(base / "mask" / f"{ident}_test_mask.gif")) > 0
        out.append(Structure("drive", f"image {ident}", ident, image, vessels, tight_box(fov)))
    return out


def run_dataset(
    structures: list[Structure],
    predictor: BoxPredictor,
    model: CostModel,
    seed: int,
    dataset_index: int,
    verbose: bool,
    clicks: int = 0,
) -> list[Row]:
    rows = []
    current = None
    for index, item in enumerate(structures):
        if item.image_key != current:
            predictor.set_image(item.image)  # one embedding per image, reused for its masks
            current = item.image_key
        logits = None
        if clicks:
            answer = predictor.predict(box=item.box)
            predicted, logits = answer.mask, answer.logits
        else:
            predicted, _ = predictor.predict_box(item.box)
        # independent, reproducible streams per structure and mode
        manual = manual_effort(
            item.expert, model, np.random.default_rng([seed, dataset_index, index, 0])
        )
        _, assisted = assisted_correct(
            predicted,
            item.expert,
            model,
            np.random.default_rng([seed, dataset_index, index, 1]),
            manual,
            refine=predictor_refine(predictor, item.box) if clicks else None,
            logits=logits,
            clicks=clicks,
        )
        row = Row(item.dataset, item.name, dice(predicted, item.expert), assisted, manual)
        rows.append(row)
        if verbose:
            print(
                f"  {item.dataset:9s} {item.name:38s} box Dice {row.box_dice:.3f}  "
                f"assisted {assisted.seconds:7.1f} s ({assisted.tool}, {assisted.dice:.3f})  "
                f"manual {manual.seconds:7.1f} s ({manual.tool}, {manual.dice:.3f})",
                flush=True,
            )
    return rows


def _summary(rows: list[Row]) -> dict[str, float]:
    a = np.array([r.assisted.seconds for r in rows])
    m = np.array([r.manual.seconds for r in rows])
    with np.errstate(divide="ignore"):  # a zero-cost assisted row (free box) is an inf ratio
        per_structure = m / a
    a_act = np.array([r.assisted.actions for r in rows], dtype=float)
    m_act = np.array([r.manual.actions for r in rows], dtype=float)
    return {
        "n": len(rows),
        "box_dice_median": float(np.median([r.box_dice for r in rows])),
        "assisted_median_s": float(np.median(a)),
        "assisted_mean_s": float(a.mean()),
        "manual_median_s": float(np.median(m)),
        "manual_mean_s": float(m.mean()),
        "ratio_total": float(m.sum() / a.sum()),
        "ratio_median": float(np.median(per_structure)),
        "ratio_actions": float(m_act.sum() / max(a_act.sum(), 1.0)),
        "assisted_reached": float(np.mean([r.assisted.reached for r in rows])),
        "manual_reached": float(np.mean([r.manual.reached for r in rows])),
        "accepted_as_is": float(np.mean([r.assisted.tool == "none" for r in rows])),
        "rejected": float(np.mean([r.assisted.tool.startswith("reject") for r in rows])),
    }


def print_table(summaries: dict[str, dict[str, float]], target: float) -> None:
    header = (
        f"{'dataset':10s} {'n':>3s} {'Dice@box':>8s} {'assist med/mean s':>18s} "
        f"{'manual med/mean s':>18s} {'ratio':>6s} {'med r':>6s} {'act r':>6s} "
        f"{'≥' + f'{target:.2f}' + ' a/m':>11s} {'as-is':>5s} {'reject':>6s}"
    )
    print(header)
    print("-" * len(header))
    for name, s in summaries.items():
        print(
            f"{name:10s} {s['n']:3.0f} {s['box_dice_median']:8.3f} "
            f"{s['assisted_median_s']:8.1f}/{s['assisted_mean_s']:<9.1f} "
            f"{s['manual_median_s']:8.1f}/{s['manual_mean_s']:<9.1f} "
            f"{s['ratio_total']:5.1f}× {s['ratio_median']:5.1f}× {s['ratio_actions']:5.1f}× "
            f"{100 * s['assisted_reached']:4.0f}%/{100 * s['manual_reached']:3.0f}%  "
            f"{100 * s['accepted_as_is']:4.0f}% {100 * s['rejected']:5.0f}%"
        )


def _cost_model_args(parser: argparse.ArgumentParser) -> None:
    helps = {
        "target": "Dice vs the expert mask both modes must reach",
        "box_s": "seconds to draw one box (2 clicks)",
        "model_wait_s": "seconds waiting for the model's mask",
        "reject_s": "seconds to discard the model's mask",
        "click_s": "seconds per refinement click (--clicks)",
        "vertex_s": "seconds per polygon vertex click",
        "polygon_s": "seconds of overhead per polygon (tool, close, confirm)",
        "stroke_s": "seconds of overhead per brush stroke",
        "trace_px_per_s": "precise steering speed along an edge, image px/s",
        "fill_px2_per_s": "coarse interior painting rate, px²/s",
        "stroke_len_px": "precise edge length covered by one stroke, px",
        "max_strokes": "cap on brush strokes per structure",
        "stroke_model": "crowd model applied to each stroke ('none' = perfect)",
        "vertex_jitter_px": "std of a polygon vertex click error, px",
        "tolerances": "Douglas–Peucker tolerances tried for polygons, px",
    }
    defaults = CostModel()
    for f in fields(CostModel):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if f.name == "tolerances":
            parser.add_argument(
                flag, type=float, nargs="+", default=list(value), help=helps[f.name]
            )
        else:
            kind = type(value)
            parser.add_argument(flag, type=kind, default=value, help=helps[f.name])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 organs, 3 EM slices, 1 DRIVE")
    parser.add_argument("--seed", type=int, default=0, help="base seed of all simulations")
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets to run"
    )
    parser.add_argument("--em-slices", type=int, default=30, help="ISBI EM slices to use")
    parser.add_argument("--drive-images", type=int, default=5, help="DRIVE test images to use")
    parser.add_argument("--json", type=Path, default=None, help="write per-structure rows here")
    parser.add_argument("--verbose", action="store_true", help="print every structure")
    parser.add_argument("--predictor", default="litemedsam", help="litemedsam | litemedsam-clicks")
    parser.add_argument(
        "--clicks", type=int, default=0, help="refinement clicks at most before the brush"
    )
    _cost_model_args(parser)
    args = parser.parse_args()
    try:
        model = CostModel(
            **{
                f.name: tuple(getattr(args, f.name))
                if f.name == "tolerances"
                else getattr(args, f.name)
                for f in fields(CostModel)
            }
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    root = _data_root()
    limits = {
        "sammed2d": 6 if args.quick else None,
        "isbi_em": 3 if args.quick else args.em_slices,
        "drive": 1 if args.quick else args.drive_images,
    }
    loaders = {"sammed2d": load_sammed2d, "isbi_em": load_isbi, "drive": load_drive}
    print(
        f"seed {args.seed}; predictor {args.predictor}, clicks {args.clicks}; data {root}; "
        f"cost model {asdict(model)}",
        flush=True,
    )
    start = time.perf_counter()
    summaries: dict[str, dict[str, float]] = {}
    all_rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="medcrowd-effort-") as tmp:
        predictor = get_predictor(args.predictor, device="cpu", cache_dir=Path(tmp))
        print(f"predictor ready in {time.perf_counter() - start:.0f} s", flush=True)
        for dataset_index, name in enumerate(DATASETS):
            if name not in args.datasets:
                continue
            t0 = time.perf_counter()
            structures = loaders[name](root, limits[name])
            rows = run_dataset(
                structures, predictor, model, args.seed, dataset_index, args.verbose, args.clicks
            )
            summaries[name] = _summary(rows)
            all_rows += rows
            print(f"{name}: {len(rows)} structures in {time.perf_counter() - t0:.0f} s", flush=True)
    summaries["overall"] = _summary(all_rows)
    print()
    print(
        f"Effort to reach Dice ≥ {model.target:.2f} (seconds, simulated; ratio = manual/assisted"
        ", total; med r = median per structure; act r = in actions)"
    )
    print_table(summaries, model.target)
    print(f"\nseed {args.seed}; total {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        payload = {
            "seed": args.seed,
            "predictor": args.predictor,
            "clicks": args.clicks,
            "cost_model": asdict(model),
            "summary": summaries,
            "rows": [asdict(r) for r in all_rows],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
