"""``medcrowd import``: medical files → windowed 8-bit slices → Label Studio tasks.

Unreadable inputs are reported and skipped; the batch never aborts on one bad file.
Re-importing is idempotent (tasks are keyed by the content hash of the slice image).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcrowd.imaging import find_inputs, png_bytes, read_volume, slice_volume
from medcrowd.studio import Studio

__all__ = ["ImportOptions", "ImportSummary", "import_path"]


@dataclass
class ImportOptions:
    axis: str = "axial"
    every: int = 1
    content_only: bool = False
    window: str | None = None
    modality: str | None = None


@dataclass
class ImportSummary:
    inputs: int = 0
    slices: int = 0
    created: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def import_path(
    studio: Studio,
    project_id: int,
    path: Path,
    options: ImportOptions,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> ImportSummary:
    """Import every readable image under ``path`` into the project."""
    inputs = find_inputs(path)
    summary = ImportSummary(inputs=len(inputs))
    iterable: Iterable[Path] = progress(inputs, len(inputs)) if progress else inputs
    for source in iterable:
        try:
            vol = read_volume(source)
            items = [
                (f"{source.name}_{meta.axis}{meta.index:04d}.png", png_bytes(image),
                 meta.to_dict())
                for image, meta in slice_volume(
                    vol, options.axis, options.every, options.content_only, options.window,
                    options.modality,
                )
            ]  # fmt: skip
        except ValueError as exc:
            summary.failed.append((str(source), str(exc)))
            continue
        summary.slices += len(items)
        report = studio.import_images(project_id, items)
        summary.created += report.created
        summary.skipped += report.skipped
    return summary
