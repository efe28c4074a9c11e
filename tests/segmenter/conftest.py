"""Shared fixtures of the segmenter tests: one torch thread, synthetic bright-disk data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.helpers import DiskFactory
from tests.helpers import disks as _disks


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small nets train several times faster on one thread when the 2 CPU cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def disks() -> DiskFactory:
    """Factory ``disks(n, size=32, seed=0, noise=20.0)`` → (images, masks) of bright disks."""
    return _disks
