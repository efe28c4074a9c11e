"""Medical image reading, windowing and slicing into the 8-bit tasks volunteers see.

Readers: DICOM files and series folders, NIfTI (.nii/.nii.gz), NRRD, MHA/MHD (SimpleITK,
pydicom for single DICOM files SimpleITK cannot read), PNG/JPEG/TIFF in 8 or 16 bits.
3-D volumes are cut along an axis into 2-D slices; every slice keeps the geometry needed to
put a mask back where it came from (:func:`mask_to_volume`).

Windowing: CT uses a (width, level) preset from ``configs/windows.yaml``; MR and other
modalities use the 0.5–99.5 percentiles of the whole volume, so all slices of one volume
share one mapping.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from PIL import Image

from medcrowd.settings import config_path

__all__ = [
    "MEDICAL_SUFFIXES",
    "SliceMeta",
    "Volume",
    "dicom_to_png",
    "find_inputs",
    "mask_to_volume",
    "png_bytes",
    "read_volume",
    "slice_volume",
    "window_presets",
    "window_to_uint8",
]

MEDICAL_SUFFIXES = (".dcm", ".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png", ".jpg",
                    ".jpeg", ".tif", ".tiff")  # fmt: skip
# volume array axes are (z, y, x); "axial" slices along z, "coronal" along y, "sagittal" x
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


@lru_cache(maxsize=1)
def window_presets() -> dict[str, Any]:
    """The presets in ``configs/windows.yaml``."""
    with config_path("windows.yaml").open() as fh:
        return dict(yaml.safe_load(fh))


def _window_bounds(
    values: npt.NDArray[np.floating[Any]], modality: str, preset: str | None
) -> tuple[float, float, str]:
    presets = window_presets()
    if modality.upper() == "CT" and preset != "percentile":
        name = preset or presets["default_ct"]
        if name not in presets["ct"]:
            raise ValueError(f"unknown CT window {name!r}; choose from {sorted(presets['ct'])}")
        win = presets["ct"][name]
        return win["level"] - win["width"] / 2.0, win["level"] + win["width"] / 2.0, name
    pct = presets["mr"]["percentile"]
    lo, hi = np.percentile(values, [pct["low"], pct["high"]])
    return float(lo), float(hi), "percentile"


def window_to_uint8(
    image: npt.ArrayLike,
    modality: str = "CT",
    preset: str | None = None,
    bounds: tuple[float, float] | None = None,
) -> npt.NDArray[np.uint8]:
    """Map intensities to 0..255.

    Args:
        image: array in physical units (HU for CT after rescale), any shape.
        modality: ``CT`` uses a (width, level) window; anything else the percentiles.
        preset: a CT preset name from ``configs/windows.yaml`` (default ``default_ct``), or
            ``percentile`` to force the percentile mapping.
        bounds: explicit (low, high), overriding modality and preset.

    Raises:
        ValueError: unknown preset.
    """
    arr = np.asarray(image, dtype=np.float64)
    lo, hi = bounds if bounds is not None else _window_bounds(arr, modality, preset)[:2]
    scaled = (np.clip(arr, lo, hi) - lo) / max(hi - lo, 1e-6) * 255.0
    return np.round(scaled).astype(np.uint8)


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def dicom_to_png(path: Path, preset: str | None = None) -> bytes:
    """Read a single-frame DICOM, apply rescale slope/intercept and a window, encode PNG."""
    vol = read_volume(path)
    if vol.array.shape[0] != 1:
        raise ValueError(f"{path.name}: expected a single frame, got {vol.array.shape[0]}")
    return png_bytes(window_to_uint8(vol.array[0], vol.modality, preset))


# -- volumes ---------------------------------------------------------------------------------
@dataclass
class Volume:
    """An image as a (z, y, x) array plus its physical geometry (SimpleITK conventions).

    Attributes:
        array: (Z, Y, X) float64 intensities (Z = 1 for 2-D images); RGB images are (1, Y, X, 3)
            uint8.
        spacing, origin: per axis in (x, y, z) order, millimetres.
        direction: 9 direction-cosine values (row-major 3×3), x/y/z order.
        modality: DICOM modality (``CT``, ``MR``, …) or ``OT`` when unknown.
        source: the file or folder read.
    """

    array: npt.NDArray[Any]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    modality: str
    source: Path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def find_inputs(path: Path) -> list[Path]:
    """Files and DICOM series folders under ``path`` that ``read_volume`` understands.

    A folder holding ``.dcm`` files (or extension-less DICOM) is one series; other files are
    listed individually, sorted.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    out: list[Path] = []
    for folder in sorted({p.parent for p in path.rglob("*") if p.is_file()}):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        dicoms = [p for p in files if p.suffix.lower() == ".dcm"]
        if len(dicoms) > 1 and _is_series(folder):
            out.append(folder)
            files = [p for p in files if p not in dicoms]
        out.extend(p for p in files if _suffix(p) in MEDICAL_SUFFIXES)
    return out


def _is_series(folder: Path) -> bool:
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    return len(ids) == 1 and len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))) > 1


def read_volume(path: Path) -> Volume:
    """Read any supported input into a :class:`Volume`.

    Raises:
        ValueError: the file is not a readable image (message says why).
    """
    import SimpleITK as sitk

    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            names = reader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise ValueError(f"{path} holds no DICOM series")
            reader.SetFileNames(names)
            reader.MetaDataDictionaryArrayUpdateOn()
            reader.LoadPrivateTagsOn()
            image = reader.Execute()
            modality = _tag(reader.GetMetaData(0, "0008|0060") if
                            reader.HasMetaDataKey(0, "0008|0060") else "OT")  # fmt: skip
            return _from_sitk(image, modality, path)
        suffix = _suffix(path)
        if suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            return _from_pillow(path)
        if suffix == ".dcm":
            return _from_pydicom(path)
        image = sitk.ReadImage(str(path))
        return _from_sitk(image, "OT", path)
    except ValueError:
        raise
    except Exception as exc:  # SimpleITK/pydicom/Pillow raise many types for bad files
        raise ValueError(
            f"{path.name}: not a readable image ({type(exc).__name__}: {exc})"
        ) from exc


def _tag(value: str) -> str:
    return value.strip() or "OT"


def _geometry3(values: tuple[float, ...], fill: float) -> tuple[float, float, float]:
    vals = list(values)[:3] + [fill] * (3 - len(values))
    return (float(vals[0]), float(vals[1]), float(vals[2]))


def _from_sitk(image: Any, modality: str, source: Path) -> Volume:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = array.astype(np.uint8) if array.dtype != np.uint8 else array
        if dim == 2:
            array = array[None]
    else:
        array = array.astype(np.float64)
        if dim == 2:
            array = array[None]
        elif dim != 3:
            raise ValueError(f"{source.name}: {dim}-D images are not supported")
    direction = tuple(float(v) for v in image.GetDirection())
    if dim == 2:
        direction = (direction[0], direction[1], 0.0, direction[2], direction[3], 0.0, 0, 0, 1)
    return Volume(
        array=array,
        spacing=_geometry3(image.GetSpacing(), 1.0),
        origin=_geometry3(image.GetOrigin(), 0.0),
        direction=tuple(float(v) for v in direction),
        modality=modality,
        source=source,
    )


def _from_pydicom(path: Path) -> Volume:
    import pydicom

    ds = pydicom.dcmread(str(path))
    pixels = ds.pixel_array.astype(np.float64)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3:
        raise ValueError(f"{path.name}: colour DICOM is not supported, got {pixels.shape}")
    row, col = (float(v) for v in getattr(ds, "PixelSpacing", [1.0, 1.0]))
    thickness = float(getattr(ds, "SliceThickness", 1.0) or 1.0)
    origin = tuple(float(v) for v in getattr(ds, "ImagePositionPatient", [0.0, 0.0, 0.0]))
    cosines = [float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    normal = np.cross(cosines[:3], cosines[3:])
    direction = (cosines[0], cosines[3], normal[0], cosines[1], cosines[4], normal[1],
                 cosines[2], cosines[5], normal[2])  # fmt: skip
    return Volume(
        array=pixels,
        spacing=(col, row, thickness),
        origin=_geometry3(origin, 0.0),
        direction=tuple(float(v) for v in direction),
        modality=_tag(str(getattr(ds, "Modality", "OT"))),
        source=path,
    )


def _from_pillow(path: Path) -> Volume:
    with Image.open(path) as im:
        array: npt.NDArray[Any]
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
            array = np.asarray(im, dtype=np.float64)[None]
        else:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)[None]
    return Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                  (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), "OT", path)  # fmt: skip


# -- slicing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceMeta:
    """What a task must remember to put its mask back into the source volume.

    Attributes:
        source: the file or series folder (as given to the importer).
        axis: ``axial`` | ``coronal`` | ``sagittal``; index: slice index along that axis.
        shape: the volume's (Z, Y, X) array shape.
        spacing, origin, direction: the volume's SimpleITK geometry.
        modality, window: how the slice was windowed.
    """

    source: str
    axis: str
    index: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    modality: str
    window: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SliceMeta:
        return cls(
            source=str(data["source"]),
            axis=str(data["axis"]),
            index=int(data["index"]),
            shape=tuple(int(v) for v in data["shape"]),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in data["spacing"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in data["origin"]),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in data["direction"]),
            modality=str(data["modality"]),
            window=str(data["window"]),
        )


def slice_volume(
    vol: Volume,
    axis: str = "axial",
    every: int = 1,
    content_only: bool = False,
    preset: str | None = None,
    modality: str | None = None,
) -> Iterator[tuple[npt.NDArray[np.uint8], SliceMeta]]:
    """Yield (8-bit slice, metadata) for the chosen slices of a volume.

    Args:
        axis: ``axial`` (along Z), ``coronal`` (Y) or ``sagittal`` (X).
        every: keep every Nth slice (N ≥ 1).
        content_only: skip slices whose windowed image is (nearly) constant.
        preset: CT window preset, or ``percentile``.
        modality: override the modality read from the file (e.g. ``CT`` for a NIfTI in HU).
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {sorted(AXES)}, got {axis!r}")
    if every < 1:
        raise ValueError("every must be >= 1")
    mod = (modality or vol.modality).upper()
    rgb = vol.array.ndim == 4
    if rgb:
        lo = hi = 0.0
        window = "rgb"
    else:
        lo, hi, window = _window_bounds(vol.array, mod, preset)
    ax = AXES[axis] if vol.array.shape[0] > 1 else 0
    shape = tuple(int(v) for v in vol.array.shape[:3])
    for index in range(0, vol.array.shape[ax], every):
        plane = np.take(vol.array, index, axis=ax)
        image = plane.astype(np.uint8) if rgb else window_to_uint8(plane, bounds=(lo, hi))
        if content_only and int(image.max()) - int(image.min()) < 8:
            continue
        yield (
            image,
            SliceMeta(
                source=str(vol.source),
                axis=axis if vol.array.shape[0] > 1 else "axial",
                index=index,
                shape=(shape[0], shape[1], shape[2]),
                spacing=vol.spacing,
                origin=vol.origin,
                direction=vol.direction,
                modality=mod,
                window=window,
            ),
        )


def mask_to_volume(mask: npt.ArrayLike, meta: SliceMeta) -> Any:
    """Place a 2-D slice mask into an empty volume of the source geometry (a SimpleITK image).

    Raises:
        ValueError: the mask's shape is not that of the slice.
    """
    import SimpleITK as sitk

    m = np.asarray(mask).astype(np.uint8)
    volume = np.zeros(meta.shape, dtype=np.uint8)
    ax = AXES[meta.axis]
    expected = tuple(s for i, s in enumerate(meta.shape) if i != ax)
    if m.shape != expected:
        raise ValueError(f"mask shape {m.shape} is not the slice shape {expected}")
    index: list[Any] = [slice(None)] * 3
    index[ax] = meta.index
    volume[tuple(index)] = m
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(meta.spacing)
    image.SetOrigin(meta.origin)
    image.SetDirection(meta.direction)
    return image
