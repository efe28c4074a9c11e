"""The on-disk dataset ``medcrowd pull`` writes and ``medcrowd fuse`` reads.

Layout::

    DATASET/
      dataset.json                 project id, Label Studio URL, label config
      manifest.jsonl               one JSON record per annotation version (append-only)
      images/task-<id><ext>        the task image as Label Studio serves it
      masks/task-<id>/ann-<id>-<v>.png   the annotator's brush mask, 0/255, image size
      tasks/task-<id>.json         the task's import metadata (slice geometry), if any

A record is appended only after its files are on disk (atomic rename), and with an fsync,
so a pull killed at any point leaves a manifest that lists only complete records; a torn last
line (killed mid-write) is cut off on the next open. Records are keyed by (annotation id,
updated_at): an annotation edited in Label Studio gets a new record and mask file, the old
one stays. Nothing is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["AnnotationRecord", "Dataset"]


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation version as pulled.

    Attributes:
        task, annotation: Label Studio ids.
        annotator: user id (``completed_by``); annotator_email when known.
        gold: True for ground-truth (expert) annotations.
        updated_at, created_at: Label Studio timestamps (ISO 8601).
        lead_time: seconds the annotator spent, as Label Studio measured.
        was_cancelled: the annotator skipped the task.
        mask: dataset-relative path of the (H, W) 0/255 PNG, or None when the annotation
            has no brush region (e.g. only a rectangle); ``boxes`` then keeps the rectangles.
        labels: brush labels used; boxes: rectangle values (percent, as Label Studio).
        image: dataset-relative image path; width/height: its size.
    """

    task: int
    annotation: int
    annotator: int | None
    annotator_email: str | None
    gold: bool
    updated_at: str
    created_at: str | None
    lead_time: float | None
    was_cancelled: bool
    mask: str | None
    labels: list[str] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.annotation, self.updated_at)


class Dataset:
    """A pulled dataset folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.jsonl"

    # -- metadata -------------------------------------------------------------------------
    def init(self, meta: dict[str, Any]) -> None:
        """Create the folder, or check that it belongs to the same project."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "dataset.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("project") != meta.get("project") or old.get("url") != meta.get("url"):
                raise ValueError(
                    f"{self.root} holds project {old.get('project')} from {old.get('url')}; "
                    "pull another project into another folder"
                )
            return
        _atomic_write(path, json.dumps(meta, indent=2).encode())

    def meta(self) -> dict[str, Any]:
        path = self.root / "dataset.json"
        if not path.exists():
            raise FileNotFoundError(f"{self.root} is not a medcrowd dataset (no dataset.json)")
        return dict(json.loads(path.read_text()))

    # -- records ----------------------------------------------------------------------------
    def records(self) -> list[AnnotationRecord]:
        """Every complete record, in the order pulled."""
        if not self.manifest_path.exists():
            return []
        out = []
        with self.manifest_path.open() as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn last line of a killed pull; repaired on the next append
                out.append(AnnotationRecord(**json.loads(line)))
        return out

    def latest(self) -> list[AnnotationRecord]:
        """The newest version of each annotation (edited annotations supersede)."""
        newest: dict[int, AnnotationRecord] = {}
        for rec in self.records():
            old = newest.get(rec.annotation)
            if old is None or rec.updated_at >= old.updated_at:
                newest[rec.annotation] = rec
        return list(newest.values())

    def keys(self) -> set[tuple[int, str]]:
        return {rec.key for rec in self.records()}

    def append(self, record: AnnotationRecord) -> None:
        """Append one record durably (after its files exist)."""
        self._repair_torn_tail()
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        with self.manifest_path.open("a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _repair_torn_tail(self) -> None:
        path = self.manifest_path
        if not path.exists() or path.stat().st_size == 0:
            return
        with path.open("rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            data = path.read_bytes()
            fh.truncate(data.rfind(b"\n") + 1)

    # -- files ------------------------------------------------------------------------------
    def write_task_meta(self, task: int, meta: dict[str, Any]) -> None:
        """Keep what import stored in the task (e.g. slice geometry) beside the masks."""
        _atomic_write(self.root / "tasks" / f"task-{task}.json", json.dumps(meta).encode())

    def task_meta(self, task: int) -> dict[str, Any] | None:
        path = self.root / "tasks" / f"task-{task}.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    def image_path(self, task: int, suffix: str) -> Path:
        return self.root / "images" / f"task-{task}{suffix}"

    def write_image(self, task: int, suffix: str, data: bytes) -> str:
        path = self.image_path(task, suffix)
        if not path.exists():
            _atomic_write(path, data)
        return path.relative_to(self.root).as_posix()

    def write_mask(self, task: int, annotation: int, updated_at: str, mask: np.ndarray) -> str:
        version = hashlib.sha256(updated_at.encode()).hexdigest()[:8]
        path = self.root / "masks" / f"task-{task}" / f"ann-{annotation}-{version}.png"
        buf = _png(np.where(mask, 255, 0).astype(np.uint8))
        _atomic_write(path, buf)
        return path.relative_to(self.root).as_posix()

    def load_mask(self, rel: str) -> npt.NDArray[np.bool_]:
        return np.asarray(Image.open(self.root / rel)) > 0

    def by_task(self) -> Iterator[tuple[int, list[AnnotationRecord]]]:
        """Latest records grouped by task id, tasks in ascending order."""
        groups: dict[int, list[AnnotationRecord]] = {}
        for rec in self.latest():
            groups.setdefault(rec.task, []).append(rec)
        for task in sorted(groups):
            yield task, sorted(groups[task], key=lambda r: r.annotation)


def _png(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
