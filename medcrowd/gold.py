"""``medcrowd gold add``: expert masks as hidden ground truth on a fraction of tasks.

A gold mask becomes a Label Studio annotation with ``ground_truth=True`` made by the account
whose token is used (the expert or admin). Volunteers working the labelling queue never see
other people's annotations (the queue hands out tasks without them; proved in
tests/e2e/test_overlap.py), so they label gold tasks blind, and their own annotations there
are what ``medcrowd fuse`` scores them with.

Label Studio counts the gold annotation toward a task's overlap, which would leave one
volunteer short on every gold task; the task's own ``overlap`` is therefore raised by one.
(Changing the project's overlap later resets every task's overlap in Label Studio; re-run
``gold add`` afterwards, it only adjusts.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medcrowd.studio import Studio, Task, task_image_url
from ml_backend.labeling import brush_result

__all__ = ["GoldReport", "add_gold", "task_image_stem"]

_PREFIX = re.compile(r"^(?:[0-9a-f]{8}-)?mc[0-9a-f]{16}_")


@dataclass
class GoldReport:
    added: int = 0
    already: int = 0
    unmatched: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def task_image_stem(url: str) -> str:
    """The original file stem of an imported image (``…/3f2a-mc<hash>_liver.png`` → liver)."""
    name = url.rsplit("/", 1)[-1].split("?")[0]
    return Path(_PREFIX.sub("", name)).stem


def add_gold(
    studio: Studio,
    project_id: int,
    masks: Path,
    fraction: float = 1.0,
    seed: int = 0,
    label: str = "Organ",
    brush_name: str = "mask",
    image_name: str = "image",
) -> GoldReport:
    """Attach expert masks (``<image stem>.png``, any non-zero = foreground) as gold.

    Args:
        fraction: share of the matched tasks that get gold, chosen with ``seed``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    files = {p.stem.removesuffix("_mask"): p for p in sorted(masks.glob("*.png"))}
    if not files:
        raise FileNotFoundError(f"no PNG masks in {masks}")
    overlap = studio.project(project_id).overlap
    matched: list[tuple[Task, Path]] = []
    seen: set[str] = set()
    for task in studio.tasks(project_id):
        stem = task_image_stem(task_image_url(task.data) or "")
        if stem in files:
            matched.append((task, files[stem]))
            seen.add(stem)
    report = GoldReport(unmatched=sorted(set(files) - seen))
    rng = np.random.default_rng(seed)
    count = max(1, round(fraction * len(matched))) if matched else 0
    chosen = sorted(rng.choice(len(matched), size=count, replace=False).tolist()) if count else []
    for i in chosen:
        task, path = matched[i]
        if studio.has_ground_truth(task.id):
            report.already += 1
            continue
        pixels = np.asarray(Image.open(path))
        mask = pixels.any(axis=-1) if pixels.ndim == 3 else pixels > 0
        result = [brush_result(mask, label, brush_name, image_name)]
        studio.set_task_overlap(task.id, overlap + 1)
        studio.create_annotation(task.id, result, ground_truth=True)
        report.added += 1
    return report
