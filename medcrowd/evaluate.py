"""``medcrowd evaluate``: does the crowd (and synthesis) give a better training set?

One downstream network (:class:`segmenter.Segmenter`, a MONAI U-Net) is trained on four
training sets ("arms") and tested on the same held-out expert masks:

=========  ======================================================================
expert     (a) a small expert subset of the pool (``expert_count`` images)
crowd      (b) (a) + the crowd-fused labels of the rest of the pool
synthetic  (c) (b) + synthetic image–mask pairs (pix2pix trained on (b))
ceiling    (d) every pool image with its expert label (the upper bound)
assist     (e) (a) + the rest of the pool labelled by LiteMedSAM alone (one box per
           object, no correction)
=========  ======================================================================

Each row carries ``volunteer_h``: the volunteer-hours behind its labels ((b), (c): every
assisted-crowd label of the pool, gold images included; (e): its boxes; (a), (d): 0).

Splits. The labelled dataset ``data`` is split once into a *test* part (``test_fraction``,
chosen by ``split_seed``) and a *pool*. With a separate ``test`` folder (``--test DIR``: any
layout :func:`medcrowd.pairs.load_pairs` reads — ``images/`` + ``masks/`` of PNG / TIFF /
JPEG files of any size, resized to ``size`` like ``data``) all of ``data`` is the pool and
nothing of ``data`` is tested on; the test folder is only scored on — never trained on, never
given to the crowd simulation or pix2pix, never used for a choice. A test folder whose pixels
match an image of ``data`` (pixel hash), that holds no pairs or does not read is refused with
:class:`TestFolderError` (the CLI exits 2). Test masks are binarised as ``data``'s are:
``mask_threshold`` for both, ``test_invert_masks`` (default: ``invert_masks``). Test masks
are only ever used to score; nothing is tuned on them. For every seed in ``seeds`` the expert
subset is drawn from the pool with that seed, the crowd is simulated (or read), pix2pix is
trained and every arm's network is trained with that seed — the table gives mean ± std over
seeds.

Expert counts. ``expert_count`` is one number or several (``--expert-count 5,10``). With
several, arms (a), (b), (c) run once per count and are labelled ``expert-5``, ``crowd-5``,
``synthetic-5`` … (titles "(a) expert subset (n=5)"); (d) runs once. Per seed the subsets are
nested: one seeded draw of the largest count, of which the first ``n`` are the subset of
``n``. One number draws exactly as before and labels the rows ``expert`` … as before.

Training steps (``steps_rule``, :data:`STEPS_RULES`, :func:`train_steps`): ``"fixed"`` trains
every network ``steps`` optimiser steps; ``"scaled"`` (the default) trains
``max(steps, ceil(epochs_min * pairs / batch_size))`` steps, so a network on a large arm sees
each pair at least ``epochs_min`` times while small arms keep ``steps``. pix2pix always
trains ``synth_steps``. The steps of every network are in ``results.csv`` and the table.

Crowd labels come either from a real project (``crowd``: a ``medcrowd pull`` + ``fuse``
folder or any pairs folder; its images must not be test images — checked by pixel hash), or
from the **assisted crowd** (``crowd_source="assisted"``, the default;
:mod:`medcrowd.assisted`): virtual volunteers draw noisy boxes, get LiteMedSAM's mask in
process (one encoder pass per pool image for all seeds) and correct it with priced brush
strokes within a time budget; ``raters_per_task`` of ``crowd_pool`` per image, fused by
CrowdStaple with the expert subset as gold tasks (docs/evaluation.md). Or
(``crowd_source="simulated"``) they are simulated on the pool: a pool of annotators
(``crowd_models``, names from :data:`fusion.crowd_models.ANNOTATOR_MODELS`),
``raters_per_task`` of them drawn per image, fused by :class:`fusion.CrowdStaple` with the
expert subset as gold tasks — the workflow a lab runs with gold tasks in Label Studio.

Outputs in ``out``::

    results.csv     one row per (arm, seed): training pairs, steps, test Dice / HD95 / accuracy
    table.md        mean ± std per arm, relative Dice change vs (a)
    chart.png       Dice per arm (bars: mean, whiskers: std, dots: seeds)
    summary.json    options, split, step rule, per-arm means, crowd-label quality vs the
                    expert masks
    seed-<s>/       the training pairs of each arm (PNG)

pix2pix runs in memory (:func:`gan.fit_pix2pix`, :meth:`gan.Synthesizer.generate`) with the
steps ``medcrowd synth train`` + ``generate`` take: the pairs in ``medcrowd synth``'s name
order, 10 % of them held out (unused here), batch size 1, then ``synth_count`` new masks by
:class:`gan.DeformedMaskGenerator` seeded with the arm's seed.

Threads. On a CPU the run first fixes PyTorch's intra-op threads to ``threads`` (default 1,
:func:`ml_backend.device.configure_threads`: inter-op 1, and ONNX Runtime sessions built
afterwards, the assist's, take the same number), before any network is built; ``threads`` 0
leaves torch's default; a CUDA device is left as it is. ``summary.json`` records it
(``torch_threads``).

Progress is ``progress(done, total)`` in optimiser steps (pix2pix and every arm's network,
all seeds); ``on_log`` gets ``{"stage": "seed 0: training pix2pix"}``-style events as each
stage starts and ``{"stage": …, "row": {...}}`` when an arm is scored.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medcrowd.jobs import Jobs

if TYPE_CHECKING:
    from segmenter.training import StepCounter

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "STEPS_RULES",
    "EvaluateOptions",
    "EvaluateReport",
    "TestFolderError",
    "evaluate",
    "train_steps",
]

ARMS = ("expert", "crowd", "synthetic", "ceiling", "assist")
DEFAULT_ARMS = ("expert", "crowd", "ceiling", "assist")
"""The arms a run trains unless told otherwise: (c) is opt-in (``--arms ...,synthetic``), as
the measured tables found it below (b) in every cell (docs/evaluation.md)."""
ARM_TITLES = {
    "expert": "(a) expert subset",
    "crowd": "(b) + crowd-fused",
    "synthetic": "(c) + synthetic",
    "ceiling": "(d) all expert (ceiling)",
    "assist": "(e) + assist alone",
}
CROWD_SOURCES: dict[str, str] = {
    "assisted": "virtual volunteers label through LiteMedSAM (box noise + brush fixes, "
    "medcrowd.assisted)",
    "simulated": "expert masks perturbed by fusion.crowd_models (no assist)",
}
"""``--crowd-source`` name → how the crowd's labels of the pool are made."""
STEPS_RULES: dict[str, str] = {
    "fixed": "steps = --steps for every network",
    "scaled": "steps = max(--steps, ceil(--epochs-min * training pairs / batch size))",
}
"""Rule name → how the optimiser steps of one arm's network are chosen."""
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

    expert_count: int | tuple[int, ...] = 10
    """Expert images in (a); several → arms (a)–(c) once per count (module doc)."""
    test_fraction: float = 0.3
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 128
    steps: int = 600
    steps_rule: str = "scaled"
    """``"fixed"`` or ``"scaled"`` (:data:`STEPS_RULES`, :func:`train_steps`)."""
    epochs_min: float = 20.0
    """``"scaled"``: passes over the training pairs a network gets at least."""
    batch_size: int = 8
    lr: float = 1e-3
    channels: tuple[int, ...] = (8, 16, 32, 64)
    res_units: int = 1
    crowd_source: str = "assisted"
    """``"assisted"`` or ``"simulated"`` (:data:`CROWD_SOURCES`)."""
    crowd_models: tuple[str, ...] | None = None
    """Volunteer kinds (assisted: :data:`medcrowd.assisted.VOLUNTEER_MODELS`) or annotator
    models (simulated: :data:`fusion.crowd_models.ANNOTATOR_MODELS`); None → the source's
    default pool."""
    raters_per_task: int = 3
    assist_backend: str = "auto"
    """LiteMedSAM's backend for the assisted crowd and arm (e): ``auto`` (ONNX Runtime on a
    CPU), ``onnx`` or ``torch`` (no ONNX export at start: ``--quick``)."""
    crowd_method: str = "crowd-staple"
    synth_steps: int = 1500
    synth_count: int = 0
    """Synthetic pairs added in (c); 0 → as many as (b) has."""
    synth_ngf: int = 32
    invert_masks: bool = False
    test_invert_masks: bool | None = None
    """Invert the ``test`` folder's masks; None → as ``invert_masks``."""
    mask_threshold: int | None = None
    """Masks ``>= mask_threshold`` are foreground (``data`` and ``test``); None → any > 0."""
    arms: tuple[str, ...] = DEFAULT_ARMS
    device: str = "auto"
    threads: int = 1
    """CPU only: PyTorch intra-op threads of this process (and ONNX Runtime's for the assist),
    set by :func:`ml_backend.device.configure_threads` before any network is built; 0 → leave
    torch's default (all cores). On CUDA nothing is changed. 1 is the default because on
    shared cores 2 threads made a U-Net step 8 × slower (docs/evaluation.md)."""
    jobs: int = 1
    """Processes that label the pool and train the networks side by side, each with
    ``threads`` threads (:class:`medcrowd.jobs.Jobs`); the numbers do not depend on it."""

    @property
    def crowd_pool(self) -> tuple[str, ...]:
        """``crowd_models``, or the default pool of ``crowd_source``."""
        if self.crowd_models is not None:
            return tuple(self.crowd_models)
        if self.crowd_source == "assisted":
            from medcrowd.assisted import DEFAULT_ASSISTED_CROWD

            return DEFAULT_ASSISTED_CROWD
        return DEFAULT_CROWD

    @property
    def expert_counts(self) -> tuple[int, ...]:
        """``expert_count`` as a tuple (one or more counts)."""
        count = self.expert_count
        return (count,) if isinstance(count, int) else tuple(count)

    def check(self) -> None:
        counts = self.expert_counts
        if not counts:
            raise ValueError("--expert-count needs at least one count")
        for count in counts:
            if count < 1:
                raise ValueError(f"--expert-count must be >= 1, got {count}")
        if len(set(counts)) != len(counts):
            raise ValueError(f"--expert-count lists a count twice: {counts}")
        if self.steps_rule not in STEPS_RULES:
            raise ValueError(
                f"unknown --steps-rule {self.steps_rule!r}; choose from {', '.join(STEPS_RULES)}"
            )
        if not self.epochs_min > 0:
            raise ValueError(f"--epochs-min must be > 0, got {self.epochs_min}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = torch's default), got {self.threads}")
        if not 1 <= self.jobs <= MAX_JOBS:
            raise ValueError(f"--jobs must be in 1..{MAX_JOBS}, got {self.jobs}")
        if self.mask_threshold is not None and not 1 <= self.mask_threshold <= 255:
            raise ValueError(f"--mask-threshold must be in 1..255, got {self.mask_threshold}")
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
        if self.crowd_source not in CROWD_SOURCES:
            raise ValueError(
                f"unknown --crowd-source {self.crowd_source!r}; "
                f"choose from {', '.join(CROWD_SOURCES)}"
            )
        known: Mapping[str, object]
        if self.crowd_source == "assisted":
            from medcrowd.assisted import VOLUNTEER_MODELS

            known = VOLUNTEER_MODELS
        else:
            from fusion.crowd_models import ANNOTATOR_MODELS

            known = ANNOTATOR_MODELS
        pool = self.crowd_pool
        bad = [m for m in pool if m not in known]
        if bad:
            raise ValueError(
                f"unknown crowd models {bad} for --crowd-source {self.crowd_source}; "
                f"known: {', '.join(sorted(known))}"
            )
        if not 1 <= self.raters_per_task <= len(pool):
            raise ValueError(f"--raters-per-task must be in 1..{len(pool)} (the crowd size)")


class TestFolderError(ValueError):
    """The ``test`` folder cannot be used: missing, no pairs, unreadable, or it shares images
    with the data (the CLI exits 2)."""


def train_steps(pairs: int, options: EvaluateOptions) -> int:
    """Optimiser steps of one network trained on ``pairs`` pairs (:data:`STEPS_RULES`).

    >>> train_steps(1000, EvaluateOptions(steps=600, epochs_min=20, batch_size=8))
    2500
    >>> train_steps(1000, EvaluateOptions(steps=600, steps_rule="fixed"))
    600
    """
    if options.steps_rule == "fixed":
        return options.steps
    return max(options.steps, math.ceil(options.epochs_min * pairs / options.batch_size))


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
    raw: list[tuple[np.ndarray, np.ndarray]] | None = None
    """The pairs at their own resolution (gray image, {0,1} mask): what volunteers see."""

    def take(self, idx: Sequence[int]) -> _Set:
        ix = list(idx)
        raw = [self.raw[i] for i in ix] if self.raw is not None else None
        return _Set([self.names[i] for i in ix], self.images[ix], self.masks[ix], raw)

    def __len__(self) -> int:
        return len(self.names)

    def plain(self) -> _Set:
        """Without the native-resolution pairs (what a job is sent)."""
        return _Set(self.names, self.images, self.masks)


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


def _load(
    root: Path, size: int, invert: bool, threshold: int | None = None
) -> tuple[_Set, list[str]]:
    """Read a labelled folder; returns the set at ``size`` and a pixel hash per image."""
    from medcrowd.pairs import binary_arrays, load_pairs

    pairs = load_pairs(root, invert_masks=invert, threshold=threshold)
    names, images, masks = binary_arrays(pairs)
    if not names:
        raise ValueError(f"no image–mask pairs found in {root}")
    hashes = [_pixel_hash(im) for im in images]
    imgs, msks = _prepare(images, masks, size)
    return _Set(list(names), imgs, msks, list(zip(images, masks, strict=True))), hashes


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


def _check_unseen(
    hashes: Sequence[str], test_hashes: Sequence[str], what: str, hint: str,
    error: type[ValueError] = ValueError,
) -> None:  # fmt: skip
    """The one leak check: refuse when any of ``hashes`` (pixel hashes, :func:`_pixel_hash`)
    is a test image's."""
    leaked = set(hashes) & set(test_hashes)
    if leaked:
        raise error(f"{len(leaked)} {what} are test images: the test {hint}")


def _configure_threads(threads: int, device: str) -> int | None:
    """Fix this process's CPU threads for the run (``EvaluateOptions.threads``); returns the
    PyTorch intra-op threads now in force, or None when nothing was changed (``threads`` 0,
    or a CUDA device)."""
    if threads == 0 or device != "cpu":
        return None
    import torch

    from ml_backend.device import configure_threads

    configure_threads(threads)  # torch intra-op = threads, inter-op 1, ONNX Runtime sessions too
    return int(torch.get_num_threads())


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


# -- the assisted crowd --------------------------------------------------------------------
MAX_JOBS = 64
"""Most worker processes ``--jobs`` takes."""

ASSIST_UNITS = 10
"""Progress-bar steps one pool image's assisted labelling counts for (all seeds)."""


def _assisted_labels(
    pool: _Set, options: EvaluateOptions, device: str, steps: StepCounter, jobs: Jobs
) -> dict[int, Any]:
    """Every seed's assisted-crowd and assist-alone labels of ``pool``
    (:func:`medcrowd.assisted.label_pool` at the images' own resolution, one LiteMedSAM
    encoder pass per image), then resized to ``options.size`` as the pool's masks are.

    With several ``jobs`` the pool is cut into one contiguous part per job, each labelled
    by its own LiteMedSAM in a worker; the labels are those of one call (per-index seeds)."""
    from medcrowd.assisted import DEFAULT_ASSISTED_CROWD
    from segmenter.data import resize_pair

    if pool.raw is None:  # pragma: no cover - every pool comes from _load
        raise ValueError("the pool has no native-resolution pairs")
    crowd: Sequence[str] = DEFAULT_ASSISTED_CROWD
    if options.crowd_source == "assisted" and options.crowd_pool is not None:
        crowd = options.crowd_pool
    images = [im for im, _ in pool.raw]
    masks = [m for _, m in pool.raw]
    raters = min(options.raters_per_task, len(crowd))
    cuts = np.linspace(0, len(images), min(jobs.jobs, len(images)) + 1).round().astype(int)
    futures = []
    for a, b in itertools.pairwise(cuts.tolist()):
        part = (images[a:b], masks[a:b], a, tuple(crowd), raters, tuple(options.seeds))
        futures.append(
            jobs.submit(_label_part, *part, device, options.assist_backend, progress=steps.part())
        )
    labels: dict[int, Any] = futures[0].result()
    for future in futures[1:]:
        for seed, more in future.result().items():
            labels[seed].extend(more)
    size = options.size
    for lab in labels.values():
        lab.votes = [
            np.stack([resize_pair(im, v.astype(np.uint8), size)[1] for v in votes]).astype(bool)
            for im, votes in zip(images, lab.votes, strict=True)
        ]
        lab.assist = [
            resize_pair(im, a.astype(np.uint8), size)[1].astype(bool)
            for im, a in zip(images, lab.assist, strict=True)
        ]
    return labels


def _label_part(
    images: list[np.ndarray],
    masks: list[np.ndarray],
    first_index: int,
    crowd: tuple[str, ...],
    raters: int,
    seeds: tuple[int, ...],
    device: str,
    backend: str,
    progress: Progress,
) -> dict[int, Any]:
    """Label pool images ``first_index`` … with this process's LiteMedSAM (a job)."""
    from medcrowd.assisted import label_pool
    from ml_backend.predictors import get_predictor

    predictor = get_predictor("litemedsam", device=device, backend=backend)
    return label_pool(
        images, masks, predictor, crowd=crowd, raters_per_task=raters, seeds=seeds,
        progress=lambda done, _total: progress(done * ASSIST_UNITS, 0), first_index=first_index,
    )  # fmt: skip


def _fuse_assisted(
    pool: _Set, labels: Any, expert_idx: Sequence[int], rest_idx: Sequence[int]
) -> tuple[_Set, dict[str, Any]]:
    """The assisted crowd's labels of the whole pool fused by CrowdStaple, the expert subset
    as gold tasks; returns the fused labels of ``rest_idx`` and a quality report (Dice vs
    the pool's expert masks on ``rest_idx``, at the evaluation size)."""
    from fusion import CrowdStaple
    from segmenter.metrics import dice_scores

    order = list(expert_idx) + list(rest_idx)  # gold first
    tasks = [labels.votes[i] for i in order]
    annotators = [labels.annotators[i] for i in order]
    gold = {t: pool.masks[order[t]].astype(bool) for t in range(len(expert_idx))}
    result = CrowdStaple().fit_predict(tasks, annotators, gold=gold)
    fused = np.stack(result.masks).astype(np.uint8)[len(expert_idx) :]
    rest = pool.take(rest_idx)
    majority = np.stack([labels.votes[i].mean(0) > 0.5 for i in rest_idx]).astype(np.uint8)
    single = [
        float(
            dice_scores(
                labels.votes[i].astype(np.uint8),
                np.repeat(pool.masks[i][None], len(labels.votes[i]), 0),
            ).mean()
        )
        for i in rest_idx
    ]
    report: dict[str, Any] = {
        "raters_per_task": len(labels.votes[0]),
        "reliability": {str(k): round(v, 4) for k, v in sorted(result.reliability.items())},
        "fallback": result.fallback,
        "fused_dice": float(dice_scores(fused, rest.masks).mean()),
        "majority_dice": float(dice_scores(majority, rest.masks).mean()),
        "single_label_dice": float(np.mean(single)),
        "volunteer_seconds_per_image": float(np.mean([sum(labels.seconds[i]) for i in order])),
    }
    part = _Set([f"crowd-{name}" for name in rest.names], rest.images, fused)
    return part, report


def _assist_part(pool: _Set, labels: Any, rest_idx: Sequence[int]) -> _Set:
    """The assist-alone labels of ``rest_idx`` (arm (e))."""
    rest = pool.take(rest_idx)
    masks = np.stack([labels.assist[i] for i in rest_idx]).astype(np.uint8)
    return _Set([f"assist-{name}" for name in rest.names], rest.images, masks)


def _labels_summary(pool: _Set, labels: Any) -> dict[str, Any]:
    """Time and quality of one seed's assisted labels of the whole pool (summary.json)."""
    from segmenter.metrics import dice_scores

    per_image = [sum(s) for s in labels.seconds]
    assist = np.stack(labels.assist).astype(np.uint8)
    return {
        "images": len(per_image),
        "volunteer_seconds_per_image": float(np.mean(per_image)),
        "volunteer_seconds_per_label": float(np.mean([x for s in labels.seconds for x in s])),
        "volunteer_hours": float(sum(per_image) / 3600.0),
        "label_dice_native_mean": float(np.mean([d for ds in labels.raw_dice for d in ds])),
        "assist_seconds_per_image": float(np.mean(labels.assist_seconds)),
        "assist_dice": float(dice_scores(assist, pool.masks).mean()),
    }


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
        test: a separate labelled test folder; then all of ``data`` is the pool.
        progress: ``progress(done, total)`` in optimiser steps over the whole run.
        on_log: stage events (module doc).

    Raises:
        TestFolderError: ``test`` is missing, holds no pairs, or shares images with ``data``.
        ValueError / FileNotFoundError: bad options or device, empty or overlapping inputs.
    """
    from ml_backend.device import resolve_device

    options.check()
    device = resolve_device(options.device)
    threads = _configure_threads(options.threads, device)
    if test is not None and not Path(test).is_dir():
        raise TestFolderError(f"--test {test} is not a folder")
    for path in (data, crowd, synthetic):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{path} is not a folder")
    log = on_log or (lambda _event: None)
    if threads is not None:
        log({"stage": f"{threads} PyTorch intra-op thread(s) on {device}"})

    full, hashes = _load(data, options.size, options.invert_masks, options.mask_threshold)
    if test is not None:
        invert = options.invert_masks
        if options.test_invert_masks is not None:
            invert = options.test_invert_masks
        try:
            test_set, test_hashes = _load(test, options.size, invert, options.mask_threshold)
        except ValueError as exc:
            raise TestFolderError(f"--test {test}: {exc}") from None
        pool = full
        _check_unseen(
            hashes, test_hashes, f"image(s) of {data}",
            f"folder {test} must hold images not in the data (same pixels found)",
            TestFolderError,
        )  # fmt: skip
    else:
        pool_idx, test_idx = _split(len(full), options.test_fraction, options.split_seed)
        pool, test_set = full.take(pool_idx), full.take(test_idx)
        test_hashes = [hashes[i] for i in test_idx]
    counts = options.expert_counts
    if max(counts) >= len(pool):
        raise ValueError(
            f"--expert-count {max(counts)} leaves no pool image for the crowd "
            f"({len(pool)} pool images)"
        )
    crowd_set = None
    if crowd is not None:
        crowd_set, crowd_hashes = _load_crowd(crowd, options.crowd_method, options.size)
        _check_unseen(
            crowd_hashes, test_hashes, f"crowd image(s) in {crowd}",
            "split must stay unseen (use --test with a separate folder, or another split seed)",
        )  # fmt: skip
    synth_given = None
    if synthetic is not None:
        synth_given, synth_hashes = _load_crowd(synthetic, options.crowd_method, options.size)
        _check_unseen(
            synth_hashes, test_hashes, f"synthetic image(s) in {synthetic}",
            "images must stay unseen (synthetic pairs may not copy a test image)",
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)

    multi = len(counts) > 1
    plan = _plan(options, multi)
    sizes = _arm_sizes(
        counts, len(pool), len(crowd_set) if crowd_set is not None else None,
        len(synth_given) if synth_given is not None else None, options,
    )  # fmt: skip
    train_pix2pix = "synthetic" in options.arms and synth_given is None
    per_seed = sum(train_steps(sizes[key], options) for key, _, _ in plan)
    per_seed += len(counts) * options.synth_steps if train_pix2pix else 0
    from segmenter.training import StepCounter

    need_crowd = any(a in options.arms for a in ("crowd", "synthetic"))
    assisted = crowd_set is None and need_crowd and options.crowd_source == "assisted"
    need_assist = assisted or "assist" in options.arms
    # the assisted labelling counts ASSIST_UNITS steps per pool image in the progress bar
    label_units = ASSIST_UNITS * len(pool) if need_assist else 0
    steps = StepCounter(len(options.seeds) * per_seed + label_units, progress)
    crowd_reports: dict[str, Any] = {}
    labels: dict[int, Any] = {}
    hours: dict[tuple[int, str], float | None] = {}
    with Jobs(options.jobs, threads=options.threads, device=device) as jobs:
        schedule = _Schedule(jobs, out, options, device, steps, test_set.plain(), plan, hours, log)
        if need_assist:
            log({"stage": f"labelling the pool through the assist ({len(pool)} images)"})
            labels = _assisted_labels(pool, options, device, steps, jobs)
        for seed in options.seeds:
            rng = np.random.default_rng(seed)
            # one draw of the largest count: the subsets of the smaller counts are its prefixes
            drawn = rng.choice(len(pool), max(counts), replace=False).tolist()
            sets: dict[str, _Set] = {"ceiling": pool}
            hours[(seed, "ceiling")] = 0.0
            waiting: set[str] = set()
            for n in counts:
                tag = f" (expert {n})" if multi else ""
                expert_idx = sorted(drawn[:n])
                rest_idx = [i for i in range(len(pool)) if i not in expert_idx]
                expert = pool.take(expert_idx)
                sets[_key("expert", n, multi)] = expert
                hours[(seed, _key("expert", n, multi))] = 0.0
                if "assist" in options.arms:
                    sets[_key("assist", n, multi)] = _concat(
                        expert, _assist_part(pool, labels[seed], rest_idx)
                    )
                    hours[(seed, _key("assist", n, multi))] = (
                        sum(labels[seed].assist_seconds[i] for i in rest_idx) / 3600.0
                    )
                if not need_crowd:
                    continue
                if crowd_set is not None:
                    crowd_part = crowd_set
                elif assisted:
                    log({"stage": f"seed {seed}: fusing the assisted crowd{tag}"})
                    crowd_part, report = _fuse_assisted(pool, labels[seed], expert_idx, rest_idx)
                    crowd_reports[f"{seed}-{n}" if multi else str(seed)] = report
                else:
                    log({"stage": f"seed {seed}: simulating and fusing the crowd{tag}"})
                    order = expert_idx + rest_idx  # gold first
                    fused, report = simulate_fused(
                        pool.masks[order],
                        gold=range(len(expert_idx)),
                        models=options.crowd_pool,
                        raters_per_task=options.raters_per_task,
                        seed=seed,
                    )
                    crowd_reports[f"{seed}-{n}" if multi else str(seed)] = report
                    rest = pool.take(rest_idx)
                    crowd_part = _Set(
                        [f"crowd-{name}" for name in rest.names],
                        rest.images,
                        fused[len(expert_idx) :],
                    )
                base = _concat(expert, crowd_part)
                sets[_key("crowd", n, multi)] = base
                hours[(seed, _key("crowd", n, multi))] = (
                    sum(sum(s) for s in labels[seed].seconds) / 3600.0 if assisted else None
                )
                if "synthetic" in options.arms:
                    key = _key("synthetic", n, multi)
                    hours[(seed, key)] = hours[(seed, _key("crowd", n, multi))]
                    if synth_given is not None:
                        sets[key] = _concat(base, synth_given)
                        continue
                    log({"stage": f"seed {seed}: training pix2pix{tag}"})
                    synthetic_set = schedule.pix2pix(seed, key, base)
                    if synthetic_set is not None:  # inline: (c) trains in its place in the plan
                        sets[key] = synthetic_set
                    else:  # in a worker: (c) is queued when its pix2pix is done
                        waiting.add(key)
            for key, _arm, _count in plan:
                if key not in waiting:
                    schedule.network(seed, key, sets[key])
        schedule.finish()
    rows = schedule.rows

    summary = _summarise(rows, plan, multi)
    summary.update(
        {
            "data": str(Path(data).resolve()),
            "test": str(Path(test).resolve()) if test else None,
            "crowd": str(Path(crowd).resolve()) if crowd else options.crowd_source,
            "synthetic": str(Path(synthetic).resolve()) if synthetic else "pix2pix on (b)",
            "options": asdict(options),
            "steps_rule": {
                "rule": options.steps_rule,
                "formula": STEPS_RULES[options.steps_rule],
                "steps": {key: train_steps(sizes[key], options) for key, _, _ in plan},
            },
            "pool": len(pool),
            "torch_threads": threads,
            "test_images": test_set.names,
            "crowd_quality": crowd_reports,
            "assisted_labels": {str(seed): _labels_summary(pool, labels[seed]) for seed in labels},
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = _table(summary, options, plan, multi)
    (out / "table.md").write_text(table)
    _chart(rows, summary, options, plan, multi, out / "chart.png")
    if multi:
        _curve(summary, options, plan, out / "expert_curve.png")
    return EvaluateReport(out=out, rows=rows, summary=summary, table=table)


class _Schedule:
    """The run's networks and pix2pix models, in flight on ``jobs``.

    :meth:`network` writes an arm's training pairs and submits its network; :meth:`pix2pix`
    submits a pix2pix on (b) and trains arm (c) on (b) + its pairs when it finishes (at once
    when the jobs run inline). Scored rows are kept in (seed, plan) order, whatever order the
    workers finish in, and ``results.csv`` is rewritten as each arrives, so a stopped run
    keeps every row it finished. Each row gets the ``volunteer_h`` of ``hours`` (filled by the
    caller before the arm is submitted).
    """

    def __init__(
        self,
        jobs: Jobs,
        out: Path,
        options: EvaluateOptions,
        device: str,
        steps: StepCounter,
        test: _Set,
        plan: list[tuple[str, str, int | None]],
        hours: Mapping[tuple[int, str], float | None],
        log: Log,
    ) -> None:
        self.rows: list[dict[str, Any]] = []
        self._jobs, self._out, self._options, self._device = jobs, out, options, device
        self._steps, self._test, self._hours, self._log = steps, test, hours, log
        multi = len(options.expert_counts) > 1
        self._titles = {key: _title(arm, count, multi) for key, arm, count in plan}
        self._order = {
            (seed, key): (i, j)
            for i, seed in enumerate(options.seeds)
            for j, (key, _, _) in enumerate(plan)
        }
        self._done: dict[tuple[int, str], dict[str, Any]] = {}
        # future → (seed, row label, (b) for a pix2pix whose (c) is still to train, else None)
        self._pending: dict[Future[Any], tuple[int, str, _Set | None]] = {}

    def network(self, seed: int, key: str, data: _Set) -> None:
        """Train and score the network of row ``key`` on ``data``."""
        _write_pairs(self._out / f"seed-{seed}" / key, data)
        self._log({"stage": f"seed {seed}: training on {self._titles[key]}"})
        future = self._jobs.submit(
            _train_and_score, key, seed, data.plain(), self._test, self._options, self._device,
            progress=self._steps.part(),
        )  # fmt: skip
        self._pending[future] = (seed, key, None)
        self._collect(wait_for_one=False)

    def pix2pix(self, seed: int, key: str, base: _Set) -> _Set | None:
        """pix2pix on (b) ``base``: the (c) set when it ran inline, else ``None`` (then (c),
        row ``key``, is trained when the worker finishes)."""
        future = self._jobs.submit(
            _synthesise, base, self._options, seed, self._device, progress=self._steps.part()
        )
        if future.done():
            return _concat(base, future.result())
        self._pending[future] = (seed, key, base)
        return None

    def finish(self) -> None:
        """Wait for everything submitted (and the (c) networks it starts)."""
        while self._pending:
            self._collect(wait_for_one=True)

    def _collect(self, wait_for_one: bool) -> None:
        if wait_for_one:
            wait(list(self._pending), return_when=FIRST_COMPLETED)
        for future in [f for f in self._pending if f.done()]:
            seed, key, base = self._pending.pop(future)
            if base is not None:
                self.network(seed, key, _concat(base, future.result()))
                continue
            row = future.result()
            volunteer_h = self._hours.get((seed, key))
            row["volunteer_h"] = round(volunteer_h, 4) if volunteer_h is not None else None
            self._log({"stage": f"seed {seed}: training on {self._titles[key]}", "row": row})
            self._done[(seed, key)] = row
            self.rows[:] = [self._done[k] for k in sorted(self._done, key=self._order.__getitem__)]
            _write_rows(self._out / "results.csv", self.rows)


def _key(arm: str, n: int | None, multi: bool) -> str:
    """The row label of ``arm`` with ``n`` expert images: ``crowd`` or ``crowd-5``."""
    return arm if not multi or arm == "ceiling" or n is None else f"{arm}-{n}"


def _title(arm: str, n: int | None, multi: bool) -> str:
    title = ARM_TITLES[arm]
    return f"{title} (n={n})" if multi and arm != "ceiling" and n is not None else title


def _plan(options: EvaluateOptions, multi: bool) -> list[tuple[str, str, int | None]]:
    """``(label, arm, expert count)`` of every network per seed, in training order: one
    count → ``options.arms`` order; several → (a)–(c) per count, then (d)."""
    counts = options.expert_counts
    if not multi:
        return [(arm, arm, counts[0]) for arm in options.arms]
    plan: list[tuple[str, str, int | None]] = [
        (_key(arm, n, multi), arm, n) for n in counts for arm in options.arms if arm != "ceiling"
    ]
    if "ceiling" in options.arms:
        plan.append(("ceiling", "ceiling", None))
    return plan


def _arm_sizes(
    counts: Sequence[int],
    pool: int,
    crowd: int | None,
    synthetic: int | None,
    options: EvaluateOptions,
) -> dict[str, int]:
    """Training pairs per row label, known before any training (for the step rule)."""
    multi = len(counts) > 1
    sizes = {"ceiling": pool}
    for n in counts:
        base = n + (crowd if crowd is not None else pool - n)
        extra = synthetic if synthetic is not None else (options.synth_count or base)
        sizes[_key("expert", n, multi)] = n
        sizes[_key("crowd", n, multi)] = base
        sizes[_key("synthetic", n, multi)] = base + extra
        sizes[_key("assist", n, multi)] = pool
    return sizes


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

    steps = train_steps(len(train), options)
    config = SegmenterConfig(
        size=options.size,
        steps=steps,
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
        "steps": steps,
        "dice": float(np.mean(dice)),
        "hd95": float(np.nanmean(hd95)) if np.isfinite(hd95).any() else float("nan"),
        "accuracy": float(np.mean(accuracy)),
    }


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _summarise(
    rows: list[dict[str, Any]], plan: list[tuple[str, str, int | None]], multi: bool
) -> dict[str, Any]:
    """Mean ± std per row label; ``dice_vs_expert`` is relative to (a) with the same expert
    count ((d): the first count's (a))."""
    arms: dict[str, Any] = {}
    for key, _arm, _n in plan:
        mine = [r for r in rows if r["arm"] == key]
        if not mine:
            continue
        entry: dict[str, Any] = {"train_pairs": [r["train_pairs"] for r in mine]}
        hours = [r.get("volunteer_h") for r in mine]
        known_hours = [float(h) for h in hours if h is not None]
        entry["volunteer_h"] = (
            float(np.mean(known_hours)) if hours and len(known_hours) == len(hours) else None
        )
        for stat in ("dice", "hd95", "accuracy"):
            values = np.array([r[stat] for r in mine], dtype=float)
            entry[stat] = {
                "mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                "std": float(np.nanstd(values)) if np.isfinite(values).any() else None,
            }
        arms[key] = entry
    first = next((n for _, _, n in plan if n is not None), None)
    for key, _arm, n in plan:
        if key not in arms:
            continue
        entry = arms[key]
        expert = _key("expert", n if n is not None else first, multi)
        base = arms.get(expert, {}).get("dice", {}).get("mean")
        mean = entry["dice"]["mean"]
        entry["dice_vs_expert"] = (mean - base) / base if base and mean is not None else None
    return {"arms": arms}


def _fmt(stat: dict[str, float | None], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else f"{min(values)}–{max(values)}"


def _table(
    summary: dict[str, Any],
    options: EvaluateOptions,
    plan: list[tuple[str, str, int | None]],
    multi: bool,
) -> str:
    if options.steps_rule == "fixed":
        steps = f"{options.steps} steps per network."
    else:
        steps = (
            f"steps per network: max({options.steps}, ⌈{options.epochs_min:g} × pairs / "
            f"{options.batch_size}⌉)."
        )
    lines = [
        f"Test: {len(summary['test_images'])} held-out expert masks; "
        f"seeds {', '.join(map(str, options.seeds))}; {options.size} px; {steps}",
        "",
        "| training set | pairs | steps | Dice | HD95 (px) | accuracy | Dice vs (a) "
        "| volunteer-h |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if multi:
        lines[0] += " n = expert images in (a); Dice vs (a) with the same n ((d): the first n)."
    titles = {key: _title(arm, n, multi) for key, arm, n in plan}
    arm_of = {key: arm for key, arm, _ in plan}
    for key, entry in summary["arms"].items():
        rel = entry["dice_vs_expert"]
        rel_s = "—" if arm_of[key] == "expert" or rel is None else f"{rel * 100:+.1f} %"
        lines.append(
            f"| {titles[key]} | {_span(entry['train_pairs'])} | "
            f"{summary['steps_rule']['steps'][key]} | {_fmt(entry['dice'])} | "
            f"{_fmt(entry['hd95'], 1)} | {_fmt(entry['accuracy'])} | {rel_s} | "
            f"{_hours(entry.get('volunteer_h'))} |"
        )
    return "\n".join(lines) + "\n"


def _chart(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    options: EvaluateOptions,
    plan: list[tuple[str, str, int | None]],
    multi: bool,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    means = [summary["arms"][a]["dice"]["mean"] or 0.0 for a in arms]
    stds = [summary["arms"][a]["dice"]["std"] or 0.0 for a in arms]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(arms)), 4))
    palette = ["#8d99ae", "#2a9d8f", "#e9c46a", "#264653", "#e76f51"]
    arm_of = {key: arm for key, arm, _ in plan}
    titles = {key: _title(arm, n, multi) for key, arm, n in plan}
    # one count: colours by position as before; several: one colour per arm
    colours = [palette[ARMS.index(arm_of[a])] for a in arms] if multi else palette[: len(arms)]
    ax.bar(range(len(arms)), means, yerr=stds, capsize=6, color=colours)
    for i, arm in enumerate(arms):
        dots = [r["dice"] for r in rows if r["arm"] == arm]
        ax.scatter([i] * len(dots), dots, color="black", s=12, zorder=3)
        ax.text(i, means[i] + stds[i] + 0.01, f"{means[i]:.3f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(arms)), [titles[a] for a in arms], fontsize=8)
    ax.set_ylabel("test Dice (held-out expert masks)")
    ax.set_ylim(0, min(1.0, max(means) + max(stds) + 0.08) if means else 1.0)
    ax.set_title(f"Downstream segmenter, {len(options.seeds)} seed(s): mean ± std")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curve(
    summary: dict[str, Any],
    options: EvaluateOptions,
    plan: list[tuple[str, str, int | None]],
    path: Path,
) -> None:
    """Several expert counts: test Dice vs expert images for (a) expert only and (b) expert +
    crowd pool (mean ± std over seeds; (e) and (d) when run), the volunteer-hours behind (b)
    on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    counts = sorted(options.expert_counts)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {
        "expert": ("expert only (a)", "#8d99ae", "o"),
        "crowd": ("expert + crowd-fused pool (b)", "#2a9d8f", "s"),
        "assist": ("expert + assist-alone pool (e)", "#e76f51", "^"),
        "synthetic": ("(b) + synthetic (c)", "#e9c46a", "D"),
    }
    for arm, (label, colour, marker) in styles.items():
        xs = [n for n in counts if _key(arm, n, True) in arms]
        if not xs:
            continue
        mean = [arms[_key(arm, n, True)]["dice"]["mean"] for n in xs]
        std = [arms[_key(arm, n, True)]["dice"]["std"] for n in xs]
        ax.errorbar(xs, mean, yerr=std, label=label, color=colour, marker=marker, capsize=4)
        for n, y in zip(xs, mean, strict=True):  # a point with fewer seeds than asked says so
            k = len(arms[_key(arm, n, True)]["train_pairs"])
            if k < len(options.seeds):
                ax.annotate(f"{k} seed{'s' if k > 1 else ''}", (n, y), textcoords="offset points",
                            xytext=(6, -10), fontsize=7, color=colour)  # fmt: skip
    if "ceiling" in arms:
        d = arms["ceiling"]["dice"]
        pool = arms["ceiling"]["train_pairs"][0]
        ax.axhline(d["mean"], color="#264653", ls="--", lw=1,
                   label=f"all {pool} pool images expert (d)")  # fmt: skip
        ax.axhspan(d["mean"] - d["std"], d["mean"] + d["std"], color="#264653", alpha=0.08)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("expert-labelled images")
    ax.set_ylabel("test Dice (held-out expert masks)")
    hours = [(n, arms[_key("crowd", n, True)].get("volunteer_h")) for n in counts
             if _key("crowd", n, True) in arms]  # fmt: skip
    hours = [(n, h) for n, h in hours if h is not None]
    if hours:
        twin = ax.twinx()
        twin.bar([n for n, _ in hours], [h for _, h in hours],
                 width=[0.18 * n for n, _ in hours], color="#2a9d8f", alpha=0.18,
                 label="volunteer-hours behind (b)")  # fmt: skip
        twin.set_ylabel("volunteer-hours behind (b)")
        twin.set_ylim(0, max(h for _, h in hours) * 2.2)
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        handles, names = ax.get_legend_handles_labels()
        h2, n2 = twin.get_legend_handles_labels()
        ax.legend(handles + h2, names + n2, fontsize=8, loc="lower right")
    else:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        f"{len(options.seeds)} seed(s), {len(summary['test_images'])} test images, "
        f"{options.size} px: mean ± std",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
