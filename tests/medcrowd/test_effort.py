"""medcrowd.effort: the brush-correction time budget and the benchmarks' re-export."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medcrowd.effort import (
    CostModel,
    Effort,
    assisted_correct,
    assisted_effort,
    brush_correct,
    brush_effort,
    manual_effort,
)
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


def test_a_click_that_fixes_the_mask_replaces_the_brush_and_costs_one_click() -> None:
    model = CostModel()
    rng = np.random.default_rng(0)
    manual = manual_effort(EXPERT, model, rng)
    prompts: list[tuple[list[list[float]], list[int], object]] = []

    def refine(points, labels, logits):  # type: ignore[no-untyped-def]
        prompts.append(([list(p) for p in points], list(labels), logits))
        return EXPERT.copy(), np.full((256, 256), 7.0, np.float32)

    first_logits = np.zeros((256, 256), np.float32)
    mask, effort = assisted_correct(
        START, EXPERT, model, rng, manual, refine=refine, logits=first_logits, clicks=3
    )
    assert np.array_equal(mask, EXPERT) and effort.reached and effort.tool == "1click+none"
    assert effort.seconds == pytest.approx(
        model.box_s + model.model_wait_s + model.click_s + model.model_wait_s
    )
    assert effort.actions == 3  # the box's two clicks + one refinement click
    ((points, labels, fed),) = prompts  # one click: the target was reached
    x, y = points[0]
    assert labels == [1] and EXPERT[int(y), int(x)] and not START[int(y), int(x)]
    assert fed is first_logits  # the first answer's logits go with the first click


def test_clicks_that_do_not_help_are_undone_and_then_not_taken() -> None:
    model = CostModel()
    manual = Effort(1e6, 1000, 1.0, True, "polygon")  # so dear that rejecting never pays
    calls = []

    def refine(points, labels, logits):  # type: ignore[no-untyped-def]
        calls.append(len(points))
        return np.zeros_like(EXPERT), None

    mask, effort = assisted_correct(
        START, EXPERT, model, np.random.default_rng(1), manual, refine=refine, clicks=2
    )
    assert calls == [1, 1]  # each undone click leaves the prompt: every call has one point
    # two wasted clicks cost more than nothing: the oracle brushes the model's mask directly,
    # exactly as without clicks
    brushed, fix = brush_correct(START, EXPERT, model, np.random.default_rng(1))
    assert effort.tool == fix.tool and np.array_equal(mask, brushed)
    assert effort.seconds == pytest.approx(model.box_s + model.model_wait_s + fix.seconds)
    plain = assisted_effort(START, EXPERT, model, np.random.default_rng(1), manual)
    assert plain == effort


def test_benchmarks_use_the_package_model() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _effort_model
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import medcrowd.effort

    assert _effort_model.CostModel is medcrowd.effort.CostModel
    assert _effort_model.assisted_effort is medcrowd.effort.assisted_effort
