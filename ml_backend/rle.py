"""Label Studio brush masks: bool mask <-> the RLE list Label Studio stores.

Label Studio keeps a brush region as an RLE of the flattened RGBA canvas (4 bytes a pixel,
row-major, the mask in every channel). We delegate the bit layout to the SDK's converter,
whose round trip through a live Label Studio 1.23.2 is exact (DESIGN.md), and keep the
shape and dtype handling here so callers deal only in ``(H, W)`` bool arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from label_studio_sdk.converter.brush import decode_rle, mask2rle

__all__ = ["mask_to_rle", "rle_to_mask"]


def mask_to_rle(mask: npt.ArrayLike) -> list[int]:
    """Encode a mask as Label Studio brush RLE.

    Args:
        mask: (H, W) array; any non-zero value is foreground (bool, 0/1 or 0/255).

    Returns:
        The RLE byte values as a list of ints, ready for ``value["rle"]``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {arr.shape}")
    canvas = np.where(arr != 0, 255, 0).astype(np.uint8)
    return [int(v) for v in mask2rle(canvas)]


def rle_to_mask(rle: Sequence[int], height: int, width: int) -> npt.NDArray[np.bool_]:
    """Decode Label Studio brush RLE into an (height, width) bool mask.

    Any non-zero alpha counts as foreground (Label Studio's brush writes 255).

    Raises:
        ValueError: the RLE is malformed or does not hold ``height * width`` pixels.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    try:
        flat = decode_rle(list(rle))
    except (IndexError, ValueError, TypeError) as exc:
        raise ValueError(f"malformed brush RLE: {exc}") from exc
    expected = height * width * 4
    if flat.size != expected:
        raise ValueError(
            f"brush RLE holds {flat.size // 4} pixels, expected {height}x{width}="
            f"{height * width}; original_width/original_height do not match the mask"
        )
    return np.asarray(flat.reshape(height, width, 4)[:, :, 3] > 0)
