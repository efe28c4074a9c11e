"""gan: pix2pix mask → image synthesis, new masks by deformation, quality measures.

Pure engines on numpy arrays and torch tensors: no file is read or written here (the file
layout, checkpoints and figures are ``medcrowd.synth``). Devices come in resolved (``"cpu"``,
``"cuda"``, ``"cuda:N"`` or a ``torch.device``).

Example:
    >>> import numpy as np
    >>> from gan import DeformedMaskGenerator, Pix2PixConfig, fit_pix2pix
    >>> masks = np.zeros((2, 64, 64), np.uint8); masks[:, 16:48, 16:48] = 255
    >>> images = np.where(masks > 0, 200, 30).astype(np.uint8)
    >>> synth = fit_pix2pix(images, masks, Pix2PixConfig(image_size=64, ngf=4, ndf=4), steps=2)
    >>> new, _ = DeformedMaskGenerator().sample(masks, 3, seed=0)
    >>> synth.generate(new, seed=0).shape
    (3, 64, 64)
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
    batch_at,
    images_to_tensor,
    masks_to_onehot,
    tensor_to_images,
)
from gan.quality import histogram_distance, mean_dice, psnr, ssim
from gan.synthesis import ClassTable, Synthesizer, fit_pix2pix

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "Batch",
    "ClassTable",
    "DeformedMaskGenerator",
    "MonaiPatchDiscriminator",
    "PatchGANDiscriminator",
    "Pix2PixConfig",
    "Pix2PixTrainer",
    "Synthesizer",
    "UNetGenerator",
    "batch_at",
    "fit_pix2pix",
    "histogram_distance",
    "images_to_tensor",
    "masks_to_onehot",
    "mean_dice",
    "psnr",
    "ssim",
    "tensor_to_images",
    "topology_problem",
]
