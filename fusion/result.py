"""The result type shared by the per-image fusion algorithms."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class FusionResult:
    """Fused mask of one image plus the per-rater reliability.

    Unpacks as ``mask, reliability = result`` (the probability map stays an attribute).

    Attributes:
        mask: (H, W) or (D, H, W) bool, the fused segmentation.
        reliability: (R,) float64 in [0, 1], higher = more reliable. For STAPLE it is the
            estimated Youden index ``sensitivity + specificity - 1`` clipped to [0, 1]; for the
            votes it is the same index of each rater measured against the fused mask.
        probability: (H, W) or (D, H, W) float64 in [0, 1]: the posterior of foreground for
            STAPLE, the (weighted) fraction of foreground votes for the votes.
    """

    mask: npt.NDArray[np.bool_]
    reliability: npt.NDArray[np.float64]
    probability: npt.NDArray[np.float64]

    def __iter__(self) -> Iterator[npt.NDArray[Any]]:
        yield self.mask
        yield self.reliability
