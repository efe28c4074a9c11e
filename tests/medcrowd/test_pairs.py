"""medcrowd.pairs: every layout on tiny files written here, then the real shared folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcrowd.pairs import LAYOUTS, Pair, binary_arrays, label_values, load_pairs
from tests.helpers import shared_data_dir


def _gray(value: int, h: int = 6, w: int = 5) -> np.ndarray:
    return np.full((h, w), value, np.uint8)


def _mask(h: int = 6, w: int = 5, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[1:3, 1:4] = value
    return m


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# -- tiny layouts ------------------------------------------------------------------------------
def test_pairs_layout_natural_order_values_as_stored(tmp_path: Path) -> None:
    for i, stem in enumerate(["case10", "case2", "case1"]):
        _save(_gray(10 * i), tmp_path / "images" / f"{stem}.png")
        _save(_mask(value=i + 1), tmp_path / "masks" / f"{stem}.png")
    _save(_mask(), tmp_path / "masks" / "orphan.png")  # a mask without image is ignored
    pairs = load_pairs(tmp_path)
    assert [p.name for p in pairs] == ["case1", "case2", "case10"]
    assert all(p.source == "expert" and p.fov is None for p in pairs)
    assert [int(p.mask.max()) for p in pairs] == [3, 2, 1]  # stored values, not binarised
    assert pairs[0].image.shape == (6, 5) and pairs[0].image.dtype == np.uint8
    assert pairs[0].image_path == tmp_path / "images" / "case1.png"
    assert label_values(pairs) == [0, 1, 2, 3]
    names, images, masks = binary_arrays(pairs)
    assert names == ["case1", "case2", "case10"]
    assert all(set(np.unique(m)) == {0, 1} and m.dtype == np.uint8 for m in masks)
    assert int(masks[0].sum()) == 6 and images[2][0, 0] == 0


def test_pairs_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_pairs(tmp_path / "absent")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match="matches no known pairs layout") as err:
        load_pairs(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert all(name in str(err.value) for name in LAYOUTS)
    _save(_gray(1), tmp_path / "images" / "a.png")
    _save(_gray(1), tmp_path / "images" / "b.png")
    _save(_mask(), tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"1 image\(s\) .* have no mask .*b\.png"):
        load_pairs(tmp_path)
    _save(_mask(4, 4), tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match=r"is 4×4 but .*b\.png is 5×6"):
        load_pairs(tmp_path)


def test_rgb_palette_and_16_bit_images(tmp_path: Path) -> None:
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200
    _save(rgb, tmp_path / "images" / "rgb.png")
    pal = Image.fromarray(_gray(77)).convert("P")  # a palette file whose colours are gray
    pal.save(tmp_path / "images" / "pal.png")
    wide = (np.arange(30, dtype=np.uint16).reshape(6, 5) * 1000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "images" / "wide.png")
    for stem in ("rgb", "pal", "wide"):
        _save(_mask(), tmp_path / "masks" / f"{stem}.png")
    by = {p.name: p for p in load_pairs(tmp_path)}
    assert by["rgb"].image.shape == (6, 5, 3)
    assert by["pal"].image.shape == (6, 5) and int(by["pal"].image[0, 0]) == 77
    assert by["wide"].image.min() == 0 and by["wide"].image.max() == 255
    _, images, _ = binary_arrays([by["rgb"]])
    assert images[0].shape == (6, 5) and int(images[0][0, 0]) == round(0.299 * 200)
    _, kept, _ = binary_arrays([by["rgb"]], gray=False)
    assert kept[0].shape == (6, 5, 3)


def test_threshold_and_invert(tmp_path: Path) -> None:
    soft = _mask()
    soft[0, 0] = 40  # an interpolated edge pixel
    _save(_gray(5), tmp_path / "images" / "0.png")
    _save(soft, tmp_path / "masks" / "0.png")
    assert label_values(load_pairs(tmp_path)) == [0, 40, 255]
    (hard,) = load_pairs(tmp_path, threshold=128)
    assert set(np.unique(hard.mask)) == {0, 255} and hard.mask[0, 0] == 0
    with pytest.raises(ValueError, match="binary masks"):
        load_pairs(tmp_path, invert_masks=True)
    (inv,) = load_pairs(tmp_path, threshold=128, invert_masks=True)
    assert np.array_equal(inv.mask, np.where(hard.mask == 0, 255, 0))


def _pulled(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks" / "task-1").mkdir(parents=True)  # raw annotations, not pairs
    (root / "dataset.json").write_text('{"project": 1}')
    for i in (2, 10, 3):
        _save(np.stack([_gray(i)] * 3, -1) + np.array([0, 1, 2], np.uint8), root / "images" /
              f"task-{i}.png")  # fmt: skip
    _save(_gray(0), root / "images" / "task-99.png")  # not annotated: skipped
    return root


def test_fused_layout(tmp_path: Path) -> None:
    root = _pulled(tmp_path / "pulled")
    with pytest.raises(ValueError, match="run medcrowd fuse --method crowd-staple"):
        load_pairs(root, method="crowd-staple")
    with pytest.raises(ValueError, match="without fused masks: run medcrowd fuse"):
        load_pairs(root)
    for i in (2, 10, 3):
        _save(_mask(), root / "fused-crowd-staple" / "masks" / f"task-{i}.png")
    pairs = load_pairs(root, method="crowd-staple")
    # the order medcrowd synth always read fused datasets in (by string for non-digit names)
    assert [p.name for p in pairs] == ["task-10", "task-2", "task-3"]
    assert all(p.source == "fused" and p.image.shape == (6, 5, 3) for p in pairs)
    assert [p.name for p in load_pairs(root)] == ["task-10", "task-2", "task-3"]  # the only one
    _save(_mask(), root / "fused-majority" / "masks" / "task-2.png")
    assert [p.name for p in load_pairs(root, method="majority")] == ["task-2"]
    with pytest.raises(ValueError, match="several methods"):
        load_pairs(root)


def test_synthetic_layout(tmp_path: Path) -> None:
    for k in range(2):
        _save(_gray(k), tmp_path / "images" / f"syn-{k:05d}.png")
        _save(_mask(), tmp_path / "masks" / f"syn-{k:05d}.png")
    assert {p.source for p in load_pairs(tmp_path)} == {"expert"}
    (tmp_path / "dataset.json").write_text(json.dumps({"synthetic": True}))
    assert {p.source for p in load_pairs(tmp_path)} == {"synthetic"}
    (tmp_path / "dataset.json").unlink()
    (tmp_path / "manifest.jsonl").write_text('{"name": "syn-00000"}\n')
    pairs = load_pairs(tmp_path)
    assert [p.name for p in pairs] == ["syn-00000", "syn-00001"]
    assert {p.source for p in pairs} == {"synthetic"}


def test_isbi_layout(tmp_path: Path) -> None:
    for k in (0, 1, 10, 2):
        _save(_gray(k), tmp_path / "image" / f"{k}.png")
        _save(_mask(), tmp_path / "label" / f"{k}.png")
    pairs = load_pairs(tmp_path, invert_masks=True)
    assert [p.name for p in pairs] == ["0", "1", "2", "10"]
    assert int((pairs[0].mask > 0).sum()) == 30 - 6  # the former 0 pixels are foreground


def test_drive_layout(tmp_path: Path) -> None:
    fov = np.zeros((6, 5), np.uint8)
    fov[1:5, 1:4] = 255
    for i in ("22", "21"):
        rgb = np.zeros((6, 5, 3), np.uint8)
        rgb[..., 1] = int(i)
        _save(rgb, tmp_path / "images" / f"{i}_training.tif")
        _save(_mask(), tmp_path / "1st_manual" / f"{i}_manual1.gif")
        _save(fov, tmp_path / "mask" / f"{i}_training_mask.gif")
    pairs = load_pairs(tmp_path)
    assert [p.name for p in pairs] == ["21", "22"]
    assert pairs[0].image.shape == (6, 5, 3) and int(pairs[0].image[0, 0, 1]) == 21
    assert pairs[0].fov is not None and pairs[0].fov.dtype == np.bool_
    assert int(pairs[0].fov.sum()) == 12
    _save(_mask(value=1), tmp_path / "manual2" / "21_manual2.gif")
    _save(_mask(value=1), tmp_path / "manual2" / "22_manual2.gif")
    second = load_pairs(tmp_path, rater="manual2")
    assert [int(p.mask.max()) for p in second] == [1, 1]
    (tmp_path / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(ValueError, match="no field-of-view mask for 22"):
        load_pairs(tmp_path)
    with pytest.raises(ValueError, match="no rater folder manual3"):
        load_pairs(tmp_path, rater="manual3")


def test_bubil_layout(tmp_path: Path) -> None:
    cell = np.full((6, 5), 255, np.uint8)
    cell[2:4, 2:4] = 0  # BU-BIL draws the cell black on white
    for k in ("B02", "B01"):
        _save(_gray(90), tmp_path / "RawImages" / f"{k}.png")
        _save(cell, tmp_path / "GoldStandard" / f"seg_{k}.png")
    _save(cell, tmp_path / "ExpertsAnnotations" / "Person3_Amira" / "Seg_B01.png")
    _save(cell, tmp_path / "ExpertsAnnotations" / "Person3_Amira" / "seg_B02.png")
    pairs = load_pairs(tmp_path)
    assert [p.name for p in pairs] == ["B01", "B02"]
    assert int(pairs[0].mask.sum()) == 4 * 255 and label_values(pairs) == [0, 255]
    assert [p.name for p in load_pairs(tmp_path, rater="Person3_Amira")] == ["B01", "B02"]
    with pytest.raises(ValueError, match="without ExpertsAnnotations/Nobody"):
        load_pairs(tmp_path, rater="Nobody")


def test_label_values_of_empty_masks_raise() -> None:
    empty = Pair("a", _gray(1), np.zeros((6, 5), np.uint8))
    with pytest.raises(ValueError, match="every mask is empty"):
        label_values([empty])


# -- the real shared folders -------------------------------------------------------------------
@pytest.fixture
def data(request: pytest.FixtureRequest) -> Path:
    """The shared data folder; missing data fails under CI=true instead of skipping."""
    if os.environ.get("CI") == "true" and not (shared_data_dir() / "sammed2d_demo").is_dir():
        pytest.fail(f"CI=true but no shared data at {shared_data_dir()}")
    root: Path = request.getfixturevalue("shared_data")
    return root


def test_real_isbi(data: Path) -> None:
    pairs = load_pairs(data / "isbi2012_em" / "train", invert_masks=True)
    assert [p.name for p in pairs] == [str(k) for k in range(30)]
    assert all(p.image.shape == (512, 512) and p.mask.shape == (512, 512) for p in pairs)
    membrane = np.mean([(p.mask > 0).mean() for p in pairs])
    assert 0.15 < membrane < 0.3  # README: the 255 (interior) class covers 73–83 %


def test_real_drive(data: Path) -> None:
    train = load_pairs(data / "drive" / "train")
    assert [p.name for p in train] == [str(k) for k in range(21, 41)]
    assert all(p.image.shape == (584, 565, 3) and p.fov is not None for p in train)
    vessels = [float((p.mask > 0).mean()) for p in train]
    assert 0.05 < min(vessels) and max(vessels) < 0.12  # README: 0.060–0.116
    inside = [float(p.fov.mean()) for p in train if p.fov is not None]
    assert 0.6 < min(inside) and max(inside) < 0.8
    first = load_pairs(data / "drive" / "test")
    second = load_pairs(data / "drive" / "test", rater="manual2")
    assert [p.name for p in second] == [f"{k:02d}" for k in range(1, 15)]
    a, b = first[1].mask > 0, second[1].mask > 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert abs(dice - 0.8290) < 1e-3  # README: id 02 inter-rater Dice


def test_real_shenzhen(data: Path) -> None:
    pairs = load_pairs(data / "shenzhen_cxr", threshold=128)
    assert len(pairs) == 400 and pairs[0].name == "CHNCXR_0001_0"
    assert all(p.image.shape == (256, 256, 3) for p in pairs[:5])
    lung = [float((p.mask > 0).mean()) for p in pairs]
    assert 0.07 < min(lung) and max(lung) < 0.44 and abs(np.mean(lung) - 0.25) < 0.02


def test_real_bubil(data: Path) -> None:
    gold = load_pairs(data / "bubil_cells")
    person2 = load_pairs(data / "bubil_cells", rater="Person2_Amira")
    assert [p.name for p in gold] == [f"B{k:02d}" for k in range(1, 36)]
    assert gold[1].image.shape == (1030, 1300)  # B02 is a palette file
    # README: GoldStandard is pixel-identical to Person2_Amira
    assert all(np.array_equal(g.mask, p.mask) for g, p in zip(gold, person2, strict=True))
    assert all(0 < (p.mask > 0).mean() < 0.5 for p in gold)
