from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gan import DeformedMaskGenerator, topology_problem
from tests.helpers import blob_pairs


def _components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, np.ones((3, 3), bool))[1])


def test_deformation_keeps_masks_valid():
    _, labels = blob_pairs(4, 64, seed=0)
    labels[0, 5:12, 50:60] = 2  # a second class on one mask
    gen = DeformedMaskGenerator()
    new, sources = gen.sample(labels, 12, seed=3)
    assert new.shape == (12, 64, 64) and new.dtype == np.uint8
    for mask, src in zip(new, sources, strict=True):
        ref = labels[src]
        assert set(np.unique(mask)) == set(np.unique(ref))  # no class lost, none invented
        for cls in np.unique(ref)[1:]:
            n_ref, n_new = _components(ref == cls), _components(mask == cls)
            assert max(1, int(np.floor(0.5 * n_ref))) <= n_new <= int(np.ceil(2.0 * n_ref))
            assert (mask == cls).sum() >= 0.5 * (ref == cls).sum()
        assert topology_problem(mask, ref, gen.component_ratio, gen.min_fraction) is None
    assert not all(np.array_equal(new[k], labels[s]) for k, s in enumerate(sources))


def test_deformation_is_seeded():
    _, labels = blob_pairs(3, 64, seed=1)
    gen = DeformedMaskGenerator()
    a, sa = gen.sample(labels, 4, seed=7)
    b, sb = gen.sample(labels, 4, seed=7)
    c, _ = gen.sample(labels, 4, seed=8)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert not np.array_equal(a, c)


def test_empty_sources_skipped_and_all_empty_rejected():
    _, labels = blob_pairs(2, 64, seed=2)
    labels[0] = 0
    _, sources = DeformedMaskGenerator().sample(labels, 5, seed=0)
    assert set(sources.tolist()) == {1}
    with pytest.raises(ValueError, match="empty"):
        DeformedMaskGenerator().sample(np.zeros((2, 32, 32), np.uint8), 1)


def test_topology_problem_reports():
    ref = np.zeros((32, 32), np.uint8)
    ref[4:10, 4:10] = 1
    assert "shrank" in topology_problem(np.zeros_like(ref), ref, (0.5, 2.0), 0.5)
    split = ref.copy()
    split[12:14, 20:22] = split[20:22, 12:14] = split[25:27, 25:27] = 1
    assert "components" in topology_problem(split, ref, (0.5, 2.0), 0.1)
    assert topology_problem(ref, ref, (1.0, 1.0), 1.0) is None


def test_impossible_constraints_raise():
    _, labels = blob_pairs(1, 32, seed=0)
    gen = DeformedMaskGenerator(min_fraction=5.0, max_tries=2)
    with pytest.raises(RuntimeError, match="no valid deformation"):
        gen.sample(labels, 1)


def test_a_source_that_cannot_deform_is_dropped_not_fatal() -> None:
    # mask 0: one solid square (keeps its single component); mask 1: 576 isolated 1-px dots,
    # whose exact count no nearest-neighbour warp keeps → dropped, mask 0 still serves
    solid = np.zeros((48, 48), np.uint8)
    solid[12:36, 12:36] = 1
    checker = np.zeros((48, 48), np.uint8)
    checker[::2, ::2] = 1
    gen = DeformedMaskGenerator(max_tries=3, component_ratio=(1.0, 1.0))
    new, src = gen.sample(np.stack([solid, checker]), 6, seed=0)
    assert set(src.tolist()) == {0}
    assert gen.dropped_ == [1]
    assert all(n.any() for n in new)
