"""Mask → image synthesis on arrays: the class table, ``fit_pix2pix`` and the ``Synthesizer``.

The app reads and resizes pairs; this module turns label-value masks into one-hot channels
(:class:`ClassTable`), trains :class:`gan.pix2pix.Pix2PixTrainer` on seeded batches and
generates images in chunks. No file is read or written here: a :class:`Synthesizer`'s whole
state is :meth:`Synthesizer.state_dict` (a dict of tensors and plain values) and comes back
with :meth:`Synthesizer.from_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gan.pix2pix import Pix2PixConfig, Pix2PixTrainer, masks_to_onehot, tensor_to_images

__all__ = ["ClassTable", "Synthesizer", "fit_pix2pix"]

U8 = npt.NDArray[np.uint8]
Progress = Callable[[int, int], None]
"""``progress(done, total)``."""
OnLog = Callable[[dict[str, float]], None]
"""Called with one train step's losses."""


class ClassTable:
    """Mask label values ↔ one-hot channel index: channel ``i`` is label value ``values[i]``.

    Args:
        values: the label values, background 0 included; stored sorted (0 first).

    Example:
        >>> table = ClassTable([0, 255])
        >>> table.to_ids(np.array([[0, 255]], np.uint8)).tolist(), len(table)
        ([[0, 1]], 2)
    """

    def __init__(self, values: Sequence[int]) -> None:
        vals = sorted({int(v) for v in values} | {0})
        if len(vals) < 2:
            raise ValueError("every mask is empty: nothing to learn")
        if vals[-1] > 255:
            raise ValueError(f"label values must lie in 0..255, got {vals[-1]}")
        self.values: list[int] = vals
        self._lut = np.full(256, 255, dtype=np.uint8)
        self._known = np.zeros(256, dtype=bool)
        for i, v in enumerate(vals):
            self._lut[v] = i
            self._known[v] = True

    @classmethod
    def from_masks(cls, masks: npt.NDArray[np.integer[Any]]) -> ClassTable:
        """The table of every value in ``masks`` (any shape, integers 0..255)."""
        arr = np.asarray(masks)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("mask label values must lie in 0..255")
        return cls(np.unique(arr).tolist())

    def __len__(self) -> int:
        return len(self.values)

    def to_ids(self, masks: npt.NDArray[np.integer[Any]]) -> U8:
        """Label values (any shape) → uint8 channel ids; a value not in the table is an error."""
        arr = np.asarray(masks)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"mask values must lie in 0..255 (the table is {self.values})")
        arr = arr.astype(np.uint8)
        unknown = ~self._known[arr]
        if unknown.any():
            bad = sorted(set(np.unique(arr[unknown]).tolist()))
            raise ValueError(f"mask values {bad} are not in the class table {self.values}")
        return np.asarray(self._lut[arr], dtype=np.uint8)

    def to_values(self, ids: npt.NDArray[np.integer[Any]]) -> U8:
        """Channel ids (any shape) → uint8 label values."""
        return np.asarray(np.array(self.values, dtype=np.uint8)[np.asarray(ids)], dtype=np.uint8)


def _check_images(images: U8, size: int) -> U8:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 3), got {arr.shape}")
    if arr.shape[1:3] != (size, size):
        raise ValueError(
            f"images are {arr.shape[2]}×{arr.shape[1]} but image_size is {size}: resize first"
        )
    return arr


def _check_masks(masks: npt.NDArray[np.integer[Any]], size: int) -> npt.NDArray[Any]:
    arr = np.asarray(masks)
    if arr.ndim != 3 or arr.shape[1:] != (size, size):
        raise ValueError(f"masks must be (N, {size}, {size}) label values, got {arr.shape}")
    return arr


class Synthesizer:
    """A trained (or training) pix2pix model with its class table: label masks → images.

    Built by :func:`fit_pix2pix` or :meth:`from_state`; :meth:`fit` trains it further.

    Fitted attributes:
        classes_: label values, channel order (``classes_[0] == 0``, the background).
        history_: one loss dict per train step since the first.
        step_: train steps done.

    Attributes:
        trainer: the :class:`gan.pix2pix.Pix2PixTrainer` (networks, optimisers).
        table: the :class:`ClassTable` of ``classes_``.
    """

    def __init__(self, trainer: Pix2PixTrainer, classes: Sequence[int]) -> None:
        self.trainer = trainer
        self.table = ClassTable(classes)
        if len(self.table) != trainer.config.mask_channels:
            raise ValueError(
                f"{len(self.table)} classes {self.table.values} but the model has "
                f"{trainer.config.mask_channels} mask channels"
            )

    @property
    def config(self) -> Pix2PixConfig:
        return self.trainer.config

    @property
    def classes_(self) -> list[int]:
        return list(self.table.values)

    @property
    def history_(self) -> list[dict[str, float]]:
        return self.trainer.history_

    @property
    def step_(self) -> int:
        return self.trainer.step_

    def fit(
        self,
        images: U8,
        masks: npt.NDArray[np.integer[Any]],
        *,
        steps: int,
        batch_size: int = 4,
        progress: Progress | None = None,
        on_log: OnLog | None = None,
    ) -> Synthesizer:
        """Train ``steps`` more steps (see :meth:`gan.pix2pix.Pix2PixTrainer.fit`).

        Args:
            images: (N, S, S) gray or (N, S, S, 3) RGB uint8 (as the model was built for).
            masks: (N, S, S) label values of ``classes_``.
        """
        cfg = self.config
        arr = _check_images(images, cfg.image_size)
        channels = 3 if arr.ndim == 4 else 1
        if channels != cfg.image_channels:
            raise ValueError(f"images have {channels} channel(s), the model {cfg.image_channels}")
        ids = self.table.to_ids(_check_masks(masks, cfg.image_size))
        self.trainer.fit(arr, ids, steps, batch_size=batch_size, progress=progress, on_log=on_log)
        return self

    def generate(
        self,
        masks: npt.NDArray[np.integer[Any]],
        *,
        seed: int = 0,
        batch_size: int = 8,
        progress: Progress | None = None,
    ) -> U8:
        """(N, S, S) label-value masks → (N, S, S) gray or (N, S, S, 3) RGB uint8 images.

        Chunks of ``batch_size``; the chunk starting at mask ``i`` draws its dropout noise
        from ``seed + i``, so the same masks and seed give the same images.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ids = self.table.to_ids(_check_masks(masks, self.config.image_size))
        n, classes = len(ids), len(self.table)
        out: list[U8] = []
        for i in range(0, n, batch_size):
            onehot = masks_to_onehot(ids[i : i + batch_size], classes)
            fake = self.trainer.generate(onehot, seed=seed + i)
            out.append(tensor_to_images(fake))
            if progress is not None:
                progress(min(i + batch_size, n), n)
        if not out:
            size = self.config.image_size
            shape = (0, size, size) if self.config.image_channels == 1 else (0, size, size, 3)
            return np.zeros(shape, np.uint8)
        return np.concatenate(out)

    def state_dict(self) -> dict[str, Any]:
        """The trainer's state (weights, optimisers, step, RNG) plus ``"classes"``."""
        return self.trainer.state_dict() | {"classes": self.classes_}

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        *,
        device: str | torch.device | None = None,
        classes: Sequence[int] | None = None,
    ) -> Synthesizer:
        """Rebuild from :meth:`state_dict` (or a bare trainer state plus ``classes``).

        Raises:
            ValueError: not a state, or no class table in it and none given.
        """
        table = state.get("classes") if classes is None else classes
        if table is None:
            raise ValueError("the state holds no class table: pass classes=")
        return cls(Pix2PixTrainer.from_state(state, device=device), table)


def fit_pix2pix(
    images: U8,
    masks: npt.NDArray[np.integer[Any]],
    config: Pix2PixConfig,
    *,
    steps: int,
    batch_size: int = 4,
    progress: Progress | None = None,
    on_log: OnLog | None = None,
    classes: Sequence[int] | None = None,
) -> Synthesizer:
    """Train pix2pix (mask → image) from scratch on arrays; return the :class:`Synthesizer`.

    Args:
        images: (N, S, S) gray or (N, S, S, 3) RGB uint8, S = ``config.image_size``.
        masks: (N, S, S) uint8 label values (e.g. {0, 1}, {0, 255} or 0/1/2/…).
        config: hyperparameters; ``image_channels`` and ``mask_channels`` are set from the
            data, ``device`` must be resolved already.
        steps: train steps (0 builds an untrained model).
        batch_size: pairs per step.
        progress: ``progress(done, steps)`` after every step.
        on_log: called with each step's losses.
        classes: the class table's label values; default every value in ``masks``.

    Example:
        >>> masks = np.zeros((2, 64, 64), np.uint8); masks[:, 16:48, 16:48] = 255
        >>> images = np.where(masks > 0, 200, 30).astype(np.uint8)
        >>> cfg = Pix2PixConfig(image_size=64, ngf=4, ndf=4, device="cpu")
        >>> synth = fit_pix2pix(images, masks, cfg, steps=2, batch_size=2)
        >>> synth.classes_, len(synth.history_), synth.generate(masks).shape
        ([0, 255], 2, (2, 64, 64))
    """
    arr = _check_images(images, config.image_size)
    labels = _check_masks(masks, config.image_size)
    if len(arr) != len(labels) or len(arr) == 0:
        raise ValueError(f"need as many images as masks (>= 1), got {len(arr)}, {len(labels)}")
    table = ClassTable(classes) if classes is not None else ClassTable.from_masks(labels)
    cfg = replace(config, image_channels=3 if arr.ndim == 4 else 1, mask_channels=len(table))
    synth = Synthesizer(Pix2PixTrainer(cfg), table.values)
    return synth.fit(
        arr, labels, steps=steps, batch_size=batch_size, progress=progress, on_log=on_log
    )
