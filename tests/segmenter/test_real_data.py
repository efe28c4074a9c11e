"""Real-data smoke: a small network learns ISBI 2012 EM membranes from a few slices."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medcrowd.pairs import binary_arrays, load_pairs
from segmenter.data import prepare
from segmenter.metrics import dice_scores
from segmenter.model import SegmenterConfig
from segmenter.sqa import QualityAssessor
from segmenter.trainer import Segmenter
from tests.helpers import shared_data_dir


def _half(image: np.ndarray, nearest: bool = False) -> np.ndarray:
    h, w = image.shape[:2]
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((w // 2, h // 2), method))


@pytest.mark.slow
def test_isbi_membranes_smoke() -> None:
    root = shared_data_dir() / "isbi2012_em" / "train"
    if not root.is_dir():
        pytest.skip(f"ISBI 2012 data not found at {root} (set MEDCROWD_SHARED_DATA)")
    _, images, masks = binary_arrays(load_pairs(root, invert_masks=True))  # 1 = membrane
    images = [_half(im) for im in images]  # 256×256: faster, membranes still 2–4 px wide
    masks = [_half(m, nearest=True) for m in masks]
    x, y = prepare(images[:4], masks[:4], 64, mode="tile")  # 4 slices → 64 tiles
    assert x.shape == (64, 64, 64)
    config = SegmenterConfig(
        size=64, channels=(8, 16, 32), res_units=1, steps=300, lr=3e-3, input_mode="tile"
    )
    seg = Segmenter(config)
    seg.fit(x, y)
    test_image, test_mask = images[20], masks[20]  # a slice far from the training ones
    pred = seg.predict_image(test_image)
    assert pred.shape == test_mask.shape
    dice = float(dice_scores(pred, test_mask)[0])
    trivial = float(dice_scores(np.ones_like(test_mask), test_mask)[0])  # all membrane
    assert trivial < 0.45 and dice > 0.6, (dice, trivial)
    qa = QualityAssessor.from_segmenter(seg, folds=2)
    qa.config.steps = 30  # brief fold networks: this only checks the pipeline on real data
    qa.fit(x, y, steps=30, segmentation=False)
    mask, error, score = qa.predict_image(test_image)
    assert mask.shape == error.shape == test_mask.shape and 0.0 <= score <= 1.0
    np.testing.assert_array_equal(mask, pred)  # the same segmentation branch
