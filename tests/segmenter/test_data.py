"""segmenter.data: folder layouts, gray conversion, resizing, tiling (tiny arrays + real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmenter.data import load_fov_masks, load_pairs, prepare, resize_pair, tiles, to_gray
from tests.helpers import shared_data_dir


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_load_pairs_generic_layout_natural_order_and_binary_masks(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        _write(tmp_path / "images" / f"{i}.png", np.full((6, 5, 3), i, np.uint8))
        mask = np.zeros((6, 5), np.uint8)
        mask[i % 6, :] = 7  # any nonzero value is foreground
        _write(tmp_path / "masks" / f"{i}.png", mask)
    names, images, masks = load_pairs(tmp_path)
    assert names == ["1", "2", "10"]  # natural order, not "1", "10", "2"
    assert images[2].shape == (6, 5, 3) and images[2].dtype == np.uint8
    assert int(images[2][0, 0, 0]) == 10
    assert all(m.dtype == np.uint8 and set(np.unique(m)) == {0, 1} for m in masks)
    assert masks[1][2].all() and masks[1].sum() == 5
    _, _, inverted = load_pairs(tmp_path, invert_masks=True)
    np.testing.assert_array_equal(inverted[0], 1 - masks[0])


def test_load_pairs_isbi_layout(tmp_path: Path) -> None:
    _write(tmp_path / "image" / "0.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "label" / "0.png", np.full((4, 4), 255, np.uint8))
    names, images, masks = load_pairs(tmp_path, invert_masks=True)
    assert names == ["0"] and images[0].shape == (4, 4) and masks[0].sum() == 0


def test_load_pairs_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no data folder"):
        load_pairs(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no known image–mask layout"):
        load_pairs(tmp_path)
    _write(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "images" / "b.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "masks" / "a.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"1 image\(s\) .* have no mask.*b\.png"):
        load_pairs(tmp_path)
    _write(tmp_path / "masks" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"a\.png is 4×4 but its mask a\.png is 5×4"):
        load_pairs(tmp_path)


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


def test_real_isbi_and_drive_layouts() -> None:
    root = shared_data_dir()
    isbi, drive = root / "isbi2012_em" / "train", root / "drive" / "train"
    if not isbi.is_dir() or not drive.is_dir():
        pytest.skip(f"real data not found under {root} (set MEDCROWD_SHARED_DATA)")
    names, images, masks = load_pairs(isbi, invert_masks=True)
    assert len(names) == 30 and names[:3] == ["0", "1", "2"]
    assert all(im.shape == (512, 512) and im.dtype == np.uint8 for im in images)
    membrane = [float(m.mean()) for m in masks]  # README: interior (255) covers 73–83 %
    assert 0.16 < min(membrane) and max(membrane) < 0.28
    names, images, masks = load_pairs(drive)
    assert len(names) == 20 and names[0] == "21"
    assert images[0].shape == (584, 565, 3)
    vessels = [float(m.mean()) for m in masks]  # README: 0.060–0.116
    assert 0.059 < min(vessels) and max(vessels) < 0.117
    fov = load_fov_masks(drive, names)
    assert len(fov) == 20 and fov[0].shape == (584, 565) and 0.6 < fov[0].mean() < 0.8
    inside = sum(int((m & f).sum()) for m, f in zip(masks, fov, strict=True))
    assert inside / sum(int(m.sum()) for m in masks) > 0.99  # vessels lie in the FOV
