"""Preprocessing: validation, intensity windows, resize/pad geometry, masks back to size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_backend.errors import InvalidInput
from ml_backend.preprocessing import (
    CT_WINDOWS,
    Geometry,
    logits_to_mask,
    minmax_normalise,
    pad_bottom_right,
    resize_to,
    to_uint8_rgb,
    validate_box,
    validate_image,
    window_tag,
)

# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("shape", "dtype", "out_shape"),
    [
        ((5, 7), np.uint8, (5, 7)),
        ((5, 7, 1), np.uint8, (5, 7)),
        ((5, 7, 3), np.uint8, (5, 7, 3)),
        ((5, 7, 4), np.uint8, (5, 7, 3)),
        ((5, 7), np.uint16, (5, 7)),
        ((5, 7), np.int16, (5, 7)),
        ((5, 7, 3), np.float32, (5, 7, 3)),
        ((2, 2), np.float64, (2, 2)),
    ],
)
def test_validate_image_accepts(shape: tuple[int, ...], dtype: type, out_shape: tuple) -> None:
    image = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    out = validate_image(image)
    assert out.shape == out_shape
    assert out.dtype == dtype


def test_validate_image_drops_alpha() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[..., 0] = 7
    out = validate_image(rgba)
    assert out.shape == (4, 4, 3)
    assert (out[..., 0] == 7).all()
    assert (out[..., 1:] == 0).all()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros(10, np.uint8), "shape"),
        (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
        (np.zeros((0, 5), np.uint8), "at least 2"),
        (np.zeros((1, 5), np.uint8), "at least 2"),
        (np.zeros((5, 5, 2), np.uint8), "channels"),
        (np.zeros((5, 5), bool), "dtype"),
        (np.zeros((5, 5), complex), "dtype"),
        (np.array([[1.0, np.nan], [0.0, 0.0]]), "NaN"),
        (np.array([[1.0, np.inf], [0.0, 0.0]]), "NaN"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_validate_image_rejects(image: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_image(image)


def test_validate_image_max_side() -> None:
    validate_image(np.zeros((3, 64), np.uint8), max_side=64)
    with pytest.raises(InvalidInput, match="largest accepted side is 64"):
        validate_image(np.zeros((3, 65), np.uint8), max_side=64)
    with pytest.raises(InvalidInput, match="8192"):
        validate_image(np.zeros((8193, 2), np.uint8))


# ----------------------------------------------------------------------------- boxes


def test_validate_box_passes_and_clips_rounding() -> None:
    np.testing.assert_array_equal(validate_box([1, 2, 30, 40], (50, 60)), [1, 2, 30, 40])
    np.testing.assert_array_equal(validate_box((-0.6, -1.0, 60.9, 51.0), (50, 60)), [0, 0, 60, 50])
    assert validate_box(np.array([0.5, 0.5, 1.5, 1.5]), (2, 2)).dtype == np.float64


@pytest.mark.parametrize(
    "box",
    [
        [10, 10, 10, 20],  # zero width
        [10, 10, 20, 10],  # zero height
        [20, 10, 10, 20],  # x1 < x0
        [0, 0, float("nan"), 5],
        [0, 0, float("inf"), 5],
        [-1.5, 0, 10, 10],  # more than 1 px outside
        [0, 0, 61.5, 10],
        [0, 0, 10, 51.2],
        [60.5, 0, 61, 10],  # inside the tolerance but no area left in the image
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        ["a", 0, 1, 1],
    ],
)
def test_validate_box_rejects(box: list) -> None:
    with pytest.raises(InvalidInput):
        validate_box(box, (50, 60))


# ----------------------------------------------------------------------------- intensities


def test_uint8_passes_unchanged_and_gray_becomes_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    assert to_uint8_rgb(rgb) is rgb or np.array_equal(to_uint8_rgb(rgb), rgb)
    gray = rgb[..., 0]
    out = to_uint8_rgb(gray)
    assert out.shape == (6, 5, 3)
    assert all(np.array_equal(out[..., c], gray) for c in range(3))


def test_percentile_window_16bit() -> None:
    data = np.linspace(0, 4000, 10_000).reshape(100, 100).astype(np.uint16)
    data[0, 0] = 65535  # one hot pixel must not squash the rest
    out = to_uint8_rgb(data)
    assert out.dtype == np.uint8
    assert out.shape == (100, 100, 3)
    assert out[..., 0].min() == 0
    assert out[..., 0].max() == 255
    middle = out[50, 50, 0]  # ~2000 of 0..4000 → ~128
    assert 120 <= middle <= 135


def test_ct_windows_on_negative_hu() -> None:
    hu = np.array([[-1000, -160, 40], [240, 1000, 3000]], dtype=np.int16)
    soft = to_uint8_rgb(hu, "soft_tissue")[..., 0]  # W400/L40: [-160, 240]
    np.testing.assert_array_equal(soft, [[0, 0, 128], [255, 255, 255]])
    lung = to_uint8_rgb(hu, "lung")[..., 0]  # W1500/L-600: [-1350, 150]
    assert lung[0, 0] == round((-1000 + 1350) / 1500 * 255)
    assert lung[1, 0] == 255
    np.testing.assert_array_equal(to_uint8_rgb(hu, (400.0, 40.0)), to_uint8_rgb(hu, "soft_tissue"))
    assert set(CT_WINDOWS) == {"soft_tissue", "lung", "bone", "brain"}
    assert CT_WINDOWS["brain"] == (80.0, 40.0)


def test_float_and_constant_images() -> None:
    out = to_uint8_rgb(np.full((4, 4), 3.5, np.float32))
    assert (out == 0).all()  # constant: no NaN, no division by zero
    ramp = to_uint8_rgb(np.linspace(-1, 1, 400).reshape(20, 20))
    assert ramp.min() == 0
    assert ramp.max() == 255


def test_window_errors_and_tags() -> None:
    with pytest.raises(ValueError, match="unknown window"):
        to_uint8_rgb(np.zeros((3, 3), np.int16), "liver")
    with pytest.raises(ValueError, match="unknown window"):
        window_tag("liver")
    with pytest.raises(ValueError, match="width"):
        to_uint8_rgb(np.zeros((3, 3), np.int16), (0.0, 40.0))
    tags = {window_tag(w) for w in (None, "percentile", "lung", (400.0, 40.0), (400.0, 50.0))}
    assert len(tags) == 5


def test_minmax_normalise() -> None:
    out = minmax_normalise(np.array([[10, 20], [30, 50]], np.uint8))
    np.testing.assert_allclose(out, [[0, 0.25], [0.5, 1.0]])
    assert minmax_normalise(np.full((2, 2), 9, np.uint8)).max() == 0


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("hw", "resized"),
    [
        ((155, 225), (176, 256)),  # landscape, odd (s0619_32)
        ((181, 258), (180, 256)),  # landscape, shrink (s0114_111)
        ((290, 320), (232, 256)),
        ((301, 99), (256, 84)),  # portrait
        ((512, 512), (256, 256)),
        ((2, 3), (171, 256)),  # tiny, enlarged
    ],
)
def test_longest_side_geometry(hw: tuple[int, int], resized: tuple[int, int]) -> None:
    geometry = Geometry.longest_side(hw, 256)
    assert geometry.resized_hw == resized
    scale = 256 / max(hw)
    assert geometry.box_scale_xy == (scale, scale)
    np.testing.assert_allclose(
        geometry.scale_box(np.array([0, 0, hw[1], hw[0]])), [0, 0, hw[1] * scale, hw[0] * scale]
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 4000), st.integers(2, 4000))
def test_longest_side_keeps_aspect(h: int, w: int) -> None:
    geometry = Geometry.longest_side((h, w), 256)
    rh, rw = geometry.resized_hw
    assert max(rh, rw) == 256
    assert 1 <= min(rh, rw) <= 256
    # rounded to the nearest pixel, but never below 1 px (2 × 1025 → 256 × 1, not × 0)
    assert abs(rh - h * 256 / max(h, w)) <= 0.5 or rh == 1
    assert abs(rw - w * 256 / max(h, w)) <= 0.5 or rw == 1


def test_stretch_geometry_scales_each_axis() -> None:
    geometry = Geometry.stretch((155, 225), 1024)
    assert geometry.resized_hw == (1024, 1024)
    np.testing.assert_allclose(geometry.scale_box(np.array([0, 0, 225, 155])), [0, 0, 1024, 1024])


@pytest.mark.parametrize("hw", [(155, 225), (301, 99), (7, 5)])
def test_resize_and_pad_shapes(hw: tuple[int, int]) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    geometry = Geometry.longest_side(hw, 256)
    resized = resize_to(image, geometry.resized_hw)
    assert resized.shape == (*geometry.resized_hw, 3)
    assert resized.dtype == np.uint8
    padded = pad_bottom_right(resized.astype(np.float32), 256)
    assert padded.shape == (256, 256, 3)
    assert (padded[geometry.resized_hw[0] :, :, :] == 0).all()
    assert (padded[:, geometry.resized_hw[1] :, :] == 0).all()
    with pytest.raises(ValueError):
        pad_bottom_right(np.zeros((300, 10, 3)), 256)


def test_resize_to_area_average_when_shrinking() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = 200
    out = resize_to(image, (2, 2))
    np.testing.assert_array_equal(out[..., 0], [[200, 0], [0, 0]])


# ----------------------------------------------------------------------------- masks back


@pytest.mark.parametrize("hw", [(155, 225), (301, 99), (512, 512), (37, 41)])
def test_logits_to_mask_round_trips_a_box(hw: tuple[int, int]) -> None:
    """A box drawn in logit space comes back as the same box in the original image."""
    h, w = hw
    geometry = Geometry.longest_side(hw, 256)
    box = np.array([w * 0.2, h * 0.3, w * 0.7, h * 0.9])
    x0, y0, x1, y1 = geometry.scale_box(box)
    logits = torch.full((1, 1, 256, 256), -10.0)
    logits[..., round(y0) : round(y1), round(x0) : round(x1)] = 10.0
    # padding holds positive logits: it must be cropped, not stretched into the image
    logits[..., geometry.resized_hw[0] :, :] = 10.0
    logits[..., :, geometry.resized_hw[1] :] = 10.0
    mask = logits_to_mask(logits, geometry)
    assert mask.shape == hw
    assert mask.dtype == np.bool_
    expected = np.zeros(hw, bool)
    expected[round(box[1]) : round(box[3]), round(box[0]) : round(box[2])] = True
    inter = np.logical_and(mask, expected).sum()
    assert inter / np.logical_or(mask, expected).sum() > 0.85
    assert not mask[-1, :].any()
    assert not mask[:, -1].any()


def test_logits_to_mask_threshold_is_sigmoid_half() -> None:
    geometry = Geometry.longest_side((256, 256), 256)
    logits = np.full((256, 256), 1e-3, np.float32)
    logits[:, :128] = -1e-3
    mask = logits_to_mask(logits, geometry)
    assert mask[:, 128:].all()
    assert not mask[:, :128].any()


def test_logits_to_mask_stretch_resizes_whole_square() -> None:
    geometry = Geometry.stretch((100, 50), 1024)
    logits = np.full((256, 256), -5.0, np.float32)
    logits[128:, :] = 5.0  # bottom half of the square = bottom half of the image
    mask = logits_to_mask(logits, geometry)
    assert mask.shape == (100, 50)
    assert mask[50:].all()
    assert not mask[:50].any()
