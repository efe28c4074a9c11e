"""Brush RLE round trip: random masks at odd sizes, and malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ml_backend.rle import mask_to_rle, rle_to_mask


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 37).flatmap(
        lambda h: st.integers(1, 41).flatmap(lambda w: arrays(np.bool_, (h, w)))
    )
)
def test_round_trip_random_masks(mask: np.ndarray) -> None:
    rle = mask_to_rle(mask)
    assert all(0 <= v <= 255 for v in rle)
    back = rle_to_mask(rle, *mask.shape)
    assert back.dtype == np.bool_
    np.testing.assert_array_equal(back, mask)


def test_round_trip_long_runs_over_64k_pixels() -> None:
    # Runs longer than 2**16 values are split by the encoder; a 300x300 full mask has 360,000.
    mask = np.ones((300, 300), dtype=bool)
    mask[150, 150] = False
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask), 300, 300), mask)


def test_uint8_255_and_01_encode_alike() -> None:
    m = np.zeros((5, 7), dtype=np.uint8)
    m[1:3, 2:6] = 1
    assert mask_to_rle(m) == mask_to_rle(m * 255) == mask_to_rle(m.astype(bool))


def test_wrong_size_is_a_clear_error() -> None:
    rle = mask_to_rle(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="expected 4x5"):
        rle_to_mask(rle, 4, 5)


@pytest.mark.parametrize("bad", [np.zeros((3,), bool), np.zeros((0, 4), bool)])
def test_bad_mask_shape(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(bad)
