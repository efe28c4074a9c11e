"""``medcrowd fuse``: a pulled dataset → fused masks, reliability table, flagged tasks.

Gold annotations (Label Studio's ground-truth flag) are not votes: they score the volunteers
(weighted vote's weights, CrowdStaple's clamped truth) and are kept apart. Output folder
``DATASET/fused-<method>/``::

    masks/task-<id>.png, masks/task-<id>.nii.gz   fused mask (0/255 PNG; NIfTI 0/1)
    volumes/<source>_<axis>.nii.gz   fused slices put back into imported volumes, in the
                      source geometry (tasks that carry medcrowd import metadata)
    tasks.csv         task, annotators, agreement (mean pairwise Dice), flagged, reason
    report.png        reliability vs gold, agreement histogram, the worst tasks overlaid
    reliability.csv   annotator, email, tasks, reliability, dice_vs_gold, dice_vs_consensus
    summary.json      method, counts, the fallback reason if a guard fired

With ``FuseOptions.scheduler`` (``medcrowd fuse --scheduler local|auto|tcp://host:port``)
the fusion itself runs on a Dask cluster: crowd-wide STAPLE through
:class:`fusion.distributed.DaskCrowdStaple` (bit-identical to the in-process result), the
per-task methods through :func:`fusion.distributed.map_tasks`. Masks are read and results
written here; a remote cluster's workers need medcrowd installed (the same version).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fusion import CrowdStaple, MajorityVote, Staple, WeightedVote, pairwise_dice, rater_scores
from medcrowd.dataset import AnnotationRecord, Dataset

__all__ = ["METHODS", "FuseOptions", "FuseReport", "fuse_dataset"]

METHODS = ("crowd-staple", "staple", "weighted", "majority")


@dataclass
class FuseOptions:
    """How to fuse. ``scheduler``: None (in this process), ``"local"`` (a Dask LocalCluster
    for this run), ``"auto"`` (Dask's configured scheduler, else local) or ``tcp://host:port``."""

    method: str = "crowd-staple"
    min_annotators: int = 2
    min_agreement: float = 0.6
    scheduler: str | None = None


@dataclass
class FuseReport:
    out: Path
    tasks: int = 0
    flagged: int = 0
    annotators: int = 0
    fallback: str | None = None
    volumes: int = 0
    fused: dict[int, tuple[npt.NDArray[np.bool_], float]] = field(default_factory=dict)


@dataclass
class _Task:
    task: int
    masks: npt.NDArray[np.bool_]  # (R, H, W)
    annotators: list[int]
    gold: npt.NDArray[np.bool_] | None
    image: str | None = None


def _collect(dataset: Dataset) -> tuple[list[_Task], dict[int, str]]:
    tasks, emails = [], {}
    for task_id, records in dataset.by_task():
        crowd: list[AnnotationRecord] = []
        gold = None
        for rec in records:
            if rec.annotator is not None and rec.annotator_email:
                emails[rec.annotator] = rec.annotator_email
            if rec.mask is None or rec.was_cancelled:
                continue
            if rec.gold:
                gold = dataset.load_mask(rec.mask)
            else:
                crowd.append(rec)
        # one vote per annotator: their newest annotation of the task
        per_annotator: dict[int, AnnotationRecord] = {}
        for rec in crowd:
            key = rec.annotator if rec.annotator is not None else -rec.annotation
            if key not in per_annotator or rec.updated_at > per_annotator[key].updated_at:
                per_annotator[key] = rec
        if not per_annotator:
            continue
        ids = sorted(per_annotator)
        masks = np.stack([dataset.load_mask(per_annotator[i].mask or "") for i in ids])
        image = next((r.image for r in records if r.image), None)
        tasks.append(_Task(task_id, masks, ids, gold, image))
    return tasks, emails


def _gold_weights(tasks: list[_Task]) -> dict[int, float]:
    """Mean Dice of each annotator against gold, over the gold tasks they labelled."""
    scores: dict[int, list[float]] = {}
    for t in tasks:
        if t.gold is None:
            continue
        dice = rater_scores(t.masks, t.gold).dice
        for annotator, d in zip(t.annotators, dice, strict=True):
            scores.setdefault(annotator, []).append(float(d))
    return {a: float(np.mean(v)) for a, v in scores.items()}


def fuse_dataset(
    root: Path,
    options: FuseOptions,
    progress: Callable[[list[Any], int], Any] | None = None,
) -> FuseReport:
    """Fuse every task of the dataset at ``root`` with ``options.method``."""
    if options.method not in METHODS:
        raise ValueError(f"unknown method {options.method!r}; choose from {', '.join(METHODS)}")
    from fusion.distributed import parse_scheduler

    scheduler = parse_scheduler(options.scheduler)
    dataset = Dataset(root)
    dataset.meta()
    tasks, emails = _collect(dataset)
    if not tasks:
        raise ValueError(f"{root} holds no brush annotations to fuse; run medcrowd pull first")
    out = root / f"fused-{options.method}"
    (out / "masks").mkdir(parents=True, exist_ok=True)
    report = FuseReport(out=out, tasks=len(tasks))
    fused: list[npt.NDArray[np.bool_]]
    reliability: dict[int, float] = {}
    if options.method == "crowd-staple":
        gold = {i: t.gold for i, t in enumerate(tasks) if t.gold is not None}
        crowd = ([t.masks for t in tasks], [t.annotators for t in tasks])
        if scheduler is None:
            result = CrowdStaple().fit_predict(*crowd, gold=gold or None)
        else:
            from fusion.distributed import DaskCrowdStaple, dask_client

            with dask_client(scheduler) as client:
                result = DaskCrowdStaple().fit_predict(*crowd, gold=gold or None, client=client)
        fused = list(result.masks)  # on gold tasks this is the gold mask itself
        reliability = {int(k): float(v) for k, v in result.reliability.items()}  # type: ignore[call-overload]
        report.fallback = result.fallback
    else:
        weights = _gold_weights(tasks) if options.method == "weighted" else {}
        default_w = float(np.mean(list(weights.values()))) if weights else 1.0
        fused = []
        per_annotator: dict[int, list[float]] = {}
        jobs = [
            (
                options.method,
                t.masks,
                np.array([weights.get(a, default_w) for a in t.annotators]) + 1e-6,
            )
            for t in tasks
        ]
        if scheduler is None:
            iterable: Any = progress(jobs, len(jobs)) if progress else jobs
            results = [_fuse_task(job) for job in iterable]
        else:
            from fusion.distributed import map_tasks

            results = map_tasks(_fuse_task, jobs, scheduler)
        for t, (mask, rates) in zip(tasks, results, strict=True):
            fused.append(mask)
            for a, r in zip(t.annotators, rates, strict=True):
                per_annotator.setdefault(a, []).append(float(r))
        reliability = {a: float(np.mean(v)) for a, v in per_annotator.items()}
    gold_dice = _gold_weights(tasks)
    consensus: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    rows = []
    for t, mask in zip(tasks, fused, strict=True):
        agreement = pairwise_dice(t.masks) if len(t.annotators) > 1 else float("nan")
        reasons = []
        if len(t.annotators) < options.min_annotators:
            reasons.append(f"only {len(t.annotators)} annotator(s)")
        if not np.isnan(agreement) and agreement < options.min_agreement:
            reasons.append(f"agreement {agreement:.2f} < {options.min_agreement}")
        report.flagged += bool(reasons)
        for a, d in zip(t.annotators, rater_scores(t.masks, mask).dice, strict=True):
            consensus.setdefault(a, []).append(float(d))
            counts[a] = counts.get(a, 0) + 1
        score = 0.0 if np.isnan(agreement) else float(agreement)
        report.fused[t.task] = (mask, score)
        _write_mask(out / "masks", t.task, mask)
        rows.append(
            {
                "task": t.task,
                "annotators": len(t.annotators),
                "agreement": "" if np.isnan(agreement) else f"{agreement:.4f}",
                "gold": t.gold is not None,
                "flagged": bool(reasons),
                "reason": "; ".join(reasons),
            }
        )
    _write_csv(out / "tasks.csv", rows)
    report.volumes = _write_volumes(dataset, out, tasks, fused)
    _report(dataset, out, options.method, tasks, fused, reliability, gold_dice)
    rel_rows = [
        {
            "annotator": a,
            "email": emails.get(a, ""),
            "tasks": counts.get(a, 0),
            "reliability": f"{reliability.get(a, float('nan')):.4f}",
            "dice_vs_gold": f"{gold_dice[a]:.4f}" if a in gold_dice else "",
            "dice_vs_consensus": f"{np.mean(consensus[a]):.4f}",
        }
        for a in sorted(consensus)
    ]
    _write_csv(out / "reliability.csv", rel_rows)
    report.annotators = len(rel_rows)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "method": options.method,
                "tasks": report.tasks,
                "flagged": report.flagged,
                "annotators": report.annotators,
                "fallback": report.fallback,
            },
            indent=2,
        )
    )
    return report


def _fuse_task(
    job: tuple[str, npt.NDArray[np.bool_], npt.NDArray[np.float64]],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """One task with a per-task method: (method, (R, H, W) bool masks, (R,) weighted-vote
    weights) -> (fused mask, (R,) per-rater reliability). Module-level so Dask can ship it."""
    method, masks, weights = job
    if method == "majority":
        res = MajorityVote().fit_predict(masks)
    elif method == "weighted":
        res = WeightedVote().fit_predict(masks, weights=weights)
    else:
        res = Staple().fit_predict(masks)
    return res.mask, np.asarray(res.reliability, dtype=np.float64)


def _report(
    dataset: Dataset,
    out: Path,
    method: str,
    tasks: list[_Task],
    fused: list[npt.NDArray[np.bool_]],
    reliability: dict[int, float],
    gold_dice: dict[int, float],
) -> None:
    from PIL import Image

    from medcrowd.report import WorstTask, write_report

    scored = [
        (pairwise_dice(t.masks), t, m) for t, m in zip(tasks, fused, strict=True)
        if len(t.annotators) > 1
    ]  # fmt: skip
    worst = []
    for agreement, t, m in sorted(scored, key=lambda x: x[0])[:3]:
        image = np.asarray(Image.open(dataset.root / t.image)) if t.image else None
        worst.append(WorstTask(t.task, agreement, image, t.masks, m))
    write_report(
        out / "report.png", method, reliability, gold_dice, [a for a, _, _ in scored], worst
    )


def _write_volumes(
    dataset: Dataset, out: Path, tasks: list[_Task], fused: list[npt.NDArray[np.bool_]]
) -> int:
    """Put fused slices back into their source volumes (tasks imported by medcrowd import).

    One ``volumes/<source>_<axis>.nii.gz`` per source volume and axis, in the source's
    spacing, origin and direction; slices nobody labelled stay 0.
    """
    import SimpleITK as sitk

    from medcrowd.imaging import AXES, SliceMeta, mask_to_volume

    groups: dict[tuple[str, str], list[tuple[SliceMeta, npt.NDArray[np.bool_]]]] = {}
    for t, mask in zip(tasks, fused, strict=True):
        raw = dataset.task_meta(t.task)
        if not raw:
            continue
        try:
            meta = SliceMeta.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            continue  # metadata from another tool: the 2-D outputs still stand
        groups.setdefault((meta.source, meta.axis), []).append((meta, mask))
    (out / "volumes").mkdir(exist_ok=True)
    for (source, axis), items in groups.items():
        image = mask_to_volume(items[0][1], items[0][0])
        volume = sitk.GetArrayFromImage(image)
        for meta, mask in items[1:]:
            index: list[Any] = [slice(None)] * 3
            index[AXES[meta.axis]] = meta.index
            volume[tuple(index)] = mask.astype(np.uint8)
        merged = sitk.GetImageFromArray(volume)
        merged.CopyInformation(image)
        name = Path(source).name.removesuffix(".gz").rsplit(".", 1)[0] or "volume"
        sitk.WriteImage(merged, str(out / "volumes" / f"{name}_{axis}.nii.gz"))
    return len(groups)


def _write_mask(folder: Path, task: int, mask: npt.NDArray[np.bool_]) -> None:
    import SimpleITK as sitk
    from PIL import Image

    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folder / f"task-{task}.png")
    sitk.WriteImage(
        sitk.GetImageFromArray(mask.astype(np.uint8)), str(folder / f"task-{task}.nii.gz")
    )


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        if not rows:
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
