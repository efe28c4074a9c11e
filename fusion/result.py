"""The result type shared by the per-image fusion algorithms."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class FusionResult:
    """Fused mask of one image plus the per-rater reliability.

    Behaves as the 2-tuple ``(mask, reliability)``: it unpacks (``mask, reliability =
    result``), indexes (``result[0]``, ``result[-1]``, ``result[:1]``) and has ``len`` 2.
    The probability map is an attribute only.

    Attributes:
        mask: (H, W) or (D, H, W) bool, the fused segmentation.
        reliability: (R,) float64 in [0, 1], higher = more reliable. For STAPLE it is the
            estimated Youden index ``sensitivity + specificity - 1`` clipped to [0, 1]; for the
            votes it is the same index of each rater measured against the fused mask.
        probability: (H, W) or (D, H, W) float64 in [0, 1]: the posterior of foreground for
            STAPLE, the (weighted) fraction of foreground votes for the votes.

    Example:
        >>> import numpy as np
        >>> res = FusionResult(np.ones((2, 2), bool), np.ones(3), np.ones((2, 2)))
        >>> mask, reliability = res
        >>> len(res), res[0] is res.mask, res[-1] is res.reliability
        (2, True, True)
    """

    mask: npt.NDArray[np.bool_]
    reliability: npt.NDArray[np.float64]
    probability: npt.NDArray[np.float64]

    def _as_tuple(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        return (self.mask, self.reliability)

    def __iter__(self) -> Iterator[npt.NDArray[Any]]:
        return iter(self._as_tuple())

    def __len__(self) -> int:
        return 2

    @overload
    def __getitem__(self, index: int) -> npt.NDArray[Any]: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[npt.NDArray[Any], ...]: ...

    def __getitem__(self, index: int | slice) -> npt.NDArray[Any] | tuple[npt.NDArray[Any], ...]:
        """``result[i]`` / ``result[a:b]`` as on ``(mask, reliability)``; IndexError past 2."""
        return self._as_tuple()[index]
