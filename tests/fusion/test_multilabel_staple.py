"""Multi-label STAPLE on hand-made label maps."""

from __future__ import annotations

import numpy as np
import pytest

from fusion import MultiLabelStaple, Staple


def test_known_answer() -> None:
    labels = np.array([[[0, 1, 2, 2]], [[0, 1, 2, 1]], [[0, 2, 2, 1]]])
    fused = MultiLabelStaple().fit_predict(labels)
    np.testing.assert_array_equal(fused, [[0, 1, 2, 1]])


def test_recovers_truth_and_ranks_raters() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (30, 30))
    noisy = [0.02, 0.1, 0.6]
    labels = np.stack(
        [
            np.where(rng.random(truth.shape) < f, rng.integers(0, 3, truth.shape), truth)
            for f in noisy
        ]
    )
    algo = MultiLabelStaple()
    fused = algo.fit_predict(labels)
    assert (fused == truth).mean() > 0.97
    assert algo.reliability_[0] > algo.reliability_[1] > algo.reliability_[2]
    assert algo.confusion_.shape == (3, 3, 3)
    np.testing.assert_allclose(algo.confusion_.sum(axis=1), 1.0)
    assert algo.probability_.shape == (3, 30, 30)


def test_binary_case_agrees_with_staple() -> None:
    rng = np.random.default_rng(1)
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:12] = True
    masks = np.stack([truth ^ (rng.random(truth.shape) < f) for f in (0.05, 0.1, 0.2)])
    fused = MultiLabelStaple().fit_predict(masks.astype(np.int64))
    binary = Staple().fit_predict(masks).mask
    assert (fused.astype(bool) == binary).mean() > 0.99


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        MultiLabelStaple().fit_predict(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        MultiLabelStaple().fit_predict(np.full((2, 3, 3), 0.5))
    with pytest.raises(ValueError):
        MultiLabelStaple().fit_predict(-np.ones((2, 3, 3), int))
    with pytest.raises(ValueError):
        MultiLabelStaple().fit_predict(np.full((2, 3, 3), 3), n_labels=2)
