"""Shared fixtures of the segmenter tests: one torch thread, synthetic bright-disk data."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

DiskFactory = Callable[..., tuple[np.ndarray, np.ndarray]]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small nets train several times faster on one thread when the 2 CPU cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disks(
    n: int, size: int = 32, seed: int = 0, noise: float = 20.0, radius: tuple[int, int] = (4, 9)
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` gray images with one bright disk each on a noisy dark background, and the masks.

    Returns (N, size, size) uint8 images and (N, size, size) uint8 {0, 1} masks.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        r = int(rng.integers(*radius))
        cy, cx = rng.integers(r, size - r, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = 50 + 140 * mask + rng.normal(0, noise, (size, size))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(images), np.stack(masks)


@pytest.fixture
def disks() -> DiskFactory:
    """Factory ``disks(n, size=32, seed=0, noise=20.0)`` → (images, masks) of bright disks."""
    return _disks
