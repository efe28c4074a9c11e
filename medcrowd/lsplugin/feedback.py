"""Gold feedback for a volunteer's own page, computed from Label Studio's database.

A **gold task** is a task holding a ground-truth annotation (``medcrowd gold add``: the
expert's mask). Once a volunteer has *submitted* an annotation on a gold task (not a skip),
their page shows, for that task, the Dice of their mask against the expert's and an overlay
(:func:`overlay_png`): agreement, missed pixels (expert only) and extra pixels (volunteer
only) over the image. Before the submission nothing of the gold answer is shown anywhere
(the middleware never lets a volunteer read gold annotations). After it, the volunteer's
annotation on that task is frozen (:func:`is_frozen`): they cannot correct it with the
answer in front of them.

Also on the page:

* **agreement with the crowd** — the mean, over the volunteer's submitted tasks that other
  volunteers also labelled, of the mean Dice between their mask and each other volunteer's
  mask (nothing of the others' masks is shown);
* **reliability** — the sensitivity and specificity of their masks pooled over their gold
  tasks: the two per-rater parameters STAPLE estimates (``medcrowd fuse`` estimates them
  from all the work, offline; this page uses the gold answers only).

Onboarding (``MEDCROWD_ONBOARDING_GOLD``, default 0): a volunteer's first N tasks of a
project are gold tasks they have not done yet, when the project has any
(:func:`onboarding_task`); their feedback then shows on the page right after each submit.

Masks are the union of an annotation's ``brushlabels`` regions (Label Studio's RLE, decoded
by :mod:`ml_backend.rle`). The plugin needs only numpy and Pillow besides that module (both
in Label Studio's own environment), so Label Studio's image carries it without medcrowd's
heavy dependencies (docker/Dockerfile.label-studio).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ml_backend.rle import rle_to_mask

__all__ = [
    "GoldResult",
    "Summary",
    "annotation_mask",
    "dice",
    "gold_results",
    "is_frozen",
    "onboarding_task",
    "overlay_png",
    "summary",
]

Mask = npt.NDArray[np.bool_]

#: Overlay colours (RGB): both agree, expert only (missed), volunteer only (extra).
AGREE = (46, 204, 113)
MISSED = (52, 152, 219)
EXTRA = (231, 76, 60)


def dice(a: Mask, b: Mask) -> float:
    """Dice of two masks (1.0 when both are empty), as :func:`fusion.metrics.dice`."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def annotation_mask(result: Any) -> Mask | None:
    """The union of the ``brushlabels`` regions of an annotation result, or None if none."""
    mask: Mask | None = None
    for item in result or []:
        if not isinstance(item, dict) or item.get("type") != "brushlabels":
            continue
        value = item.get("value") or {}
        h, w = int(item.get("original_height", 0)), int(item.get("original_width", 0))
        if value.get("format") != "rle" or not value.get("rle") or h <= 0 or w <= 0:
            continue
        part = rle_to_mask(value["rle"], h, w)
        if mask is None:
            mask = part.copy()
        elif mask.shape == part.shape:
            mask |= part
    return mask


@dataclass(frozen=True)
class GoldResult:
    """One submitted gold task of the volunteer."""

    task_id: int
    annotation_id: int
    dice: float
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int


@dataclass(frozen=True)
class Summary:
    tasks: int  # submitted (not skipped, not gold) annotations
    skipped: int
    gold: list[GoldResult]
    mean_gold_dice: float | None
    sensitivity: float | None
    specificity: float | None
    crowd_agreement: float | None
    crowd_tasks: int


def _gold_of(task_ids: list[int]) -> dict[int, Any]:
    """{task id: the ground-truth annotation's result} for the tasks that are gold."""
    from tasks.models import Annotation

    gold: dict[int, Any] = {}
    rows = Annotation.objects.filter(task_id__in=task_ids, ground_truth=True, was_cancelled=False)
    for task_id, result in rows.order_by("id").values_list("task_id", "result"):
        gold.setdefault(int(task_id), result)
    return gold


def _submitted(user: Any, project_id: int | None = None) -> Any:
    from tasks.models import Annotation

    rows = Annotation.objects.filter(
        completed_by_id=user.pk, was_cancelled=False, ground_truth=False
    )
    if project_id is not None:
        rows = rows.filter(project_id=project_id)
    return rows


def gold_results(user: Any) -> list[GoldResult]:
    """The volunteer's submitted annotations on gold tasks, scored against the gold masks."""
    mine = list(_submitted(user).order_by("id").values_list("id", "task_id", "result"))
    gold = _gold_of([int(t) for _, t, _ in mine])
    out: list[GoldResult] = []
    for ann_id, task_id, result in mine:
        if int(task_id) not in gold:
            continue
        truth, theirs = annotation_mask(gold[int(task_id)]), annotation_mask(result)
        if truth is None:
            continue
        if theirs is None or theirs.shape != truth.shape:
            theirs = np.zeros_like(truth)
        out.append(
            GoldResult(
                task_id=int(task_id),
                annotation_id=int(ann_id),
                dice=float(dice(theirs, truth)),
                true_pos=int((theirs & truth).sum()),
                false_pos=int((theirs & ~truth).sum()),
                false_neg=int((~theirs & truth).sum()),
                true_neg=int((~theirs & ~truth).sum()),
            )
        )
    return out


def _crowd_agreement(user: Any) -> tuple[float | None, int]:
    from tasks.models import Annotation

    mine = {int(t): r for t, r in _submitted(user).values_list("task_id", "result")}
    others = Annotation.objects.filter(
        task_id__in=list(mine), was_cancelled=False, ground_truth=False
    ).exclude(completed_by_id=user.pk)
    by_task: dict[int, list[Any]] = {}
    for task_id, result in others.values_list("task_id", "result"):
        by_task.setdefault(int(task_id), []).append(result)
    scores: list[float] = []
    for task_id, results in by_task.items():
        own = annotation_mask(mine[task_id])
        if own is None:
            continue
        pair = [
            float(dice(own, other))
            for other in (annotation_mask(r) for r in results)
            if other is not None and other.shape == own.shape
        ]
        if pair:
            scores.append(float(np.mean(pair)))
    return (float(np.mean(scores)) if scores else None), len(scores)


def summary(user: Any) -> Summary:
    """Everything the volunteer's page shows about their work."""
    from tasks.models import Annotation

    mine = Annotation.objects.filter(completed_by_id=user.pk)
    gold = gold_results(user)
    tp = sum(g.true_pos for g in gold)
    fp = sum(g.false_pos for g in gold)
    fn = sum(g.false_neg for g in gold)
    tn = sum(g.true_neg for g in gold)
    agreement, crowd_tasks = _crowd_agreement(user)
    return Summary(
        tasks=mine.filter(was_cancelled=False, ground_truth=False).count(),
        skipped=mine.filter(was_cancelled=True).count(),
        gold=gold,
        mean_gold_dice=float(np.mean([g.dice for g in gold])) if gold else None,
        sensitivity=tp / (tp + fn) if gold and tp + fn else None,
        specificity=tn / (tn + fp) if gold and tn + fp else None,
        crowd_agreement=agreement,
        crowd_tasks=crowd_tasks,
    )


def _task_image(task: Any, shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """The task's uploaded image as grey levels of ``shape`` (black if it cannot be read)."""
    from django.conf import settings

    data = task.data if isinstance(task.data, dict) else {}
    for value in data.values():
        if isinstance(value, str) and value.startswith("/data/upload/"):
            rel = value.removeprefix("/data/upload/")
            path = Path(settings.MEDIA_ROOT) / settings.UPLOAD_DIR / rel
            try:
                with Image.open(path) as img:
                    grey = np.asarray(img.convert("L"))
            except OSError:
                break
            if grey.shape == shape:
                return grey
            break
    return np.zeros(shape, dtype=np.uint8)


def overlay_png(user: Any, annotation_id: int) -> bytes | None:
    """The overlay of one of the volunteer's submitted gold annotations, or None.

    None unless ``annotation_id`` is the volunteer's own submitted annotation on a gold task:
    the gold mask is only ever drawn for a task the volunteer has already submitted.
    """
    ann = _submitted(user).filter(pk=annotation_id).select_related("task").first()
    if ann is None:
        return None
    gold = _gold_of([int(ann.task_id)]).get(int(ann.task_id))
    truth = annotation_mask(gold) if gold is not None else None
    if truth is None:
        return None
    theirs = annotation_mask(ann.result)
    if theirs is None or theirs.shape != truth.shape:
        theirs = np.zeros_like(truth)
    grey = _task_image(ann.task, (int(truth.shape[0]), int(truth.shape[1])))
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    layers = ((theirs & truth, AGREE), (truth & ~theirs, MISSED), (theirs & ~truth, EXTRA))
    for region, colour in layers:
        rgb[region] = 0.45 * rgb[region] + 0.55 * np.asarray(colour, dtype=np.float32)
    buf = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def is_frozen(annotation_id: int) -> bool:
    """True when the annotation is on a gold task (its author has seen the feedback)."""
    from tasks.models import Annotation

    task_id = Annotation.objects.filter(pk=annotation_id).values_list("task_id", flat=True).first()
    return task_id is not None and bool(_gold_of([int(task_id)]))


def onboarding_task(user: Any, project_id: int, n_gold: int) -> Any:
    """The gold task to serve a new volunteer next, or None (onboarding over or no gold).

    While the volunteer has fewer than ``n_gold`` submitted or skipped tasks in the project,
    the next task is the first gold task of the project they have neither done nor skipped.
    """
    from tasks.models import Annotation, Task

    if n_gold <= 0:
        return None
    done = Annotation.objects.filter(
        completed_by_id=user.pk, project_id=project_id, ground_truth=False
    )
    if done.count() >= n_gold:
        return None
    seen = set(done.values_list("task_id", flat=True))
    gold_ids = (
        Annotation.objects.filter(project_id=project_id, ground_truth=True, was_cancelled=False)
        .values_list("task_id", flat=True)
        .order_by("task_id")
    )
    for task_id in gold_ids:
        if task_id not in seen:
            return Task.objects.filter(pk=task_id).first()
    return None
