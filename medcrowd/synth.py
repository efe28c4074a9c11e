"""``medcrowd synth``: train pix2pix on image–mask pairs, generate synthetic pairs, report.

The app layer over :mod:`gan`: read pairs (:func:`medcrowd.pairs.load_pairs`, any layout it
knows), resize, call the engine on arrays, write checkpoints, figures, manifests and the
quality report. Typical inputs::

    (a) a folder written by ``medcrowd pull`` + ``medcrowd fuse``
        DATASET/dataset.json
        DATASET/images/task-<id>.<ext>                 the task image (PNG/JPEG/TIFF)
        DATASET/fused-<method>/masks/task-<id>.png     the fused mask (0/255)
    (b) a plain pairs folder (also what ``medcrowd synth generate`` writes)
        DATASET/images/<name>.<ext>   +  DATASET/masks/<name>.png
        (ISBI 2012 ``image/`` + ``label/``, DRIVE and BU-BIL folders are read too)

Masks are single-channel PNGs: 0 is background, every other value is a class (a 0/255 or
0/1 mask is one class; 0/1/2/… or 0/85/170/… are several — the generator sees them as
one-hot channels). ``invert_masks`` swaps a binary mask whose foreground is 0 (ISBI's
``label/``: 0 = membrane). Images are grayscale unless any is colour (then all are RGB). Every
pair is resized to ``size``×``size`` (images bilinear, masks nearest; non-square images are
stretched).

Training run folder ``RUN/`` (``train_synth``)::

    checkpoint.pt     synthesizer state: weights, optimisers, step, RNG, class table
                      (``gan.Synthesizer.state_dict``; resumable)
    run.json          options, dataset path, label values, train / held-out names
    losses.csv, losses.png     loss per step, and the curves
    samples.png       held-out pairs: mask | real | synthetic
    quality.json, quality.png  SSIM/PSNR on held-out reconstructions, train-on-synthetic /
                      test-on-real Dice of the downstream segmenter (``segmenter.Segmenter``,
                      with the train-on-real Dice beside it), intensity-histogram distances

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
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from medcrowd.pairs import Pair, label_values, load_pairs

if TYPE_CHECKING:
    from gan import Synthesizer

__all__ = [
    "GenerateReport",
    "SynthOptions",
    "TrainReport",
    "generate_synth",
    "quality_report",
    "read_pairs",
    "segmentation_dice",
    "train_synth",
]

U8 = npt.NDArray[np.uint8]
Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)``."""
OnLog = Callable[[dict[str, float]], None]
"""Called with each train step's losses."""
GENERATE_CHUNK = 8
"""Masks per generator pass (and per chunk of dropout seeds) in ``generate_synth``."""
SEG_CHANNELS = (8, 16, 32)
"""U-Net widths of the small downstream segmenter behind the train-on-synthetic score."""
SEG_BATCH = 4


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
def _synth_order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def read_pairs(root: Path, method: str = "crowd-staple", invert_masks: bool = False) -> list[Pair]:
    """``medcrowd.pairs.load_pairs`` in the order synth and export have always used.

    All-digit names numerically first, then the rest by string: the train / held-out split
    is drawn over this order, so it keeps existing runs resumable and case lists unchanged.
    """
    pairs = load_pairs(Path(root), method=method, invert_masks=invert_masks)
    return sorted(pairs, key=lambda p: _synth_order(p.name))


def _prepare(pairs: Sequence[Pair], size: int, values: list[int], rgb: bool) -> tuple[U8, U8]:
    """Resize → (N, S, S[, 3]) uint8 images and (N, S, S) uint8 masks (label values)."""
    images, masks = [], []
    for p in pairs:
        im = Image.fromarray(p.image)
        im = im.convert("RGB" if rgb else "L").resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(im, dtype=np.uint8))
        m = np.asarray(Image.fromarray(p.mask).resize((size, size), Image.Resampling.NEAREST))
        unknown = set(np.unique(m).tolist()) - set(values)
        if unknown:
            where = p.mask_path or p.name
            raise ValueError(f"{where} has mask values {sorted(unknown)} not in {values}")
        masks.append(m)
    return np.stack(images), np.stack(masks)


def _class_ids(masks: U8, values: list[int]) -> U8:
    lut = np.zeros(256, dtype=np.uint8)
    for i, v in enumerate(values):
        lut[v] = i
    return np.asarray(lut[masks], dtype=np.uint8)


# -- checkpoints --------------------------------------------------------------------------
def _save(synth: Synthesizer, path: Path) -> None:
    """Write the synthesizer's state atomically (resume bit-for-bit)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(synth.state_dict(), tmp)
    tmp.replace(path)


def _load(path: Path, device: str, values: list[int]) -> Synthesizer:
    """The synthesizer of ``path`` on ``device`` (checkpoints before the class table was
    stored in them take it from run.json's ``values``)."""
    import torch

    from gan import Synthesizer

    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say so in one line
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a pix2pix checkpoint")
    return Synthesizer.from_state(state, device=device, classes=state.get("classes", values))


def _read_run(run_dir: Path) -> dict[str, Any]:
    meta_path = run_dir / "run.json"
    if not meta_path.is_file() or not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run_dir} holds no trained model; run medcrowd synth train")
    try:
        meta = json.loads(meta_path.read_text())
        keys = ("dataset", "options", "label_values", "rgb", "train")
        if not isinstance(meta, dict) or any(k not in meta for k in keys):
            raise ValueError("keys missing")
        SynthOptions(**meta["options"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{meta_path} is not a medcrowd synth run file ({exc})") from None
    return meta


# -- training -----------------------------------------------------------------------------
def _split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    if n < 2:
        raise ValueError(f"need at least 2 pairs (one held out), found {n}")
    n_held = min(n - 1, max(1, round(n * holdout)))
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_held:]), sorted(order[:n_held])


def _offset(progress: Progress | None, start: int, total: int) -> Progress | None:
    """A chunk's ``(done, chunk)`` progress as ``(start + done, total)`` of the whole run."""
    if progress is None:
        return None
    report = progress

    def shifted(done: int, _chunk: int) -> None:
        report(start + done, total)

    return shifted


def train_synth(
    dataset: Path,
    run_dir: Path,
    options: SynthOptions,
    progress: Progress | None = None,
    on_log: OnLog | None = None,
) -> TrainReport:
    """Train (or resume) pix2pix on ``dataset``'s pairs; write ``run_dir`` (module docstring).

    ``progress(done, options.steps)`` follows the train steps; ``on_log`` gets each step's
    losses.
    """
    from gan import Pix2PixConfig, fit_pix2pix
    from ml_backend.device import resolve_device

    if options.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {options.checkpoint_every}")
    pairs = read_pairs(dataset, options.method, options.invert_masks)
    values = label_values(pairs)
    rgb = any(p.image.ndim == 3 for p in pairs)
    images, masks = _prepare(pairs, options.size, values, rgb)
    train_idx, held_idx = _split(len(pairs), options.holdout, options.seed)
    device = resolve_device(options.device)
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
    tr_img, tr_mask = images[train_idx], masks[train_idx]
    if ckpt.exists():
        old = _read_run(run_dir)
        if old["train"] != meta["train"] or old["label_values"] != values:
            raise ValueError(f"{run_dir} holds a run on other data; use another --out")
        synth = _load(ckpt, device, values)
    else:
        config = Pix2PixConfig(
            image_size=options.size,
            ngf=options.ngf,
            ndf=options.ndf,
            lr=options.lr,
            device=device,
            amp=options.amp,
            seed=options.seed,
        )
        synth = fit_pix2pix(tr_img, tr_mask, config, steps=0, classes=values)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    resumed = synth.step_
    while synth.step_ < options.steps:
        start = synth.step_
        every = options.checkpoint_every
        chunk = min(every - start % every, options.steps - start)
        synth.fit(tr_img, tr_mask, steps=chunk, batch_size=1, on_log=on_log,
                  progress=_offset(progress, start, options.steps))  # fmt: skip
        if synth.step_ % every == 0:
            _save(synth, ckpt)
    _save(synth, ckpt)
    _write_losses(run_dir, synth.history_)
    held_img, held_mask = images[held_idx], masks[held_idx]
    recon = synth.generate(held_mask, seed=options.seed, batch_size=GENERATE_CHUNK)
    _grid(run_dir / "samples.png", _class_ids(held_mask, values), held_img, recon,
          options.grid_rows, ("mask", "real (held out)", "synthetic"))  # fmt: skip
    report = TrainReport(
        run_dir, synth.step_, resumed, len(train_idx), len(held_idx),
        synth.history_[-1] if synth.history_ else {},
    )  # fmt: skip
    if options.quality:
        report.quality = quality_report(
            synth, (tr_img, tr_mask), (held_img, held_mask), recon, options, run_dir
        )
    return report


# -- quality ------------------------------------------------------------------------------
def segmentation_dice(
    train: tuple[U8, U8],
    test: tuple[U8, U8],
    *,
    epochs: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Train the downstream segmenter on ``train``, return its mean foreground Dice on ``test``.

    One small :class:`segmenter.Segmenter` (U-Net widths ``SEG_CHANNELS``, no augmentation,
    ``epochs`` passes of batch ``SEG_BATCH``) per foreground label value, one-vs-rest; Dice
    (:func:`fusion.metrics.dice`) of each over the whole test set, averaged over the values
    present in either set.

    Args:
        train, test: ``(images, masks)``: (N, S, S) gray or (N, S, S, 3) RGB uint8 and
            (N, S, S) uint8 label values (0 = background); S a multiple of 4.
        epochs: passes over the training images.
        seed: seeds the segmenter's weights and batch order.
        device: a resolved torch device.
    """
    from fusion.metrics import dice
    from segmenter import Segmenter, SegmenterConfig

    (tr_img, tr_mask), (te_img, te_mask) = train, test
    if len(tr_img) == 0 or len(te_img) == 0:
        raise ValueError("segmentation_dice needs training and test pairs")
    values = sorted({int(v) for v in np.unique(tr_mask)} | {int(v) for v in np.unique(te_mask)})
    steps = max(1, epochs * math.ceil(len(tr_img) / SEG_BATCH))
    config = SegmenterConfig(
        size=int(tr_img.shape[1]),
        channels=SEG_CHANNELS,
        steps=steps,
        batch_size=SEG_BATCH,
        augment=False,
        seed=seed,
        device=device,
    )
    in_channels = 3 if tr_img.ndim == 4 else 1
    scores = []
    for value in (v for v in values if v != 0):
        seg = Segmenter(config, in_channels=in_channels)
        seg.fit(tr_img, (tr_mask == value).astype(np.uint8))
        scores.append(dice(te_mask == value, seg.predict(te_img) > 0))
    return float(np.mean(scores)) if scores else 1.0


def quality_report(
    synth: Synthesizer,
    train: tuple[U8, U8],
    held: tuple[U8, U8],
    recon: U8,
    options: SynthOptions,
    run_dir: Path,
) -> dict[str, Any]:
    """Write ``quality.json`` + ``quality.png``; return the JSON's content.

    - reconstruction: SSIM / PSNR of G(held-out mask) against the held-out real image;
    - tstr: the downstream segmenter (:func:`segmentation_dice`) trained on synthetic pairs
      (deformed training masks → G) and one trained on the real training pairs, both tested
      on the held-out real pairs (mean foreground Dice);
    - histogram: intensity-histogram distances, held-out real vs reconstructions and
      training real vs synthetic.

    ``train`` and ``held`` are ``(images, masks)`` at the model's size, masks label values.
    """
    from gan import DeformedMaskGenerator, histogram_distance, psnr, ssim

    tr_img, tr_mask = train
    held_img = held[0]
    n_syn = options.quality_synthetic or 2 * len(tr_img)
    syn_mask, _ = DeformedMaskGenerator().sample(tr_mask, n_syn, seed=options.seed + 1)
    syn_img = synth.generate(syn_mask, seed=options.seed + 1000, batch_size=GENERATE_CHUNK)
    device = str(synth.trainer.device)

    def seg_dice(images: U8, masks: U8) -> float:
        return segmentation_dice(
            (images, masks), held, epochs=options.seg_epochs, seed=options.seed, device=device
        )

    ssims = [ssim(r, f) for r, f in zip(held_img, recon, strict=True)]
    psnrs = [psnr(r, f) for r, f in zip(held_img, recon, strict=True)]
    result: dict[str, Any] = {
        "step": synth.step_,
        "size": int(held_img.shape[1]),
        "held_out": len(held_img),
        "reconstruction": {
            "ssim_mean": float(np.mean(ssims)),
            "ssim": [round(s, 4) for s in ssims],
            "psnr_mean_db": float(np.mean(psnrs)),
            "psnr_db": [round(p, 2) for p in psnrs],
        },
        "tstr": {
            "segmenter": (
                f"segmenter.Segmenter(channels={SEG_CHANNELS}, batch_size={SEG_BATCH}, "
                f"epochs={options.seg_epochs}, augment=False)"
            ),
            "synthetic_pairs": n_syn,
            "real_train_pairs": len(tr_img),
            "dice_train_synthetic_test_real": seg_dice(syn_img, syn_mask),
            "dice_train_real_test_real": seg_dice(tr_img, tr_mask),
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
    ``progress(done, n)`` follows the pairs written.
    """
    from gan import DeformedMaskGenerator
    from ml_backend.device import resolve_device

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    meta = _read_run(run_dir)
    opts = SynthOptions(**meta["options"])
    values: list[int] = meta["label_values"]
    synth = _load(run_dir / "checkpoint.pt", resolve_device(device), values)
    pairs = read_pairs(Path(meta["dataset"]), opts.method, opts.invert_masks)
    by_name = {p.name: p for p in pairs}
    missing = [name for name in meta["train"] if name not in by_name]
    if missing:
        raise ValueError(f"training pairs missing from {meta['dataset']}: {missing[:5]}")
    train = [by_name[name] for name in meta["train"]]
    images, masks = _prepare(train, opts.size, values, bool(meta["rgb"]))
    new, sources = DeformedMaskGenerator().sample(masks, n, seed=seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    existing = [int(p.stem[4:]) for p in (out / "masks").glob("syn-*.png") if p.stem[4:].isdigit()]
    start = max(existing, default=-1) + 1
    chunk = GENERATE_CHUNK
    fakes = []
    with (out / "manifest.jsonl").open("a") as fh:
        for i in range(0, n, chunk):
            fake = synth.generate(new[i : i + chunk], seed=seed * 100003 + i, batch_size=chunk)
            fakes.append(fake)
            for j, img in enumerate(fake):
                k, name = i + j, f"syn-{start + i + j:05d}"
                Image.fromarray(img).save(out / "images" / f"{name}.png")
                Image.fromarray(new[k]).save(out / "masks" / f"{name}.png")
                record = {
                    "name": name,
                    "image": f"images/{name}.png",
                    "mask": f"masks/{name}.png",
                    "synthetic": True,
                    "source": train[int(sources[k])].name,
                    "checkpoint": str((run_dir / "checkpoint.pt").resolve()),
                    "step": synth.step_,
                    "seed": seed,
                }
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            if progress is not None:
                progress(min(i + chunk, n), n)
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
    titles = ("deformed mask", "real image of the source mask", "synthetic")
    _grid(out / "samples.png", _class_ids(new, values), images[sources], fake_all,
          opts.grid_rows, titles)  # fmt: skip
    return GenerateReport(out, n, 0)
