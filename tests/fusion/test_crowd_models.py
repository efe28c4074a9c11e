"""The simulated annotator models on tiny hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fusion import dice
from fusion.crowd_models import ANNOTATOR_MODELS, simulate_crowd


def _disk(size: int = 96, radius: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    centre = size // 2
    return np.asarray((yy - centre) ** 2 + (xx - centre) ** 2 < radius**2)


def _square() -> np.ndarray:
    m = np.zeros((64, 64), bool)
    m[16:48, 16:48] = True
    return m


def _run(kind: str, expert: np.ndarray, seed: int = 0) -> np.ndarray:
    return ANNOTATOR_MODELS[kind](expert, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", range(5))
def test_good_is_close_to_the_expert(seed: int) -> None:
    expert = _square()
    out = _run("good", expert, seed)
    assert out.dtype == bool and out.shape == expert.shape
    assert dice(out, expert) > 0.95
    # ~0.6 px noise: nothing further than 3 px from the expert boundary changes
    assert not (out & ~ndimage.binary_dilation(expert, iterations=3)).any()
    assert (ndimage.binary_erosion(expert, iterations=3) <= out).all()


@pytest.mark.parametrize("seed", range(5))
def test_dilate_grows_and_erode_shrinks(seed: int) -> None:
    expert = _square()
    grown = _run("dilate", expert, seed)
    shrunk = _run("erode", expert, seed)
    assert (expert <= grown).all(), "dilate keeps every expert pixel"
    assert grown.sum() > expert.sum() + 4 * 32  # the 2 px ring is ~ 4·32·2 pixels
    assert not (grown & ~ndimage.binary_dilation(expert, iterations=6)).any()
    assert shrunk.sum() < expert.sum()
    assert (ndimage.binary_erosion(expert, iterations=4) <= shrunk).all()
    assert not (shrunk & ~ndimage.binary_dilation(expert, iterations=3)).any()
    assert shrunk.sum() < expert.sum() < grown.sum()


def test_sloppy_is_noisier_than_good() -> None:
    expert = _disk()
    good = np.mean([dice(_run("good", expert, s), expert) for s in range(5)])
    sloppy = np.mean([dice(_run("sloppy", expert, s), expert) for s in range(5)])
    assert 0.8 < sloppy < good


def test_miss_small_drops_small_and_thin_structures() -> None:
    expert = np.zeros((64, 64), bool)
    expert[10:40, 10:40] = True  # large: kept
    expert[50:53, 50:53] = True  # 9 voxels: dropped
    expert[5, 45:62] = True  # 1 px line: removed by the opening
    out = _run("miss_small", expert)
    assert dice(out[:45, :45], expert[:45, :45]) > 0.95
    assert not out[48:56, 48:56].any()
    assert not out[3:8, 45:62].any()


@pytest.mark.parametrize("kind", ["spammer_blobs", "spammer_random"])
def test_spammers_are_uncorrelated_with_the_truth(kind: str) -> None:
    expert = _disk()
    phis, fractions = [], []
    for seed in range(20):
        out = _run(kind, expert, seed)
        phis.append(np.corrcoef(out.ravel(), expert.ravel())[0, 1])
        fractions.append(out.mean())
    # the honest models correlate at > 0.9; a spammer's mean correlation is ~0
    assert abs(float(np.mean(phis))) < 0.06
    # foreground share matches the expert's (the spammer is not simply empty or full)
    assert np.mean(fractions) == pytest.approx(expert.mean(), abs=0.02)


def test_spammer_fraction_is_clipped_on_an_empty_expert() -> None:
    empty = np.zeros((50, 50), bool)
    out = _run("spammer_random", empty)
    assert 0.0 < out.mean() < 0.05  # 1 % floor, not empty


def test_partial_labels_one_half_only() -> None:
    expert = _square()
    for seed in range(6):
        out = _run("partial", expert, seed)
        halves = [bool(h.any()) for h in (out[:32], out[32:], out[:, :32], out[:, 32:])]
        assert halves.count(False) == 1, "exactly one half along one axis is empty"
        assert out.sum() == pytest.approx(expert.sum() / 2, rel=0.15)


def test_simulate_crowd_stacks_in_order_and_reproduces() -> None:
    expert = _square()
    kinds = ["good", "dilate", "erode", "spammer_random"]
    a = simulate_crowd(expert, kinds, seed=3)
    b = simulate_crowd(expert, kinds, seed=3)
    c = simulate_crowd(expert, kinds, seed=4)
    assert a.shape == (4, 64, 64) and a.dtype == bool
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a[2].sum() < expert.sum() < a[1].sum()
    # the same shared generator, model by model, in the order given
    rng = np.random.default_rng(3)
    for i, kind in enumerate(kinds):
        np.testing.assert_array_equal(a[i], ANNOTATOR_MODELS[kind](expert, rng))


def test_models_work_in_3d() -> None:
    expert = np.zeros((12, 32, 32), bool)
    expert[3:9, 8:24, 8:24] = True
    crowd = simulate_crowd(expert, sorted(ANNOTATOR_MODELS), seed=0)
    assert crowd.shape == (len(ANNOTATOR_MODELS), 12, 32, 32)
    grown = crowd[sorted(ANNOTATOR_MODELS).index("dilate")]
    assert (expert <= grown).all() and grown.sum() > expert.sum()


@pytest.mark.parametrize(
    ("expert", "kinds", "seed", "match"),
    [
        (np.zeros((8, 8), bool), ["nobody"], 0, "unknown annotator"),
        (np.zeros((8, 8), bool), [], 0, "kinds is empty"),
        (np.zeros(8, bool), ["good"], 0, "2D"),
        (np.zeros((2, 2, 2, 2), bool), ["good"], 0, "2D"),
        (np.zeros((8, 8), bool), ["good"], -1, "seed"),
        (np.zeros((8, 8), bool), ["good"], 1.5, "seed"),
    ],
)
def test_bad_parameters_raise(expert: np.ndarray, kinds: list[str], seed: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_crowd(expert, kinds, seed=seed)
