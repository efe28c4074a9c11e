"""Sample images for the embedded default: CT and MR slices that pydicom ships.

pydicom bundles a few small DICOM files inside its wheel (no download); ``medcrowd up``
windows them to PNG so a fresh install has something to label.
"""

from __future__ import annotations

from pathlib import Path

from medcrowd.imaging import dicom_to_png

__all__ = ["SAMPLE_FILES", "sample_images"]

# (file inside pydicom's bundled test data, CT window preset or None for MR)
SAMPLE_FILES: tuple[tuple[str, str | None], ...] = (
    ("CT_small.dcm", "soft_tissue"),
    ("CT_small.dcm", "lung"),
    ("MR_small.dcm", None),
)


def _bundled_dir() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files"


def sample_images() -> list[tuple[str, bytes]]:
    """(name, PNG bytes) for each bundled sample, windowed; never downloads."""
    out = []
    for name, preset in SAMPLE_FILES:
        path = _bundled_dir() / name
        if not path.is_file():
            raise FileNotFoundError(f"pydicom no longer bundles {name}; use --images DIR")
        stem = path.stem + (f"_{preset}" if preset else "")
        out.append((f"{stem}.png", dicom_to_png(path, preset)))
    return out
