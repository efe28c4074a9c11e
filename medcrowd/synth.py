"""``medcrowd synth``: train pix2pix on image–mask pairs, generate synthetic pairs, report.

Input layouts (``load_pairs`` detects which)::

    (a) a folder written by ``medcrowd pull`` + ``medcrowd fuse``
        DATASET/dataset.json
        DATASET/images/task-<id>.<ext>                 the task image (PNG/JPEG/TIFF)
        DATASET/fused-<method>/masks/task-<id>.png     the fused mask (0/255)
    (b) a plain pairs folder (also what ``medcrowd synth generate`` writes)
        DATASET/images/<name>.<ext>   +  DATASET/masks/<name>.png
        (``image/`` + ``label/`` is accepted too, e.g. ISBI 2012 ``train/``)

Masks are single-channel PNGs: 0 is background, every other value is a class (a 0/255 or
0/1 mask is one class; 0/1/2/… or 0/85/170/… are several — the generator sees them as
one-hot channels). ``invert_masks`` swaps a binary mask whose foreground is 0 (ISBI's
``label/``: 0 = membrane). Images are grayscale unless any is colour (then all are RGB). Every
pair is resized to ``size``×``size`` (images bilinear, masks nearest; non-square images are
stretched).

Training run folder ``RUN/`` (``train_synth``)::

    checkpoint.pt     trainer state: weights, optimisers, step, RNG (resumable)
    run.json          options, dataset path, label values, train / held-out names
    losses.csv, losses.png     loss per step, and the curves
    samples.png       held-out pairs: mask | real | synthetic
    quality.json, quality.png  SSIM/PSNR on held-out reconstructions, train-on-synthetic /
                      test-on-real Dice (with the train-on-real Dice beside it), intensity-
                      histogram distances

Synthetic output ``OUT/`` (``generate_synth``), layout (b) plus provenance::

    images/syn-<k>.png, masks/syn-<k>.png   (mask values as in the source dataset)
    manifest.jsonl    one record per pair: name, image, mask, synthetic=true, source mask,
                      checkpoint, step, seed
    dataset.json      {"synthetic": true, ...}
    samples.png       deformed mask | the real image of its source | synthetic
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "GenerateReport",
    "Pair",
    "SynthOptions",
    "TrainReport",
    "generate_synth",
    "load_pairs",
    "train_synth",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
Progress = Callable[[int, int, dict[str, float]], None]
"""Called with (done, total, latest losses or {})."""


@dataclass
class Pair:
    """One image–mask pair at its original size.

    Attributes:
        name: file stem (``task-12``, ``syn-00003``, ``7``).
        image: (H, W) uint8 gray or (H, W, 3) uint8 RGB.
        mask: (H, W) uint8 raw mask values (0 = background).
        kind: "fused" (layout a), "real" (layout b) or "synthetic" (a generate output).
        image_path, mask_path: where they were read.
    """

    name: str
    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8]
    kind: str
    image_path: Path
    mask_path: Path


@dataclass
class SynthOptions:
    """Options of ``train_synth`` / ``generate_synth`` (see the CLI's --help for each)."""

    size: int = 256
    steps: int = 2000
    ngf: int = 64
    ndf: int = 64
    lr: float = 2e-4
    seed: int = 0
    holdout: float = 0.2
    device: str = "auto"
    amp: bool = True
    method: str = "crowd-staple"
    invert_masks: bool = False
    checkpoint_every: int = 200
    quality: bool = True
    quality_synthetic: int = 0
    """Synthetic pairs for the train-on-synthetic score; 0 → twice the training pairs."""
    seg_epochs: int = 8
    grid_rows: int = 4


@dataclass
class TrainReport:
    run_dir: Path
    steps: int
    resumed_from: int
    train: int
    held_out: int
    last_losses: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] | None = None


@dataclass
class GenerateReport:
    out: Path
    written: int
    skipped: int


# -- reading ------------------------------------------------------------------------------
def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I", "F"):
            raw = np.asarray(im, dtype=np.float64)
            lo, hi = float(raw.min()), float(raw.max())
            scaled = (raw - lo) / (hi - lo or 1.0) * 255
            return np.asarray(scaled.round(), dtype=np.uint8)
        if im.mode in ("L", "1", "P") and not (im.mode == "P" and "transparency" in im.info):
            gray = im.convert("RGB") if im.mode == "P" else im.convert("L")
            arr = np.asarray(gray, dtype=np.uint8)
            if arr.ndim == 3 and (arr == arr[..., :1]).all():
                arr = arr[..., 0].copy()
            return arr
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read_mask(path: Path, invert: bool) -> npt.NDArray[np.uint8]:
    with Image.open(path) as im:
        arr = np.asarray(im if im.mode in ("L", "P", "1") else im.convert("L"))
    mask = np.asarray(arr, dtype=np.uint8)
    if invert:
        if len(np.unique(mask)) > 2:
            raise ValueError(f"--invert-masks needs binary masks; {path} has more values")
        mask = np.where(mask == 0, 255, 0).astype(np.uint8)
    return mask


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def load_pairs(root: Path, method: str = "crowd-staple", invert_masks: bool = False) -> list[Pair]:
    """Every image–mask pair of ``root`` (layout a or b, see the module docstring).

    Raises ``FileNotFoundError`` when ``root`` matches neither layout, ``ValueError`` when a
    mask's size differs from its image's or nothing pairs up.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    kind = "real"
    if (root / "dataset.json").is_file():
        meta = json.loads((root / "dataset.json").read_text())
        if isinstance(meta, dict) and meta.get("synthetic"):
            kind = "synthetic"
    fused = root / f"fused-{method}" / "masks"
    if fused.is_dir():
        image_dir, mask_dir, kind = root / "images", fused, "fused"
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        image_dir, mask_dir = root / "images", root / "masks"
    elif (root / "image").is_dir() and (root / "label").is_dir():
        image_dir, mask_dir = root / "image", root / "label"
    else:
        raise FileNotFoundError(
            f"{root} has neither fused-{method}/masks/ (run medcrowd fuse --method {method}) "
            "nor images/ + masks/"
        )
    pairs = []
    masks = sorted(mask_dir.glob("*.png"), key=lambda p: _natural(p.stem))
    for mask_path in masks:
        image_path = _find_image(image_dir, mask_path.stem)
        if image_path is None:
            continue
        image = _read_image(image_path)
        mask = _read_mask(mask_path, invert_masks)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{mask_path} is {mask.shape[::-1]} but {image_path} is {image.shape[1::-1]}"
            )
        pairs.append(Pair(mask_path.stem, image, mask, kind, image_path, mask_path))
    if not pairs:
        raise ValueError(f"no image in {image_dir} matches a mask in {mask_dir}")
    return pairs


def _natural(stem: str) -> tuple[int, int | str]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def label_values(pairs: list[Pair]) -> list[int]:
    """Sorted raw mask values over all pairs, background 0 first (class id = index)."""
    values = sorted({0} | {int(v) for p in pairs for v in np.unique(p.mask)})
    if len(values) < 2:
        raise ValueError("every mask is empty: nothing to learn")
    return values


def _prepare(
    pairs: list[Pair], size: int, values: list[int], rgb: bool
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Resize → (N, S, S[, 3]) uint8 images and (N, S, S) uint8 class ids."""
    lut = np.zeros(256, dtype=np.uint8)
    for i, v in enumerate(values):
        lut[v] = i
    images, labels = [], []
    for p in pairs:
        im = Image.fromarray(p.image)
        im = im.convert("RGB" if rgb else "L").resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(im, dtype=np.uint8))
        m = Image.fromarray(p.mask).resize((size, size), Image.Resampling.NEAREST)
        unknown = set(np.unique(np.asarray(m)).tolist()) - set(values)
        if unknown:
            raise ValueError(f"{p.mask_path} has mask values {sorted(unknown)} not in {values}")
        labels.append(lut[np.asarray(m)])
    return np.stack(images), np.stack(labels)


# -- training -----------------------------------------------------------------------------
def _split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    if n < 2:
        raise ValueError(f"need at least 2 pairs (one held out), found {n}")
    n_held = min(n - 1, max(1, round(n * holdout)))
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_held:]), sorted(order[:n_held])


def _batch(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], classes: int, step: int, seed: int
) -> dict[str, Any]:
    """The batch of train step ``step``: a function of (seed, step) only, so resume repeats it.

    Batch size 1 (the paper's), an epoch-wise seeded permutation, random horizontal flip.
    """
    from gan import images_to_tensor, masks_to_onehot

    n = len(images)
    epoch, pos = divmod(step, n)
    rng = np.random.default_rng([seed, epoch])
    idx = int(rng.permutation(n)[pos])
    flip = bool(np.random.default_rng([seed, epoch, pos]).integers(2))
    img, lab = images[idx : idx + 1], labels[idx : idx + 1]
    if flip:
        img, lab = img[:, :, ::-1], lab[:, :, ::-1]
    return {"mask": masks_to_onehot(lab.copy(), classes), "image": images_to_tensor(img.copy())}


def train_synth(
    dataset: Path, run_dir: Path, options: SynthOptions, progress: Progress | None = None
) -> TrainReport:
    """Train (or resume) pix2pix on ``dataset``'s pairs; write ``run_dir`` (module docstring)."""
    from gan import Pix2PixConfig, Pix2PixTrainer

    pairs = load_pairs(dataset, options.method, options.invert_masks)
    values = label_values(pairs)
    rgb = any(p.image.ndim == 3 for p in pairs)
    images, labels = _prepare(pairs, options.size, values, rgb)
    train_idx, held_idx = _split(len(pairs), options.holdout, options.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.pt"
    meta = {
        "dataset": str(Path(dataset).resolve()),
        "options": asdict(options),
        "label_values": values,
        "rgb": rgb,
        "train": [pairs[i].name for i in train_idx],
        "held_out": [pairs[i].name for i in held_idx],
    }
    if ckpt.exists():
        old = json.loads((run_dir / "run.json").read_text())
        if old["train"] != meta["train"] or old["label_values"] != values:
            raise ValueError(f"{run_dir} holds a run on other data; use another --out")
        trainer = Pix2PixTrainer.load(ckpt, device=options.device)
    else:
        config = Pix2PixConfig(
            image_size=options.size,
            image_channels=3 if rgb else 1,
            mask_channels=len(values),
            ngf=options.ngf,
            ndf=options.ndf,
            lr=options.lr,
            device=options.device,
            amp=options.amp,
            seed=options.seed,
        )
        trainer = Pix2PixTrainer(config)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    resumed = trainer.step_
    tr_img, tr_lab = images[train_idx], labels[train_idx]
    classes = len(values)
    while trainer.step_ < options.steps:
        losses = trainer.train_step(_batch(tr_img, tr_lab, classes, trainer.step_, options.seed))
        if progress is not None:
            progress(trainer.step_, options.steps, losses)
        if trainer.step_ % options.checkpoint_every == 0:
            trainer.save(ckpt)
    trainer.save(ckpt)
    _write_losses(run_dir, trainer.history_)
    held_img, held_lab = images[held_idx], labels[held_idx]
    recon = _generate(trainer, held_lab, classes, options.seed)
    _grid(run_dir / "samples.png", held_lab, held_img, recon, options.grid_rows,
          ("mask", "real (held out)", "synthetic"))  # fmt: skip
    report = TrainReport(
        run_dir, trainer.step_, resumed, len(train_idx), len(held_idx),
        trainer.history_[-1] if trainer.history_ else {},
    )  # fmt: skip
    if options.quality:
        report.quality = quality_report(
            trainer, (tr_img, tr_lab), (held_img, held_lab), recon, options, run_dir, progress
        )
    return report


def _generate(
    trainer: Any, labels: npt.NDArray[np.uint8], classes: int, seed: int, chunk: int = 8
) -> npt.NDArray[np.uint8]:
    from gan import masks_to_onehot, tensor_to_images

    out = [
        tensor_to_images(
            trainer.generate(masks_to_onehot(labels[i : i + chunk], classes), seed=seed + i)
        )
        for i in range(0, len(labels), chunk)
    ]
    return np.concatenate(out)


# -- quality ------------------------------------------------------------------------------
def quality_report(
    trainer: Any,
    train: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    held: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    recon: npt.NDArray[np.uint8],
    options: SynthOptions,
    run_dir: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write ``quality.json`` + ``quality.png``; return the JSON's content.

    - reconstruction: SSIM / PSNR of G(held-out mask) against the held-out real image;
    - tstr: a ``TinySegmenter`` trained on synthetic pairs (deformed training masks →
      G) and one trained on the real training pairs, both tested on the held-out real
      pairs (mean foreground Dice);
    - histogram: intensity-histogram distances, held-out real vs reconstructions and
      training real vs synthetic.
    """
    from gan import DeformedMaskGenerator, TinySegmenter, histogram_distance, mean_dice, psnr, ssim

    tr_img, tr_lab = train
    held_img, held_lab = held
    classes = int(trainer.config.mask_channels)
    n_syn = options.quality_synthetic or 2 * len(tr_img)
    syn_lab, _ = DeformedMaskGenerator().sample(tr_lab, n_syn, seed=options.seed + 1)
    syn_img = _generate(trainer, syn_lab, classes, options.seed + 1000)
    if progress is not None:
        progress(trainer.step_, options.steps, {})

    def seg_dice(images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> float:
        seg = TinySegmenter(num_classes=classes, epochs=options.seg_epochs, seed=options.seed)
        return mean_dice(held_lab, seg.fit(images, labels).predict(held_img), classes)

    ssims = [ssim(r, f) for r, f in zip(held_img, recon, strict=True)]
    psnrs = [psnr(r, f) for r, f in zip(held_img, recon, strict=True)]
    result: dict[str, Any] = {
        "step": trainer.step_,
        "size": int(held_img.shape[1]),
        "held_out": len(held_img),
        "reconstruction": {
            "ssim_mean": float(np.mean(ssims)),
            "ssim": [round(s, 4) for s in ssims],
            "psnr_mean_db": float(np.mean(psnrs)),
            "psnr_db": [round(p, 2) for p in psnrs],
        },
        "tstr": {
            "segmenter": f"TinySegmenter(base=8, epochs={options.seg_epochs})",
            "synthetic_pairs": n_syn,
            "real_train_pairs": len(tr_img),
            "dice_train_synthetic_test_real": seg_dice(syn_img, syn_lab),
            "dice_train_real_test_real": seg_dice(tr_img, tr_lab),
        },
        "histogram": {
            "held_out_real_vs_reconstruction": histogram_distance(held_img, recon),
            "train_real_vs_synthetic": histogram_distance(tr_img, syn_img),
        },
        "seed": options.seed,
    }
    (run_dir / "quality.json").write_text(json.dumps(result, indent=2))
    _quality_png(run_dir / "quality.png", result, held_img, recon, tr_img, syn_img)
    return result


def _quality_png(
    path: Path,
    result: dict[str, Any],
    held: npt.NDArray[np.uint8],
    recon: npt.NDArray[np.uint8],
    train: npt.NDArray[np.uint8],
    syn: npt.NDArray[np.uint8],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    bins = np.arange(257)
    for ax, (a, b, la, lb) in zip(
        axes[:2],
        [(held, recon, "held-out real", "reconstruction"), (train, syn, "train real", "synthetic")],
        strict=True,
    ):
        ax.hist(a.ravel(), bins, density=True, alpha=0.5, label=la)
        ax.hist(b.ravel(), bins, density=True, alpha=0.5, label=lb)
        ax.set_xlabel("intensity")
        ax.legend()
    h = result["histogram"]
    axes[0].set_title(f"W1 {h['held_out_real_vs_reconstruction']['wasserstein']:.1f} grey levels")
    axes[1].set_title(f"W1 {h['train_real_vs_synthetic']['wasserstein']:.1f} grey levels")
    t, r = result["tstr"], result["reconstruction"]
    names = ["train synthetic", "train real"]
    vals = [t["dice_train_synthetic_test_real"], t["dice_train_real_test_real"]]
    axes[2].bar(names, vals, color=["tab:orange", "tab:blue"])
    axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("Dice on held-out real")
    axes[2].set_title(f"SSIM {r['ssim_mean']:.3f}  PSNR {r['psnr_mean_db']:.1f} dB")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- figures ------------------------------------------------------------------------------
def _write_losses(run_dir: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    keys = sorted(history[0])
    with (run_dir / "losses.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", *keys])
        for i, h in enumerate(history, 1):
            writer.writerow([i, *(f"{h[k]:.6g}" for k in keys)])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(history) + 1)
    window = max(1, len(history) // 50)

    def smooth(key: str) -> npt.NDArray[np.float64]:
        v = np.array([h[key] for h in history])
        # "valid" trailing mean: no zero padding dragging the curve down at either end
        return np.convolve(v, np.ones(window) / window, mode="valid")

    x = steps[window - 1 :]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for key in ("loss_D", "loss_G_GAN"):
        axes[0].plot(x, smooth(key), label=key)
    axes[0].set_title(f"adversarial losses (moving mean over {window})")
    axes[1].plot(x, smooth("loss_G_L1"), color="tab:green")
    axes[1].set_title("generator L1 (images in [-1, 1])")
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(run_dir / "losses.png", dpi=100)
    plt.close(fig)


def _grid(
    path: Path,
    labels: npt.NDArray[np.uint8],
    real: npt.NDArray[np.uint8],
    fake: npt.NDArray[np.uint8],
    rows: int,
    titles: tuple[str, str, str],
) -> None:
    """Rows of mask | real | synthetic, written as one PNG (with a title strip)."""
    from PIL import ImageDraw

    rows = min(rows, len(labels))
    classes = max(1, int(labels.max()))
    tiles = []
    for i in range(rows):
        mask = (labels[i].astype(np.float64) * (255.0 / classes)).astype(np.uint8)
        cells = [_rgb(mask), _rgb(real[i]), _rgb(fake[i])]
        tiles.append(np.concatenate(cells, axis=1))
    body = np.concatenate(tiles, axis=0)
    width = body.shape[1]
    head = Image.new("RGB", (width, 18), "white")
    draw = ImageDraw.Draw(head)
    third = width // 3
    for j, t in enumerate(titles):
        draw.text((j * third + 4, 3), t, fill="black")
    out = Image.new("RGB", (width, body.shape[0] + 18), "white")
    out.paste(head, (0, 0))
    out.paste(Image.fromarray(body), (0, 18))
    out.save(path)


def _rgb(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a


# -- generation ---------------------------------------------------------------------------
def generate_synth(
    run_dir: Path,
    out: Path,
    n: int,
    seed: int = 0,
    device: str = "auto",
    progress: Progress | None = None,
) -> GenerateReport:
    """Write ``n`` synthetic pairs (deformed training masks → G) to ``out`` (layout b).

    Appends to an existing output folder: names continue after the highest ``syn-<k>``.
    """
    from gan import DeformedMaskGenerator, Pix2PixTrainer

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    meta_path = run_dir / "run.json"
    if not meta_path.is_file() or not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run_dir} holds no trained model; run medcrowd synth train")
    meta = json.loads(meta_path.read_text())
    opts = SynthOptions(**meta["options"])
    trainer = Pix2PixTrainer.load(run_dir / "checkpoint.pt", device=device)
    pairs = load_pairs(Path(meta["dataset"]), opts.method, opts.invert_masks)
    values: list[int] = meta["label_values"]
    by_name = {p.name: p for p in pairs}
    missing = [name for name in meta["train"] if name not in by_name]
    if missing:
        raise ValueError(f"training pairs missing from {meta['dataset']}: {missing[:5]}")
    train = [by_name[name] for name in meta["train"]]
    images, labels = _prepare(train, opts.size, values, bool(meta["rgb"]))
    new, sources = DeformedMaskGenerator().sample(labels, n, seed=seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    existing = [int(p.stem[4:]) for p in (out / "masks").glob("syn-*.png") if p.stem[4:].isdigit()]
    start = max(existing, default=-1) + 1
    lut = np.array(values, dtype=np.uint8)
    classes = len(values)
    chunk = 8
    fakes = []
    with (out / "manifest.jsonl").open("a") as fh:
        for i in range(0, n, chunk):
            fake = _generate(trainer, new[i : i + chunk], classes, seed * 100003 + i, chunk)
            fakes.append(fake)
            for j, img in enumerate(fake):
                k, name = i + j, f"syn-{start + i + j:05d}"
                Image.fromarray(img).save(out / "images" / f"{name}.png")
                Image.fromarray(lut[new[k]]).save(out / "masks" / f"{name}.png")
                record = {
                    "name": name,
                    "image": f"images/{name}.png",
                    "mask": f"masks/{name}.png",
                    "synthetic": True,
                    "source": train[int(sources[k])].name,
                    "checkpoint": str((run_dir / "checkpoint.pt").resolve()),
                    "step": trainer.step_,
                    "seed": seed,
                }
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            if progress is not None:
                progress(min(i + chunk, n), n, {})
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "synthetic": True,
                "generator": "pix2pix",
                "run": str(run_dir.resolve()),
                "source_dataset": meta["dataset"],
                "label_values": values,
                "size": opts.size,
            },
            indent=2,
        )
    )
    fake_all = np.concatenate(fakes)
    _grid(out / "samples.png", new, images[sources], fake_all, opts.grid_rows,
          ("deformed mask", "real image of the source mask", "synthetic"))  # fmt: skip
    return GenerateReport(out, n, 0)
