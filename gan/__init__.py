"""gan: pix2pix mask → image synthesis, new masks by deformation, quality measures.

Pure engines on numpy arrays and torch tensors; no file layout (that is ``medcrowd.synth``).
"""

from gan.discriminator import MonaiPatchDiscriminator, PatchGANDiscriminator
from gan.generator import UNetGenerator
from gan.masks import DeformedMaskGenerator, topology_problem
from gan.pix2pix import (
    DISCRIMINATORS,
    GENERATORS,
    Batch,
    Pix2PixConfig,
    Pix2PixTrainer,
    images_to_tensor,
    masks_to_onehot,
    tensor_to_images,
)
from gan.quality import histogram_distance, mean_dice, psnr, ssim
from gan.tiny_segmenter import TinySegmenter

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "Batch",
    "DeformedMaskGenerator",
    "MonaiPatchDiscriminator",
    "PatchGANDiscriminator",
    "Pix2PixConfig",
    "Pix2PixTrainer",
    "TinySegmenter",
    "UNetGenerator",
    "histogram_distance",
    "images_to_tensor",
    "masks_to_onehot",
    "mean_dice",
    "psnr",
    "ssim",
    "tensor_to_images",
    "topology_problem",
]
