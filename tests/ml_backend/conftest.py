"""Fixtures for the ML-backend tests, on top of ``tests/conftest.py``.

The session's real LiteMedSAM (``litemedsam`` in ``tests/conftest.py``: ONNX export once, into
a session temporary directory) is shared; tests that count cache hits or set images of their
own get a predictor over the same loaded model with a fresh cache (``fresh_lite``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_backend.cache import EmbeddingCache
from ml_backend.predictors import LiteMedSAMClicksPredictor, LiteMedSAMPredictor, get_predictor
from tests.helpers import OrganMask, sammed2d_masks


@pytest.fixture(scope="session")
def lite(litemedsam: Any) -> LiteMedSAMPredictor:
    assert isinstance(litemedsam, LiteMedSAMPredictor)
    return litemedsam


@pytest.fixture(scope="session")
def lite_cache_dir(lite: LiteMedSAMPredictor) -> Path:
    """The session predictor's ``cache_dir`` (holds ``onnx/`` and ``embeddings/``)."""
    directory = lite.cache.directory
    assert directory is not None
    return directory.parent


@pytest.fixture(scope="session")
def demo_masks(shared_data: Path) -> list[OrganMask]:
    masks = sammed2d_masks(shared_data)
    assert len(masks) == 30, "sammed2d_demo should hold 30 masks (../shared/data/README.md)"
    return masks


@pytest.fixture(scope="session")
def demo_image(demo_masks: list[OrganMask]) -> np.ndarray:
    """s0619_32: 225×155 (W×H) RGB uint8 CT slice, the smallest demo image."""
    image, _ = next(m for m in demo_masks if m.image_path.stem == "s0619_32").load()
    return image


@pytest.fixture
def fresh_lite(lite: LiteMedSAMPredictor) -> Callable[..., LiteMedSAMPredictor]:
    """Make a predictor sharing the session's loaded model but with its own cache."""

    def make(cache: EmbeddingCache | None = None, **kwargs: Any) -> LiteMedSAMPredictor:
        predictor = LiteMedSAMPredictor(
            lite.net,
            checkpoint_sha256=lite.checkpoint_sha256,
            device="cpu",
            cache=cache if cache is not None else EmbeddingCache(),
            encoder_onnx=lite.encoder_onnx,
            decoder_onnx=lite.decoder_onnx,
            **kwargs,
        )
        predictor.decoder_backend = lite.decoder_backend
        return predictor

    return make


@pytest.fixture(scope="session")
def clicks_lite(lite_cache_dir: Path) -> LiteMedSAMClicksPredictor:
    """The click-aware LiteMedSAM with the shipped decoder (the session's stock ONNX files in
    ``lite_cache_dir`` are found and reused; its own token graph is exported once)."""
    predictor = get_predictor("litemedsam-clicks", device="cpu", cache_dir=lite_cache_dir)
    assert isinstance(predictor, LiteMedSAMClicksPredictor)
    return predictor
