"""``medcrowd evaluate``: does the crowd (and synthesis) give a better training set?

One downstream network (:class:`segmenter.Segmenter`, a MONAI U-Net) is trained on four
training sets ("arms") and tested on the same held-out expert masks:

=========  ======================================================================
expert     (a) a small expert subset of the pool (``expert_count`` images)
crowd      (b) (a) + the crowd-fused labels of the rest of the pool
synthetic  (c) (b) + synthetic image–mask pairs (pix2pix trained on (b))
ceiling    (d) every pool image with its expert label (the upper bound)
=========  ======================================================================

Splits. The labelled dataset ``data`` is split once into a *test* part (``test_fraction``,
chosen by ``split_seed``; or a separate ``test`` folder) and a *pool*. Test masks are only
ever used to score; nothing is tuned on them. For every seed in ``seeds`` the expert subset
is drawn from the pool with that seed, the crowd is simulated (or read), pix2pix is trained
and every arm's network is trained with that seed — the table gives mean ± std over seeds.

Crowd labels come either from a real project (``crowd``: a ``medcrowd pull`` + ``fuse``
folder or any pairs folder; its images must not be test images — checked by pixel hash) or
are simulated on the pool: a pool of annotators (``crowd_models``, names from
:data:`fusion.crowd_models.ANNOTATOR_MODELS`), ``raters_per_task`` of them drawn per image,
fused by :class:`fusion.CrowdStaple` with the expert subset as gold tasks — the workflow a
lab runs with gold tasks in Label Studio.

Outputs in ``out``::

    results.csv     one row per (arm, seed): training pairs, test Dice / HD95 / accuracy
    table.md        mean ± std per arm, relative Dice change vs (a)
    chart.png       Dice per arm (bars: mean, whiskers: std, dots: seeds)
    summary.json    options, split, per-arm means, crowd-label quality vs the expert masks
    seed-<s>/       the training pairs of each arm (PNG)

pix2pix runs in memory (:func:`gan.fit_pix2pix`, :meth:`gan.Synthesizer.generate`) with the
steps ``medcrowd synth train`` + ``generate`` take: the pairs in ``medcrowd synth``'s name
order, 10 % of them held out (unused here), batch size 1, then ``synth_count`` new masks by
:class:`gan.DeformedMaskGenerator` seeded with the arm's seed.

Progress is ``progress(done, total)`` in optimiser steps (pix2pix and every arm's network,
all seeds); ``on_log`` gets ``{"stage": "seed 0: training pix2pix"}``-style events as each
stage starts and ``{"stage": …, "row": {...}}`` when an arm is scored.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ARMS", "EvaluateOptions", "EvaluateReport", "evaluate"]

ARMS = ("expert", "crowd", "synthetic", "ceiling")
ARM_TITLES = {
    "expert": "(a) expert subset",
    "crowd": "(b) + crowd-fused",
    "synthetic": "(c) + synthetic",
    "ceiling": "(d) all expert (ceiling)",
}
DEFAULT_CROWD = (
    "good", "good", "good", "sloppy", "sloppy", "dilate", "erode", "miss_small",
    "partial", "spammer_blobs",
)  # fmt: skip

Progress = Callable[[int, int], None]
"""``progress(done, total)``: optimiser steps done out of the run's total."""
Log = Callable[[dict[str, Any]], None]
"""``on_log(event)``: ``{"stage": description, ...}`` as each stage starts or ends."""

U8 = npt.NDArray[np.uint8]


@dataclass
class EvaluateOptions:
    """Options of :func:`evaluate` (the CLI's ``--help`` documents each)."""

    expert_count: int = 10
    test_fraction: float = 0.3
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 128
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    res_units: int = 1
    crowd_models: tuple[str, ...] = DEFAULT_CROWD
    raters_per_task: int = 3
    crowd_method: str = "crowd-staple"
    synth_steps: int = 1500
    synth_count: int = 0
    """Synthetic pairs added in (c); 0 → as many as (b) has."""
    synth_ngf: int = 32
    invert_masks: bool = False
    arms: tuple[str, ...] = ARMS
    device: str = "auto"

    def check(self) -> None:
        if self.expert_count < 1:
            raise ValueError(f"--expert-count must be >= 1, got {self.expert_count}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.size < 32 or self.size % 16:
            raise ValueError(f"--size must be a multiple of 16 and >= 32, got {self.size}")
        if self.steps < 1 or self.synth_steps < 1:
            raise ValueError("--steps and --synth-steps must be >= 1")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
        from fusion.crowd_models import ANNOTATOR_MODELS

        bad = [m for m in self.crowd_models if m not in ANNOTATOR_MODELS]
        if bad:
            raise ValueError(f"unknown crowd models {bad}; known: {sorted(ANNOTATOR_MODELS)}")
        if not 1 <= self.raters_per_task <= len(self.crowd_models):
            raise ValueError(
                f"--raters-per-task must be in 1..{len(self.crowd_models)} (the crowd size)"
            )


@dataclass
class EvaluateReport:
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    table: str = ""


# -- data -----------------------------------------------------------------------------------
@dataclass
class _Set:
    names: list[str]
    images: U8  # N×S×S gray
    masks: U8  # N×S×S {0,1}

    def take(self, idx: Sequence[int]) -> _Set:
        ix = list(idx)
        return _Set([self.names[i] for i in ix], self.images[ix], self.masks[ix])

    def __len__(self) -> int:
        return len(self.names)


def _concat(*parts: _Set) -> _Set:
    parts = tuple(p for p in parts if len(p))
    return _Set(
        [n for p in parts for n in p.names],
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.masks for p in parts]),
    )


def _prepare(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], size: int) -> tuple[U8, U8]:
    from segmenter.data import prepare

    return prepare(images, masks, size)


def _load(root: Path, size: int, invert: bool) -> tuple[_Set, list[str]]:
    """Read a labelled folder; returns the set at ``size`` and a pixel hash per image."""
    from medcrowd.pairs import binary_arrays, load_pairs

    names, images, masks = binary_arrays(load_pairs(root, invert_masks=invert))
    if not names:
        raise ValueError(f"no image–mask pairs found in {root}")
    hashes = [_pixel_hash(im) for im in images]
    imgs, msks = _prepare(images, masks, size)
    return _Set(list(names), imgs, msks), hashes


def _synth_order(name: str) -> tuple[int, int | str]:
    """The order ``medcrowd synth`` reads a pairs folder in: all-digit names numerically
    first, then the rest by string."""
    return (0, int(name)) if name.isdigit() else (1, name)


def _load_crowd(root: Path, method: str, size: int) -> tuple[_Set, list[str]]:
    """A fused dataset (pull + fuse) or a pairs folder, in the order ``medcrowd synth``
    reads them."""
    from medcrowd.pairs import load_pairs

    pairs = sorted(load_pairs(root, method=method), key=lambda p: _synth_order(p.name))
    if not pairs:
        raise ValueError(f"no fused or image–mask pairs found in {root}")
    imgs, msks = _prepare([p.image for p in pairs], [p.mask for p in pairs], size)
    return _Set([f"crowd-{p.name}" for p in pairs], imgs, msks), [
        _pixel_hash(p.image) for p in pairs
    ]


def _pixel_hash(image: np.ndarray) -> str:
    from segmenter.data import to_gray

    arr = np.ascontiguousarray(to_gray(image))
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * fraction))
    if n - n_test < 2:
        raise ValueError(f"{n} labelled images are too few to hold out {n_test} for testing")
    return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist())


# -- crowd simulation ----------------------------------------------------------------------
def simulate_fused(
    masks: U8,
    gold: Sequence[int],
    models: Sequence[str],
    raters_per_task: int,
    seed: int,
) -> tuple[U8, dict[str, Any]]:
    """Crowd labels for every mask, fused by CrowdStaple with ``gold`` task indices as gold.

    Annotator ``i`` of the pool always labels with ``models[i]``; each task gets
    ``raters_per_task`` distinct annotators drawn with ``seed``. Returns the fused masks
    and a small report (per-annotator reliability, fused Dice vs the masks on non-gold
    tasks, majority-vote Dice for comparison).
    """
    from fusion import CrowdStaple
    from fusion.crowd_models import ANNOTATOR_MODELS

    rng = np.random.default_rng(seed)
    tasks, annotators = [], []
    for mask in masks:
        chosen = sorted(rng.choice(len(models), size=raters_per_task, replace=False).tolist())
        expert = mask.astype(bool)
        votes = np.stack([ANNOTATOR_MODELS[models[a]](expert, rng) for a in chosen])
        tasks.append(votes)
        annotators.append([f"a{a:02d}-{models[a]}" for a in chosen])
    gold_map = {int(t): masks[t].astype(bool) for t in gold}
    result = CrowdStaple().fit_predict(tasks, annotators, gold=gold_map)
    fused = np.stack(result.masks).astype(np.uint8)
    free = [t for t in range(len(masks)) if t not in gold_map]
    report: dict[str, Any] = {
        "raters_per_task": raters_per_task,
        "reliability": {str(k): round(v, 4) for k, v in sorted(result.reliability.items())},
        "fallback": result.fallback,
    }
    if free:
        from segmenter.metrics import dice_scores

        majority = np.stack([(tasks[t].mean(0) > 0.5) for t in free]).astype(np.uint8)
        report["fused_dice"] = float(dice_scores(fused[free], masks[free]).mean())
        report["majority_dice"] = float(dice_scores(majority, masks[free]).mean())
    return fused, report


# -- the run --------------------------------------------------------------------------------
def evaluate(
    data: Path,
    out: Path,
    options: EvaluateOptions,
    test: Path | None = None,
    crowd: Path | None = None,
    synthetic: Path | None = None,
    progress: Progress | None = None,
    on_log: Log | None = None,
) -> EvaluateReport:
    """Train the downstream network on every arm for every seed; write the table (module doc).

    Args:
        progress: ``progress(done, total)`` in optimiser steps over the whole run.
        on_log: stage events (module doc).

    Raises:
        ValueError / FileNotFoundError: bad options or device, empty or overlapping inputs.
    """
    from ml_backend.device import resolve_device

    options.check()
    device = resolve_device(options.device)
    for path in (data, test, crowd, synthetic):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{path} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    log = on_log or (lambda _event: None)

    full, hashes = _load(data, options.size, options.invert_masks)
    if test is not None:
        test_set, test_hashes = _load(test, options.size, options.invert_masks)
        pool = full
        shared = set(hashes) & set(test_hashes)
        if shared:
            raise ValueError(f"{len(shared)} image(s) of {data} are also in the test set {test}")
    else:
        pool_idx, test_idx = _split(len(full), options.test_fraction, options.split_seed)
        pool, test_set = full.take(pool_idx), full.take(test_idx)
        test_hashes = [hashes[i] for i in test_idx]
    if options.expert_count >= len(pool):
        raise ValueError(
            f"--expert-count {options.expert_count} leaves no pool image for the crowd "
            f"({len(pool)} pool images)"
        )
    crowd_set = None
    if crowd is not None:
        crowd_set, crowd_hashes = _load_crowd(crowd, options.crowd_method, options.size)
        leaked = set(crowd_hashes) & set(test_hashes)
        if leaked:
            raise ValueError(
                f"{len(leaked)} crowd image(s) in {crowd} are test images: the test split "
                "must stay unseen (use --test with a separate folder, or another split seed)"
            )
    synth_given = None
    if synthetic is not None:
        synth_given, _ = _load_crowd(synthetic, options.crowd_method, options.size)

    train_pix2pix = "synthetic" in options.arms and synth_given is None
    per_seed = len(options.arms) * options.steps + (options.synth_steps if train_pix2pix else 0)
    steps = _Steps(len(options.seeds) * per_seed, progress)
    rows: list[dict[str, Any]] = []
    crowd_reports: dict[str, Any] = {}
    for seed in options.seeds:
        seed_dir = out / f"seed-{seed}"
        rng = np.random.default_rng(seed)
        expert_idx = sorted(rng.choice(len(pool), options.expert_count, replace=False).tolist())
        rest_idx = [i for i in range(len(pool)) if i not in expert_idx]
        expert = pool.take(expert_idx)
        arms: dict[str, _Set] = {"expert": expert, "ceiling": pool}
        need_crowd = any(a in options.arms for a in ("crowd", "synthetic"))
        if need_crowd:
            if crowd_set is not None:
                crowd_part = crowd_set
            else:
                log({"stage": f"seed {seed}: simulating and fusing the crowd"})
                order = expert_idx + rest_idx  # gold first
                fused, report = simulate_fused(
                    pool.masks[order],
                    gold=range(len(expert_idx)),
                    models=options.crowd_models,
                    raters_per_task=options.raters_per_task,
                    seed=seed,
                )
                crowd_reports[str(seed)] = report
                rest = pool.take(rest_idx)
                crowd_part = _Set(
                    [f"crowd-{n}" for n in rest.names], rest.images, fused[len(expert_idx) :]
                )
            arms["crowd"] = _concat(expert, crowd_part)
        if "synthetic" in options.arms:
            if synth_given is not None:
                synth = synth_given
            else:
                log({"stage": f"seed {seed}: training pix2pix"})
                synth = _synthesise(arms["crowd"], options, seed, device, steps.part())
            arms["synthetic"] = _concat(arms["crowd"], synth)
        for arm in options.arms:
            _write_pairs(seed_dir / arm, arms[arm])
            stage = f"seed {seed}: training on {ARM_TITLES[arm]}"
            log({"stage": stage})
            row = _train_and_score(arm, seed, arms[arm], test_set, options, device, steps.part())
            log({"stage": stage, "row": row})
            rows.append(row)
            _write_rows(out / "results.csv", rows)

    summary = _summarise(rows, options)
    summary.update(
        {
            "data": str(Path(data).resolve()),
            "test": str(Path(test).resolve()) if test else None,
            "crowd": str(Path(crowd).resolve()) if crowd else "simulated",
            "synthetic": str(Path(synthetic).resolve()) if synthetic else "pix2pix on (b)",
            "options": asdict(options),
            "pool": len(pool),
            "test_images": test_set.names,
            "crowd_quality": crowd_reports,
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = _table(summary, options)
    (out / "table.md").write_text(table)
    _chart(rows, summary, options, out / "chart.png")
    return EvaluateReport(out=out, rows=rows, summary=summary, table=table)


class _Steps:
    """One ``progress(done, total)`` over the whole run, fed by each training call."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def part(self) -> Progress:
        start = self.done

        def tick(done: int, _total: int) -> None:
            self.done = start + done
            if self.progress is not None:
                self.progress(min(self.done, self.total), self.total)

        return tick


def _synthesise(
    base: _Set, options: EvaluateOptions, seed: int, device: str, progress: Progress
) -> _Set:
    """pix2pix trained on ``base`` (at the evaluation size) in memory, then ``synth_count``
    synthetic pairs (as many as ``base`` when 0).

    The steps of ``medcrowd synth train`` (``holdout=0.1``, ``quality=False``) and
    ``medcrowd synth generate`` on ``base`` written as a pairs folder: pairs in
    ``medcrowd synth``'s name order, masks as class ids (0 background, 1 foreground), a
    seeded 10 % held out of training, batch size 1; new masks from the training masks by
    :class:`gan.DeformedMaskGenerator` (``seed``), images generated in chunks of 8.
    """
    from gan import DeformedMaskGenerator, Pix2PixConfig, fit_pix2pix

    order = sorted(range(len(base)), key=lambda i: _synth_order(base.names[i].replace("/", "_")))
    images, labels = base.images[order], (base.masks[order] != 0).astype(np.uint8)
    if not labels.any():
        raise ValueError("every mask is empty: nothing to learn")
    n = len(order)
    if n < 2:
        raise ValueError(f"need at least 2 pairs (one held out), found {n}")
    n_held = min(n - 1, max(1, round(n * 0.1)))
    train = sorted(np.random.default_rng(seed).permutation(n).tolist()[n_held:])
    config = Pix2PixConfig(
        image_size=options.size,
        image_channels=1,
        mask_channels=2,
        ngf=options.synth_ngf,
        ndf=options.synth_ngf,
        lr=2e-4,
        device=device,
        amp=True,
        seed=seed,
    )
    synth = fit_pix2pix(
        images[train], labels[train], config, steps=options.synth_steps, batch_size=1,
        progress=progress,
    )  # fmt: skip
    count = options.synth_count or len(base)
    new, _ = DeformedMaskGenerator().sample(labels[train], count, seed=seed)
    fake = synth.generate(new, seed=seed * 100003, batch_size=8)
    return _Set([f"syn-{i}" for i in range(count)], fake, (new != 0).astype(np.uint8))


def _write_pairs(folder: Path, data: _Set, scale: int = 255) -> None:
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for name, image, mask in zip(data.names, data.images, data.masks, strict=True):
        stem = name.replace("/", "_")
        Image.fromarray(image).save(folder / "images" / f"{stem}.png")
        Image.fromarray((mask > 0).astype(np.uint8) * scale).save(folder / "masks" / f"{stem}.png")


def _train_and_score(
    arm: str,
    seed: int,
    train: _Set,
    test: _Set,
    options: EvaluateOptions,
    device: str,
    progress: Progress,
) -> dict[str, Any]:
    from segmenter.metrics import dice_scores, hd95_scores
    from segmenter.model import SegmenterConfig
    from segmenter.trainer import Segmenter

    config = SegmenterConfig(
        size=options.size,
        steps=options.steps,
        batch_size=options.batch_size,
        lr=options.lr,
        channels=options.channels,
        res_units=options.res_units,
        seed=seed,
        device=device,
    )
    net = Segmenter(config)
    net.fit(train.images, train.masks, progress=progress)
    pred = net.predict(test.images)
    dice = dice_scores(pred, test.masks)
    hd95 = hd95_scores(pred, test.masks)
    accuracy = (pred == test.masks).mean(axis=(1, 2))
    return {
        "arm": arm,
        "seed": seed,
        "train_pairs": len(train),
        "dice": float(np.mean(dice)),
        "hd95": float(np.nanmean(hd95)) if np.isfinite(hd95).any() else float("nan"),
        "accuracy": float(np.mean(accuracy)),
    }


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _summarise(rows: list[dict[str, Any]], options: EvaluateOptions) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm in options.arms:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        entry: dict[str, Any] = {"train_pairs": [r["train_pairs"] for r in mine]}
        for key in ("dice", "hd95", "accuracy"):
            values = np.array([r[key] for r in mine], dtype=float)
            entry[key] = {
                "mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                "std": float(np.nanstd(values)) if np.isfinite(values).any() else None,
            }
        arms[arm] = entry
    base = arms.get("expert", {}).get("dice", {}).get("mean")
    for entry in arms.values():
        mean = entry["dice"]["mean"]
        entry["dice_vs_expert"] = (mean - base) / base if base and mean is not None else None
    return {"arms": arms}


def _fmt(stat: dict[str, float | None], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _table(summary: dict[str, Any], options: EvaluateOptions) -> str:
    lines = [
        f"Test: {len(summary['test_images'])} held-out expert masks; "
        f"seeds {', '.join(map(str, options.seeds))}; {options.size} px; "
        f"{options.steps} steps per network.",
        "",
        "| training set | pairs | Dice | HD95 (px) | accuracy | Dice vs (a) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, entry in summary["arms"].items():
        pairs = entry["train_pairs"]
        n = str(pairs[0]) if len(set(pairs)) == 1 else f"{min(pairs)}–{max(pairs)}"
        rel = entry["dice_vs_expert"]
        rel_s = "—" if arm == "expert" or rel is None else f"{rel * 100:+.1f} %"
        lines.append(
            f"| {ARM_TITLES[arm]} | {n} | {_fmt(entry['dice'])} | {_fmt(entry['hd95'], 1)} | "
            f"{_fmt(entry['accuracy'])} | {rel_s} |"
        )
    return "\n".join(lines) + "\n"


def _chart(
    rows: list[dict[str, Any]], summary: dict[str, Any], options: EvaluateOptions, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    means = [summary["arms"][a]["dice"]["mean"] or 0.0 for a in arms]
    stds = [summary["arms"][a]["dice"]["std"] or 0.0 for a in arms]
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = ["#8d99ae", "#2a9d8f", "#e9c46a", "#264653"]
    ax.bar(range(len(arms)), means, yerr=stds, capsize=6, color=colours[: len(arms)])
    for i, arm in enumerate(arms):
        dots = [r["dice"] for r in rows if r["arm"] == arm]
        ax.scatter([i] * len(dots), dots, color="black", s=12, zorder=3)
        ax.text(i, means[i] + stds[i] + 0.01, f"{means[i]:.3f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(arms)), [ARM_TITLES[a] for a in arms], fontsize=8)
    ax.set_ylabel("test Dice (held-out expert masks)")
    ax.set_ylim(0, min(1.0, max(means) + max(stds) + 0.08) if means else 1.0)
    ax.set_title(f"Downstream segmenter, {len(options.seeds)} seed(s): mean ± std")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
