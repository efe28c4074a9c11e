"""PatchGAN discriminators: a plain-torch 70×70 PatchGAN and MONAI's ``PatchDiscriminator``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MonaiPatchDiscriminator", "PatchGANDiscriminator"]


class PatchGANDiscriminator(nn.Module):
    """70×70 PatchGAN (Isola et al. 2017): (mask, image) pair → (B, 1, h, w) real/fake logits.

    C64-C128-C256 (4×4 convs, stride 2) - C512 (stride 1) - 1 logit map (stride 1); BatchNorm
    on every layer but the first, LeakyReLU 0.2. A 256×256 input gives 30×30 logits, each
    judging one 70×70 patch. No sigmoid: the loss is ``BCEWithLogits`` (autocast-safe).

    Paper: P. Isola et al., "Image-to-Image Translation with Conditional Adversarial
    Networks", CVPR 2017. https://arxiv.org/abs/1611.07004

    Args:
        in_channels: mask channels + image channels (the pair is concatenated).
        ndf: filters of the first layer (64 in the paper).
        n_layers: stride-2 layers (3 gives the 70×70 receptive field).

    Example:
        >>> PatchGANDiscriminator(3, ndf=8)(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 30, 30])
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """(B, C_mask + C_image, H, W) → (B, 1, h, w) logits."""
        return self.model(pair)


class MonaiPatchDiscriminator(nn.Module):
    """The same PatchGAN built from ``monai.networks.nets.PatchDiscriminator``.

    MONAI returns every intermediate feature map; this keeps only the last (the logits). Its
    last layer has stride 2 where the paper's has stride 1, so 256 px gives 14×14 logits
    (a larger receptive field). Needs ``monai`` (``import monai`` costs ~8 s of CPU).
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.net = PatchDiscriminator(
            spatial_dims=2,
            channels=ndf,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=n_layers,
            norm="BATCH",
        )

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """(B, C_mask + C_image, H, W) → (B, 1, h, w) logits."""
        return self.net(pair)[-1]
