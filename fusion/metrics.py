"""Overlap and surface-distance metrics for binary segmentations (2D and 3D).

Conventions (documented because libraries disagree):

* Both masks empty: ``dice = iou = surface_dice = 1.0`` and every distance is ``0.0``.
* Exactly one mask empty: ``dice = iou = surface_dice = 0.0`` and every distance is ``inf``.
* The surface of a mask is its foreground voxels that have a background face-neighbour
  (erosion with the face-connected structuring element; outside the array is background).
* Distances are Euclidean between surface voxel centres, in the units of ``spacing``
  (voxel size per axis, same order as the array axes; default 1 per axis), computed with
  ``scipy.ndimage.distance_transform_edt``.
* ``hd95`` is the larger of the two directed 95th percentiles (the MONAI convention);
  ``average_surface_distance`` is the mean over both directions' distances pooled (ASSD).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from fusion._validation import BoolArray, FloatArray, as_bool_array

__all__ = [
    "average_surface_distance",
    "dice",
    "dice_from_counts",
    "hausdorff",
    "hd95",
    "iou",
    "surface_dice",
]


def _pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[BoolArray, BoolArray]:
    x = as_bool_array(a, "a")
    y = as_bool_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"masks must have the same shape, got {x.shape} and {y.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D (H, W) or 3D (D, H, W), got {x.ndim}D")
    return x, y


def dice(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)`` of two same-shape bool masks (1.0 if both empty).

    Example:
        >>> dice([[1, 1], [0, 0]], [[1, 0], [0, 0]])
        0.6666666666666666
    """
    x, y = _pair(a, b)
    total = int(x.sum()) + int(y.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(x & y)) / total


def dice_from_counts(intersection: npt.ArrayLike, total: npt.ArrayLike) -> FloatArray:
    """Dice from counts, element-wise: ``2 · intersection / total`` (1.0 where ``total`` is 0).

    ``total`` is ``|A| + |B|`` (equivalently ``2·TP + FP + FN``). Use it where the counts are
    already at hand: pooled over tasks, one value per rater, or a rater × rater matrix. The
    arithmetic happens in the inputs' dtype (float32 stays float32); the result is float64
    with the broadcast shape of the inputs (a 0-d array for scalars: wrap in ``float``).

    Example:
        >>> dice_from_counts([2, 0], [6, 0])
        array([0.66666667, 1.        ])
    """
    inter = np.asarray(intersection)
    tot = np.asarray(total)
    out = np.ones(np.broadcast_shapes(inter.shape, tot.shape), dtype=np.float64)
    np.divide(2 * inter, tot, out=out, where=tot > 0)
    return out


def iou(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Intersection over union (Jaccard) of two same-shape bool masks (1.0 if both empty)."""
    x, y = _pair(a, b)
    union = int(np.count_nonzero(x | y))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(x & y)) / union


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    out = tuple(float(s) for s in spacing)
    if len(out) != ndim or not all(s > 0 and np.isfinite(s) for s in out):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing}")
    return out


def _surface(mask: BoolArray) -> BoolArray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return np.asarray(mask & ~eroded)


def _surface_distances(
    a: npt.ArrayLike, b: npt.ArrayLike, spacing: Sequence[float] | None
) -> tuple[FloatArray, FloatArray] | None:
    """Directed distances (surface A → surface B, surface B → surface A).

    Returns ``None`` when either mask is empty (callers apply the empty conventions).
    """
    x, y = _pair(a, b)
    sampling = _spacing(spacing, x.ndim)
    if not x.any() or not y.any():
        return None
    sx, sy = _surface(x), _surface(y)
    dist_to_y = ndimage.distance_transform_edt(~sy, sampling=sampling)
    dist_to_x = ndimage.distance_transform_edt(~sx, sampling=sampling)
    return np.asarray(dist_to_y[sx], dtype=np.float64), np.asarray(dist_to_x[sy], dtype=np.float64)


def _empty_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = _pair(a, b)
    return 0.0 if (not x.any() and not y.any()) else float("inf")


def hausdorff(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    spacing: Sequence[float] | None = None,
    percentile: float = 100.0,
) -> float:
    """Symmetric (percentile) Hausdorff distance between the surfaces of two masks.

    Args:
        a, b: (H, W) or (D, H, W) bool masks of the same shape.
        spacing: voxel size per axis (same order as the axes), e.g. mm; default 1.
        percentile: 100 gives the classic Hausdorff distance, 95 gives HD95.

    Returns:
        ``max(P(d(∂A→∂B)), P(d(∂B→∂A)))`` in the units of ``spacing``.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    dists = _surface_distances(a, b, spacing)
    if dists is None:
        return _empty_distance(a, b)
    d_ab, d_ba = dists
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def hd95(a: npt.ArrayLike, b: npt.ArrayLike, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance (see :func:`hausdorff`).

    Example:
        >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
        >>> hd95(a, np.roll(a, 2, axis=1))
        2.0
    """
    return hausdorff(a, b, spacing, percentile=95.0)


def average_surface_distance(
    a: npt.ArrayLike, b: npt.ArrayLike, spacing: Sequence[float] | None = None
) -> float:
    """Average symmetric surface distance (ASSD): mean of both directions' distances pooled.

    Args:
        a, b: (H, W) or (D, H, W) bool masks of the same shape.
        spacing: voxel size per axis; default 1.
    """
    dists = _surface_distances(a, b, spacing)
    if dists is None:
        return _empty_distance(a, b)
    d_ab, d_ba = dists
    return float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size))


def surface_dice(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    tolerance: float,
    spacing: Sequence[float] | None = None,
) -> float:
    """Surface Dice at ``tolerance`` (Nikolov et al. 2021, https://arxiv.org/abs/1809.04430).

    Fraction of surface voxels of both masks that lie within ``tolerance`` of the other
    surface. Surface elements are counted as voxels (not area-weighted as in the paper).

    Args:
        a, b: (H, W) or (D, H, W) bool masks of the same shape.
        tolerance: accepted distance, in the units of ``spacing``; >= 0.
        spacing: voxel size per axis; default 1.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    dists = _surface_distances(a, b, spacing)
    if dists is None:
        return 1.0 if _empty_distance(a, b) == 0.0 else 0.0
    d_ab, d_ba = dists
    inside = np.count_nonzero(d_ab <= tolerance) + np.count_nonzero(d_ba <= tolerance)
    return float(inside / (d_ab.size + d_ba.size))
