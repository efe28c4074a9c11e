"""``medcrowd propagate``: a volume (or a folder of slices) + one box → a 3-D mask, offline.

Reads the input as ``medcrowd import`` does (:func:`medcrowd.imaging.read_volume` and the same
window, so the slices are exactly the ones volunteers see), runs
:class:`ml_backend.propagation.Propagator` from the box on slice ``index`` and writes

* ``OUT/masks/<stem>_<axis><index:04d>.png`` — one 0/255 mask per proposed slice;
* ``OUT/mask.nii.gz`` — for a volume, the mask in the source geometry (spacing, origin,
  direction) as a ``uint8`` image;
* ``OUT/propagation.json`` — the box, the rule, and per slice what happened (proposed or the
  stop reason).

A folder of 2-D images (PNG/JPEG/TIFF, sorted by name, all one size) is a stack of slices
already in 8 bits; no NIfTI is written for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medcrowd.imaging import AXES, read_volume, slice_volume

__all__ = ["PropagateSummary", "load_stack", "parse_box", "propagate_to_folder"]

SLICE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class PropagateSummary:
    """What :func:`propagate_to_folder` did.

    Attributes:
        slices: slices in the stack.
        proposed: indices of the slices with a mask, ascending.
        voxels: mask pixels over all slices.
        stop_reasons: the reason each direction's walk ended (``"edge"`` at the stack's end).
        out: the output folder.
    """

    slices: int
    proposed: list[int]
    voxels: int
    stop_reasons: list[str] = field(default_factory=list)
    out: Path = Path()


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (XYXY pixels on the slice) → 4 floats.

    Raises:
        ValueError: not 4 comma-separated numbers with x1 > x0 and y1 > y0.
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--box takes x0,y0,x1,y1 in pixels, got {text!r}") from None
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f"--box takes 4 numbers x0,y0,x1,y1 in pixels, got {text!r}")
    x0, y0, x1, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"--box needs x1 > x0 and y1 > y0, got {text!r}")
    return x0, y0, x1, y1


def load_stack(
    path: Path, axis: str = "axial", window: str | None = None, modality: str | None = None
) -> tuple[np.ndarray, list[str], Any]:
    """The input as ``(D, H, W)`` uint8 slices, their names, and the volume (None for a folder).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable input, no slices, slices of different sizes, unknown axis.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if axis not in AXES:
        raise ValueError(f"--axis must be one of {sorted(AXES)}, got {axis!r}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SLICE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no PNG/JPEG/TIFF slices")
        images = []
        for file in files:
            try:
                images.append(np.asarray(Image.open(file).convert("L")))
            except OSError as exc:
                raise ValueError(f"cannot read slice {file.name}: {exc}") from None
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"slices in {path} have different sizes: {sorted(shapes)}")
        return np.stack(images), [f.stem for f in files], None
    volume = read_volume(path)
    pairs = list(slice_volume(volume, axis, 1, False, window, modality))
    if not pairs:
        raise ValueError(f"{path} has no slices")
    slices = np.stack([image for image, _ in pairs])
    if slices.ndim == 4 and slices.shape[3] != 3:
        raise ValueError(f"{path}: slices of shape {slices.shape[1:]} are not images")
    names = [f"{path.name}_{meta.axis}{meta.index:04d}" for _, meta in pairs]
    return slices, names, volume


def propagate_to_folder(
    source: Path,
    box: Sequence[float],
    index: int,
    out: Path,
    *,
    axis: str = "axial",
    window: str | None = None,
    modality: str | None = None,
    predictor: Any = None,
    rule: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> PropagateSummary:
    """Propagate ``box`` on slice ``index`` of ``source`` and write masks into ``out``.

    Args:
        source: a volume file / DICOM series folder, or a folder of 2-D slices.
        box: ``(x0, y0, x1, y1)`` XYXY pixels on slice ``index``.
        index: slice index along ``axis`` (0-based).
        predictor: a built predictor (``window=None``); default the bundled LiteMedSAM on CPU.
        rule: a :class:`ml_backend.propagation.Propagator` (default parameters if None).
        progress: ``progress(done, total)`` per slice.

    Raises:
        FileNotFoundError, ValueError: bad input (one line each).
        ModelUnavailable: the model cannot be loaded.
    """
    from ml_backend.propagation import Propagator

    slices, names, volume = load_stack(source, axis, window, modality)
    if not 0 <= index < slices.shape[0]:
        raise ValueError(f"--index {index} is outside the {slices.shape[0]} slices (0-based)")
    if predictor is None:
        from ml_backend.predictors import get_predictor

        predictor = get_predictor("litemedsam", device="cpu")
    propagator = rule if rule is not None else Propagator()
    result = propagator.run(predictor, slices, index, list(box), progress=progress)
    masks_dir = out / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    for z in result.proposed:
        Image.fromarray(result.masks[z].astype(np.uint8) * 255).save(masks_dir / f"{names[z]}.png")
    if volume is not None:
        _write_nifti(result.masks, volume, axis, out / "mask.nii.gz")
    stops = []
    if result.steps[0].accepted:
        for direction in (1, -1):
            side = [s for s in result.steps[1:] if (s.index - index) * direction > 0]
            stops.append(side[-1].reason if side and not side[-1].accepted else "edge")
    else:
        stops.append(result.steps[0].reason)
    record = {
        "source": str(source),
        "axis": axis,
        "index": index,
        "box_xyxy": [float(v) for v in box],
        "rule": asdict(propagator),
        "proposed": result.proposed,
        "slices": [{"name": names[s.index], **s.to_dict()} for s in result.steps],
    }
    (out / "propagation.json").write_text(json.dumps(record, indent=2))
    return PropagateSummary(
        slices=int(slices.shape[0]),
        proposed=result.proposed,
        voxels=int(result.masks.sum()),
        stop_reasons=stops,
        out=out,
    )


def _write_nifti(masks: np.ndarray, volume: Any, axis: str, path: Path) -> None:
    """Put the (D, H, W) stack back along ``axis`` and save it in the volume's geometry."""
    import SimpleITK as sitk

    array = np.moveaxis(masks.astype(np.uint8), 0, AXES[axis] if masks.shape[0] > 1 else 0)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    sitk.WriteImage(image, str(path))
