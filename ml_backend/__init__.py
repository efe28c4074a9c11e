"""medcrowd's ML backend: box-prompted predictors and the Label Studio ML-backend server.

Public API::

    from ml_backend import get_predictor
    predictor = get_predictor("litemedsam", device="auto")
    predictor.set_image(image)            # (H, W) / (H, W, 3) array, computes the embedding
    mask, score = predictor.predict_box([x0, y0, x1, y1])   # XYXY pixels, original image

    from ml_backend.rle import mask_to_rle, rle_to_mask

Predictors pull in torch, so they load lazily: ``import ml_backend.rle`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml_backend.errors import InvalidInput, ModelUnavailable
from ml_backend.rle import mask_to_rle, rle_to_mask

if TYPE_CHECKING:
    from ml_backend.predictors import PREDICTORS, BoxPredictor, get_predictor

__all__ = [
    "PREDICTORS",
    "BoxPredictor",
    "InvalidInput",
    "ModelUnavailable",
    "get_predictor",
    "mask_to_rle",
    "rle_to_mask",
]

_LAZY = {"PREDICTORS", "BoxPredictor", "get_predictor"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ml_backend import predictors

        return getattr(predictors, name)
    raise AttributeError(f"module 'ml_backend' has no attribute {name!r}")
