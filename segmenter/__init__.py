"""segmenter: the downstream network, segmentation-quality assessment and active learning.

Public surface (everything else is internal to its file):

* :mod:`segmenter.model` — :class:`SegmenterConfig`, device check, the MONAI U-Net, model
  state and the one place model files are written and read (:class:`ModelFileError`);
* :mod:`segmenter.trainer` — :class:`Segmenter` (train, fine-tune, predict, MC-dropout);
* :mod:`segmenter.sqa` — the two-branch quality assessor :class:`QualityAssessor`;
* :mod:`segmenter.active` — the active-learning simulation (SQA / random / MC-dropout);
* :mod:`segmenter.data` — pure array preparation (gray, resize, tiles);
* :mod:`segmenter.metrics` — MONAI Dice / HD95 per image (the evaluation tables' metric).

Engines take arrays and an already resolved device (``"cpu"``, ``"cuda:0"``, a
``torch.device``); reading folders and resolving ``"auto"`` is the app's job
(``medcrowd``). Progress callbacks are ``progress(done, total)``. MONAI itself is imported
lazily inside the functions that need it.
"""

from segmenter.active import (
    STRATEGIES,
    ALResult,
    SQASettings,
    planned_steps,
    results_json,
    simulate_active_learning,
)
from segmenter.data import prepare, resize_pair, tiles, to_gray
from segmenter.metrics import dice_scores, hd95_scores
from segmenter.model import (
    ModelFileError,
    SegmenterConfig,
    build_unet,
    image_hashes,
    read_model_file,
    save_model_file,
    torch_device,
)
from segmenter.sqa import ProbabilityAttention, QualityAssessor, SQANet, predicted_dice
from segmenter.trainer import Segmenter

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
    "build_unet",
    "dice_scores",
    "hd95_scores",
    "image_hashes",
    "planned_steps",
    "predicted_dice",
    "prepare",
    "read_model_file",
    "resize_pair",
    "results_json",
    "save_model_file",
    "simulate_active_learning",
    "tiles",
    "to_gray",
    "torch_device",
]
