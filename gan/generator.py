"""pix2pix U-Net generator (Isola et al. 2017, "unet_256" with skip connections)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UNetGenerator", "default_num_downs"]


def default_num_downs(image_size: int) -> int:
    """Down-sampling levels for a square ``image_size``: log2(size), at most 8 (1×1 or 2×2)."""
    if image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return min(8, int(math.log2(image_size)))


class _SkipBlock(nn.Module):
    """One U-Net level: down(conv 4×4 s2) → submodule → up(convT 4×4 s2), concat skip."""

    def __init__(
        self,
        outer: int,
        inner: int,
        *,
        in_channels: int | None = None,
        sub: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_channels = outer if in_channels is None else in_channels
        # BatchNorm follows every conv except the first encoder and the innermost encoder
        # conv (pix2pix): with batch size 1 the innermost map is 1×1 and BN would be undefined.
        down = nn.Conv2d(in_channels, inner, kernel_size=4, stride=2, padding=1, bias=False)
        down_act = nn.LeakyReLU(0.2, inplace=True)
        up_act = nn.ReLU(inplace=True)
        layers: list[nn.Module]
        if outermost:
            up = nn.ConvTranspose2d(inner * 2, outer, kernel_size=4, stride=2, padding=1)
            layers = [down, sub or nn.Identity(), up_act, up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner, outer, kernel_size=4, stride=2, padding=1, bias=False)
            layers = [down_act, down, up_act, up, nn.BatchNorm2d(outer)]
        else:
            up = nn.ConvTranspose2d(
                inner * 2, outer, kernel_size=4, stride=2, padding=1, bias=False
            )
            layers = [down_act, down, nn.BatchNorm2d(inner), sub or nn.Identity()]
            layers += [up_act, up, nn.BatchNorm2d(outer)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UNetGenerator(nn.Module):
    """pix2pix U-Net: one-hot mask (B, C_in, H, W) → image (B, C_out, H, W) in [-1, 1].

    Encoder C64-C128-C256-C512-C512-C512-C512-C512 (4×4 convs, stride 2, LeakyReLU 0.2),
    decoder mirrored with ReLU, skip connections between mirrored levels, dropout 0.5 in the
    three decoder levels next to the bottleneck (the generator's only noise source), tanh out.

    Paper: P. Isola, J.-Y. Zhu, T. Zhou, A. A. Efros, "Image-to-Image Translation with
    Conditional Adversarial Networks", CVPR 2017. https://arxiv.org/abs/1611.07004

    Args:
        in_channels: mask channels (one-hot classes, background included).
        out_channels: 1 (grayscale) or 3 (RGB).
        num_downs: down-sampling levels; H and W must be divisible by 2**num_downs.
        ngf: filters of the first level (64 in the paper).
        dropout: decoder dropout (0.5 in the paper).

    Example:
        >>> g = UNetGenerator(2, 1, num_downs=6, ngf=8)
        >>> g(torch.zeros(1, 2, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_downs: int = 8,
        ngf: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        self.num_downs = num_downs
        block = _SkipBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = _SkipBlock(ngf * 8, ngf * 8, sub=block, dropout=dropout)
        block = _SkipBlock(ngf * 4, ngf * 8, sub=block)
        block = _SkipBlock(ngf * 2, ngf * 4, sub=block)
        block = _SkipBlock(ngf, ngf * 2, sub=block)
        self.model = _SkipBlock(
            out_channels, ngf, in_channels=in_channels, sub=block, outermost=True
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) float one-hot → (B, C_out, H, W) float in [-1, 1]."""
        factor = 2**self.num_downs
        if mask.shape[-1] % factor or mask.shape[-2] % factor:
            raise ValueError(f"H and W must be divisible by {factor}, got {tuple(mask.shape)}")
        return self.model(mask)
