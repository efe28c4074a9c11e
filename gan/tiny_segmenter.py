"""A deliberately small U-Net segmenter, only to score synthetic data (train-on-synthetic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

__all__ = ["TinySegmenter"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _TinyUNet(nn.Module):
    def __init__(self, cin: int, classes: int, base: int) -> None:
        super().__init__()
        self.enc1, self.enc2 = _block(cin, base), _block(base, base * 2)
        self.mid = _block(base * 2, base * 4)
        self.up2 = nn.ConvTranspose2d(base * 4, base * 2, 2, stride=2)
        self.dec2 = _block(base * 4, base * 2)
        self.up1 = nn.ConvTranspose2d(base * 2, base, 2, stride=2)
        self.dec1 = _block(base * 2, base)
        self.head = nn.Conv2d(base, classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


@dataclass
class TinySegmenter:
    """Two-level U-Net trained with cross-entropy for a few epochs on the CPU.

    Used by the quality report's train-on-synthetic / test-on-real score; the project's real
    downstream segmenter lives in ``segmenter/``. Follows O. Ronneberger, P. Fischer, T. Brox,
    "U-Net", MICCAI 2015 (https://arxiv.org/abs/1505.04597), shrunk to two levels.

    Attributes:
        num_classes: classes including background.
        base: filters of the first level.
        epochs, batch_size, lr: Adam training schedule.
        seed: seeds init and shuffling.
        model_: the trained network (after ``fit``).
        losses_: mean training loss per epoch.

    Example:
        >>> x = np.zeros((4, 32, 32), np.uint8); y = np.zeros((4, 32, 32), np.uint8)
        >>> TinySegmenter(num_classes=2, epochs=1).fit(x, y).predict(x).shape
        (4, 32, 32)
    """

    num_classes: int = 2
    base: int = 8
    epochs: int = 5
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    model_: nn.Module | None = field(default=None, repr=False)
    losses_: list[float] = field(default_factory=list)

    def fit(self, images: npt.NDArray[np.uint8], labels: npt.NDArray[Any]) -> TinySegmenter:
        """images: (N, H, W) or (N, H, W, 3) uint8; labels: (N, H, W) class ids."""
        x = _prep(images)
        y = torch.from_numpy(np.asarray(labels).astype(np.int64))
        if len(x) != len(y) or x.shape[2:] != y.shape[1:]:
            raise ValueError(f"images {tuple(x.shape)} and labels {tuple(y.shape)} differ")
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError("H and W must be divisible by 4")
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        model = _TinyUNet(x.shape[1], self.num_classes, self.base)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        self.losses_ = []
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for i in range(0, len(x), self.batch_size):
                idx = order[i : i + self.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.losses_.append(total / len(x))
        self.model_ = model
        return self

    @torch.no_grad()
    def predict(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """(N, H, W[, 3]) uint8 → (N, H, W) uint8 class ids."""
        if self.model_ is None:
            raise RuntimeError("call fit() before predict()")
        self.model_.eval()
        x = _prep(images)
        out = [self.model_(x[i : i + 8]).argmax(1) for i in range(0, len(x), 8)]
        return torch.cat(out).numpy().astype(np.uint8)


def _prep(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0
    return (t - 0.5) / 0.5
