"""Annotator reliability and per-task agreement.

Per-rater scores against a reference (gold mask or consensus), spammer detection and
agreement measures (mean pairwise Dice, pixel-wise vote entropy). All functions take
``(R, H, W)`` or ``(R, D, H, W)`` bool rater masks and an optional ``present`` array
((R,) or broadcastable to the masks, True = the rater labelled that voxel).

Undefined rates (a sensitivity with no reference foreground, a specificity with no
reference background) are returned as NaN; Dice of two empty masks is 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fusion._validation import (
    BoolArray,
    FloatArray,
    IntArray,
    as_bool_array,
    as_present,
    as_rater_masks,
)
from fusion.metrics import dice_from_counts

__all__ = [
    "RaterScores",
    "consensus_scores",
    "detect_spammers",
    "entropy_map",
    "pairwise_dice",
    "rater_scores",
    "spammer_score",
    "youden_reliability",
]


@dataclass(frozen=True)
class RaterScores:
    """Per-rater agreement with a reference, each (R,) float64 (NaN where undefined).

    Attributes:
        dice: Dice of the rater's mask with the reference (1.0 if both are empty).
        sensitivity: TP / (TP + FN), NaN when the reference has no foreground.
        specificity: TN / (TN + FP), NaN when the reference has no background.
        n_voxels: (R,) int64, voxels the rater labelled (its ``present`` count).
    """

    dice: FloatArray
    sensitivity: FloatArray
    specificity: FloatArray
    n_voxels: IntArray


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _scores_from_counts(
    tp: FloatArray, fp: FloatArray, fn: FloatArray, tn: FloatArray
) -> RaterScores:
    return RaterScores(
        dice=dice_from_counts(tp, 2 * tp + fp + fn),
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        n_voxels=(tp + fp + fn + tn).astype(np.int64),
    )


def rater_scores(
    masks: npt.ArrayLike, reference: npt.ArrayLike, present: npt.ArrayLike | None = None
) -> RaterScores:
    """Dice, sensitivity and specificity of every rater against one reference mask.

    Args:
        masks: (R, H, W) or (R, D, H, W) bool rater masks.
        reference: (H, W) or (D, H, W) bool reference (gold or consensus).
        present: optional (R,) or per-voxel bool; absent voxels are not scored.

    Example:
        >>> masks = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], bool)
        >>> rater_scores(masks, masks[0, 0:1]).dice
        array([1.        , 0.66666667])
    """
    m = as_rater_masks(masks)
    ref = as_bool_array(reference, "reference")
    if ref.shape != m.shape[1:]:
        raise ValueError(f"reference shape {ref.shape} does not match masks {m.shape[1:]}")
    pres = as_present(present, m.shape)
    flat = m.reshape(m.shape[0], -1)
    flat_ref = ref.reshape(-1)
    if pres is None:
        tp = np.count_nonzero(flat & flat_ref, axis=1).astype(np.float64)
        pos = np.count_nonzero(flat, axis=1).astype(np.float64)
        n = np.full(m.shape[0], float(flat_ref.size))
        ref_pos = np.full(m.shape[0], float(flat_ref.sum()))
    else:
        p = np.ascontiguousarray(pres).reshape(m.shape[0], -1)
        tp = np.count_nonzero(flat & flat_ref & p, axis=1).astype(np.float64)
        pos = np.count_nonzero(flat & p, axis=1).astype(np.float64)
        n = np.count_nonzero(p, axis=1).astype(np.float64)
        ref_pos = np.count_nonzero(flat_ref & p, axis=1).astype(np.float64)
    fp = pos - tp
    fn = ref_pos - tp
    tn = n - tp - fp - fn
    return _scores_from_counts(tp, fp, fn, tn)


def consensus_scores(masks: npt.ArrayLike, present: npt.ArrayLike | None = None) -> RaterScores:
    """Score every rater against the leave-one-out majority vote of the other raters.

    The consensus for rater r is "more than half of the other present raters voted
    foreground" (ties are background), so a rater is never compared with itself.
    Voxels where no other rater is present are not scored. Needs R >= 2.

    Args:
        masks: (R, H, W) or (R, D, H, W) bool rater masks.
        present: optional (R,) or per-voxel bool presence.
    """
    m = as_rater_masks(masks)
    if m.shape[0] < 2:
        raise ValueError("consensus_scores needs at least 2 raters")
    pres = as_present(present, m.shape)
    p = np.ones(m.shape, dtype=bool) if pres is None else np.asarray(pres)
    votes = (m & p).sum(axis=0)
    n_present = p.sum(axis=0)
    tp = np.empty(m.shape[0])
    fp = np.empty(m.shape[0])
    fn = np.empty(m.shape[0])
    tn = np.empty(m.shape[0])
    for r in range(m.shape[0]):
        others = n_present - p[r]
        ref = 2 * (votes - (m[r] & p[r])) > others
        scored = p[r] & (others > 0)
        tp[r] = np.count_nonzero(m[r] & ref & scored)
        fp[r] = np.count_nonzero(m[r] & ~ref & scored)
        fn[r] = np.count_nonzero(~m[r] & ref & scored)
        tn[r] = np.count_nonzero(~m[r] & ~ref & scored)
    return _scores_from_counts(tp, fp, fn, tn)


def youden_reliability(sensitivity: npt.ArrayLike, specificity: npt.ArrayLike) -> FloatArray:
    """Reliability in [0, 1]: Youden's index ``sens + spec - 1`` clipped at 0.

    A perfect rater scores 1, a spammer (votes independent of the truth) 0; an inverted
    rater also scores 0. An undefined (NaN) rate counts as 1 (no evidence of error).
    """
    sens = np.nan_to_num(np.asarray(sensitivity, dtype=np.float64), nan=1.0)
    spec = np.nan_to_num(np.asarray(specificity, dtype=np.float64), nan=1.0)
    return np.asarray(np.clip(sens + spec - 1.0, 0.0, 1.0), dtype=np.float64)


def spammer_score(sensitivity: npt.ArrayLike, specificity: npt.ArrayLike) -> FloatArray:
    """``|sens + spec - 1|``: 0 for a spammer, 1 for a perfect (or perfectly inverted) rater.

    A rater whose vote is independent of the truth has ``sens = 1 - spec`` (Raykar & Yu,
    "Eliminating spammers and ranking annotators for crowdsourced labeling tasks", JMLR
    13:491–518, 2012, https://jmlr.org/papers/v13/raykar12a.html).
    """
    sens = np.asarray(sensitivity, dtype=np.float64)
    spec = np.asarray(specificity, dtype=np.float64)
    return np.asarray(np.abs(sens + spec - 1.0), dtype=np.float64)


def detect_spammers(
    sensitivity: npt.ArrayLike, specificity: npt.ArrayLike, threshold: float = 0.2
) -> BoolArray:
    """Flag raters whose :func:`spammer_score` is below ``threshold`` (NaN is not flagged).

    Example:
        >>> detect_spammers([0.9, 0.5, 0.1], [0.95, 0.5, 0.9])
        array([False,  True,  True])
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    score = spammer_score(sensitivity, specificity)
    return np.asarray(np.nan_to_num(score, nan=1.0) < threshold)


def pairwise_dice(masks: npt.ArrayLike, present: npt.ArrayLike | None = None) -> float:
    """Mean Dice over all rater pairs (each pair scored where both are present).

    Pairs where both masks are empty score 1.0; pairs that share no present voxel are
    skipped. Returns NaN when fewer than two raters (or no scorable pair) exist.

    Args:
        masks: (R, H, W) or (R, D, H, W) bool rater masks.
        present: optional (R,) or per-voxel bool presence.
    """
    m = as_rater_masks(masks)
    n_raters = m.shape[0]
    if n_raters < 2:
        return float("nan")
    pres = as_present(present, m.shape)
    x = m.reshape(n_raters, -1).astype(np.float32)
    if pres is None:
        inter = x @ x.T
        sizes = x.sum(axis=1)
        size_i = np.broadcast_to(sizes[:, None], inter.shape)
        size_j = np.broadcast_to(sizes[None, :], inter.shape)
        overlap = np.ones(inter.shape, dtype=bool)
    else:
        p = np.ascontiguousarray(pres).reshape(n_raters, -1).astype(np.float32)
        xp = x * p
        inter = xp @ xp.T
        size_i = xp @ p.T  # rater i's foreground where j is present
        size_j = size_i.T
        overlap = (p @ p.T) > 0
    scores = dice_from_counts(inter, size_i + size_j)
    upper = np.triu(np.ones(inter.shape, dtype=bool), k=1) & overlap
    if not upper.any():
        return float("nan")
    return float(scores[upper].mean())


def entropy_map(masks: npt.ArrayLike, present: npt.ArrayLike | None = None) -> FloatArray:
    """Pixel-wise binary entropy (bits) of the foreground vote fraction.

    0 where the present raters agree (or none is present), 1 where they split evenly.

    Args:
        masks: (R, H, W) or (R, D, H, W) bool rater masks.
        present: optional (R,) or per-voxel bool presence.

    Returns:
        (H, W) or (D, H, W) float64 in [0, 1].
    """
    m = as_rater_masks(masks)
    pres = as_present(present, m.shape)
    if pres is None:
        frac = m.mean(axis=0, dtype=np.float64)
    else:
        n = pres.sum(axis=0)
        frac = np.zeros(m.shape[1:])
        np.divide((m & pres).sum(axis=0), n, out=frac, where=n > 0)
    # 0 * log2(0) is taken as 0: the nan_to_num below replaces the 0 * -inf products.
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(frac * np.log2(frac) + (1 - frac) * np.log2(1 - frac))
    return np.nan_to_num(h, nan=0.0)
