"""``medcrowd select``: send volunteers to the images the model is most likely wrong on.

A trained segmentation-quality assessor (:class:`segmenter.sqa.QualityAssessor`) predicts,
for every *unlabelled* task, a segmentation, an error map (where that segmentation is
probably wrong) and an image-level quality score. Tasks are ranked by the predicted share of
wrong pixels (score = 1 − that share): ranking by the predicted Dice instead over-prioritises
images with almost no foreground, where a few wrong pixels make the Dice collapse — it lost
to random selection on the active-learning benchmark's development split. The ``k`` tasks
with the lowest score are selected and:

* each gets a prediction ``sqa-<model hash>`` with two layers — the draft segmentation on
  the project's mask control, and the predicted error region on a separate brush control
  ``sqa_error`` ("Likely error", added to the project's labeling config if missing) — and
  ``score`` = 1 − predicted wrong-pixel share;
* the project is switched to Label Studio's *uncertainty sampling* with that model version:
  the queue then serves tasks carrying a current prediction first, lowest score first (only
  after in-progress tasks that still need overlap, and gold onboarding). The project's
  ``model_version`` is what the labelling view shows, so volunteers see the draft and the
  likely-error layer.

Re-running replaces medcrowd's own stale ``sqa-*`` predictions (on tasks no longer selected
or from another model); annotations and other predictions are never touched. The
``sqa_error`` layer is a hint: ``medcrowd pull`` reads only the mask control.

``--strategy random`` selects ``k`` tasks at random (a baseline; no error layer).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcrowd.studio import Studio, Task
from ml_backend.labeling import HINT_CONTROL as ERROR_CONTROL

if TYPE_CHECKING:
    from ml_backend.labeling import LabelingConfig

__all__ = [
    "ERROR_CONTROL",
    "SelectOptions",
    "SelectReport",
    "ensure_error_control",
    "select_tasks",
]

ERROR_LABEL = "Likely error"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
STRATEGIES = ("sqa", "random")
OUR_PREFIXES = ("sqa-", "select-random-")
"""Model versions of the predictions ``select`` makes (the only ones it ever deletes)."""


@dataclass
class SelectOptions:
    k: int = 10
    strategy: str = "sqa"
    dry_run: bool = False
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        if self.k < 1:
            raise ValueError(f"--k must be >= 1, got {self.k}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}")


@dataclass
class SelectReport:
    model_version: str
    ranked: list[dict[str, Any]] = field(default_factory=list)
    """Every unlabelled task: task, score (1 − error_fraction), error_fraction, predicted_dice,
    selected."""
    pushed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def ensure_error_control(studio: Studio, project_id: int) -> bool:
    """Add the ``sqa_error`` brush control to the project's config; True if it was added."""
    from defusedxml import ElementTree as SafeTree

    from ml_backend.labeling import parse_label_config

    xml = studio.project(project_id).label_config
    root = SafeTree.fromstring(xml)
    if any(el.get("name") == ERROR_CONTROL for el in root.iter("BrushLabels")):
        return False
    config = parse_label_config(xml)
    control = (
        f'  <BrushLabels name="{ERROR_CONTROL}" toName="{config.image_name}">\n'
        f'    <Label value="{ERROR_LABEL}" background="#FF00FF"/>\n'
        "  </BrushLabels>\n"
    )
    closing = xml.rfind("</View>")
    if closing < 0:
        raise ValueError("the project's labeling config has no closing </View>")
    studio.set_label_config(project_id, xml[:closing] + control + xml[closing:])
    return True


def _unlabelled(studio: Studio, project_id: int) -> list[Task]:
    return [t for t in studio.tasks(project_id) if not t.total_annotations and not t.is_labeled]


def _image(studio: Studio, task: Task) -> np.ndarray:
    from ml_backend.images import decode_image

    _, body = studio.fetch_image(task.data)
    return decode_image(body, max_pixels=16384 * 16384)


def _model_version(model: Path | None, strategy: str, seed: int) -> str:
    if model is None:
        return f"select-random-{seed}"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    return f"sqa-{digest}"


def select_tasks(
    studio: Studio,
    project_id: int,
    model: Path | None,
    options: SelectOptions,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> SelectReport:
    """Rank the unlabelled tasks, push the top ``k`` as prioritised predictions (module doc).

    Raises:
        ValueError / FileNotFoundError: bad options, no model for ``sqa``, no unlabelled task.
    """
    options.check()
    assessor = None
    if options.strategy == "sqa":
        if model is None:
            raise ValueError("--strategy sqa needs --model (a file from `medcrowd train sqa`)")
        if not model.is_file():
            raise FileNotFoundError(f"no model file at {model}")
        from ml_backend.device import resolve_device
        from segmenter.sqa import QualityAssessor

        assessor = QualityAssessor.load(model, device=resolve_device(options.device))
    version = _model_version(model if assessor else None, options.strategy, options.seed)
    report = SelectReport(model_version=version)
    tasks = _unlabelled(studio, project_id)
    if not tasks:
        raise ValueError(f"project {project_id} has no unlabelled task to select from")

    drafts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if assessor is None:
        rng = np.random.default_rng(options.seed)
        scores = rng.random(len(tasks))
        for task, score in zip(tasks, scores, strict=True):
            report.ranked.append({"task": int(task.id), "score": float(score)})
    else:
        iterable: Iterable[Any] = progress(tasks, len(tasks)) if progress else tasks
        for task in iterable:
            try:
                image = _image(studio, task)
            except (ValueError, RuntimeError) as exc:
                report.skipped.append((int(task.id), str(exc)))
                continue
            mask, error, predicted_dice = assessor.predict_image(image)
            wrong = float(np.mean(error > 0))
            drafts[int(task.id)] = (mask, error)
            report.ranked.append(
                {
                    "task": int(task.id),
                    "score": 1.0 - wrong,
                    "error_fraction": wrong,
                    "predicted_dice": float(predicted_dice),
                }
            )
    report.ranked.sort(key=lambda r: (r["score"], r["task"]))
    for i, row in enumerate(report.ranked):
        row["selected"] = i < options.k
    if options.dry_run:
        return report

    labels = None
    if assessor is not None:
        ensure_error_control(studio, project_id)
        from ml_backend.labeling import parse_label_config

        labels = parse_label_config(studio.project(project_id).label_config)
    selected = {r["task"]: r for r in report.ranked if r["selected"]}
    for task in tasks:
        chosen = selected.get(task.id)
        if chosen is None:
            update = studio.replace_predictions(task.id, OUR_PREFIXES)  # no longer selected
            report.removed += update.removed
            continue
        update = studio.replace_predictions(
            task.id, OUR_PREFIXES, version, _draft(labels, drafts.get(task.id)),
            float(chosen["score"]),
        )  # fmt: skip
        report.removed += update.removed
        if update.kept:
            report.unchanged += 1
        else:
            report.pushed += 1
    studio.prioritise_predictions(project_id, version)
    return report


def _draft(
    labels: LabelingConfig | None, draft: tuple[np.ndarray, np.ndarray] | None
) -> list[dict[str, Any]]:
    """The prediction's regions: the draft mask, and the likely-error layer."""
    if labels is None or draft is None:
        return []
    from ml_backend.labeling import brush_result

    mask, error = draft
    result: list[dict[str, Any]] = []
    if mask.any():
        label = labels.brush_labels[0] if labels.brush_labels else "Organ"
        result.append(brush_result(mask, label, labels.brush_name, labels.image_name))
    if error.any():
        result.append(brush_result(error, ERROR_LABEL, ERROR_CONTROL, labels.image_name))
    return result


def write_ranking(report: SelectReport, path: Path) -> None:
    """The ranking as CSV: task, score, error_fraction, predicted_dice, selected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh,
            fieldnames=["task", "score", "error_fraction", "predicted_dice", "selected"],
            extrasaction="ignore",
        )
        writer.writeheader()
        writer.writerows(report.ranked)
