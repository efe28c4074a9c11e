"""Image–mask pairs on disk → :class:`Pair` arrays: one reader for every dataset layout.

:func:`load_pairs` detects the layout of ``root`` (first match in this order)::

    fused       root/images/task-<id>.<ext>  +  root/fused-<method>/masks/task-<id>.png
                (``medcrowd pull`` + ``medcrowd fuse``; ``method`` picks the folder; with
                ``method=None`` the only ``fused-*`` folder is used when no other layout fits)
    synthetic   root/images/<name>.png + root/masks/<name>.png with root/manifest.jsonl or a
                root/dataset.json saying ``"synthetic": true`` (``medcrowd synth generate``)
    pairs       root/images/<name>.<ext> + root/masks/<name>.<ext> (``medcrowd export``-style
                folders, Shenzhen chest X-rays ``shenzhen_cxr/``)
    drive       root/images/<id>_<split>.tif + root/manual1/<id>_manual1.gif (or the original
                ``1st_manual/``; ``rater="manual2"`` picks the second rater of DRIVE ``test/``),
                field of view from root/mask/<id>_<split>_mask.gif when present
    isbi        root/image/<k>.png + root/label/<k>.png (ISBI 2012 ``train/``; its labels are
                255 = cell interior, 0 = membrane: pass ``invert_masks=True`` for membranes)
    bubil       root/RawImages/B<k>.png + root/GoldStandard/seg_B<k>.png (BU-BIL Dataset 1;
                ``rater="Person3_Amira"`` reads root/ExpertsAnnotations/Person3_Amira/ instead).
                Its masks draw the cell black on white; they are read as cell = 255, rest = 0.

Reading rules, the same for every layout:

* images: 8-bit gray files → (H, W) uint8; colour files → (H, W, 3) uint8 RGB, except a
  palette file whose colours are all gray → (H, W); 16-bit / float files are min–max scaled
  to 0…255 (gray).
* masks: (H, W) uint8 values as stored (gray and palette files: the stored value / palette
  index; 1-bit files: {0, 1}; anything else converted to 8-bit gray). 0 is background.
  ``invert_masks`` maps a binary mask's 0 to 255 and the rest to 0; ``threshold`` maps values
  ``>= threshold`` to 255 and the rest to 0 first (e.g. 128 for Shenzhen's soft lung edges).
* pairing: an image and a mask pair up by file stem (DRIVE: the numeric id, BU-BIL: the stem
  without ``seg_``, case-insensitively); every image of an expert layout must have a mask
  (``ValueError`` otherwise), a fused dataset's images without a fused mask are skipped (not
  every task was annotated), masks without an image are ignored.
* order: natural name order (``2`` before ``10``); the fused layout keeps the order that
  ``medcrowd synth`` always used (all-digit names numerically first, then the rest by string).

The volume set ``msd_spleen_ct/`` is not a pairs folder and is not read here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "Pair",
    "binary_arrays",
    "label_values",
    "load_pairs",
]

U8 = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
LAYOUTS: dict[str, str] = {
    "fused": "images/ + fused-<method>/masks/ (medcrowd pull + fuse)",
    "synthetic": "images/ + masks/ + manifest.jsonl (medcrowd synth generate)",
    "pairs": "images/ + masks/",
    "drive": "images/ + manual1/ or 1st_manual/ (+ mask/) (DRIVE)",
    "isbi": "image/ + label/ (ISBI 2012)",
    "bubil": "RawImages/ + GoldStandard/ or ExpertsAnnotations/<rater>/ (BU-BIL)",
}
"""Layout name → what it looks like on disk, in detection order."""

_DRIVE_MANUAL = ("manual1", "1st_manual")


@dataclass(frozen=True, eq=False)
class Pair:
    """One image–mask pair at its original size.

    Attributes:
        name: stable id: the file stem (``task-12``, ``syn-00003``, ``7``; DRIVE: the id
            ``21``; BU-BIL: ``B01``).
        image: (H, W) uint8 gray or (H, W, 3) uint8 RGB.
        mask: (H, W) uint8 label values as stored (0 = background).
        source: ``"expert"`` (a labelled dataset), ``"fused"`` (a fused crowd mask) or
            ``"synthetic"`` (a ``medcrowd synth generate`` output).
        fov: (H, W) bool field of view (DRIVE), else None.
        image_path, mask_path: the files read (provenance for manifests), or None.
    """

    name: str
    image: U8
    mask: U8
    source: str = "expert"
    fov: npt.NDArray[np.bool_] | None = None
    image_path: Path | None = None
    mask_path: Path | None = None


# -- file reading ---------------------------------------------------------------------------
def _read_image(path: Path) -> U8:
    """(H, W) uint8 gray or (H, W, 3) uint8 RGB (rules in the module docstring)."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raw = np.asarray(im, dtype=np.float64)
            lo, hi = float(raw.min()), float(raw.max())
            scaled = (raw - lo) / (hi - lo or 1.0) * 255
            return np.asarray(scaled.round(), dtype=np.uint8)
        if im.mode in ("L", "1", "P") and not (im.mode == "P" and "transparency" in im.info):
            gray = im.convert("RGB") if im.mode == "P" else im.convert("L")
            arr = np.asarray(gray, dtype=np.uint8)
            if arr.ndim == 3 and (arr == arr[..., :1]).all():
                arr = arr[..., 0].copy()
            return arr
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read_mask(path: Path) -> U8:
    """(H, W) uint8 values as stored (palette index for P files, {0, 1} for 1-bit files)."""
    with Image.open(path) as im:
        arr = np.asarray(im if im.mode in ("L", "P", "1") else im.convert("L"))
    return np.asarray(arr, dtype=np.uint8)


def _read_bubil_mask(path: Path) -> U8:
    """BU-BIL masks draw the cell black on white (README): cell (gray < 128) → 255."""
    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"))
    return np.where(gray < 128, 255, 0).astype(np.uint8)


def _natural_key(name: str) -> list[int | str]:
    """Sort key that puts ``2`` before ``10`` (ISBI slices are named 0.png … 29.png)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _synth_order(name: str) -> tuple[int, int | str]:
    """The order ``medcrowd synth`` read fused datasets in: all-digit names first."""
    return (0, int(name)) if name.isdigit() else (1, name)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _by_key(files: list[Path], key: Callable[[str], str]) -> dict[str, Path]:
    """key → file; of several files with one key the first suffix of IMAGE_SUFFIXES wins."""
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    out: dict[str, Path] = {}
    for p in sorted(files, key=lambda p: (rank[p.suffix.lower()], p.name)):
        out.setdefault(key(p.stem), p)
    return out


# -- layouts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    name: str
    image_dir: Path
    mask_dir: Path
    source: str
    key: Callable[[str], str]
    mask_key: Callable[[str], str]
    order: Callable[[str], Any]
    strict: bool  # every image needs a mask
    read_mask: Callable[[Path], U8]
    fov_dir: Path | None = None


def _stem(s: str) -> str:
    return s


def _drive_id(stem: str) -> str:
    """``21_training`` / ``01_test`` / ``21_manual1`` / ``21_training_mask`` → ``21``."""
    return stem.split("_", 1)[0]


def _bubil_key(stem: str) -> str:
    """``seg_B01`` / ``Seg_B18`` / ``B01`` → ``B01`` (names match case-insensitively)."""
    s = stem[4:] if stem.lower().startswith("seg_") else stem
    return s.upper()


def _is_synthetic(root: Path) -> bool:
    if (root / "manifest.jsonl").is_file():
        return True
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and bool(data.get("synthetic"))
    return False


def _fused_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("fused-*/masks") if p.is_dir())


def _unknown(root: Path, method: str | None) -> ValueError:
    known = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
    hint = f" (no fused-{method}/masks/: run medcrowd fuse --method {method})" if method else ""
    return ValueError(f"{root} matches no known pairs layout{hint}. Known layouts: {known}")


def _detect(root: Path, method: str | None, rater: str | None) -> _Layout:
    images = root / "images"

    def plain(name: str, mask_dir: Path, source: str) -> _Layout:
        return _Layout(name, images, mask_dir, source, _stem, _stem, _natural_key, True,
                       _read_mask)  # fmt: skip

    def fused(mask_dir: Path) -> _Layout:
        return _Layout("fused", images, mask_dir, "fused", _stem, _stem, _synth_order, False,
                       _read_mask)  # fmt: skip

    if method is not None and (root / f"fused-{method}" / "masks").is_dir():
        return fused(root / f"fused-{method}" / "masks")
    if (root / "dataset.json").is_file() and not _is_synthetic(root) and images.is_dir():
        # pulled by medcrowd pull: masks/task-<id>/ holds raw annotations, not pairs
        folders = _fused_folders(root)
        if method is None and len(folders) == 1:
            return fused(folders[0])
        if method is None and len(folders) > 1:
            methods = ", ".join(p.parent.name.removeprefix("fused-") for p in folders)
            raise ValueError(f"{root} holds fused masks of several methods ({methods}): pick one")
        if method is None:
            raise ValueError(f"{root} is a pulled dataset without fused masks: run medcrowd fuse")
        raise ValueError(
            f"{root} is a pulled dataset without fused-{method}/masks/: "
            f"run medcrowd fuse --method {method}"
        )
    if images.is_dir() and (root / "masks").is_dir():
        if _is_synthetic(root):
            return plain("synthetic", root / "masks", "synthetic")
        return plain("pairs", root / "masks", "expert")
    if images.is_dir():
        manuals = (rater,) if rater else _DRIVE_MANUAL
        for manual in manuals:
            if (root / manual).is_dir():
                fov = root / "mask"
                return _Layout("drive", images, root / manual, "expert", _drive_id, _drive_id,
                               _natural_key, True, _read_mask,
                               fov if fov.is_dir() else None)  # fmt: skip
        if rater:
            raise ValueError(f"{root} has no rater folder {rater}/ beside images/")
    if (root / "image").is_dir() and (root / "label").is_dir():
        return _Layout("isbi", root / "image", root / "label", "expert", _stem, _stem,
                       _natural_key, True, _read_mask)  # fmt: skip
    if (root / "RawImages").is_dir():
        mask_dir = root / "ExpertsAnnotations" / rater if rater else root / "GoldStandard"
        if not mask_dir.is_dir():
            raise ValueError(f"{root} is a BU-BIL folder without {mask_dir.relative_to(root)}/")
        return _Layout("bubil", root / "RawImages", mask_dir, "expert", _bubil_key, _bubil_key,
                       _natural_key, True, _read_bubil_mask)  # fmt: skip
    folders = _fused_folders(root)
    if method is None and len(folders) == 1 and images.is_dir():
        return fused(folders[0])
    raise _unknown(root, method)


def load_pairs(
    root: Path,
    *,
    method: str | None = None,
    invert_masks: bool = False,
    rater: str | None = None,
    threshold: int | None = None,
) -> list[Pair]:
    """Every image–mask pair of ``root``, whatever its layout (module docstring).

    Args:
        root: the folder holding the layout's sub-folders.
        method: fusion method of a fused dataset (reads ``fused-<method>/masks/``); when that
            folder is missing the other layouts are tried.
        invert_masks: binary masks only: stored 0 → 255, the rest → 0 (ISBI: membranes).
        rater: DRIVE ``manual1`` / ``manual2`` / ``1st_manual`` folder, or BU-BIL
            ``ExpertsAnnotations/<rater>`` folder (default: ``GoldStandard/``).
        threshold: masks ``>= threshold`` → 255, the rest → 0 (before ``invert_masks``).

    Returns:
        the pairs in the layout's order (module docstring), each with ``source`` set.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no layout fits (the message names ``root`` and the known layouts), an
            image of an expert layout has no mask, a mask's size differs from its image's,
            nothing pairs up, or ``invert_masks`` meets a mask with more than two values.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    layout = _detect(root, method, rater)
    masks = _by_key(_files(layout.mask_dir), layout.mask_key)
    images = _by_key(_files(layout.image_dir), layout.key)
    if layout.strict:
        missing = sorted((k for k in images if k not in masks), key=layout.order)
        if missing:
            shown = ", ".join(images[k].name for k in missing[:5])
            more = " …" if len(missing) > 5 else ""
            raise ValueError(
                f"{len(missing)} image(s) in {layout.image_dir} have no mask in "
                f"{layout.mask_dir}: {shown}{more}"
            )
    fovs = _by_key(_files(layout.fov_dir), _drive_id) if layout.fov_dir else {}
    pairs: list[Pair] = []
    for key in sorted((k for k in images if k in masks), key=layout.order):
        image_path, mask_path = images[key], masks[key]
        image = _read_image(image_path)
        mask = layout.read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{mask_path} is {mask.shape[1]}×{mask.shape[0]} but {image_path} is "
                f"{image.shape[1]}×{image.shape[0]}"
            )
        if threshold is not None:
            mask = np.where(mask >= threshold, 255, 0).astype(np.uint8)
        if invert_masks:
            if len(np.unique(mask)) > 2:
                raise ValueError(f"inverting masks needs binary masks; {mask_path} has more values")
            mask = np.where(mask == 0, 255, 0).astype(np.uint8)
        fov = None
        if layout.fov_dir is not None:
            if key not in fovs:
                raise ValueError(f"no field-of-view mask for {key} in {layout.fov_dir}")
            fov = _read_mask(fovs[key]) != 0
            if fov.shape != mask.shape:
                raise ValueError(f"{fovs[key]} is not the size of {image_path}")
        pairs.append(Pair(key, image, mask, layout.source, fov, image_path, mask_path))
    if not pairs:
        raise ValueError(f"no image in {layout.image_dir} matches a mask in {layout.mask_dir}")
    return pairs


# -- views ----------------------------------------------------------------------------------
def _luminance(image: U8) -> U8:
    """HWC uint8 RGB → HW uint8 (ITU-R 601 luma, rounded: segmenter's ``to_gray``)."""
    gray = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def binary_arrays(
    pairs: Sequence[Pair], *, gray: bool = True
) -> tuple[list[str], list[U8], list[U8]]:
    """Names, images and {0, 1} masks: the form the segmenter trains on.

    Args:
        pairs: from :func:`load_pairs`.
        gray: convert RGB images to (H, W) gray by luminance (0.299 R + 0.587 G + 0.114 B,
            rounded); False keeps each image as read ((H, W) or (H, W, 3) uint8), e.g. to pick
            the green channel of fundus photographs later.

    Returns:
        ``(names, images, masks)`` in ``pairs`` order; masks (H, W) uint8, 1 where the stored
        mask is > 0.
    """
    names = [p.name for p in pairs]
    images = [_luminance(p.image) if gray and p.image.ndim == 3 else p.image for p in pairs]
    masks = [(p.mask > 0).astype(np.uint8) for p in pairs]
    return names, images, masks


def label_values(pairs: Sequence[Pair]) -> list[int]:
    """Sorted stored mask values over all pairs, background 0 first (class id = index).

    Raises:
        ValueError: every mask is empty.
    """
    values = sorted({0} | {int(v) for p in pairs for v in np.unique(p.mask)})
    if len(values) < 2:
        raise ValueError("every mask is empty: nothing to learn")
    return values
