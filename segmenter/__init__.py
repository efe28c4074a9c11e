"""segmenter: the downstream network, segmentation-quality assessment and active learning.

MONAI U-Net training and inference (:mod:`segmenter.trainer`), data loading and tiling
(:mod:`segmenter.data`), Dice/HD95 (:mod:`segmenter.metrics`), the two-branch SQA network
(:mod:`segmenter.sqa`) and the active-learning simulation (:mod:`segmenter.active`).
MONAI itself is imported lazily inside the functions that need it.
"""

from segmenter.active import (
    STRATEGIES,
    ALResult,
    SQASettings,
    plot_curves,
    simulate_active_learning,
)
from segmenter.data import load_fov_masks, load_pairs, prepare, resize_pair, tiles, to_gray
from segmenter.metrics import dice_scores, hd95_scores
from segmenter.sqa import ProbabilityAttention, QualityAssessor, SQANet, predicted_dice
from segmenter.trainer import ModelFileError, Segmenter, SegmenterConfig

__all__ = [
    "STRATEGIES",
    "ALResult",
    "ModelFileError",
    "ProbabilityAttention",
    "QualityAssessor",
    "SQANet",
    "SQASettings",
    "Segmenter",
    "SegmenterConfig",
    "dice_scores",
    "hd95_scores",
    "load_fov_masks",
    "load_pairs",
    "plot_curves",
    "predicted_dice",
    "prepare",
    "resize_pair",
    "simulate_active_learning",
    "tiles",
    "to_gray",
]
