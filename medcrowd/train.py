"""``medcrowd train segmenter|sqa``: labelled pairs on disk → a trained model file.

Reads a pairs folder or a pulled + fused dataset with :func:`medcrowd.pairs.load_pairs`,
squashes every pair to ``size``×``size`` gray (:func:`segmenter.data.prepare`), trains a
:class:`segmenter.Segmenter` (served by ``medcrowd backend serve --draft-model``) or a
:class:`segmenter.QualityAssessor` (used by ``medcrowd select``) and writes it to one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from segmenter.training import Progress

__all__ = ["KINDS", "TrainOptions", "TrainReport", "read_labelled", "train_model"]

KINDS = ("segmenter", "sqa")
U8 = npt.NDArray[np.uint8]


@dataclass
class TrainOptions:
    """Options of :func:`train_model` (the CLI's ``--help`` documents each)."""

    size: int = 128
    steps: int = 600
    seed: int = 0
    device: str = "auto"
    invert_masks: bool = False
    method: str = "crowd-staple"
    folds: int = 3
    channels: tuple[int, ...] = (16, 32, 64, 128)


@dataclass
class TrainReport:
    kind: str
    pairs: int
    final_loss: float
    out: Path


def read_labelled(data: Path, invert: bool, method: str) -> tuple[list[U8], list[U8]]:
    """Images ((H, W) uint8 gray) and {0, 1} masks of a pairs folder or a fused dataset
    (``method`` picks its ``fused-<method>/`` masks)."""
    from medcrowd.pairs import binary_arrays, load_pairs

    if not Path(data).is_dir():
        raise FileNotFoundError(f"{data} is not a folder")
    _, images, masks = binary_arrays(load_pairs(data, method=method, invert_masks=invert))
    return images, masks


def train_model(
    kind: str,
    data: Path,
    out: Path,
    options: TrainOptions,
    progress: Progress | None = None,
) -> TrainReport:
    """Train a ``kind`` model (``"segmenter"`` or ``"sqa"``) on ``data``; write it to ``out``.

    ``progress(done, total)`` counts optimiser steps (for ``sqa`` the out-of-fold networks'
    steps too).

    Raises:
        ValueError / FileNotFoundError / OSError: bad options, device or data; an unwritable
            ``out``.
    """
    from ml_backend.device import resolve_device
    from segmenter.data import prepare
    from segmenter.model import SegmenterConfig
    from segmenter.sqa import QualityAssessor
    from segmenter.trainer import Segmenter

    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(KINDS)}")
    if options.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {options.steps}")
    device = resolve_device(options.device)
    images, masks = read_labelled(data, options.invert_masks, options.method)
    if not images:
        raise ValueError(f"no labelled pairs in {data}")
    x, y = prepare(images, masks, options.size)
    config = SegmenterConfig(
        size=options.size,
        steps=options.steps,
        seed=options.seed,
        device=device,
        channels=options.channels,
    )
    model: Segmenter | QualityAssessor
    if kind == "segmenter":
        model = Segmenter(config)
    else:
        model = QualityAssessor(config, folds=options.folds)
    losses = model.fit(x, y, progress=progress)
    model.save(out)
    return TrainReport(kind, len(x), losses[-1], Path(out))
