"""Reliability and agreement functions on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fusion import (
    consensus_scores,
    detect_spammers,
    entropy_map,
    pairwise_dice,
    rater_scores,
    spammer_score,
    youden_reliability,
)


def test_rater_scores_known_answer() -> None:
    ref = np.array([[1, 1, 0, 0]], bool)
    masks = np.array([[[1, 1, 0, 0]], [[1, 0, 1, 0]], [[0, 0, 0, 0]]], bool)
    s = rater_scores(masks, ref)
    np.testing.assert_allclose(s.dice, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(s.sensitivity, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(s.specificity, [1.0, 0.5, 1.0])
    np.testing.assert_array_equal(s.n_voxels, [4, 4, 4])


def test_rater_scores_undefined_and_present() -> None:
    ref = np.zeros((1, 3), bool)
    masks = np.array([[[0, 0, 1]], [[0, 0, 0]]], bool)
    s = rater_scores(masks, ref, present=np.array([[[1, 1, 0]], [[1, 1, 1]]], bool))
    assert np.isnan(s.sensitivity).all()
    np.testing.assert_allclose(s.specificity, [1.0, 1.0])
    np.testing.assert_array_equal(s.n_voxels, [2, 3])
    with pytest.raises(ValueError):
        rater_scores(masks, np.zeros((2, 3), bool))


def test_consensus_scores_leave_one_out() -> None:
    masks = np.array([[[1, 1, 0, 0]], [[1, 1, 0, 0]], [[1, 1, 0, 0]], [[0, 0, 1, 1]]], bool)
    s = consensus_scores(masks)
    np.testing.assert_allclose(s.dice, [1.0, 1.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        consensus_scores(masks[:1])


def test_spammers() -> None:
    sens = np.array([0.95, 0.5, 0.3, 0.05])
    spec = np.array([0.9, 0.5, 0.72, 0.1])
    np.testing.assert_allclose(spammer_score(sens, spec), [0.85, 0.0, 0.02, 0.85])
    np.testing.assert_array_equal(detect_spammers(sens, spec), [False, True, True, False])
    np.testing.assert_allclose(youden_reliability(sens, spec), [0.85, 0.0, 0.02, 0.0])
    # a random-mask spammer measured against a gold mask is detected
    rng = np.random.default_rng(0)
    gold = np.zeros((40, 40), bool)
    gold[10:30, 10:30] = True
    masks = np.stack([gold, rng.random(gold.shape) < 0.25])
    s = rater_scores(masks, gold)
    np.testing.assert_array_equal(detect_spammers(s.sensitivity, s.specificity), [False, True])


def test_pairwise_dice_and_entropy() -> None:
    masks = np.array([[[1, 1, 0, 0]], [[1, 1, 0, 0]], [[1, 0, 0, 0]]], bool)
    # pairs: (0,1) 1.0, (0,2) 2/3, (1,2) 2/3
    assert pairwise_dice(masks) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert np.isnan(pairwise_dice(masks[:1]))
    h = entropy_map(masks)
    p = 2 / 3
    expected = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    np.testing.assert_allclose(h, [[0.0, expected, 0.0, 0.0]])
    h2 = entropy_map(masks[:2] ^ np.array([[[0, 0, 0, 0]], [[0, 0, 0, 1]]], bool))
    np.testing.assert_allclose(h2, [[0.0, 0.0, 0.0, 1.0]])
    # per-rater presence: rater 2 absent -> raters 0 and 1 agree everywhere
    assert pairwise_dice(masks, present=[True, True, False]) == pytest.approx(1.0)
    np.testing.assert_allclose(entropy_map(masks, present=[True, True, False]), 0.0)
