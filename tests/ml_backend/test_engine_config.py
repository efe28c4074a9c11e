"""The engine takes its click and propagation bounds from :class:`BackendConfig`."""

from __future__ import annotations

from typing import Any

from ml_backend.config import BackendConfig
from ml_backend.engine import build_engine
from ml_backend.predictors import LiteMedSAMPredictor


def _volume_webhook() -> dict[str, Any]:
    """An ``ANNOTATION_CREATED`` body for a slice of an imported volume (no project: the
    propagation itself would fail, only whether it is queued matters here)."""
    meta = {"source": "ct.nii.gz", "axis": 0, "index": 4}
    return {
        "action": "ANNOTATION_CREATED",
        "task": {"id": 1, "data": {"image": "/data/x.png", "medcrowd": meta}},
        "annotation": {"id": 2, "result": []},
    }


def test_build_engine_uses_the_configured_bounds(lite: LiteMedSAMPredictor) -> None:
    config = BackendConfig(propagate_slices=3, click_regions=5, propagation_log=7)
    engine = build_engine(config, predictor=lite)
    assert engine.propagate_slices == 3
    assert engine.clicks.max_regions == 5
    assert engine.propagations.maxlen == 7
    defaults = build_engine(BackendConfig(), predictor=lite)
    assert (defaults.propagate_slices, defaults.clicks.max_regions) == (8, 256)
    assert defaults.propagations.maxlen == 256


def test_propagate_slices_zero_turns_propagation_off(lite: LiteMedSAMPredictor) -> None:
    off = build_engine(BackendConfig(propagate_slices=0), predictor=lite)
    assert off.propagate_submitted(_volume_webhook()) is False
    on = build_engine(BackendConfig(propagate_slices=1), predictor=lite)
    assert on.propagate_submitted(_volume_webhook()) is True  # queued (then fails: logged)
    on.propagator.shutdown(wait=True)
    assert len(on.propagations) == 0
