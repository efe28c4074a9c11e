"""Image–mask arrays → the arrays the segmenter trains on (gray, resize, tile).

Pure numpy + Pillow; no torch, no MONAI, no files: reading folders of pairs is the app's
job (:func:`medcrowd.pairs.load_pairs`, :func:`medcrowd.pairs.binary_arrays`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "GRAY_MODES",
    "GrayMode",
    "prepare",
    "resize_pair",
    "tiles",
    "to_gray",
]

U8 = npt.NDArray[np.uint8]
GrayMode = Literal["luminance", "green"]
GRAY_MODES: tuple[str, ...] = ("luminance", "green")


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
    """Image–mask pairs → the N×size×size uint8 gray images and {0, 1} masks a Segmenter trains on.

    ``mode="resize"`` squashes each image to one ``size``×``size`` input (:func:`resize_pair`);
    ``mode="tile"`` cuts native-resolution tiles (:func:`tiles`). Use the same ``mode`` and
    ``gray`` in :class:`segmenter.model.SegmenterConfig` (``input_mode``, ``gray``) so that
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
