"""Fusion methods on REAL multi-rater data (no simulated annotators).

Run: ``python benchmarks/fusion_real.py [--out results.json] [--skip-crowd] [--no-crowdkit]
[--subsets 5]``

Data (``MEDCROWD_SHARED_DATA``, default ``../shared/data``; see its README.md):

* ``bubil_cells`` experts (BU-BIL dataset 1, 35 phase-contrast cell images, 5 people, each
  with one Amira and one ImageJ mask per image). Inputs: the **Amira** masks of 3 of the 5
  people (one mask per person); reference: the pixels where >= 3 of the 4 masks (Amira +
  ImageJ) of the **other two** people are foreground. All C(5,3) = 10 subsets per image, so
  inputs and reference never share a person (``--subsets 5``: every second subset, each
  person in 3 of them, for every method alike: the crowd-kit run). CrowdStaple runs once
  per subset over every image of the split, with the person as the annotator id (its
  parameters are shared across images, which is its point). Splits: ``dev`` = B01-B17
  (the only images anything in ``fusion`` was chosen on), ``test`` = B18-B35 (held out),
  ``all`` = B01-B35.
* DRIVE test (14 fundus images, 2 raters). With 2 raters there is no held-out reference,
  so each fusion of (manual1, manual2) is scored by its Dice with each rater and the mean
  of the two, inside the field of view (FOV) only; the raters themselves are listed as
  rows (their Dice with themselves is 1). A fusion that drops one rater's work scores low
  against that rater. Area = fused / mean rater area.
* ``bubil_cells`` crowd (7 MTurk masks per image, in a cropped and rescaled frame without
  offsets). Registration: one scale s in [0.70, 1.15] and one translation per image,
  applied to all 7 masks alike (they share the frame), chosen to maximise the Dice between
  the crowd's majority vote and the consensus (>= 3 of 4) of experts **Person1 + Person2**;
  coarse search at 1/4 resolution (s step 0.01, FFT cross-correlation), refined at full
  resolution (s ± 0.01 step 0.0025). The methods are then scored against the consensus
  (>= 4 of 6 masks) of **Person3-5**, who took no part in the registration, so the
  evaluation reference never steered it. Registering on the union of all expert masks
  would leak the evaluation reference into the input's position; registering on the crowd
  masks alone is impossible (no offsets ship). The registration is a common step before
  every method, so it moves all methods alike. CrowdStaple uses the slot folder
  (``mturk_annotation1-k``) as annotator id, which the README says is NOT a consistent
  worker: this is a deliberately hard case for any per-annotator model.

Methods: MajorityVote, Staple (per image), WeightedVote (weights: each rater's Dice with
the leave-one-out majority of the others, ``fusion.consensus_scores``, no gold),
CrowdStaple (defaults), CrowdStaple ``anchor=0`` (the algorithm before the unanimous-row
anchor), and crowd-kit's SegmentationMajorityVote / RASA / EM (``ck``; run
on each image's foreground bounding box + 32 px for speed, pasted back). ``--hypotheses``
adds the CrowdStaple variants of docs/fusion.md (``anchor=0`` with all voxels, no
truncation, per image, threshold 0.9; other anchors).
Prints a markdown table per setting: mean Dice ± std over (image, subset) pairs and the
mean area ratio (fused / reference).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.signal import fftconvolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion import CrowdStaple, MajorityVote, Staple, WeightedVote, consensus_scores
from fusion.metrics import dice

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 35
PEOPLE = 5
SPLITS = {"dev": range(0, 17), "test": range(17, 35), "all": range(0, 35)}

Method = Callable[[list[np.ndarray], list[list[int]]], list[np.ndarray]]


def data_root() -> Path:
    return Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))


def _find(folder: Path, name: str) -> Path:
    """Case-insensitive file lookup (four expert files are named ``Seg_…``)."""
    for p in folder.iterdir():
        if p.name.lower() == name.lower():
            return p
    raise FileNotFoundError(folder / name)


def load_bubil_experts(root: Path) -> list[np.ndarray]:
    """35 arrays (10, H, W) bool: index ``2 · (person − 1) + tool``, tool 0 Amira, 1 ImageJ."""
    base = root / "bubil_cells" / "ExpertsAnnotations"
    out = []
    for i in range(1, N_IMAGES + 1):
        masks = []
        for person in range(1, PEOPLE + 1):
            for tool in ("Amira", "ImageJ"):
                path = _find(base / f"Person{person}_{tool}", f"seg_B{i:02d}.png")
                masks.append(np.array(Image.open(path).convert("L")) < 128)  # object is black
        out.append(np.stack(masks))
    return out


def load_bubil_crowd(root: Path) -> list[np.ndarray]:
    """35 arrays (7, h, w) bool in the crowd's own (cropped, rescaled) frame."""
    base = root / "bubil_cells" / "CrowdsourcedAnnotations"
    return [
        np.stack(
            [
                np.array(
                    Image.open(_find(base / f"mturk_annotation1-{k}", f"seg_B{i:02d}.png")).convert(
                        "L"
                    )
                )
                < 128
                for k in range(1, 8)
            ]
        )
        for i in range(1, N_IMAGES + 1)
    ]


def load_drive(root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """14 (manual1, manual2, fov) bool (584, 565) triples of DRIVE test."""
    test = root / "drive" / "test"
    return [
        (
            np.array(Image.open(test / "manual1" / f"{i:02d}_manual1.gif")) > 0,
            np.array(Image.open(test / "manual2" / f"{i:02d}_manual2.gif")) > 0,
            np.array(Image.open(test / "mask" / f"{i:02d}_test_mask.gif")) > 0,
        )
        for i in range(1, 15)
    ]


# -- methods ---------------------------------------------------------------------------------


def _crowdkit(name: str) -> Method:
    import pandas as pd
    from crowdkit.aggregation import SegmentationEM, SegmentationMajorityVote, SegmentationRASA

    algo = {"MV": SegmentationMajorityVote, "RASA": SegmentationRASA, "EM": SegmentationEM}[name]

    def run(tasks: list[np.ndarray], anns: list[list[int]]) -> list[np.ndarray]:
        out = []
        for t, (masks, ids) in enumerate(zip(tasks, anns, strict=True)):
            # crowd-kit's EM takes ~7 s on a full 1024×811 frame: it runs on the bounding
            # box of all the task's foreground + 32 px (the result is pasted back)
            ys, xs = np.nonzero(masks.any(axis=0))
            if ys.size == 0:
                out.append(np.zeros(masks.shape[1:], bool))
                continue
            y0, x0 = max(int(ys.min()) - 32, 0), max(int(xs.min()) - 32, 0)
            crop = masks[:, y0 : int(ys.max()) + 33, x0 : int(xs.max()) + 33]
            df = pd.DataFrame({"task": [t] * len(ids), "worker": ids, "segmentation": list(crop)})
            fused = np.zeros(masks.shape[1:], bool)
            fused[y0 : y0 + crop.shape[1], x0 : x0 + crop.shape[2]] = np.asarray(
                algo().fit_predict(df).loc[t], dtype=bool
            )
            out.append(fused)
        return out

    return run


def _weighted(tasks: list[np.ndarray], anns: list[list[int]]) -> list[np.ndarray]:
    out = []
    for masks in tasks:
        w = np.maximum(np.nan_to_num(consensus_scores(masks).dice), 1e-3)
        out.append(WeightedVote().fit_predict(masks, weights=w).mask)
    return out


def _per_image(**kw: Any) -> Method:
    """CrowdStaple fitted on each image alone (no pooling of the rates across images)."""

    def run(tasks: list[np.ndarray], anns: list[list[int]]) -> list[np.ndarray]:
        return [
            CrowdStaple(**kw).fit_predict([t], [a]).masks[0]
            for t, a in zip(tasks, anns, strict=True)
        ]

    return run


def hypotheses() -> dict[str, Method]:
    """CrowdStaple variants that isolate one cause each (``--hypotheses``)."""

    def crowd(**kw: Any) -> Method:
        return lambda ts, an: CrowdStaple(**kw).fit_predict(ts, an).masks

    return {
        "CS anchor=0 all voxels": crowd(anchor=0.0, disagreement_only=False),
        "CS anchor=0 no truncation": crowd(anchor=0.0, truncation=False),
        "CS anchor=0 per image": _per_image(anchor=0.0),
        "CS anchor=0 threshold 0.9": crowd(anchor=0.0, threshold=0.9),
        "CS anchor=0.5": crowd(anchor=0.5),
        "CS anchor=2": crowd(anchor=2.0),
        "CS per image": _per_image(),
    }


def methods(with_crowdkit: bool) -> dict[str, Method]:
    out: dict[str, Method] = {
        "MajorityVote": lambda ts, _: [MajorityVote().fit_predict(m).mask for m in ts],
        "Staple": lambda ts, _: [Staple().fit_predict(m).mask for m in ts],
        "WeightedVote": _weighted,
        "CrowdStaple": lambda ts, an: CrowdStaple().fit_predict(ts, an).masks,
        # the algorithm before the unanimous-row anchor, for comparison
        "CrowdStaple anchor=0": lambda ts, an: CrowdStaple(anchor=0.0).fit_predict(ts, an).masks,
    }
    if with_crowdkit:
        for name in ("MV", "RASA", "EM"):
            out[f"ck {name}"] = _crowdkit(name)
    return out


# -- settings --------------------------------------------------------------------------------


def _summary(d: list[float], a: list[float]) -> dict[str, float]:
    return {
        "dice": float(np.mean(d)),
        "std": float(np.std(d)),
        "area": float(np.mean(a)),
        "n": len(d),
    }


def _pooled(name: str) -> bool:
    """Methods whose parameters are shared across the images they are given."""
    return (name.startswith("CS") or name.startswith("CrowdStaple")) and "per image" not in name


def person_subsets(n: int) -> list[tuple[int, ...]]:
    """``n`` of the 10 subsets of 3 of the 5 people: all of them for 10; for 5, every second
    one in ``itertools.combinations`` order (each person is in exactly 3 of those 5)."""
    every = list(itertools.combinations(range(PEOPLE), 3))
    if n == len(every):
        return every
    if n == 5:
        return every[::2]
    raise ValueError(f"--subsets must be 5 or 10, got {n}")


def bubil_experts(
    experts: list[np.ndarray], algos: dict[str, Method], n_subsets: int = 10
) -> dict[str, object]:
    """Per (image, subset): Dice and area ratio of every method (see the module doc)."""
    dices: dict[str, dict[str, list[float]]] = {sp: {} for sp in SPLITS}
    areas: dict[str, dict[str, list[float]]] = {sp: {} for sp in SPLITS}

    def add(split: str, name: str, fused: np.ndarray, ref: np.ndarray) -> None:
        dices[split].setdefault(name, []).append(dice(fused, ref))
        areas[split].setdefault(name, []).append(float(fused.sum() / ref.sum()))

    for subset in person_subsets(n_subsets):
        rest = [p for p in range(PEOPLE) if p not in subset]
        tasks = [e[[2 * p for p in subset]] for e in experts]
        refs = [e[[2 * p + t for p in rest for t in (0, 1)]].sum(axis=0) >= 3 for e in experts]
        per_image = [k for k in algos if not _pooled(k)]
        fused_all = {k: algos[k](tasks, [list(subset)] * N_IMAGES) for k in per_image}
        for split, images in SPLITS.items():
            # pooled methods see only the images of the split
            pooled = {
                k: algos[k]([tasks[i] for i in images], [list(subset)] * len(images))
                for k in algos
                if _pooled(k)
            }
            for j, i in enumerate(images):
                for m in tasks[i]:
                    add(split, "single rater", m, refs[i])
                for name, fused in fused_all.items():
                    add(split, name, fused[i], refs[i])
                for name, fused in pooled.items():
                    add(split, name, fused[j], refs[i])
    order = ["single rater", *algos]
    return {sp: {k: _summary(dices[sp][k], areas[sp][k]) for k in order} for sp in SPLITS}


def drive_pair(
    drive: list[tuple[np.ndarray, np.ndarray, np.ndarray]], algos: dict[str, Method]
) -> dict[str, object]:
    tasks = [np.stack([m1 & fov, m2 & fov]) for m1, m2, fov in drive]
    anns = [[1, 2]] * len(tasks)
    fused = {"rater 1": [t[0] for t in tasks], "rater 2": [t[1] for t in tasks]}
    fused.update({k: fn(tasks, anns) for k, fn in algos.items()})
    out: dict[str, object] = {}
    for name, masks in fused.items():
        fovs = [fov for _, _, fov in drive]
        # every input is background outside the FOV; the fused mask is clipped to it too
        d1 = [dice(f & v, t[0]) for f, t, v in zip(masks, tasks, fovs, strict=True)]
        d2 = [dice(f & v, t[1]) for f, t, v in zip(masks, tasks, fovs, strict=True)]
        area = [
            (f & v).sum() / t.sum(axis=(1, 2)).mean()
            for f, t, v in zip(masks, tasks, fovs, strict=True)
        ]
        mean = [(a + b) / 2 for a, b in zip(d1, d2, strict=True)]
        out[name] = {
            "dice_r1": float(np.mean(d1)),
            "dice_r2": float(np.mean(d2)),
            "dice": float(np.mean(mean)),
            "std": float(np.std(mean)),
            "area": float(np.mean(area)),
            "n": len(mean),
        }
    return out


def _resize(mask: np.ndarray, scale: float) -> np.ndarray:
    """``mask`` resized by ``scale`` (nearest neighbour)."""
    h, w = mask.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    return np.array(img) > 127


def _best_shift(moving: np.ndarray, target: np.ndarray) -> tuple[int, int, float]:
    """Integer (dy, dx) maximising |moving shifted by (dy, dx) ∩ target| (FFT correlation)."""
    corr = fftconvolve(target.astype(np.float32), moving[::-1, ::-1].astype(np.float32), "full")
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(iy - (moving.shape[0] - 1)), int(ix - (moving.shape[1] - 1)), float(corr[iy, ix])


def _paste(mask: np.ndarray, dy: int, dx: int, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` with its top-left corner at (dy, dx) of a ``shape`` frame (clipped)."""
    out = np.zeros(shape, bool)
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    ok = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
    out[ys[ok], xs[ok]] = True
    return out


def register(crowd: np.ndarray, target: np.ndarray) -> tuple[float, int, int, float]:
    """(scale, dy, dx, Dice of the placed crowd MV with ``target``), see the module doc."""
    mv = crowd.sum(axis=0) * 2 > crowd.shape[0]
    small_t = target[::4, ::4]

    def search(scales: np.ndarray, tgt: np.ndarray, factor: float) -> tuple[float, float, int, int]:
        best = (-1.0, 1.0, 0, 0)
        for s in scales:
            moving = _resize(mv, float(s) * factor)
            dy, dx, inter = _best_shift(moving, tgt)
            d = 2 * inter / (moving.sum() + tgt.sum())
            if d > best[0]:
                best = (d, float(s), dy, dx)
        return best

    _, s0, _, _ = search(np.arange(0.70, 1.1501, 0.01), small_t, 0.25)
    d, s, dy, dx = search(np.arange(s0 - 0.01, s0 + 0.01001, 0.0025), target, 1.0)
    return s, dy, dx, d


def bubil_crowd(
    experts: list[np.ndarray], crowd: list[np.ndarray], algos: dict[str, Method]
) -> dict[str, object]:
    tasks, refs, reg = [], [], []
    for i in range(N_IMAGES):
        target = experts[i][[0, 1, 2, 3]].sum(axis=0) >= 3  # Person1 + Person2
        ref = experts[i][4:].sum(axis=0) >= 4  # Person3-5 (6 masks)
        s, dy, dx, d = register(crowd[i], target)
        tasks.append(np.stack([_paste(_resize(m, s), dy, dx, ref.shape) for m in crowd[i]]))
        refs.append(ref)
        reg.append({"image": f"B{i + 1:02d}", "scale": s, "dy": dy, "dx": dx, "dice_mv_p12": d})
    out: dict[str, object] = {"registration": reg}
    single_d = [dice(m, r) for t, r in zip(tasks, refs, strict=True) for m in t]
    single_a = [m.sum() / r.sum() for t, r in zip(tasks, refs, strict=True) for m in t]
    anns = [list(range(1, 8))] * N_IMAGES
    results = {k: fn(tasks, anns) for k, fn in algos.items()}
    for split, images in SPLITS.items():
        picks = [7 * i + k for i in images for k in range(7)]
        table = {
            "single rater": _summary([single_d[j] for j in picks], [single_a[j] for j in picks])
        }
        for name, fused in results.items():
            table[name] = _summary(
                [dice(fused[i], refs[i]) for i in images],
                [fused[i].sum() / refs[i].sum() for i in images],
            )
        out[split] = table
    return out


def _print_table(title: str, table: dict[str, dict[str, float]], extra: bool = False) -> None:
    print(f"\n### {title}\n")
    if extra:
        print("| method | Dice vs r1 | Dice vs r2 | mean ± std | area |")
        print("|---|---|---|---|---|")
        for k, v in table.items():
            print(
                f"| {k} | {v['dice_r1']:.4f} | {v['dice_r2']:.4f} | "
                f"{v['dice']:.4f} ± {v['std']:.4f} | {v['area']:.3f} |"
            )
        return
    print("| method | Dice mean ± std | area fused/ref | n |")
    print("|---|---|---|---|")
    for k, v in table.items():
        print(f"| {k} | {v['dice']:.4f} ± {v['std']:.4f} | {v['area']:.3f} | {v['n']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument("--no-crowdkit", action="store_true", help="skip crowd-kit baselines")
    parser.add_argument(
        "--hypotheses", action="store_true", help="add the CrowdStaple diagnostic variants"
    )
    parser.add_argument("--skip-crowd", action="store_true", help="skip the MTurk crowd setting")
    parser.add_argument(
        "--subsets",
        type=int,
        default=10,
        choices=(5, 10),
        help="BU-BIL experts: person subsets to fuse, 10 (all) or 5 (every second; each "
        "person in 3), for every method alike (crowd-kit's EM needs ~2 s per image)",
    )
    args = parser.parse_args()
    root = data_root()
    if not (root / "bubil_cells").is_dir():
        raise SystemExit(f"shared data not found at {root} (set MEDCROWD_SHARED_DATA)")
    algos = methods(not args.no_crowdkit)
    if args.hypotheses:
        algos.update(hypotheses())
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    experts = load_bubil_experts(root)
    results["bubil_experts"] = bubil_experts(experts, algos, args.subsets)
    results["subsets"] = args.subsets
    for split in SPLITS:
        _print_table(
            f"bubil experts, 3 of 5 people (Amira), {args.subsets} of 10 subsets, "
            f"ref = other 2 people >= 3/4, split {split}",
            results["bubil_experts"][split],
        )
    results["drive"] = drive_pair(load_drive(root), algos)
    _print_table(
        "DRIVE test, 2 raters, inside the FOV (Dice of the fusion with each rater)",
        results["drive"],
        extra=True,
    )
    if not args.skip_crowd:
        results["bubil_crowd"] = bubil_crowd(experts, load_bubil_crowd(root), algos)
        reg = results["bubil_crowd"]["registration"]
        print(
            f"\ncrowd registration: MV vs Person1+2 Dice mean "
            f"{np.mean([r['dice_mv_p12'] for r in reg]):.4f}, min "
            f"{min(r['dice_mv_p12'] for r in reg):.4f}"
        )
        for split in SPLITS:
            _print_table(
                f"bubil MTurk crowd (7 masks, registered on Person1+2), ref = Person3-5 >= 4/6, "
                f"split {split}",
                results["bubil_crowd"][split],
            )
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
