"""Binary STAPLE: known answers, edge cases, and agreement with SimpleITK's STAPLEImageFilter."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion import Staple, dice

sitk = pytest.importorskip("SimpleITK")


def _sitk_staple(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1.0)
    prob = sitk.GetArrayFromImage(flt.Execute(images))
    return prob, np.array(flt.GetSensitivity()), np.array(flt.GetSpecificity())


def _assert_matches_sitk(masks: np.ndarray) -> None:
    prob, sens, spec = _sitk_staple(masks)
    algo = Staple()
    mask, _ = algo.fit_predict(masks)
    assert dice(mask, prob > 0.5) >= 0.999
    np.testing.assert_allclose(algo.sensitivity_, sens, atol=1e-3)
    np.testing.assert_allclose(algo.specificity_, spec, atol=1e-3)


def test_known_answer_square_with_one_stray_voxel() -> None:
    masks = np.zeros((3, 6, 6), bool)
    masks[:, 1:4, 1:4] = True
    masks[2, 5, 5] = True  # a false positive of rater 2 only
    algo = Staple()
    mask, reliability = algo.fit_predict(masks)
    expected = np.zeros((6, 6), bool)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_allclose(algo.sensitivity_, 1.0, atol=1e-6)
    assert algo.specificity_[0] == pytest.approx(1.0, abs=1e-6)
    assert algo.specificity_[2] == pytest.approx(26 / 27, abs=1e-3)
    assert algo.converged_
    assert reliability[2] < reliability[0]
    assert algo.probability_.shape == (6, 6)


def test_result_unpacks_and_exposes_probability() -> None:
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2] = True
    result = Staple().fit_predict(masks)
    mask, reliability = result
    assert mask.dtype == bool and reliability.shape == (2,)
    assert result.probability.dtype == np.float64
    assert ((result.probability >= 0) & (result.probability <= 1)).all()


@pytest.mark.parametrize("fill", [False, True])
def test_all_empty_and_all_full(fill: bool) -> None:
    masks = np.full((3, 4, 5), fill)
    mask, reliability = Staple().fit_predict(masks)
    assert (mask == fill).all()
    assert np.isfinite(reliability).all()


def test_one_rater() -> None:
    rng = np.random.default_rng(3)
    masks = rng.random((1, 8, 8)) < 0.3
    mask, _ = Staple().fit_predict(masks)
    np.testing.assert_array_equal(mask, masks[0])


def test_missing_rater_equals_dropping_it() -> None:
    rng = np.random.default_rng(4)
    truth = np.zeros((20, 20), bool)
    truth[5:15, 4:12] = True
    masks = np.stack([truth ^ (rng.random(truth.shape) < f) for f in (0.05, 0.1, 0.3, 0.2)])
    with_present = Staple().fit_predict(masks, present=[True, True, False, True])
    dropped = Staple().fit_predict(masks[[0, 1, 3]])
    np.testing.assert_allclose(with_present.probability, dropped.probability, atol=1e-9)


def test_per_voxel_missing_raters_are_ignored_there() -> None:
    rng = np.random.default_rng(5)
    truth = np.zeros((16, 16), bool)
    truth[4:12, 4:12] = True
    masks = np.stack([truth ^ (rng.random(truth.shape) < 0.05) for _ in range(3)])
    corrupted = masks.copy()
    corrupted[0, :8] = ~truth[:8]  # rater 0 garbage in the top half ...
    present = np.ones(masks.shape, bool)
    present[0, :8] = False  # ... but marked absent there
    a = Staple().fit_predict(corrupted, present=present)
    b = Staple().fit_predict(masks, present=present)
    np.testing.assert_allclose(a.probability, b.probability)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError):
        Staple().fit_predict(np.zeros((5, 5), bool))
    with pytest.raises(ValueError):
        Staple().fit_predict(np.full((2, 3, 3), 0.5))
    with pytest.raises(ValueError):
        Staple(max_iter=0)
    with pytest.raises(ValueError):
        Staple(prior=1.0)


def test_max_iter_stops_early() -> None:
    rng = np.random.default_rng(6)
    masks = rng.random((4, 10, 10)) < 0.4
    algo = Staple(max_iter=2)
    algo.fit_predict(masks)
    assert algo.n_iter_ == 2 and not algo.converged_


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_raters=st.integers(2, 6),
    depth=st.sampled_from([None, 4]),
)
def test_matches_simpleitk(seed: int, n_raters: int, depth: int | None) -> None:
    rng = np.random.default_rng(seed)
    shape = (24, 28) if depth is None else (depth, 12, 14)
    truth = np.zeros(shape, bool)
    sl = tuple(slice(s // 4, 3 * s // 4 + 1) for s in shape)
    truth[sl] = True
    flips = rng.uniform(0.0, 0.3, n_raters)
    masks = np.stack([truth ^ (rng.random(shape) < f) for f in flips])
    _assert_matches_sitk(masks)


@pytest.mark.parametrize("image_id", [1, 8])
def test_matches_simpleitk_on_drive(
    image_id: int, load_drive_pair: Callable[[int], tuple[np.ndarray, np.ndarray]]
) -> None:
    manual1, manual2 = load_drive_pair(image_id)
    rng = np.random.default_rng(image_id)
    # third rater: manual1 with 2 % of the pixels flipped
    third = manual1 ^ (rng.random(manual1.shape) < 0.02)
    masks = np.stack([manual1, manual2, third])
    _assert_matches_sitk(masks)
