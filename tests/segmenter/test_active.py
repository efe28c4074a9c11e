"""segmenter.active: two labelling rounds on tiny data give well-formed, reproducible curves."""

from __future__ import annotations

from typing import Any

import pytest

from segmenter.active import (
    ALResult,
    SQASettings,
    planned_steps,
    results_json,
    simulate_active_learning,
)
from segmenter.model import SegmenterConfig
from tests.helpers import DiskFactory

CFG = SegmenterConfig(size=32, channels=(8, 16, 32), steps=20, res_units=1, lr=3e-3)


def test_two_rounds_well_formed_curves(disks: DiskFactory) -> None:
    pool_x, pool_y = disks(24, seed=0)
    test_x, test_y = disks(8, seed=5)
    ticks: list[tuple[int, int]] = []
    events: list[dict[str, Any]] = []
    kwargs = {
        "initial": 4,
        "per_round": 3,
        "rounds": 2,
        "config": CFG,
        "finetune_steps": 10,
        "seed": 3,
    }
    results, full = simulate_active_learning(
        pool_x, pool_y, test_x, test_y, progress=lambda d, t: ticks.append((d, t)),
        on_log=events.append, **kwargs,
    )  # fmt: skip
    assert [r.strategy for r in results] == ["sqa", "random", "mc-dropout"]
    assert 0.0 <= full <= 1.0
    for res in results:
        assert res.fractions == pytest.approx([4 / 24, 7 / 24, 10 / 24])
        assert len(res.dice) == 3 and all(0.0 <= d <= 1.0 for d in res.dice)
        assert [len(x) for x in res.labelled] == [4, 3, 3]
        flat = [i for part in res.labelled for i in part]
        assert len(set(flat)) == 10 and all(0 <= i < 24 for i in flat)  # no image twice
        assert len(res.scores) == 3 and [len(s) for s in res.scores] == [0, 3, 3]
    # same initial set and the same initial network for every strategy
    assert len({tuple(r.labelled[0]) for r in results}) == 1
    assert len({r.dice[0] for r in results}) == 1
    # the selected images come in priority order (power sampling: Gumbel-perturbed keys)
    sqa = results[0]
    assert all(s == sorted(s, reverse=True) for s in sqa.scores[1:])
    # one progress count over every optimiser step: initial 20, sqa 3 folds × 20 + 20 error
    # steps, 2 × 10 fine-tuning per strategy, full pool 20 + 2 × 10
    total = 20 + (3 * 20 + 20) + 3 * 2 * 10 + 40
    assert total == planned_steps(("sqa", "random", "mc-dropout"), initial=4, rounds=2,
                                  config=CFG, finetune_steps=10)  # fmt: skip
    assert ticks == [(d, total) for d in range(1, total + 1)]
    stages = [e["stage"] for e in events]
    assert stages[0] == "initial network" and stages[-1] == "full pool"
    assert stages[1:-1] == [f"{s}: round {r}/2" for s in ("sqa", "random", "mc-dropout")
                            for r in (1, 2)]  # fmt: skip
    assert [e["dice"] for e in events[1:3]] == results[0].dice[1:]
    assert events[-1]["dice"] == full
    # seeded: random selection repeats exactly
    again, _ = simulate_active_learning(
        pool_x, pool_y, test_x, test_y, strategies=("random",), **kwargs
    )
    assert again[0].labelled == results[1].labelled and again[0].dice == results[1].dice
    assert '"full_dice"' in results_json(results, full)


def test_argument_checks(disks: DiskFactory) -> None:
    x, y = disks(6)
    common = {"config": CFG, "finetune_steps": 1}
    with pytest.raises(ValueError, match="unknown strategies"):
        simulate_active_learning(
            x, y, x, y, strategies=("oracle",), initial=2, per_round=1, rounds=1, **common
        )
    with pytest.raises(ValueError, match="exceeds the pool of 6"):
        simulate_active_learning(x, y, x, y, initial=2, per_round=3, rounds=2, **common)
    with pytest.raises(ValueError, match="initial >= 2"):
        simulate_active_learning(x, y, x, y, initial=1, per_round=1, rounds=1, **common)
    assert ALResult("random").to_dict()["dice"] == []
    with pytest.raises(ValueError, match="acquisition"):
        SQASettings(acquisition="entropy")
