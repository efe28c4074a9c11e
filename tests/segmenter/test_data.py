"""segmenter.data: gray conversion, resizing, tiling, prepare (tiny arrays with known answers).

Reading folders of pairs is medcrowd.pairs' job (tests/medcrowd/test_pairs.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from segmenter.data import prepare, resize_pair, tiles, to_gray


def test_to_gray() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    expected = round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)  # 153
    gray = to_gray(rgb)
    assert gray.dtype == np.uint8 and gray.shape == (2, 2) and (gray == expected).all()
    assert (to_gray(rgb, "green") == 200).all()
    rgba = np.concatenate([rgb, np.zeros((2, 2, 1), np.uint8)], axis=-1)
    assert (to_gray(rgba) == expected).all()  # alpha dropped
    wide = np.array([[0, 1000], [2000, 4000]], np.uint16)
    np.testing.assert_array_equal(to_gray(wide), [[0, 64], [128, 255]])  # min–max scaled
    assert (to_gray(np.ones((3, 3), bool)) == 255).all()
    flat = np.full((2, 2), 7, np.uint8)
    np.testing.assert_array_equal(to_gray(flat), flat)
    with pytest.raises(ValueError, match="expected an HW or HWC"):
        to_gray(np.zeros((2, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown gray mode"):
        to_gray(rgb, "red")  # type: ignore[arg-type]


def test_resize_pair_keeps_mask_binary() -> None:
    image = np.arange(60 * 40, dtype=np.uint32).reshape(60, 40).astype(np.uint8)
    mask = np.zeros((60, 40), np.uint8)
    mask[10:50, 5:35] = 255
    img, msk = resize_pair(image, mask, 16)
    assert img.shape == (16, 16) and msk.shape == (16, 16)
    assert img.dtype == np.uint8 and msk.dtype == np.uint8 and set(np.unique(msk)) == {0, 1}
    assert 0.3 < msk.mean() < 0.7  # the 50 % rectangle survives
    rgb, _ = resize_pair(np.zeros((60, 40, 3), np.uint8), mask, 8)
    assert rgb.shape == (8, 8, 3)
    with pytest.raises(ValueError, match="must share H×W"):
        resize_pair(image, mask[:10], 16)
    with pytest.raises(ValueError, match="must be uint8"):
        resize_pair(image.astype(float), mask, 16)


def test_tiles_cover_every_pixel_with_edge_flush_tiles() -> None:
    image = np.arange(70 * 100, dtype=np.int64).reshape(70, 100) % 251
    image = image.astype(np.uint8)
    mask = (image > 100).astype(np.uint8)
    ti, tm = tiles([image], [mask], 32)
    # rows start 0, 32, 38 (flush); columns 0, 32, 64, 68 (flush)
    assert ti.shape == (12, 32, 32) and tm.shape == (12, 32, 32)
    np.testing.assert_array_equal(ti[2], image[0:32, 64:96])
    np.testing.assert_array_equal(ti[8], image[38:70, 0:32])
    np.testing.assert_array_equal(ti[-1], image[38:70, 68:100])
    np.testing.assert_array_equal(tm[5], mask[32:64, 32:64])
    overlap, _ = tiles([image], [mask], 32, stride=16)
    assert len(overlap) == 4 * 6  # rows 0,16,32,38; cols 0,16,32,48,64,68
    small, small_m = tiles([image[:10, :20]], [mask[:10, :20]], 32)
    assert small.shape == (1, 32, 32) and small[0, 10:].sum() == 0 and small_m[0, :, 20:].sum() == 0
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        tiles([image, image], [mask], 32)


def test_prepare_modes() -> None:
    images = [np.full((64, 48, 3), 90, np.uint8), np.full((40, 40), 10, np.uint8)]
    masks = [np.ones((64, 48), np.uint8), np.zeros((40, 40), np.uint8)]
    x, y = prepare(images, masks, 32)
    assert x.shape == y.shape == (2, 32, 32) and x.dtype == np.uint8
    x, y = prepare(images, masks, 32, mode="tile")
    assert x.shape == (2 * 2 + 2 * 2, 32, 32) and y[:4].all() and not y[4:].any()
    with pytest.raises(ValueError, match="unknown mode"):
        prepare(images, masks, 32, mode="crop")  # type: ignore[arg-type]
