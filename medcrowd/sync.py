"""``medcrowd pull`` and ``medcrowd push``: Label Studio ⇄ the on-disk dataset.

``pull`` exports a project's annotations through the SDK and writes new ones to a
:class:`~medcrowd.dataset.Dataset` (incremental, resumable; read-only on Label Studio).
``push`` sends fused consensus masks back as *predictions* with model_version
``consensus-<method>`` so experts can review them in the UI; annotations are never touched.

Both survive a Label Studio that restarts under them: requests wait for it with backoff
(:class:`~medcrowd.studio.RetryPolicy`), and when it stays away longer than the budget they
stop with :class:`~medcrowd.studio.LabelStudioUnavailable`, saying what was done. Re-running
the same command then finishes the job: a pull skips the (annotation id, updated_at) versions
already in the manifest, a push skips the identical predictions already there, so nothing is
lost or written twice (tests/e2e/test_faults.py restarts Label Studio mid-pull and mid-push).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from medcrowd.dataset import AnnotationRecord, Dataset
from medcrowd.studio import LabelStudioUnavailable, Prediction, Studio
from ml_backend.labeling import HINT_CONTROL, brush_result
from ml_backend.rle import rle_to_mask

__all__ = ["PullReport", "PushReport", "brush_mask", "load_fused", "pull", "push", "result_size"]


@dataclass
class PullReport:
    tasks: int = 0
    new: int = 0
    unchanged: int = 0
    box_only: int = 0
    failed: int = 0


@dataclass
class PushReport:
    pushed: int = 0
    unchanged: int = 0
    replaced: int = 0


def _annotator(value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, dict):
        return (int(value["id"]) if value.get("id") is not None else None, value.get("email"))
    return (int(value) if value is not None else None, None)


def brush_mask(results: list[dict[str, Any]], height: int, width: int) -> np.ndarray | None:
    """Union of every brush region of an annotation, or None when it has none.

    Regions on ``sqa_error`` (the predicted-error hint ``medcrowd select`` shows, which a
    volunteer may keep when accepting the draft) are not part of the mask."""
    mask = None
    for region in results:
        if region.get("type") != "brushlabels" or region.get("from_name") == HINT_CONTROL:
            continue
        value = region.get("value") or {}
        if value.get("format", "rle") != "rle" or "rle" not in value:
            continue
        h = int(region.get("original_height") or height)
        w = int(region.get("original_width") or width)
        part = rle_to_mask(value["rle"], h, w)
        mask = part if mask is None else (mask | part)
    return mask


def result_size(results: list[dict[str, Any]]) -> tuple[int, int] | None:
    """``(height, width)`` of the image an annotation's (or prediction's) result is drawn on:
    the first region stating ``original_height`` and ``original_width``; None if none does."""
    for region in results:
        if (
            isinstance(region, dict)
            and region.get("original_height")
            and region.get("original_width")
        ):
            return int(region["original_height"]), int(region["original_width"])
    return None


def pull(
    studio: Studio,
    project_id: int,
    out: Path,
    on_record: Callable[[AnnotationRecord], None] | None = None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> PullReport:
    """Write every annotation not yet in ``out`` (see :mod:`medcrowd.dataset`).

    Args:
        on_record: called after each record is durably appended (progress output).
        progress: wraps the task iterable (e.g. a rich progress bar); gets (iterable, total).

    Raises:
        LabelStudioUnavailable: Label Studio stayed away longer than ``studio.retry`` (or a
            request timed out); what was written is kept and complete, and running the pull
            again continues.
    """
    report = PullReport()
    try:
        return _pull(studio, project_id, out, report, on_record, progress)
    except httpx.TransportError as exc:  # LabelStudioUnavailable, or a timeout
        raise LabelStudioUnavailable.after(
            exc,
            f"The pull stopped after {report.new} new annotation(s) from {report.tasks} "
            f"task(s); they are complete in {out}. Run the same pull again to fetch the rest "
            "(nothing is fetched twice).",
        ) from exc


def _pull(
    studio: Studio,
    project_id: int,
    out: Path,
    report: PullReport,
    on_record: Callable[[AnnotationRecord], None] | None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None,
) -> PullReport:
    dataset = Dataset(out)
    project = studio.project(project_id)
    dataset.init(
        {"project": project_id, "url": studio.url, "title": project.title,
         "label_config": project.label_config}
    )  # fmt: skip
    emails = studio.users()
    done = dataset.keys()
    tasks = studio.export_tasks(project_id)
    iterable: Iterable[Any] = progress(tasks, len(tasks)) if progress else tasks
    for task in iterable:
        report.tasks += 1
        anns = [a for a in task.get("annotations") or [] if a.get("id") is not None]
        todo = [a for a in anns if (int(a["id"]), str(a.get("updated_at"))) not in done]
        report.unchanged += len(anns) - len(todo)
        if not todo:
            continue
        image_rel, width, height = _fetch_image(studio, dataset, task)
        meta = (task.get("data") or {}).get("medcrowd")
        if isinstance(meta, dict):
            dataset.write_task_meta(int(task["id"]), meta)
        for ann in todo:
            annotator, email = _annotator(ann.get("completed_by"))
            results = ann.get("result") or []
            h, w = (height, width) if height else (result_size(results) or (0, 0))
            try:
                mask = brush_mask(results, h, w) if h else None
            except ValueError:
                report.failed += 1  # malformed RLE: recorded as a failure, never guessed
                continue
            updated = str(ann.get("updated_at"))
            mask_rel = (
                dataset.write_mask(int(task["id"]), int(ann["id"]), updated, mask)
                if mask is not None
                else None
            )
            labels = sorted(
                {
                    lab
                    for r in results
                    if r.get("from_name") != HINT_CONTROL
                    for lab in (r.get("value") or {}).get("brushlabels", [])
                }
            )
            boxes = [r.get("value") for r in results if r.get("type") == "rectanglelabels"]
            record = AnnotationRecord(
                task=int(task["id"]),
                annotation=int(ann["id"]),
                annotator=annotator,
                annotator_email=email or emails.get(annotator or -1),
                gold=bool(ann.get("ground_truth")),
                updated_at=updated,
                created_at=ann.get("created_at"),
                lead_time=ann.get("lead_time"),
                was_cancelled=bool(ann.get("was_cancelled")),
                mask=mask_rel,
                labels=labels,
                boxes=[b for b in boxes if isinstance(b, dict)],
                image=image_rel,
                width=w or None,
                height=h or None,
            )
            dataset.append(record)
            done.add(record.key)
            report.new += 1
            report.box_only += mask_rel is None
            if on_record is not None:
                on_record(record)
    return report


def _fetch_image(
    studio: Studio, dataset: Dataset, task: dict[str, Any]
) -> tuple[str | None, int, int]:
    from ml_backend.images import decode_image

    try:
        path, body = studio.fetch_image(task.get("data"))
    except ValueError:  # no image, or one on another host (never fetched)
        return None, 0, 0
    suffix = Path(path.split("?")[0]).suffix.lower() or ".png"
    rel = dataset.write_image(int(task["id"]), suffix, body)
    image = decode_image(body, max_pixels=16384 * 16384)
    return rel, int(image.shape[1]), int(image.shape[0])


def push(
    studio: Studio,
    fused: dict[int, tuple[np.ndarray, float]],
    method: str,
    brush_name: str = "mask",
    image_name: str = "image",
    label: str = "Organ",
    on_task: Callable[[int], None] | None = None,
) -> PushReport:
    """Send fused masks as predictions ``consensus-<method>``; annotations are not touched.

    Args:
        fused: {task id: ((H, W) bool mask, score in [0, 1])}.
        on_task: called with each task id once it is done (progress output).

    A task that already has an identical ``consensus-<method>`` prediction is left alone; a
    stale one (re-fused with other input) is replaced — only medcrowd's own consensus
    predictions are ever deleted.

    Raises:
        LabelStudioUnavailable: Label Studio stayed away longer than ``studio.retry``, or the
            connection dropped during a POST (never resent: it may have been stored); run
            the push again, it skips what is already there.
    """
    report = PushReport()
    try:
        _push(studio, fused, f"consensus-{method}", brush_name, image_name, label, report,
              on_task)  # fmt: skip
    except httpx.TransportError as exc:  # LabelStudioUnavailable, or an answer lost
        raise LabelStudioUnavailable.after(
            exc,
            f"The push stopped after {report.pushed} new prediction(s). Run the same push "
            "again to send the rest (identical predictions are not sent twice).",
        ) from exc
    return report


def _push(
    studio: Studio,
    fused: dict[int, tuple[np.ndarray, float]],
    version: str,
    brush_name: str,
    image_name: str,
    label: str,
    report: PushReport,
    on_task: Callable[[int], None] | None,
) -> None:
    for task_id, (mask, score) in sorted(fused.items()):
        result = [brush_result(mask, label, brush_name, image_name)]
        rle = result[0]["value"]["rle"]

        def identical(prediction: Prediction, rle: list[int] = rle) -> bool:
            return _same_rle(prediction.result, rle)

        update = studio.replace_predictions(
            task_id, version, version, result, float(score), same=identical
        )
        report.replaced += update.removed
        if update.kept:
            report.unchanged += 1
        else:
            report.pushed += 1
        if on_task is not None:
            on_task(task_id)


def _same_rle(result: Any, rle: list[int]) -> bool:
    for region in result or []:
        value = region.get("value") if isinstance(region, dict) else None
        if isinstance(value, dict) and value.get("rle") == rle:
            return True
    return False


def load_fused(root: Path, method: str, url: str) -> dict[int, tuple[np.ndarray, float]]:
    """{task id: (fused mask, agreement score)} from ``root/fused-<method>``.

    Raises:
        FileNotFoundError: not fused with that method yet.
        ValueError: the dataset was pulled from another Label Studio than ``url``.
    """
    import csv

    from PIL import Image

    meta = Dataset(root).meta()
    if str(meta["url"]).rstrip("/") != url.rstrip("/"):
        raise ValueError(f"the dataset was pulled from {meta['url']}, not {url}")
    folder = root / f"fused-{method}"
    if not (folder / "tasks.csv").is_file():
        raise FileNotFoundError(f"{folder} missing; run medcrowd fuse --method {method}")
    fused = {}
    with (folder / "tasks.csv").open() as fh:
        for row in csv.DictReader(fh):
            task = int(row["task"])
            mask = np.asarray(Image.open(folder / "masks" / f"task-{task}.png")) > 0
            fused[task] = (mask, float(row["agreement"] or 0.0))
    return fused
