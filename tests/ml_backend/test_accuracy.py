"""LiteMedSAM accuracy on all 30 SAM-Med2D demo masks, with real weights and real data.

Prompt: the tight ground-truth box, XYXY pixel edges ``x0 = min col, y0 = min row,
x1 = max col + 1, y1 = max row + 1`` (``tests.helpers.tight_box``).

Measured on this data (CPU, ONNX Runtime encoder and decoder): mean Dice 0.696, median
0.849. The official LiteMedSAM inference re-implemented with OpenCV's INTER_AREA resize and
integer 256-px boxes gives mean 0.691 on the same boxes, so the gap to 0.80 is the model's,
not the pipeline's: thin or hollow structures (ribs 0.00, autochthon muscles ~0.2, heart
myocardium 0.24, a ring that a box cannot tell from the ventricles inside it) pull the mean
down, while 17 of 30 masks reach Dice ≥ 0.80. The bounds below sit just under the measured
values so that a preprocessing regression fails the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml_backend.cache import EmbeddingCache
from ml_backend.predictors import LiteMedSAMPredictor, get_predictor
from tests.helpers import OrganMask, dice, tight_box

MIN_MEAN_DICE = 0.68
MIN_MEDIAN_DICE = 0.80
MIN_BACKEND_AGREEMENT = 0.99


def _predict_all(predictor: LiteMedSAMPredictor, masks: list[OrganMask]) -> list[np.ndarray]:
    out = []
    for organ in masks:
        image, truth = organ.load()
        predictor.set_image(image)
        mask, score = predictor.predict_box(tight_box(truth))
        assert mask.shape == truth.shape
        assert 0.0 <= score <= 1.0
        out.append(mask)
    return out


def test_litemedsam_dice_on_sammed2d_demo(
    lite: LiteMedSAMPredictor, demo_masks: list[OrganMask]
) -> None:
    predicted = _predict_all(lite, demo_masks)
    scores = []
    print(f"\nLiteMedSAM ({lite.model_id}), tight GT boxes, {len(demo_masks)} masks")
    for organ, mask in zip(demo_masks, predicted, strict=True):
        _, truth = organ.load()
        scores.append(dice(mask, truth))
        print(f"  {organ.mask_path.stem:42s} Dice {scores[-1]:.3f}  ({int(truth.sum())} px)")
    mean, median = float(np.mean(scores)), float(np.median(scores))
    print(f"  mean Dice {mean:.4f}  median {median:.4f}  ≥0.80: {sum(s >= 0.8 for s in scores)}")
    assert len(scores) == 30
    assert mean >= MIN_MEAN_DICE
    assert median >= MIN_MEDIAN_DICE


def test_onnx_and_torch_agree(
    lite: LiteMedSAMPredictor, demo_masks: list[OrganMask], tmp_path: Path
) -> None:
    """Same masks from the ONNX Runtime and the PyTorch paths (s0619_32, 8 masks)."""
    torch_predictor = get_predictor(
        "litemedsam", device="cpu", backend="torch", cache=EmbeddingCache(), cache_dir=tmp_path
    )
    assert isinstance(torch_predictor, LiteMedSAMPredictor)
    assert torch_predictor.encoder_backend == "torch"
    subset = [m for m in demo_masks if m.image_path.stem == "s0619_32"]
    assert len(subset) == 8
    onnx_masks = _predict_all(lite, subset)
    torch_masks = _predict_all(torch_predictor, subset)
    agreement = [dice(a, b) for a, b in zip(onnx_masks, torch_masks, strict=True)]
    print("\nONNX vs PyTorch Dice:", " ".join(f"{d:.4f}" for d in agreement))
    assert min(agreement) >= MIN_BACKEND_AGREEMENT
