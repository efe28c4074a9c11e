"""``medcrowd train clicks``: the training data, the embedding cache and the run, end to end.

Training data (never the evaluation sets: the SAM-Med2D demo and DRIVE ``test/`` are not
read), from the shared data folder (``MEDCROWD_SHARED_DATA``, ../shared/data/README.md):

* ``shenzhen_cxr``: each lung (the two largest connected components of the mask);
* ``bubil_cells``: the one cell per image (``GoldStandard``, object black);
* ``drive/train``: the vessel tree of ``manual1``;
* ``isbi2012_em``: cell interiors (label 255), a few connected components per slice;
* ``msd_spleen_ct``: the spleen on each labelled axial slice (CT soft-tissue window);
* ``spleen_ct_bones``: bone on the same volume's axial slices (same window), found by its
  density: the connected components (≥ 60 px, the 2 largest per slice) of > 200 HU, the ribs
  and the vertebra in this crop. No rater drew them; bone is the one CT structure a threshold
  outlines reliably, and it gives the decoder CT structures beside the spleen. Off by default
  (``--images spleen_ct_bones=20`` turns it on): trained with it, the decoder lost on
  held-out structures of the other sources (docs/interactive.md, version 4).

Images are drawn per set with the seed; a share of each set's images (``val_fraction``) is
held out for the validation curve, never trained on. Each image's LiteMedSAM embedding is
computed once and kept in one ``.npz`` cache file (float16), keyed by the model and the image
hash; a second run reuses it. Then :class:`ml_backend.click_training.ClickDecoderTrainer`
fine-tunes the prompt encoder + mask decoder and the result is written with its checksum
(:func:`ml_backend.click_training.save_click_weights`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "ClickTrainOptions",
    "ClickTrainReport",
    "Structure",
    "embed_cached",
    "load_structures",
    "parse_image_counts",
    "train_clicks",
]

SOURCES = (
    "shenzhen_cxr",
    "bubil_cells",
    "drive_train",
    "isbi2012_em",
    "msd_spleen_ct",
    "spleen_ct_bones",
)

BONE_HU = 200.0
"""``spleen_ct_bones``: voxels above this (HU) are bone."""


@dataclass(frozen=True)
class Structure:
    """One training structure: ``image`` index into the image list, ``(H, W) bool`` mask."""

    image: int
    mask: np.ndarray
    source: str
    name: str


@dataclass
class ClickTrainOptions:
    """Options of :func:`train_clicks` (the CLI's ``--help`` documents each)."""

    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-4
    rounds: int = 8
    box_only_rate: float = 0.25
    distill_weight: float = 1.0
    start: str = "stock"
    seed: int = 0
    val_fraction: float = 0.1
    images: dict[str, int] = field(
        default_factory=lambda: {
            "shenzhen_cxr": 30,
            "bubil_cells": 15,
            "drive_train": 8,
            "isbi2012_em": 12,
            "msd_spleen_ct": 20,
            "spleen_ct_bones": 0,  # opt-in (--images spleen_ct_bones=20): not better
        }
    )
    threads: int | None = None


@dataclass
class ClickTrainReport:
    """What :func:`train_clicks` did.

    Attributes:
        weights: the written weights file (its JSON is beside it).
        meta: the JSON written beside the weights.
        val_stock, val_trained, val_trained_stock_box: mean Dice after 0..5 clicks on the
            held-out training-set structures: the stock decoder fed its previous logits; the
            trained decoder for the box and every click (the click-aware predictor's default
            routing); the stock decoder's box, then the trained decoder for the clicks.
    """

    weights: Path
    meta: dict[str, Any]
    val_stock: list[float]
    val_trained: list[float]
    val_trained_stock_box: list[float]


def parse_image_counts(text: str, defaults: dict[str, int]) -> dict[str, int]:
    """``"SOURCE=N,SOURCE=N"`` over ``defaults`` (N = 0 drops a source).

    Raises:
        ValueError: an unknown source, a missing ``=`` or a count that is not an integer >= 0.
    """
    counts = dict(defaults)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SOURCES:
            raise ValueError(
                f"--images: expected SOURCE=N with SOURCE one of {', '.join(SOURCES)}, got {item!r}"
            )
        try:
            count = int(value)
        except ValueError:
            count = -1
        if count < 0:
            raise ValueError(f"--images: {name} needs a count >= 0, got {value.strip()!r}")
        counts[name] = count
    return counts


def _components(mask: np.ndarray, keep: int, min_px: int) -> list[np.ndarray]:
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    order = np.argsort(-sizes)[:keep]
    return [labels == k + 1 for k in order if sizes[k] >= min_px]


def _gray_mask(path: Path, object_dark: bool = False) -> np.ndarray:
    gray = np.asarray(Image.open(path).convert("L"))
    return gray < 128 if object_dark else gray >= 128


def _pick(paths: list[Path], n: int, rng: np.random.Generator) -> list[Path]:
    if n <= 0 or not paths:
        return []
    chosen = rng.choice(len(paths), size=min(n, len(paths)), replace=False)
    return [paths[i] for i in sorted(chosen)]


def load_structures(
    root: Path, images: dict[str, int], seed: int
) -> tuple[list[np.ndarray], list[Structure], list[str]]:
    """Read the training structures.

    Args:
        root: the shared data folder.
        images: images to draw per source (keys of :data:`SOURCES`).
        seed: draws the images (and ISBI's cells).

    Returns:
        ``(images, structures, image_sources)``: ``(H, W, 3) uint8`` RGB images (CT already
        windowed), the structures over them, and each image's source.

    Raises:
        FileNotFoundError: a requested source folder is missing.
    """
    unknown = set(images) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; valid: {', '.join(SOURCES)}")
    rng = np.random.default_rng(seed)
    out_images: list[np.ndarray] = []
    out_sources: list[str] = []
    structures: list[Structure] = []

    def add(image: np.ndarray, masks: list[np.ndarray], source: str, name: str) -> None:
        if not masks:
            return
        rgb = np.asarray(image)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        out_images.append(np.ascontiguousarray(rgb[:, :, :3].astype(np.uint8)))
        out_sources.append(source)
        for k, mask in enumerate(masks):
            structures.append(Structure(len(out_images) - 1, mask, source, f"{name}#{k}"))

    def folder(*parts: str) -> Path:
        path = root.joinpath(*parts)
        if not path.is_dir():
            raise FileNotFoundError(f"training data folder {path} not found")
        return path

    if images.get("shenzhen_cxr", 0) > 0:
        base = folder("shenzhen_cxr")
        for p in _pick(sorted((base / "images").glob("*.png")), images["shenzhen_cxr"], rng):
            lungs = _components(_gray_mask(base / "masks" / p.name), keep=2, min_px=200)
            add(np.asarray(Image.open(p).convert("RGB")), lungs, "shenzhen_cxr", p.stem)
    if images.get("bubil_cells", 0) > 0:
        base = folder("bubil_cells")
        gold = {p.name.lower(): p for p in (base / "GoldStandard").glob("*.png")}
        raws = sorted((base / "RawImages").glob("*.png"))
        raws = [p for p in raws if f"seg_{p.name.lower()}" in gold]
        for p in _pick(raws, images["bubil_cells"], rng):
            cell = _components(_gray_mask(gold[f"seg_{p.name.lower()}"], object_dark=True), 1, 50)
            add(np.asarray(Image.open(p).convert("RGB")), cell, "bubil_cells", p.stem)
    if images.get("drive_train", 0) > 0:
        base = folder("drive", "train")  # never drive/test: an evaluation set
        for p in _pick(sorted((base / "images").glob("*.tif")), images["drive_train"], rng):
            ident = p.stem.split("_")[0]
            vessels = np.asarray(Image.open(base / "manual1" / f"{ident}_manual1.gif")) > 0
            add(np.asarray(Image.open(p).convert("RGB")), [vessels], "drive_train", p.stem)
    if images.get("isbi2012_em", 0) > 0:
        base = folder("isbi2012_em", "train")
        slices = sorted((base / "image").glob("*.png"), key=lambda p: int(p.stem))
        for p in _pick(slices, images["isbi2012_em"], rng):
            interior = np.asarray(Image.open(base / "label" / p.name).convert("L")) >= 128
            labels, count = ndimage.label(interior)
            sizes = ndimage.sum(interior, labels, index=np.arange(1, count + 1))
            fit = np.flatnonzero((sizes >= 500) & (sizes <= 20000))
            chosen = rng.choice(fit, size=min(3, fit.size), replace=False) if fit.size else fit
            cells = [labels == int(k) + 1 for k in sorted(chosen.tolist())]
            add(np.asarray(Image.open(p).convert("RGB")), cells, "isbi2012_em", f"em{p.stem}")
    if images.get("msd_spleen_ct", 0) > 0 or images.get("spleen_ct_bones", 0) > 0:
        from medcrowd.imaging import read_volume, window_to_uint8

        base = folder("msd_spleen_ct")
        ct = read_volume(base / "spleen2_ct.nii.gz").array
        slices_u8 = window_to_uint8(ct, "CT", "soft_tissue")
    if images.get("msd_spleen_ct", 0) > 0:
        label = read_volume(base / "spleen2_label.nii.gz").array > 0
        labelled = [int(k) for k in np.flatnonzero(label.reshape(len(label), -1).sum(1) >= 100)]
        picks = rng.choice(len(labelled), size=min(images["msd_spleen_ct"], len(labelled)),
                           replace=False)  # fmt: skip
        for j in sorted(picks):
            k = labelled[int(j)]
            spleen = _components(label[k], keep=1, min_px=100)
            add(slices_u8[k], spleen, "msd_spleen_ct", f"spleen2_z{k}")
    if images.get("spleen_ct_bones", 0) > 0:
        picks = rng.choice(len(ct), size=min(images["spleen_ct_bones"], len(ct)), replace=False)
        for k in sorted(int(j) for j in picks):
            bones = _components(ct[k] > BONE_HU, keep=2, min_px=60)
            add(slices_u8[k], bones, "spleen_ct_bones", f"spleen2_bone_z{k}")
    return out_images, structures, out_sources


def embed_cached(
    predictor: Any,
    images: list[np.ndarray],
    cache_file: Path,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Every image's embedding, computed once and kept in ``cache_file`` (``.npz``, float16).

    Args:
        predictor: a LiteMedSAM predictor (``embed``, ``image_hash``, ``model_id``).
        images: ``(H, W, 3) uint8`` RGB.
        cache_file: read if present (entries of other images or models are kept), rewritten
            when something new was computed.
        progress: called with the image index after each image.

    Returns:
        ``((N, 1, 256, 64, 64) float16, per image (h, w) of the resized image in the 256 frame)``.
    """
    cached: dict[str, np.ndarray] = {}
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as npz:
            cached = {k: npz[k] for k in npz.files}
    out, sizes, changed = [], [], False
    for i, image in enumerate(images):
        key = f"{predictor.model_id}--{predictor.image_hash(image)}"
        if key not in cached:
            entry = predictor.embed(image)
            cached[key] = entry.embedding.astype(np.float16)
            cached[key + "--hw"] = np.asarray(entry.resized_hw, dtype=np.int64)
            changed = True
        out.append(cached[key])
        sizes.append((int(cached[key + "--hw"][0]), int(cached[key + "--hw"][1])))
        if progress is not None:
            progress(i)
    if changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + ".tmp.npz")
        np.savez(tmp, **cached)  # type: ignore[arg-type]
        tmp.replace(cache_file)
    return np.stack(out), sizes


def _split(sources: list[str], fraction: float, seed: int) -> np.ndarray:
    """Per source, a seeded ``fraction`` of its images (at least one when > 1) held out."""
    rng = np.random.default_rng(seed + 1)
    held = np.zeros(len(sources), dtype=bool)
    for source in sorted(set(sources)):
        idx = np.flatnonzero(np.asarray(sources) == source)
        n = round(fraction * idx.size)
        if fraction > 0 and idx.size > 1:
            n = max(n, 1)
        held[rng.choice(idx, size=n, replace=False)] = True
    return held


def train_clicks(
    options: ClickTrainOptions,
    data_root: Path,
    out: Path,
    cache_file: Path,
    command: str,
    checkpoint: Path | None = None,
    bar: Any = None,
) -> ClickTrainReport:
    """Load the data, embed it (cached), train, validate, write ``out`` + ``out.json``.

    Args:
        bar: a ``rich.progress.Progress`` to show the stages on, or None.
        command: the command line recorded in the JSON.
    """
    import torch

    from ml_backend.click_training import (
        ClickDecoderTrainer,
        click_curve,
        model_frame_mask,
        save_click_weights,
    )
    from ml_backend.predictors import get_predictor

    if options.steps < 1 or options.batch_size < 1 or options.rounds < 1:
        raise ValueError("--steps, --batch-size and --rounds must be >= 1")
    if not 0.0 <= options.box_only_rate <= 1.0 or not 0.0 <= options.val_fraction < 1.0:
        raise ValueError("--box-only-rate must be in [0, 1] (and val_fraction in [0, 1))")
    if options.start not in ("student", "stock"):
        raise ValueError(f"--start must be 'student' or 'stock', got {options.start!r}")
    if not data_root.is_dir():
        raise FileNotFoundError(f"shared data folder {data_root} not found")
    if options.threads:
        torch.set_num_threads(options.threads)
    images, structures, sources = load_structures(data_root, options.images, options.seed)
    predictor: Any = get_predictor("litemedsam", device="cpu", backend="auto")
    task = bar.add_task("embeddings", total=len(images)) if bar else None
    embeddings, sizes = embed_cached(
        predictor,
        images,
        cache_file,
        progress=(lambda i: bar.advance(task)) if bar else None,
    )
    held = _split(sources, options.val_fraction, options.seed)
    train = [s for s in structures if not held[s.image]]
    val = [s for s in structures if held[s.image]]
    targets = np.stack([model_frame_mask(s.mask, sizes[s.image]) for s in train])
    keep: list[bool] = [bool(t.any()) for t in targets]
    targets = targets[np.asarray(keep, dtype=bool)]
    image_of = [s.image for s, k in zip(train, keep, strict=True) if k]
    trainer = ClickDecoderTrainer(
        steps=options.steps,
        batch_size=options.batch_size,
        lr=options.lr,
        rounds=options.rounds,
        box_only_rate=options.box_only_rate,
        distill_weight=options.distill_weight,
        start=options.start,
        seed=options.seed,
        checkpoint=checkpoint,
    )
    step_task = bar.add_task("training", total=options.steps) if bar else None
    trainer.fit(
        predictor.prompt_decoder,
        embeddings,
        targets,
        image_of,
        sizes,
        progress=(lambda step, losses: bar.advance(step_task)) if bar else None,
    )
    assert trainer.decoder_ is not None
    val_task = bar.add_task("validation", total=len(val)) if bar else None
    stock, trained = predictor.prompt_decoder, trainer.decoder_
    routings = {"stock+logits": (stock, stock), "trained": (trained, trained),
                "trained:stock-box": (stock, trained)}  # fmt: skip
    curves: dict[str, list[list[float]]] = {name: [] for name in routings}
    for s in val:
        target = model_frame_mask(s.mask, sizes[s.image])
        if not target.any():
            continue
        emb = embeddings[s.image].astype(np.float32)
        for name, (box_decoder, click_decoder) in routings.items():
            curves[name].append(
                click_curve(box_decoder, click_decoder, emb, target, sizes[s.image])
            )
        if bar:
            bar.advance(val_task)
    mean = {k: np.mean(v, axis=0).round(4).tolist() if v else [] for k, v in curves.items()}
    losses = trainer.losses_
    tail = max(1, len(losses) // 10)
    counts: dict[str, dict[str, int]] = {}
    for s in structures:
        part = "val" if held[s.image] else "train"
        counts.setdefault(s.source, {"train": 0, "val": 0})[part] += 1
    meta = {
        "command": command,
        "seed": options.seed,
        "options": asdict(options),
        "base_checkpoint_sha256": predictor.checkpoint_sha256,
        "data": {
            "root": "MEDCROWD_SHARED_DATA",
            "structures": counts,
            "images": len(images),
            "never_read": ["sammed2d_demo", "drive/test"],
        },
        "steps": options.steps,
        "train_seconds": round(trainer.seconds_, 1),
        "loss_first_10pct": round(float(np.nanmean([x["loss"] for x in losses[:tail]])), 4),
        "loss_last_10pct": round(float(np.nanmean([x["loss"] for x in losses[-tail:]])), 4),
        "val_structures": len(curves["trained"]),
        "val_dice_vs_clicks": mean,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info = save_click_weights(trainer.decoder_, out, meta)
    return ClickTrainReport(
        out, info, mean["stock+logits"], mean["trained"], mean["trained:stock-box"]
    )
