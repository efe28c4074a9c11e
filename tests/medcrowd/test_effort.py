"""medcrowd.effort: the brush-correction time budget and the benchmarks' re-export."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medcrowd.effort import CostModel, brush_correct, brush_effort
from tests.helpers import REPO


def _disc(shape: int, r: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape, :shape]
    return (yy - shape / 2) ** 2 + (xx - cx) ** 2 < r**2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


EXPERT = _disc(96, 14, 24) | _disc(96, 16, 70)
# the left object slightly too small, the right one missing, a false blob: several strokes
START = _disc(96, 12, 24) | (_disc(96, 6, 48) & ~EXPERT)


def test_unlimited_budget_reaches_the_target_and_returns_the_mask() -> None:
    model = CostModel(target=0.95)
    mask, effort = brush_correct(START, EXPERT, model, np.random.default_rng(0))
    assert effort.reached and effort.dice >= 0.95
    assert effort.dice == pytest.approx(_dice(mask, EXPERT))
    assert not np.array_equal(mask, START) and effort.seconds > 0
    # brush_effort is the same computation without the mask
    again = brush_effort(START, EXPERT, model, np.random.default_rng(0))
    assert again == effort


def test_budget_caps_the_seconds() -> None:
    model = CostModel(target=0.99)
    full = brush_correct(START, EXPERT, model, np.random.default_rng(0))[1]
    partial = 0
    for share in (0.95, 0.8, 0.6, 0.4):
        budget = full.seconds * share
        rng = np.random.default_rng(0)
        mask, capped = brush_correct(START, EXPERT, model, rng, budget_s=budget)
        assert capped.seconds <= budget < full.seconds and not capped.reached
        assert capped.dice == pytest.approx(_dice(mask, EXPERT))
        if capped.seconds > 0:
            partial += 1
            assert _dice(START, EXPERT) < capped.dice < full.dice
    assert partial >= 1  # some budget buys part of the corrections
    none, zero = brush_correct(START, EXPERT, model, np.random.default_rng(0), budget_s=0.0)
    assert np.array_equal(none, START) and zero.seconds == 0 and zero.tool == "none"


def test_benchmarks_use_the_package_model() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _effort_model
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import medcrowd.effort

    assert _effort_model.CostModel is medcrowd.effort.CostModel
    assert _effort_model.assisted_effort is medcrowd.effort.assisted_effort
