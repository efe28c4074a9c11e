"""Image and box preprocessing shared by the predictors: validate, window, resize, pad, undo.

The pipeline for one image is

1. :func:`validate_image` — reject what no model can use (wrong rank, empty, huge, NaN) with
   :class:`~ml_backend.errors.InvalidInput`; squeeze ``(H, W, 1)``, drop an alpha channel.
2. :func:`to_uint8_rgb` — intensity normalisation to ``(H, W, 3) uint8``: 8-bit input passes
   through unchanged, 16-bit / float input (CT in Hounsfield units, MR, microscopy) is clipped
   to a percentile range or a CT window (:data:`CT_WINDOWS`) and scaled to 0–255.
3. Per model: resize (longest side for LiteMedSAM, a square stretch for MedSAM ViT-B), min-max
   normalise to [0, 1], pad bottom/right (:func:`resize_longest_side`, :func:`pad_bottom_right`,
   :func:`minmax_normalise`). :class:`Geometry` remembers the sizes so that boxes go forward
   (:meth:`Geometry.scale_box`) and low-resolution mask logits come back to the original image
   (:func:`logits_to_mask`).

Coordinates: boxes are ``XYXY`` pixel *edges* in the original image, floats; a box covering
columns ``c0..c1`` and rows ``r0..r1`` inclusive is ``(c0, r0, c1 + 1, r1 + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

from ml_backend.errors import InvalidInput

__all__ = [
    "CT_WINDOWS",
    "DEFAULT_MAX_SIDE",
    "Geometry",
    "WindowSpec",
    "logits_to_mask",
    "minmax_normalise",
    "pad_bottom_right",
    "resize_longest_side",
    "resize_to",
    "to_uint8_rgb",
    "validate_box",
    "validate_image",
    "window_tag",
]

DEFAULT_MAX_SIDE = 8192
"""Largest accepted image side in pixels; bigger images are rejected, not silently shrunk."""

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}
"""CT window presets as ``(width, level)`` in Hounsfield units."""

DEFAULT_PERCENTILES = (0.5, 99.5)

WindowSpec = str | tuple[float, float] | None
"""How to map >8-bit intensities to uint8.

``None`` — percentile clip (0.5–99.5 %) for 16-bit / float input, identity for uint8;
``"percentile"`` — the same percentile clip for every dtype; a name in :data:`CT_WINDOWS`;
or an explicit ``(width, level)`` tuple in the image's units (e.g. HU).
"""


# --------------------------------------------------------------------------- validation


def validate_image(image: object, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Check a client image and bring it to ``(H, W)`` or ``(H, W, 3)``.

    Args:
        image: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA
            array; uint8, uint16, int16 (e.g. CT in HU), other integer or float dtypes.
        max_side: largest accepted height or width in pixels.

    Returns:
        A view of ``image``: ``(H, W)`` or ``(H, W, 3)``, dtype unchanged (alpha dropped).

    Raises:
        InvalidInput: not an array, wrong rank or channel count, non-numeric dtype, a side
            shorter than 2 or longer than ``max_side`` pixels, or non-finite values.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidInput(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise InvalidInput(
            f"image must be (H, W) or (H, W, C) with C in 1/3/4, got shape {image.shape}"
        )
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 4:
            image = image[:, :, :3]
        elif channels != 3:
            raise InvalidInput(
                f"image must have 1, 3 or 4 channels (last axis), got shape {image.shape}"
            )
    if image.dtype == np.bool_ or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise InvalidInput(f"image dtype must be integer or float, got {image.dtype}")
    height, width = image.shape[:2]
    if height < 2 or width < 2:
        raise InvalidInput(f"image must be at least 2×2 pixels, got {height}×{width} (H×W)")
    if max(height, width) > max_side:
        raise InvalidInput(
            f"image is {height}×{width} (H×W); the largest accepted side is {max_side} px"
        )
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InvalidInput("image contains NaN or infinite values")
    return image


def validate_box(
    box_xyxy: Sequence[float] | npt.ArrayLike,
    image_hw: tuple[int, int],
    tolerance: float = 1.0,
) -> np.ndarray:
    """Check a box against its image and clip it to the image.

    Args:
        box_xyxy: 4 numbers ``(x0, y0, x1, y1)``, XYXY pixel edges in the original image.
        image_hw: ``(H, W)`` of the original image.
        tolerance: how far (pixels) a box may stick out of the image and still be clipped
            (rounding in the client); further out is an error.

    Returns:
        ``(4,) float64`` box clipped to ``[0, W] × [0, H]``.

    Raises:
        InvalidInput: not 4 finite numbers, zero or negative width/height, or outside the
            image by more than ``tolerance``.
    """
    try:
        box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"box must be 4 numbers (x0, y0, x1, y1), got {box_xyxy!r}") from exc
    if box.shape != (4,):
        raise InvalidInput(f"box must be 4 numbers (x0, y0, x1, y1), got {box.size}")
    if not np.isfinite(box).all():
        raise InvalidInput(f"box has non-finite coordinates: {box.tolist()}")
    x0, y0, x1, y1 = box.tolist()
    if not (x1 > x0 and y1 > y0):
        raise InvalidInput(f"box must have x1 > x0 and y1 > y0 (positive area), got {box.tolist()}")
    height, width = image_hw
    if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
        raise InvalidInput(
            f"box {box.tolist()} lies outside the {width}×{height} (W×H) image "
            f"by more than {tolerance} px"
        )
    clipped = np.clip(box, 0.0, [width, height, width, height])
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        raise InvalidInput(f"box {box.tolist()} has no area inside the {width}×{height} image")
    return clipped


# --------------------------------------------------------------------------- intensities


def window_tag(window: WindowSpec) -> str:
    """A short stable string naming a window; it is part of the embedding cache key."""
    if window is None:
        return "auto"
    if isinstance(window, str):
        _check_window_name(window)
        return window
    width, level = (float(v) for v in window)
    return f"w{width:g}l{level:g}"


def _check_window_name(name: str) -> None:
    if name != "percentile" and name not in CT_WINDOWS:
        valid = ", ".join(["percentile", *CT_WINDOWS])
        raise ValueError(f"unknown window {name!r}; valid: {valid} or a (width, level) tuple")


def to_uint8_rgb(image: np.ndarray, window: WindowSpec = None) -> np.ndarray:
    """Intensity-normalise a validated image to ``(H, W, 3) uint8`` RGB.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` array as returned by :func:`validate_image`.
        window: see :data:`WindowSpec`. uint8 input with ``window=None`` passes unchanged.

    Returns:
        ``(H, W, 3) uint8``; grayscale is repeated into 3 channels.
    """
    if window is None and image.dtype == np.uint8:
        out = image
    else:
        data = image.astype(np.float32, copy=False)
        if window is None or window == "percentile":
            low, high = np.percentile(data, DEFAULT_PERCENTILES)
        else:
            if isinstance(window, str):
                _check_window_name(window)
                width, level = CT_WINDOWS[window]
            else:
                width, level = (float(v) for v in window)
            if width <= 0:
                raise ValueError(f"window width must be positive, got {width}")
            low, high = level - width / 2.0, level + width / 2.0
        span = max(float(high) - float(low), 1e-8)
        scaled = (np.clip(data, low, high) - low) * (255.0 / span)
        out = np.rint(scaled).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return np.ascontiguousarray(out)


def minmax_normalise(image: np.ndarray) -> np.ndarray:
    """``(x - min) / clip(max - min, 1e-8)`` over the whole array, as float32 in [0, 1]."""
    data = image.astype(np.float32)
    low = float(data.min())
    span = max(float(data.max()) - low, 1e-8)
    return (data - low) / span


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """Sizes linking an original image to the square model input.

    Attributes:
        original_hw: ``(H, W)`` of the original image.
        resized_hw: ``(h, w)`` of the resized image inside the ``input_size`` square (its
            top-left corner; the rest is padding). ``(input_size, input_size)`` for a stretch.
        input_size: side of the square model input in pixels (256 LiteMedSAM, 1024 MedSAM).
        box_scale_xy: factors taking original x and y pixels to input pixels.
    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_size: int
    box_scale_xy: tuple[float, float]

    @classmethod
    def longest_side(cls, original_hw: tuple[int, int], input_size: int) -> Geometry:
        """Resize so the longest side is ``input_size`` (aspect kept), pad bottom/right.

        Box scale is ``input_size / max(H, W)`` on both axes, as in LiteMedSAM's inference.
        """
        height, width = original_hw
        scale = input_size / max(height, width)
        resized = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
        return cls((height, width), resized, input_size, (scale, scale))

    @classmethod
    def stretch(cls, original_hw: tuple[int, int], input_size: int) -> Geometry:
        """Resize to ``input_size × input_size`` ignoring aspect (MedSAM ViT-B's inference)."""
        height, width = original_hw
        return cls(
            (height, width),
            (input_size, input_size),
            input_size,
            (input_size / width, input_size / height),
        )

    def scale_box(self, box_xyxy: np.ndarray) -> np.ndarray:
        """``(4,)`` XYXY original pixels → ``(4,) float32`` XYXY model-input pixels."""
        sx, sy = self.box_scale_xy
        return (np.asarray(box_xyxy, dtype=np.float64) * [sx, sy, sx, sy]).astype(np.float32)


def resize_to(image: np.ndarray, hw: tuple[int, int], upsample: str = "bilinear") -> np.ndarray:
    """Resize ``(H, W, 3) uint8`` to ``hw`` with Pillow.

    Shrinking uses area averaging (``BOX``), like OpenCV's ``INTER_AREA`` in the official
    LiteMedSAM inference; enlarging uses ``upsample`` (``"bilinear"`` or ``"bicubic"``).
    """
    height, width = hw
    if image.shape[:2] == (height, width):
        return image
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    resample = Image.Resampling.BOX if shrinking else filters[upsample]
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((width, height), resample=resample))


def resize_longest_side(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``(H, W, 3) uint8`` → ``geometry.resized_hw`` ``(h, w, 3) uint8``."""
    return resize_to(image, geometry.resized_hw)


def pad_bottom_right(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``(h, w, C)`` at the bottom and right to ``(size, size, C)``."""
    pad_h, pad_w = size - image.shape[0], size - image.shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad {image.shape[:2]} to {size}×{size}")
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))


def logits_to_mask(low_res_logits: torch.Tensor | np.ndarray, geometry: Geometry) -> np.ndarray:
    """Bring mask-decoder logits back to the original image and threshold them.

    Args:
        low_res_logits: ``(h_l, w_l)``, ``(1, h_l, w_l)`` or ``(1, 1, h_l, w_l)`` float logits
            over the square model input (256×256 for SAM-family decoders).
        geometry: the image's :class:`Geometry`.

    Returns:
        ``(H, W) bool`` mask in the original image, ``sigmoid(logit) > 0.5``.

    Steps: if the input was padded, crop the unpadded region (at the logits' resolution, i.e.
    ``resized_hw * h_l / input_size``, exact for LiteMedSAM where ``h_l = input_size``), then
    bilinear resize (``align_corners=False``) to ``(H, W)`` and keep logits > 0.
    """
    logits = torch.as_tensor(low_res_logits, dtype=torch.float32)
    logits = logits.reshape(1, 1, *logits.shape[-2:])
    low_h, low_w = logits.shape[-2:]
    new_h, new_w = geometry.resized_hw
    if (new_h, new_w) != (geometry.input_size, geometry.input_size):
        crop_h = max(1, round(new_h * low_h / geometry.input_size))
        crop_w = max(1, round(new_w * low_w / geometry.input_size))
        logits = logits[..., :crop_h, :crop_w]
    upsampled = F.interpolate(
        logits, size=geometry.original_hw, mode="bilinear", align_corners=False
    )
    return (upsampled[0, 0] > 0).cpu().numpy()
