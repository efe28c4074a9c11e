"""MajorityVote and WeightedVote on hand-made arrays, edge cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fusion import MajorityVote, WeightedVote


def _masks(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=bool)[:, None, :]  # (R, 1, W)


def test_majority_vote_known_answer() -> None:
    masks = _masks([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]])
    mask, reliability = MajorityVote().fit_predict(masks)
    assert mask.tolist() == [[True, True, False, False]]
    assert reliability.shape == (3,)
    # rater 0 equals the consensus exactly; raters 1 and 2 each make one error
    assert reliability[0] == 1.0
    assert reliability[1] < 1.0 and reliability[2] < 1.0


def test_majority_vote_tie_goes_to_background_and_probability() -> None:
    result = MajorityVote().fit_predict(_masks([[1, 1, 0], [0, 1, 0]]))
    assert result.mask.tolist() == [[False, True, False]]
    np.testing.assert_allclose(result.probability, [[0.5, 1.0, 0.0]])


def test_majority_vote_3d() -> None:
    masks = np.zeros((3, 2, 3, 3), bool)
    masks[:2, 1, 1, 1] = True
    masks[2, 0, 0, 0] = True
    mask, _ = MajorityVote().fit_predict(masks)
    assert mask.shape == (2, 3, 3)
    assert np.argwhere(mask).tolist() == [[1, 1, 1]]


@pytest.mark.parametrize("fill", [False, True])
def test_all_empty_and_all_full(fill: bool) -> None:
    masks = np.full((4, 5, 6), fill)
    for algo in (MajorityVote(), WeightedVote()):
        kwargs = {"weights": np.ones(4)} if isinstance(algo, WeightedVote) else {}
        mask, reliability = algo.fit_predict(masks, **kwargs)
        assert (mask == fill).all()
        np.testing.assert_array_equal(reliability, np.ones(4))


def test_one_rater_is_returned_unchanged() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((1, 7, 9)) < 0.4
    mask, _ = MajorityVote().fit_predict(masks)
    np.testing.assert_array_equal(mask, masks[0])


def test_missing_raters_per_rater_and_per_voxel() -> None:
    masks = _masks([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    # rater 1 and 2 absent: rater 0 decides alone
    mask, _ = MajorityVote().fit_predict(masks, present=[True, False, False])
    assert mask.tolist() == [[True, True, False]]
    # per voxel: without presence the vote fractions are [1/3, 2/3, 1/3] -> [F, T, F]
    present = np.ones((3, 1, 3), bool)
    present[0, 0, 1] = False  # voxel 1: votes 1, 0 -> tie -> background
    present[:2, 0, 2] = False  # voxel 2: only rater 2 (votes 1) -> foreground
    result = MajorityVote().fit_predict(masks, present=present)
    assert result.mask.tolist() == [[False, False, True]]
    np.testing.assert_allclose(result.probability, [[1 / 3, 0.5, 1.0]])
    present[:, 0, 0] = False  # voxel 0: nobody -> background, probability 0
    result = MajorityVote().fit_predict(masks, present=present)
    assert result.mask.tolist() == [[False, False, True]]
    assert result.probability[0, 0] == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), bool),
        np.zeros((2, 3, 3, 3, 3), bool),
        np.full((2, 3, 3), 2),
        np.zeros((0, 3, 3)),
    ],
)
def test_bad_shapes_raise(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        MajorityVote().fit_predict(bad)


def test_bad_present_and_weights_raise() -> None:
    masks = np.zeros((3, 4, 4), bool)
    with pytest.raises(ValueError):
        MajorityVote().fit_predict(masks, present=[True, False])
    with pytest.raises(ValueError):
        MajorityVote().fit_predict(masks, present=np.ones((3, 5, 4), bool))
    with pytest.raises(ValueError):
        WeightedVote().fit_predict(masks, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError):
        WeightedVote().fit_predict(masks, weights=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        MajorityVote(threshold=1.0)


def test_weighted_vote_without_weights_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        WeightedVote().fit_predict(np.zeros((2, 3, 3), bool))


def test_weighted_vote_known_answer() -> None:
    masks = _masks([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
    mask, _ = WeightedVote().fit_predict(masks, weights=[3.0, 1.0, 1.0])
    assert mask.tolist() == [[True, True, False, False]]  # 3/5 > 0.5 where rater 0 votes
    mask, _ = WeightedVote().fit_predict(masks, weights=[1.0, 1.0, 1.0])
    assert mask.tolist() == [[False, False, True, False]]


def test_weighted_vote_learns_weights_from_gold() -> None:
    gold = np.zeros((1, 6), bool)
    gold[0, :3] = True
    good = gold.copy()
    bad1 = ~gold
    bad2 = ~gold
    gold_masks = [np.stack([good, bad1, bad2])]
    algo = WeightedVote().fit(gold_masks, [gold])
    assert algo.weights_ is not None
    np.testing.assert_allclose(algo.weights_, [1.0, 0.0, 0.0])
    new = np.stack([gold, ~gold, ~gold])
    mask, _ = algo.fit_predict(new)
    np.testing.assert_array_equal(mask, gold)  # majority vote would return ~gold


@settings(max_examples=40, deadline=None)
@given(
    mask=arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 6))),
    n_raters=st.integers(1, 6),
)
def test_vote_of_identical_raters_is_that_mask(mask: np.ndarray, n_raters: int) -> None:
    masks = np.repeat(mask[None], n_raters, axis=0)
    np.testing.assert_array_equal(MajorityVote().fit_predict(masks).mask, mask)
    weights = np.arange(1, n_raters + 1, dtype=float)
    np.testing.assert_array_equal(WeightedVote().fit_predict(masks, weights=weights).mask, mask)
