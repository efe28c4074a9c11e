"""Input validation shared by the fusion algorithms (private; raises ``ValueError``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def as_bool_array(values: npt.ArrayLike, name: str) -> BoolArray:
    """Return ``values`` as a bool array; numeric input must hold only 0 and 1."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be bool or 0/1 numeric, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be binary (bool or 0/1), found other values")
    return arr.astype(bool)


def as_rater_masks(masks: npt.ArrayLike, name: str = "masks") -> BoolArray:
    """Validate ``(R, H, W)`` or ``(R, D, H, W)`` binary rater masks and return them as bool."""
    arr = as_bool_array(masks, name)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (R, H, W) or (R, D, H, W), got {arr.shape}")
    if arr.shape[0] < 1 or arr[0].size == 0:
        raise ValueError(f"{name} needs at least one rater and one voxel, got {arr.shape}")
    return arr


def as_present(present: npt.ArrayLike | None, shape: tuple[int, ...]) -> BoolArray | None:
    """Validate a rater-presence array against rater masks of ``shape`` = (R, ...).

    ``present`` is either (R,) bool (rater r labelled the whole image or nothing) or an
    array broadcastable to ``shape`` whose first axis is R (per-voxel presence).
    Returns a read-only broadcast view of shape ``shape``, or ``None`` when all are present.
    """
    if present is None:
        return None
    arr = as_bool_array(present, "present")
    n_raters = shape[0]
    if arr.ndim == 1:
        if arr.shape[0] != n_raters:
            raise ValueError(f"present has shape {arr.shape}, expected ({n_raters},)")
        arr = arr.reshape((n_raters,) + (1,) * (len(shape) - 1))
    if arr.ndim != len(shape) or arr.shape[0] != n_raters:
        raise ValueError(f"present of shape {arr.shape} does not match masks of shape {shape}")
    try:
        out = np.broadcast_to(arr, shape)
    except ValueError as exc:
        raise ValueError(f"present of shape {arr.shape} cannot broadcast to {shape}") from exc
    if out.all():
        return None
    return out


def as_weights(weights: npt.ArrayLike, n_raters: int) -> FloatArray:
    """Validate non-negative, finite per-rater weights of shape (R,) with a positive sum."""
    arr = np.asarray(weights, dtype=np.float64)
    if arr.shape != (n_raters,):
        raise ValueError(f"weights must have shape ({n_raters},), got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("weights must be finite and non-negative")
    if arr.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return arr


def check_probability(value: float, name: str, *, open_interval: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` lies in [0, 1] (or (0, 1) when open)."""
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be in {bounds}, got {value}")


def check_em_controls(max_iter: int, tol: float) -> None:
    """Raise ``ValueError`` for a non-positive iteration cap or a negative tolerance."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
