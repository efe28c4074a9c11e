"""One box on one slice → a 3-D mask: slice-to-slice propagation with a stop rule.

:func:`propagate` is the library call; :class:`Propagator` holds the rule's parameters and
returns per-slice records (:class:`SliceStep`) for benchmarks, the CLI and the backend.

Steps, for a ``(D, H, W)`` stack of windowed uint8 slices and a box on slice ``index``:

1. Seed: the box → mask on slice ``index`` (the predictor's ``predict``). The seed mask's
   intensities give the structure's intensity model: median ``m`` and a robust spread
   ``s = 1.4826 · MAD`` (at least ``min_spread`` grey levels).
2. Walk up and down from the seed. On slice ``z``, prompt with the previous slice's accepted
   mask's box, padded by ``pad_px`` → raw mask.
3. Keep only the pixels of the raw mask whose intensity lies in ``m ± intensity_k · s`` and
   the connected parts of them that touch the previous mask (dilated by ``touch_px``); close
   small gaps (``closing_px``), fill holes, and intersect again with the raw mask.
4. Stop rule — the walk ends *before* slice ``z`` when the kept mask
   (a) has fewer than ``min_pixels`` pixels, or
   (b) is smaller than ``min_area_ratio`` × the previous slice's mask, or
   (c) keeps less than ``min_consistent`` of the raw mask (the model segments something
       else: past the organ's end a box prompt still returns *a* structure — the raw mask
       never vanishes on ``msd_spleen_ct`` and its predicted IoU stays ~0.88 there, so
       neither "stop when empty" nor the IoU score can end the walk).

Why intensity: the box prompt alone follows whatever fills the box once the organ ends;
a soft organ on a windowed CT slice is homogeneous, so a mask that mostly leaves the seed's
intensity range is a different structure. For modalities where that does not hold, set
``intensity_k=None``: then only (a), (b) and an overlap rule (the raw mask must have at
least ``min_overlap`` of its pixels inside the previous mask) apply.

Example (``ct_u8``: ``(D, H, W) uint8`` soft-tissue-windowed slices)::

    predictor = get_predictor("litemedsam", device="cpu")
    volume = propagate(predictor, ct_u8, index=13, box_xyxy=[60, 50, 140, 150])
    assert volume.shape == ct_u8.shape[:3] and volume.dtype == bool
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ml_backend.errors import InvalidInput

__all__ = ["Propagation", "Propagator", "SliceStep", "propagate"]


@dataclass(frozen=True)
class SliceStep:
    """What happened on one slice.

    Attributes:
        index: slice index.
        box: the XYXY pixel box prompt used on this slice.
        raw_pixels: pixels of the model's mask.
        kept_pixels: pixels after the intensity / connectivity filter.
        score: the model's predicted IoU.
        area_ratio: kept pixels / previous slice's kept pixels.
        consistent: kept / raw pixels.
        accepted: the mask went into the volume.
        reason: why the walk stopped here ("" when accepted).
    """

    index: int
    box: tuple[float, float, float, float]
    raw_pixels: int
    kept_pixels: int
    score: float
    area_ratio: float
    consistent: float
    accepted: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Propagation:
    """The result of :meth:`Propagator.run`.

    Attributes:
        masks: ``(D, H, W) bool``.
        steps: one :class:`SliceStep` per slice tried, seed first, then up, then down.
    """

    masks: np.ndarray
    steps: list[SliceStep] = field(default_factory=list)

    @property
    def proposed(self) -> list[int]:
        """Slice indices with an accepted mask, ascending (the seed included)."""
        return sorted(s.index for s in self.steps if s.accepted)


@dataclass
class Propagator:
    """Slice-to-slice box propagation with an intensity-consistency stop rule.

    Attributes (the rule's parameters, fixed before looking at any evaluation result; see
    docs/interactive.md for what they were chosen on):
        pad_px: pixels added on every side of the previous mask's box.
        intensity_k: half-width of the accepted intensity range in robust spreads, or None
            to switch the intensity model off.
        min_spread: smallest spread (grey levels) of the intensity model.
        touch_px: dilation of the previous mask that kept parts must touch.
        closing_px: radius of the binary closing applied to the kept mask.
        min_pixels: a kept mask smaller than this ends the walk.
        min_area_ratio: a kept mask smaller than this × the previous one ends the walk.
        min_consistent: a kept mask with less than this share of the raw mask ends the walk.
        min_overlap: without the intensity model, the share of the raw mask that must lie in
            the previous mask.
        max_slices: at most this many slices on each side of the seed (None: all).
    """

    pad_px: float = 3.0
    intensity_k: float | None = 3.0
    min_spread: float = 4.0
    touch_px: int = 2
    closing_px: int = 2
    min_pixels: int = 16
    min_area_ratio: float = 0.1
    min_consistent: float = 0.5
    min_overlap: float = 0.5
    max_slices: int | None = None

    def run(
        self,
        predictor: Any,
        slices: np.ndarray,
        index: int,
        box_xyxy: Sequence[float] | None,
        progress: Callable[[int, int], None] | None = None,
        seed_mask: np.ndarray | None = None,
    ) -> Propagation:
        """Propagate the box on slice ``index`` through the stack.

        Args:
            predictor: a predictor with ``set_image`` and ``predict`` (any of
                :data:`ml_backend.PREDICTORS`), built with ``window=None`` so that uint8
                slices pass unchanged.
            slices: ``(D, H, W)`` or ``(D, H, W, 3)`` uint8, already windowed.
            index: the slice the box is on.
            box_xyxy: ``(x0, y0, x1, y1)`` XYXY pixel edges on that slice.
            progress: called as ``progress(done, total)`` after each slice.
            seed_mask: ``(H, W) bool`` mask on slice ``index`` to start from instead of the
                box's (a volunteer's submitted mask); ``box_xyxy`` is then ignored.

        Returns:
            The masks and one :class:`SliceStep` per slice tried.

        Raises:
            InvalidInput: wrong shape or dtype, index out of range, a bad box.
        """
        stack = _check_slices(slices)
        depth = stack.shape[0]
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise InvalidInput(f"index must be an integer, got {index!r}")
        if not 0 <= int(index) < depth:
            raise InvalidInput(f"index {index} is outside the stack of {depth} slices")
        index = int(index)
        height, width = stack.shape[1:3]
        masks = np.zeros((depth, height, width), dtype=bool)
        gray = stack if stack.ndim == 3 else stack.mean(axis=3)
        total = depth
        done = 0

        if seed_mask is not None:
            seed_mask = np.asarray(seed_mask, dtype=bool)
            if seed_mask.shape != (height, width):
                raise InvalidInput(
                    f"seed_mask must be {height}×{width} (H×W), got shape {seed_mask.shape}"
                )
            score = 1.0
            box0 = _padded_box(seed_mask, 0.0, (height, width)) if seed_mask.any() else (0.0,) * 4
        else:
            if box_xyxy is None:
                raise InvalidInput("give a box (or a seed mask) on the seed slice")
            predictor.set_image(stack[index])
            seed = predictor.predict(box=box_xyxy)  # validates the box (InvalidInput)
            seed_mask = np.asarray(seed.mask, dtype=bool)
            score = seed.score
            x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4))
            box0 = (x0, y0, x1, y1)
        steps = [
            SliceStep(index, box0, int(seed_mask.sum()), int(seed_mask.sum()), score,
                      1.0, 1.0, bool(seed_mask.any()), "" if seed_mask.any() else "empty seed")
        ]  # fmt: skip
        done += 1
        if progress is not None:
            progress(done, total)
        if not seed_mask.any():
            return Propagation(masks, steps)
        masks[index] = seed_mask
        model = _intensity_model(gray[index], seed_mask, self.min_spread)

        for direction in (1, -1):
            previous = seed_mask
            z = index + direction
            walked = 0
            while 0 <= z < depth and (self.max_slices is None or walked < self.max_slices):
                box = _padded_box(previous, self.pad_px, (height, width))
                predictor.set_image(stack[z])
                answer = predictor.predict(box=list(box))
                raw = np.asarray(answer.mask, dtype=bool)
                kept = self._filter(raw, gray[z], previous, model)
                raw_n, kept_n, prev_n = int(raw.sum()), int(kept.sum()), int(previous.sum())
                ratio = kept_n / max(prev_n, 1)
                consistent = kept_n / max(raw_n, 1)
                reason = self._stop_reason(raw, kept, previous, ratio, consistent)
                steps.append(
                    SliceStep(z, box, raw_n, kept_n, answer.score, ratio, consistent,
                              not reason, reason)
                )  # fmt: skip
                done += 1
                if progress is not None:
                    progress(done, total)
                if reason:
                    break
                masks[z] = kept
                previous = kept
                z += direction
                walked += 1
        if progress is not None:
            progress(total, total)
        return Propagation(masks, steps)

    def _filter(
        self,
        raw: np.ndarray,
        gray: np.ndarray,
        previous: np.ndarray,
        model: tuple[float, float],
    ) -> np.ndarray:
        if self.intensity_k is None or not raw.any():
            return raw
        centre, spread = model
        consistent = raw & (np.abs(gray.astype(np.float64) - centre) <= self.intensity_k * spread)
        if not consistent.any():
            return consistent
        touch = _dilate(previous, self.touch_px)
        labels, _ = ndimage.label(consistent)
        touching = np.unique(labels[touch & consistent])
        touching = touching[touching > 0]
        kept = np.isin(labels, touching)
        if self.closing_px > 0 and kept.any():
            kept = ndimage.binary_closing(kept, structure=_disk(self.closing_px))
        kept = ndimage.binary_fill_holes(kept)
        return np.asarray(kept & raw, dtype=bool)

    def _stop_reason(
        self,
        raw: np.ndarray,
        kept: np.ndarray,
        previous: np.ndarray,
        ratio: float,
        consistent: float,
    ) -> str:
        kept_n = int(kept.sum())
        if kept_n < self.min_pixels:
            return f"mask under {self.min_pixels} px"
        if ratio < self.min_area_ratio:
            return f"area ratio {ratio:.2f} < {self.min_area_ratio}"
        if self.intensity_k is not None:
            if consistent < self.min_consistent:
                return f"intensity-consistent share {consistent:.2f} < {self.min_consistent}"
        else:
            overlap = float((raw & previous).sum()) / max(int(raw.sum()), 1)
            if overlap < self.min_overlap:
                return f"overlap with previous {overlap:.2f} < {self.min_overlap}"
        return ""


def propagate(
    predictor: Any, slices: np.ndarray, index: int, box_xyxy: Sequence[float]
) -> np.ndarray:
    """Segment a structure through a stack of slices from one box on slice ``index``.

    Args:
        predictor: a predictor (``set_image`` + ``predict``) built with ``window=None``.
        slices: ``(D, H, W)`` or ``(D, H, W, 3)`` uint8, already windowed.
        index: the slice the box is on.
        box_xyxy: ``(x0, y0, x1, y1)`` XYXY pixel edges on slice ``index``.

    Returns:
        ``(D, H, W) bool``: the structure on every slice the walk reached, False elsewhere.

    Raises:
        InvalidInput: wrong shape or dtype, index out of range, a bad box.
    """
    return Propagator().run(predictor, slices, index, box_xyxy).masks


# --------------------------------------------------------------------------- kernels


def _check_slices(slices: object) -> np.ndarray:
    if not isinstance(slices, np.ndarray):
        raise InvalidInput(f"slices must be a numpy array, got {type(slices).__name__}")
    if slices.dtype != np.uint8:
        raise InvalidInput(f"slices must be uint8 (already windowed), got {slices.dtype}")
    if slices.ndim == 4 and slices.shape[3] == 3:
        return slices
    if slices.ndim != 3:
        raise InvalidInput(f"slices must be (D, H, W) or (D, H, W, 3), got shape {slices.shape}")
    return slices


def _intensity_model(gray: np.ndarray, mask: np.ndarray, min_spread: float) -> tuple[float, float]:
    """Median and robust spread (1.4826 · MAD) of the intensities under ``mask``."""
    values = gray[mask].astype(np.float64)
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    return centre, max(spread, min_spread)


def _padded_box(
    mask: np.ndarray, pad: float, hw: tuple[int, int]
) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = hw
    return (
        max(0.0, float(cols[0]) - pad),
        max(0.0, float(rows[0]) - pad),
        min(float(width), float(cols[-1] + 1) + pad),
        min(float(height), float(rows[-1] + 1) + pad),
    )


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(x * x + y * y <= radius * radius)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    return np.asarray(ndimage.binary_dilation(mask, structure=_disk(radius)))
