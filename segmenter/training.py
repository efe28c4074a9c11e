"""Training machinery shared by :class:`segmenter.Segmenter` and
:class:`segmenter.QualityAssessor`: array ↔ tensor, batch order, MONAI augmentation,
seeding, the learning-rate schedule and the one-image input of ``predict_image``.

MONAI is imported inside :class:`Augment` (``import monai`` takes seconds).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch

from segmenter.data import to_gray
from segmenter.model import SegmenterConfig

__all__ = [
    "F32",
    "U8",
    "Augment",
    "Batches",
    "Progress",
    "StepCounter",
    "check_side",
    "fit_seeds",
    "images_to_tensor",
    "lr_at",
    "masks_to_tensor",
    "network_input",
    "seeded",
    "set_lr",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]
"""``progress(done, total)``: units of work done so far (optimiser steps) out of ``total``."""


class StepCounter:
    """One ``progress(done, total)`` over a whole run made of several training calls.

    ``part()`` gives the callback for the next call (a ``fit``); the run's ``done`` is the sum
    of every part's own ``done``, so parts may also run side by side (one thread at a time
    calls a tick: :class:`medcrowd.jobs.Jobs` relays the ticks of its workers through one
    thread). The total reported is the run's, and ``done`` is capped at it.
    """

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self._parts: list[int] = []

    def part(self) -> Progress:
        index = len(self._parts)
        self._parts.append(0)

        def tick(done: int, _total: int) -> None:
            self.done += done - self._parts[index]
            self._parts[index] = done
            if self.progress is not None:
                self.progress(min(self.done, self.total), self.total)

        return tick


def images_to_tensor(images: np.ndarray, in_channels: int, name: str = "images") -> torch.Tensor:
    """N×H×W (or N×H×W×C) uint8 → N×C×H×W float32 in [0, 1] on the CPU.

    One-channel input is repeated to 3 channels for an RGB network.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be N×H×W (or N×H×W×C) uint8, got shape {arr.shape}")
    if arr.shape[-1] != in_channels:
        if in_channels == 3 and arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        else:
            raise ValueError(
                f"{name} have {arr.shape[-1]} channel(s) but the network takes {in_channels}"
            )
    arr = np.require(arr, requirements=["C", "W"])  # torch refuses read-only arrays
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def masks_to_tensor(masks: np.ndarray, images: torch.Tensor) -> torch.Tensor:
    """N×H×W masks (any nonzero = 1) matching ``images`` N×C×H×W → N×1×H×W float {0, 1}."""
    arr = np.asarray(masks)
    want = (int(images.shape[0]), *(int(s) for s in images.shape[2:]))
    if arr.shape != want:
        raise ValueError(f"masks {arr.shape} must be N×H×W = {want}, matching the images")
    return torch.from_numpy((arr != 0).astype(np.float32))[:, None]


def check_side(t: torch.Tensor, divisor: int, name: str = "images") -> None:
    """ValueError unless both sides of N×C×H×W ``t`` are positive multiples of ``divisor``."""
    h, w = t.shape[-2:]
    if h % divisor or w % divisor or h == 0 or w == 0:
        raise ValueError(
            f"{name} are {h}×{w}; both sides must be positive multiples of {divisor} "
            "(use predict_image for arbitrary sizes)"
        )


class Batches:
    """Endless index batches: shuffled passes over 0..n-1 (a batch may span two passes)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator) -> None:
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self._queue: list[int] = []

    def next(self) -> list[int]:
        while len(self._queue) < self.batch_size:
            self._queue.extend(self.rng.permutation(self.n).tolist())
        out, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        return out


class Augment:
    """MONAI dictionary transforms applied per sample; spatial ones to every key.

    Random flips on both axes and 90° rotations (all keys); gamma contrast, intensity scale
    and shift on ``"image"`` only. Seeded with :meth:`reseed`.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandFlipd,
            RandRotate90d,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        ks = list(keys)
        self.keys = ks
        self.compose = Compose(
            [
                RandFlipd(ks, prob=0.5, spatial_axis=0),
                RandFlipd(ks, prob=0.5, spatial_axis=1),
                RandRotate90d(ks, prob=0.5, max_k=3),
                RandAdjustContrastd("image", prob=0.3, gamma=(0.8, 1.25)),
                RandScaleIntensityd("image", factors=0.1, prob=0.5),
                RandShiftIntensityd("image", offsets=0.05, prob=0.5),
            ]
        )

    def reseed(self, seed: int) -> None:
        self.compose.set_random_state(seed=seed)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{key: B×C×H×W}`` → the same, every sample transformed independently."""
        from monai.data import get_track_meta, set_track_meta

        track = get_track_meta()
        set_track_meta(False)  # plain tensors: 3× faster than MetaTensor bookkeeping
        try:
            n = next(iter(batch.values())).shape[0]
            outs = [self.compose({k: batch[k][i] for k in self.keys}) for i in range(n)]
        finally:
            set_track_meta(track)
        return {k: torch.stack([torch.as_tensor(o[k]) for o in outs]) for k in self.keys}


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (dropout) for a block and restore the caller's RNG state after;
    deterministic kernels on during the block (restored after)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn)


def lr_at(config: SegmenterConfig, step: int, total: int) -> float:
    """Learning rate of step ``step`` (0-based) of a ``fit`` call with ``total`` steps."""
    if config.schedule == "constant" or total <= 1:
        return config.lr
    floor = config.lr / 20
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * step / (total - 1)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def fit_seeds(seed: int, call: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds for fit call number ``call`` of a model seeded ``seed``."""
    return [int(s) for s in np.random.SeedSequence([seed, call]).generate_state(n)]


def network_input(image: np.ndarray, in_channels: int, gray: str) -> U8:
    """One image of any size → H×W (gray, :func:`segmenter.data.to_gray` with ``gray``) or
    H×W×3 uint8 (RGB network) for ``predict_image``."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"expected one HW or HWC image, got shape {arr.shape}")
    if in_channels == 1:
        return to_gray(arr, gray)  # type: ignore[arg-type]
    if arr.dtype != np.uint8:
        raise ValueError(f"RGB images must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected 3 or 4 channels, got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])
