"""Medical image reading and windowing to the 8-bit images volunteers see.

This module holds what ``medcrowd up`` needs (DICOM slices to PNG with a window preset);
the full importer (NIfTI/NRRD volumes, slicing, geometry) builds on it.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from PIL import Image

from medcrowd.settings import config_path

__all__ = ["dicom_to_png", "png_bytes", "window_presets", "window_to_uint8"]


@lru_cache(maxsize=1)
def window_presets() -> dict[str, Any]:
    """The presets in ``configs/windows.yaml``."""
    with config_path("windows.yaml").open() as fh:
        return dict(yaml.safe_load(fh))


def window_to_uint8(
    image: npt.ArrayLike, modality: str = "CT", preset: str | None = None
) -> npt.NDArray[np.uint8]:
    """Map intensities to 0..255.

    Args:
        image: (H, W) array in physical units (HU for CT after rescale).
        modality: ``CT`` uses a (width, level) window; anything else the MR percentiles.
        preset: a CT preset name from ``configs/windows.yaml`` (default ``default_ct``).

    Raises:
        ValueError: unknown preset or an image that is not 2-D.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {arr.shape}")
    presets = window_presets()
    if modality.upper() == "CT":
        name = preset or presets["default_ct"]
        if name not in presets["ct"]:
            raise ValueError(f"unknown CT window {name!r}; choose from {sorted(presets['ct'])}")
        win = presets["ct"][name]
        lo = win["level"] - win["width"] / 2.0
        hi = win["level"] + win["width"] / 2.0
    else:
        pct = presets["mr"]["percentile"]
        lo, hi = np.percentile(arr, [pct["low"], pct["high"]])
    scaled = (np.clip(arr, lo, hi) - lo) / max(hi - lo, 1e-6) * 255.0
    return np.round(scaled).astype(np.uint8)


def dicom_to_png(path: Path, preset: str | None = None) -> bytes:
    """Read a single-frame DICOM, apply rescale slope/intercept and a window, encode PNG."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    pixels = ds.pixel_array.astype(np.float64)
    if pixels.ndim != 2:
        raise ValueError(f"{path.name}: expected a single 2-D frame, got {pixels.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    modality = str(getattr(ds, "Modality", "OT"))
    return png_bytes(window_to_uint8(pixels * slope + intercept, modality, preset))


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
