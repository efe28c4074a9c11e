"""Weighted voting with per-rater weights given or learned from gold tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fusion._validation import (
    BoolArray,
    FloatArray,
    as_bool_array,
    as_present,
    as_rater_masks,
    as_weights,
    check_probability,
)
from fusion.metrics import dice_from_counts
from fusion.reliability import rater_scores, youden_reliability
from fusion.result import FusionResult


def _vote_fraction(masks: BoolArray, weights: FloatArray, present: BoolArray | None) -> FloatArray:
    """Weighted foreground fraction per voxel; 0 where no weighted rater is present."""
    w = weights.reshape((-1,) + (1,) * (masks.ndim - 1))
    if present is None:
        num = np.tensordot(weights, masks, axes=(0, 0))
        return np.asarray(num / weights.sum(), dtype=np.float64)
    num = (w * (masks & present)).sum(axis=0)
    den = (w * present).sum(axis=0)
    frac = np.zeros(masks.shape[1:])
    np.divide(num, den, out=frac, where=den > 0)
    return frac


def vote(
    masks: BoolArray, weights: FloatArray, present: BoolArray | None, threshold: float
) -> FusionResult:
    """Fuse validated masks by weighted vote (shared by the vote classes; not public API)."""
    frac = _vote_fraction(masks, weights, present)
    mask = frac > threshold
    scores = rater_scores(masks, mask, present)
    return FusionResult(
        mask=mask,
        reliability=youden_reliability(scores.sensitivity, scores.specificity),
        probability=frac,
    )


@dataclass
class WeightedVote:
    """Weighted vote: a voxel is foreground when the weighted share of foreground votes of
    the raters present there exceeds ``threshold``.

    Steps:
        1. Weights come from ``fit_predict(weights=...)``, else from :meth:`fit` (each
           rater's Dice with the gold masks of gold tasks, pooled over those tasks).
        2. ``probability = Σ_r w_r·present_r·mask_r / Σ_r w_r·present_r`` per voxel
           (0 where no rater with positive weight is present).
        3. ``mask = probability > threshold`` (ties go to background).

    Gold-weighted voting as used in crowdsourced segmentation, e.g. Heim et al., "Large-scale
    medical image annotation with crowd-powered algorithms", J. Med. Imaging 5(3), 2018,
    https://doi.org/10.1117/1.JMI.5.3.034002.

    Args:
        threshold: decision threshold on the weighted vote fraction, in [0, 1).

    Attributes:
        weights_: (R,) float64, per-rater weights learned by :meth:`fit`.

    Example:
        >>> import numpy as np
        >>> masks = np.array([[[1, 1, 0]], [[1, 0, 0]], [[0, 0, 1]]], bool)
        >>> mask, reliability = WeightedVote().fit_predict(masks, weights=[3.0, 1.0, 1.0])
        >>> mask
        array([[ True,  True, False]])
    """

    threshold: float = 0.5
    weights_: FloatArray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_probability(self.threshold, "threshold")
        if self.threshold >= 1.0:
            raise ValueError("threshold must be < 1")

    def fit(
        self, gold_masks: Sequence[npt.ArrayLike], gold: Sequence[npt.ArrayLike]
    ) -> WeightedVote:
        """Learn ``weights_`` = each rater's pooled Dice with the gold masks.

        Args:
            gold_masks: one (R, H, W) or (R, D, H, W) bool array per gold task, the same R
                raters in the same order in every task.
            gold: one (H, W) or (D, H, W) bool gold mask per gold task.
        """
        if len(gold_masks) != len(gold) or len(gold) == 0:
            raise ValueError("need the same, non-zero number of gold tasks and gold masks")
        inter: FloatArray | None = None
        sizes: FloatArray | None = None
        for task_masks, task_gold in zip(gold_masks, gold, strict=True):
            m = as_rater_masks(task_masks, "gold_masks[i]")
            g = as_bool_array(task_gold, "gold[i]")
            if g.shape != m.shape[1:]:
                raise ValueError(f"gold shape {g.shape} does not match masks {m.shape[1:]}")
            flat = m.reshape(m.shape[0], -1)
            t_inter = np.count_nonzero(flat & g.reshape(-1), axis=1).astype(np.float64)
            t_sizes = np.count_nonzero(flat, axis=1) + float(g.sum())
            if inter is None or sizes is None:
                inter, sizes = t_inter, t_sizes
            elif inter.shape != t_inter.shape:
                raise ValueError("every gold task must have the same number of raters")
            else:
                inter, sizes = inter + t_inter, sizes + t_sizes
        if inter is None or sizes is None:  # unreachable: len(gold) > 0 checked above
            raise ValueError("no gold tasks")
        w = dice_from_counts(inter, sizes)
        self.weights_ = as_weights(w, w.shape[0])
        return self

    def fit_predict(
        self,
        masks: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
        present: npt.ArrayLike | None = None,
    ) -> FusionResult:
        """Fuse the masks of one image.

        Args:
            masks: (R, H, W) or (R, D, H, W) bool (or 0/1) rater masks.
            weights: (R,) non-negative weights; default the weights learned by :meth:`fit`.
            present: optional bool, (R,) per rater or broadcastable to ``masks`` (per voxel);
                False = the rater did not label that voxel, its vote is ignored there.

        Raises:
            RuntimeError: no weights given and :meth:`fit` was not called.
            ValueError: bad shapes, dtypes or weights.
        """
        m = as_rater_masks(masks)
        if weights is None:
            if self.weights_ is None:
                raise RuntimeError("pass weights= or call fit() on gold tasks first")
            weights = self.weights_
        w = as_weights(weights, m.shape[0])
        return vote(m, w, as_present(present, m.shape), self.threshold)
