"""Majority vote."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fusion._validation import as_present, as_rater_masks, check_probability
from fusion.result import FusionResult
from fusion.weighted_vote import vote


@dataclass
class MajorityVote:
    """Majority vote: foreground where more than ``threshold`` of the present raters say so.

    Steps:
        1. ``probability`` = fraction of the raters present at a voxel that voted foreground
           (0 where no rater is present).
        2. ``mask = probability > threshold``; with the default 0.5 ties go to background.
        3. ``reliability`` = each rater's Youden index (sens + spec − 1, clipped to [0, 1])
           against the fused mask.

    The classic baseline of label fusion (e.g. Kittler et al., "On combining classifiers",
    IEEE TPAMI 20(3):226–239, 1998, https://doi.org/10.1109/34.667881).

    Args:
        threshold: decision threshold on the vote fraction, in [0, 1).

    Example:
        >>> import numpy as np
        >>> masks = np.array([[[1, 1, 0]], [[1, 0, 0]], [[1, 1, 1]]], bool)
        >>> mask, reliability = MajorityVote().fit_predict(masks)
        >>> mask
        array([[ True,  True, False]])
    """

    threshold: float = 0.5

    def __post_init__(self) -> None:
        check_probability(self.threshold, "threshold")
        if self.threshold >= 1.0:
            raise ValueError("threshold must be < 1")

    def fit_predict(
        self, masks: npt.ArrayLike, present: npt.ArrayLike | None = None
    ) -> FusionResult:
        """Fuse the masks of one image.

        Args:
            masks: (R, H, W) or (R, D, H, W) bool (or 0/1) rater masks.
            present: optional bool, (R,) per rater or broadcastable to ``masks`` (per voxel);
                False = that rater did not label the voxel and is left out of its vote.
        """
        m = as_rater_masks(masks)
        weights = np.ones(m.shape[0])
        return vote(m, weights, as_present(present, m.shape), self.threshold)
