"""Shared fixtures for the gan tests: tiny seeded configs and tiny on-disk datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan import Pix2PixConfig, images_to_tensor, masks_to_onehot
from tests.helpers import blob_pairs

# one intra-op thread: the tiny tests gain nothing from more, and on shared busy cores
# oversubscribed threads spin against each other
torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> Pix2PixConfig:
    return Pix2PixConfig(image_size=64, ngf=8, ndf=8, device="cpu", seed=0)


@pytest.fixture
def tiny_pairs() -> tuple[np.ndarray, np.ndarray]:
    """2 gray 64×64 blob images and their {0, 1} class ids (the pairs of ``tiny_batch``)."""
    return blob_pairs(2, 64, seed=1)


@pytest.fixture
def tiny_batch() -> dict[str, torch.Tensor]:
    images, labels = blob_pairs(2, 64, seed=1)
    return {"mask": masks_to_onehot(labels, 2), "image": images_to_tensor(images)}


@pytest.fixture
def pairs_dir(tmp_path: Path) -> Path:
    """A plain pairs folder (layout b): 6 gray 64×64 images + 0/255 masks."""
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images, labels = blob_pairs(6, 64, seed=2)
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img).save(root / "images" / f"case{i}.png")
        Image.fromarray(lab * 255).save(root / "masks" / f"case{i}.png")
    return root


@pytest.fixture
def fused_dir(tmp_path: Path) -> Path:
    """A pulled + fused folder (layout a): RGB task images, fused-crowd-staple masks."""
    root = tmp_path / "pulled"
    (root / "images").mkdir(parents=True)
    (root / "fused-crowd-staple" / "masks").mkdir(parents=True)
    (root / "dataset.json").write_text('{"project": 1, "url": "http://x"}')
    images, labels = blob_pairs(3, 64, seed=3, rgb=True)
    for i, (img, lab) in enumerate(zip(images, labels, strict=True), start=10):
        Image.fromarray(img).save(root / "images" / f"task-{i}.png")
        Image.fromarray(lab * 255).save(root / "fused-crowd-staple" / "masks" / f"task-{i}.png")
    return root
