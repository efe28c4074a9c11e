"""medcrowd label fusion: votes, STAPLE (per image, multi-label and crowd-wide), annotator
reliability and segmentation metrics. Pure numpy/scipy, no I/O (``DaskCrowdStaple`` runs
CrowdStaple's chunks on a Dask cluster; Dask is imported only then).

Masks are ``(R, H, W)`` or ``(R, D, H, W)`` bool arrays (R raters); see each class.
"""

from fusion.crowd_staple import CrowdFusionResult, CrowdStaple
from fusion.distributed import DaskCrowdStaple
from fusion.majority_vote import MajorityVote
from fusion.metrics import (
    average_surface_distance,
    dice,
    dice_from_counts,
    hausdorff,
    hd95,
    iou,
    surface_dice,
)
from fusion.multilabel_staple import MultiLabelStaple
from fusion.reliability import (
    RaterScores,
    consensus_scores,
    detect_spammers,
    entropy_map,
    pairwise_dice,
    rater_scores,
    spammer_score,
    youden_reliability,
)
from fusion.result import FusionResult
from fusion.staple import Staple
from fusion.weighted_vote import WeightedVote

__all__ = [
    "CrowdFusionResult",
    "CrowdStaple",
    "DaskCrowdStaple",
    "FusionResult",
    "MajorityVote",
    "MultiLabelStaple",
    "RaterScores",
    "Staple",
    "WeightedVote",
    "average_surface_distance",
    "consensus_scores",
    "detect_spammers",
    "dice",
    "dice_from_counts",
    "entropy_map",
    "hausdorff",
    "hd95",
    "iou",
    "pairwise_dice",
    "rater_scores",
    "spammer_score",
    "surface_dice",
    "youden_reliability",
]
