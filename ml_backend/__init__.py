"""medcrowd's ML backend: box-prompted predictors and the Label Studio ML-backend server.

Public API::

    from ml_backend import get_predictor
    predictor = get_predictor("litemedsam", device="auto")
    predictor.set_image(image)            # (H, W) / (H, W, 3) array, computes the embedding
    mask, score = predictor.predict_box([x0, y0, x1, y1])   # XYXY pixels, original image
    answer = predictor.predict(box=[x0, y0, x1, y1], points=[[x, y]], labels=[0],
                               mask_input=answer.logits)    # clicks + the previous logits

    from ml_backend import propagate
    volume = propagate(predictor, slices, index, box_xyxy)  # (D, H, W) bool from one box

    from ml_backend import BackendConfig, create_app, resolve_device
    app = create_app(BackendConfig(port=9090))              # ASGI app, model loaded once

Modules: :mod:`~ml_backend.config` (the one ``BackendConfig``), :mod:`~ml_backend.device`
(the one ``resolve_device``), :mod:`~ml_backend.predictors`, :mod:`~ml_backend.engine`
(prompt → mask behind the bounded queue), :mod:`~ml_backend.contract` (OpenAPI),
:mod:`~ml_backend.server` (FastAPI app), :mod:`~ml_backend.serve` (uvicorn / gunicorn),
:mod:`~ml_backend.workers` (the gunicorn worker and ``app_from_env``).

Predictors pull in torch and the server FastAPI, so they load lazily: ``import ml_backend``
and ``import ml_backend.rle`` stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml_backend.config import BackendConfig
from ml_backend.device import resolve_device
from ml_backend.errors import InvalidInput, ModelUnavailable, UpstreamError
from ml_backend.rle import mask_to_rle, rle_to_mask

if TYPE_CHECKING:
    from ml_backend.predictors import PREDICTORS, BoxPredictor, Prediction, get_predictor
    from ml_backend.propagation import Propagator, propagate
    from ml_backend.server import create_app

__all__ = [
    "PREDICTORS",
    "BackendConfig",
    "BoxPredictor",
    "InvalidInput",
    "ModelUnavailable",
    "Prediction",
    "Propagator",
    "UpstreamError",
    "create_app",
    "get_predictor",
    "mask_to_rle",
    "propagate",
    "resolve_device",
    "rle_to_mask",
]

_PREDICTOR_NAMES = {"PREDICTORS", "BoxPredictor", "Prediction", "get_predictor"}
_PROPAGATE_NAMES = {"Propagator", "propagate"}


def __getattr__(name: str) -> Any:
    if name in _PREDICTOR_NAMES:
        from ml_backend import predictors

        return getattr(predictors, name)
    if name in _PROPAGATE_NAMES:
        from ml_backend import propagation as module

        return getattr(module, name)
    if name == "create_app":
        from ml_backend.server import create_app

        return create_app
    raise AttributeError(f"module 'ml_backend' has no attribute {name!r}")
