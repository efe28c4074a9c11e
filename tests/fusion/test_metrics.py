"""Metrics against independent implementations (scipy cdist brute force, scikit-image)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from scipy.spatial.distance import dice as scipy_dice_dissimilarity

from fusion import average_surface_distance, dice, hausdorff, hd95, iou, surface_dice

skmetrics = pytest.importorskip("skimage.metrics")


def _surface_bruteforce(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour outside the mask (outside the array = out)."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    surface = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            surface |= mask & ~np.roll(padded, shift, axis=axis)[inner]
    return surface


def _directed_bruteforce(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    pa = np.argwhere(_surface_bruteforce(a)) * np.asarray(spacing)
    pb = np.argwhere(_surface_bruteforce(b)) * np.asarray(spacing)
    return cdist(pa, pb).min(axis=1)


def _random_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    for mask in (a, b):
        lo = [int(rng.integers(0, s - 2)) for s in shape]
        hi = [int(rng.integers(low + 1, s)) for low, s in zip(lo, shape, strict=True)]
        mask[tuple(slice(low, high) for low, high in zip(lo, hi, strict=True))] = True
        mask ^= rng.random(shape) < 0.1
    a[(0,) * len(shape)] = True
    b[(-1,) * len(shape)] = True
    return a, b


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), three_d=st.booleans())
def test_distances_match_bruteforce(seed: int, three_d: bool) -> None:
    shape = (6, 9, 10) if three_d else (17, 13)
    spacing = (2.0, 0.7, 1.3)[: len(shape)]
    a, b = _random_pair(seed, shape)
    d_ab = _directed_bruteforce(a, b, spacing)
    d_ba = _directed_bruteforce(b, a, spacing)
    assert hausdorff(a, b, spacing) == pytest.approx(max(d_ab.max(), d_ba.max()))
    expected95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assert hd95(a, b, spacing) == pytest.approx(expected95)
    expected_assd = np.concatenate([d_ab, d_ba]).mean()
    assert average_surface_distance(a, b, spacing) == pytest.approx(expected_assd)
    expected_sd = (np.sum(d_ab <= 1.5) + np.sum(d_ba <= 1.5)) / (d_ab.size + d_ba.size)
    assert surface_dice(a, b, 1.5, spacing) == pytest.approx(expected_sd)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_hausdorff_matches_skimage_on_surfaces(seed: int) -> None:
    a, b = _random_pair(seed, (15, 19))
    expected = skmetrics.hausdorff_distance(_surface_bruteforce(a), _surface_bruteforce(b))
    assert hausdorff(a, b) == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_overlap_matches_scipy(seed: int) -> None:
    a, b = _random_pair(seed, (9, 11))
    assert dice(a, b) == pytest.approx(1 - scipy_dice_dissimilarity(a.ravel(), b.ravel()))
    jaccard = np.sum(a & b) / np.sum(a | b)
    assert iou(a, b) == pytest.approx(jaccard)


def test_known_values() -> None:
    a = np.zeros((10, 10), bool)
    a[2:5, 2:5] = True
    b = np.roll(a, 3, axis=1)
    assert dice(a, b) == 0.0
    assert hausdorff(a, b) == 3.0
    assert hd95(a, b, spacing=(1.0, 2.0)) == 6.0
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0 and hd95(a, a) == 0.0
    assert surface_dice(a, b, tolerance=3.0) == 1.0


def test_empty_conventions() -> None:
    empty = np.zeros((5, 5), bool)
    full = np.ones((5, 5), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0 and average_surface_distance(empty, empty) == 0.0
    assert surface_dice(empty, empty, 1.0) == 1.0
    assert dice(empty, full) == 0.0 and hd95(empty, full) == float("inf")
    assert surface_dice(full, empty, 1.0) == 0.0


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        hd95(np.zeros(5, bool), np.zeros(5, bool))
    with pytest.raises(ValueError):
        hd95(np.ones((3, 3), bool), np.ones((3, 3), bool), spacing=(1.0,))
    with pytest.raises(ValueError):
        surface_dice(np.ones((3, 3), bool), np.ones((3, 3), bool), tolerance=-1.0)


def test_dice_from_counts_matches_dice() -> None:
    from fusion.metrics import dice_from_counts

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 3, 16, 16)) < 0.3
    inter = np.array([np.count_nonzero(x & y) for x, y in zip(a, b, strict=True)])
    total = a.reshape(3, -1).sum(1) + b.reshape(3, -1).sum(1)
    expected = [dice(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_array_equal(dice_from_counts(inter, total), expected)
    assert float(dice_from_counts(0, 0)) == 1.0  # both empty
    assert float(dice_from_counts(0, 5)) == 0.0
    out = dice_from_counts(np.float32([[1.0, 2.0]]), np.float32([[4.0], [0.0]]))
    assert out.dtype == np.float64 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[0.5, 1.0], [1.0, 1.0]])
