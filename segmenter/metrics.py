"""Per-image segmentation metrics on binary masks (MONAI ``DiceMetric`` and HD95).

MONAI is imported inside the functions (``import monai`` takes seconds).
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

__all__ = ["dice_scores", "hd95_scores"]

F64 = npt.NDArray[np.float64]


def _as_batch(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) or (H, W) masks (any nonzero = foreground) → two (N, 1, H, W) float32 arrays."""
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must have the same shape")
    if p.ndim == 2:
        p, g = p[None], g[None]
    if p.ndim != 3:
        raise ValueError(f"expected (N, H, W) or (H, W) masks, got shape {np.asarray(pred).shape}")
    return (p != 0).astype(np.float32)[:, None], (g != 0).astype(np.float32)[:, None]


def dice_scores(pred: np.ndarray, gt: np.ndarray) -> F64:
    """Dice of each predicted mask with its ground truth: 2|P∩G| / (|P| + |G|).

    Args:
        pred, gt: (N, H, W) (or one (H, W)) masks of any dtype, nonzero = foreground.

    Returns:
        (N,) float64 in [0, 1]. Both masks empty → 1.0 (perfect agreement); only one empty → 0.0.
    """
    import torch
    from monai.metrics import DiceMetric

    p, g = _as_batch(pred, gt)
    if len(p) == 0:
        return np.zeros(0, np.float64)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    scores = torch.as_tensor(metric(torch.from_numpy(p), torch.from_numpy(g)))
    return scores[:, 0].double().numpy()


def hd95_scores(pred: np.ndarray, gt: np.ndarray) -> F64:
    """95th-percentile symmetric Hausdorff distance of each mask pair, in pixels.

    Surface (edge) pixels of each mask; for each edge pixel the Euclidean distance to the
    other mask's edge; HD95 = the larger of the two directed 95th percentiles (MONAI
    ``compute_hausdorff_distance(percentile=95)``).

    Args:
        pred, gt: (N, H, W) (or one (H, W)) masks of any dtype, nonzero = foreground.

    Returns:
        (N,) float64. Undefined cases: exactly one of the two masks empty → ``nan`` (no
        distance exists; use ``np.nanmean`` and report how many were nan); both empty →
        0.0 (perfect agreement, as Dice gives 1.0).
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    p, g = _as_batch(pred, gt)
    out = np.full(len(p), np.nan, np.float64)
    p_any = p.reshape(len(p), -1).any(axis=1)
    g_any = g.reshape(len(g), -1).any(axis=1)
    out[~p_any & ~g_any] = 0.0
    both = np.flatnonzero(p_any & g_any)
    if len(both):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns about empty masks; handled above
            hd = compute_hausdorff_distance(
                torch.from_numpy(p[both]),
                torch.from_numpy(g[both]),
                include_background=True,
                percentile=95,
            )
        out[both] = hd[:, 0].double().numpy()
    return out
