"""Image–mask pairs on disk → arrays the segmenter trains on (load, gray, resize, tile).

Pure numpy + Pillow; no torch, no MONAI. Three folder layouts are read by :func:`load_pairs`:

* generic: ``root/images/<name>.<ext>`` + ``root/masks/<name>.png`` (``medcrowd export`` /
  ``medcrowd synth`` pairs folders);
* ISBI 2012 EM: ``root/image/<k>.png`` + ``root/label/<k>.png``. Its labels are 255 = cell
  interior, 0 = membrane, so pass ``invert_masks=True`` to segment the membranes;
* DRIVE: ``root/images/<id>_training.tif`` (or ``_test.tif``) + ``root/manual1/<id>_manual1.gif``
  (or the original name ``1st_manual/``); the field-of-view masks in ``root/mask/`` are read by
  :func:`load_fov_masks`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "GRAY_MODES",
    "IMAGE_SUFFIXES",
    "load_fov_masks",
    "load_pairs",
    "prepare",
    "resize_pair",
    "tiles",
    "to_gray",
]

U8 = npt.NDArray[np.uint8]
GrayMode = Literal["luminance", "green"]
GRAY_MODES: tuple[str, ...] = ("luminance", "green")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
_DRIVE_MANUAL = ("manual1", "1st_manual")


def _natural_key(name: str) -> list[int | str]:
    """Sort key that puts ``2`` before ``10`` (ISBI slices are named 0.png … 29.png)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _files(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: _natural_key(p.stem))


def _read_image(path: Path) -> np.ndarray:
    """HW uint8 gray or HWC uint8 RGB (palette/LA/RGBA/16-bit files are converted)."""
    with Image.open(path) as img:
        if img.mode in ("L", "RGB"):
            return np.asarray(img).copy()
        if img.mode in ("I;16", "I;16B", "I", "F"):
            return to_gray(np.asarray(img))
        return np.asarray(img.convert("RGB" if img.mode in ("P", "RGBA", "CMYK") else "L")).copy()


def _read_mask(path: Path, invert: bool) -> U8:
    """Any nonzero pixel (palette index for P-mode GIFs) is foreground; RGB: any channel."""
    with Image.open(path) as img:
        arr = np.asarray(img)
    fg = np.asarray(arr.any(axis=-1) if arr.ndim == 3 else arr != 0, dtype=bool)
    if invert:
        fg = ~fg
    return np.asarray(fg, dtype=np.uint8)


def _layout(root: Path) -> tuple[Path, Path, str]:
    """(image folder, mask folder, layout name) for the first layout that ``root`` matches."""
    if (root / "images").is_dir():
        if (root / "masks").is_dir():
            return root / "images", root / "masks", "generic"
        for manual in _DRIVE_MANUAL:
            if (root / manual).is_dir():
                return root / "images", root / manual, "drive"
    if (root / "image").is_dir() and (root / "label").is_dir():
        return root / "image", root / "label", "isbi"
    raise FileNotFoundError(
        f"{root} has no known image–mask layout: expected images/ + masks/, image/ + label/ "
        "(ISBI 2012) or images/ + manual1/ (DRIVE)"
    )


def _drive_id(stem: str) -> str:
    """``21_training`` / ``01_test`` / ``21_manual1`` / ``21_training_mask`` → ``21`` / ``01``."""
    return stem.split("_", 1)[0]


def load_pairs(
    root: Path, invert_masks: bool = False
) -> tuple[list[str], list[np.ndarray], list[U8]]:
    """Read every image with its mask from ``root`` (layouts in the module docstring).

    Args:
        root: the folder holding the layout's two sub-folders.
        invert_masks: foreground = mask pixels that are 0 (ISBI: segment the membranes).

    Returns:
        ``(names, images, masks)`` in natural name order: names are file stems (DRIVE: the id,
        ``"21"``); images HW uint8 gray or HWC uint8 RGB as stored; masks HW uint8 {0, 1} of
        the same HW, any nonzero stored value = 1 (before ``invert_masks``).

    Raises:
        FileNotFoundError: ``root`` is missing or matches no layout.
        ValueError: an image without a mask, or an image and mask of different size.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no data folder at {root}")
    image_dir, mask_dir, layout = _layout(root)
    masks_by_key: dict[str, Path] = {}
    for path in _files(mask_dir):
        key = _drive_id(path.stem) if layout == "drive" else path.stem
        masks_by_key.setdefault(key, path)
    matched: list[tuple[str, Path, Path]] = []
    missing: list[str] = []
    for path in _files(image_dir):
        key = _drive_id(path.stem) if layout == "drive" else path.stem
        mask_path = masks_by_key.get(key)
        if mask_path is None:
            missing.append(path.name)
        else:
            matched.append((key, path, mask_path))
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir}: {shown}"
        )
    names: list[str] = []
    images: list[np.ndarray] = []
    masks: list[U8] = []
    for key, path, mask_path in matched:
        image = _read_image(path)
        mask = _read_mask(mask_path, invert_masks)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{path.name} is {image.shape[1]}×{image.shape[0]} but its mask "
                f"{mask_path.name} is {mask.shape[1]}×{mask.shape[0]}"
            )
        names.append(key)
        images.append(image)
        masks.append(mask)
    return names, images, masks


def load_fov_masks(root: Path, names: Sequence[str]) -> list[U8]:
    """DRIVE field-of-view masks (``root/mask/<id>_*mask.gif``) for :func:`load_pairs` names.

    Returns HW uint8 {0, 1} masks, 1 = inside the circular field of view.

    Raises:
        FileNotFoundError: no ``mask/`` folder or no FOV mask for one of the ids.
    """
    folder = Path(root) / "mask"
    if not folder.is_dir():
        raise FileNotFoundError(f"no field-of-view folder {folder}")
    by_id = {_drive_id(p.stem): p for p in _files(folder)}
    out = []
    for name in names:
        if name not in by_id:
            raise FileNotFoundError(f"no field-of-view mask for {name} in {folder}")
        out.append(_read_mask(by_id[name], invert=False))
    return out


def to_gray(image: np.ndarray, mode: GrayMode = "luminance") -> U8:
    """Any image → HW uint8 gray.

    Args:
        image: HW or HWC (C = 1, 3 or 4; alpha is dropped) array of any dtype. uint8 is used as
            is; bool becomes {0, 255}; other dtypes are min–max scaled to 0…255 per image.
        mode: ``"luminance"`` (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) or ``"green"`` (the
            green channel, the usual choice for fundus photographs such as DRIVE, where vessels
            have the best contrast). Gray input is returned unchanged for both.
    """
    if mode not in GRAY_MODES:
        raise ValueError(f"unknown gray mode {mode!r}; choose from {', '.join(GRAY_MODES)}")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if mode == "green":
            arr = rgb[..., 1]
        else:
            weights = np.array([0.299, 0.587, 0.114])
            gray = rgb.astype(np.float64) @ weights
            if arr.dtype == np.uint8:
                return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
            arr = gray
    if arr.ndim != 2:
        raise ValueError(f"expected an HW or HWC (C = 1, 3, 4) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    data = arr.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(data[finite].min()), float(data[finite].max())
    scaled = (data - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(data)
    return np.clip(np.rint(np.where(finite, scaled, 0.0)), 0, 255).astype(np.uint8)


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Pillow resize of an HW or HWC uint8 array to ``size`` = (H, W)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr.copy()
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(arr).resize((w, h), method))


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[U8, U8]:
    """Squash an image and its mask to ``size``×``size`` (aspect ratio is not kept).

    The image (HW or HWC uint8) is resized bilinearly, the mask (HW, any nonzero = 1)
    by nearest neighbour so it stays binary. Returns ``(image, mask)`` uint8, the mask {0, 1}.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    img = np.asarray(image)
    msk = np.asarray(mask)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype} (use to_gray first)")
    if img.shape[:2] != msk.shape[:2] or msk.ndim != 2:
        raise ValueError(f"image {img.shape} and mask {msk.shape} must share H×W (mask HW)")
    out_mask = _resize((msk != 0).astype(np.uint8), (size, size), nearest=True)
    return _resize(img, (size, size), nearest=False), out_mask


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis covering all of ``length``; the last tile ends flush."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tiles(
    images: Sequence[np.ndarray] | np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    size: int,
    stride: int | None = None,
) -> tuple[U8, U8]:
    """Cut every image and its mask into ``size``×``size`` tiles at native resolution.

    Tiles start every ``stride`` pixels (default ``size``: no overlap) and one more flush with
    the right/bottom edge covers the rest, so every pixel is in at least one tile. Images
    smaller than ``size`` are zero-padded at the bottom/right (the mask with 0).

    Args:
        images: HW uint8 gray (or HWC uint8) images, sizes may differ.
        masks: HW masks, any nonzero = 1, each the HW of its image.

    Returns:
        ``(image_tiles, mask_tiles)``: N×size×size(×C) uint8 and N×size×size uint8 {0, 1},
        in image order, row-major within an image.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    step = size if stride is None else stride
    if step < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    out_i: list[np.ndarray] = []
    out_m: list[np.ndarray] = []
    for image, mask in zip(images, masks, strict=True):
        img = np.asarray(image)
        msk = (np.asarray(mask) != 0).astype(np.uint8)
        if img.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {img.dtype} (use to_gray first)")
        if img.shape[:2] != msk.shape or msk.ndim != 2:
            raise ValueError(f"image {img.shape} and mask {msk.shape} must share H×W (mask HW)")
        h, w = msk.shape
        if h < size or w < size:
            pad_h, pad_w = max(0, size - h), max(0, size - w)
            img = np.pad(img, [(0, pad_h), (0, pad_w)] + [(0, 0)] * (img.ndim - 2))
            msk = np.pad(msk, [(0, pad_h), (0, pad_w)])
            h, w = msk.shape
        for y in _starts(h, size, step):
            for x in _starts(w, size, step):
                out_i.append(img[y : y + size, x : x + size])
                out_m.append(msk[y : y + size, x : x + size])
    if not out_i:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, size, size), np.uint8)
    return np.stack(out_i).astype(np.uint8), np.stack(out_m).astype(np.uint8)


def prepare(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    size: int,
    mode: Literal["resize", "tile"] = "resize",
    gray: GrayMode = "luminance",
    stride: int | None = None,
) -> tuple[U8, U8]:
    """Loaded pairs → the N×size×size uint8 gray images and {0, 1} masks a Segmenter trains on.

    ``mode="resize"`` squashes each image to one ``size``×``size`` input (:func:`resize_pair`);
    ``mode="tile"`` cuts native-resolution tiles (:func:`tiles`). Use the same ``mode`` and
    ``gray`` in :class:`segmenter.trainer.SegmenterConfig` (``input_mode``, ``gray``) so that
    ``predict_image`` sees images the way training did.
    """
    grays = [to_gray(im, gray) for im in images]
    if mode == "tile":
        return tiles(grays, masks, size, stride)
    if mode != "resize":
        raise ValueError(f"unknown mode {mode!r}; choose 'resize' or 'tile'")
    if len(grays) != len(masks):
        raise ValueError(f"{len(grays)} images but {len(masks)} masks")
    if not grays:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, size, size), np.uint8)
    pairs = [resize_pair(im, m, size) for im, m in zip(grays, masks, strict=True)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
