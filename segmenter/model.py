"""Config, device, network and model files of the segmenter (shared by trainer and SQA).

* :class:`SegmenterConfig` — the typed network / schedule / inference settings;
* :func:`torch_device` — checks an *already resolved* device (``"cpu"``, ``"cuda:1"``, a
  ``torch.device``); resolving ``"auto"`` is the app's job
  (``ml_backend.device.resolve_device``);
* :func:`build_unet` — the MONAI U-Net a config describes;
* model state: :func:`check_state` (is this dict a model of our format and kind?),
  :func:`config_from_state`, :func:`load_weights`, and the one place model *files* are
  read and written: :func:`save_model_file` / :func:`read_model_file` (atomic write; clear
  :class:`ModelFileError` for anything that is not a readable medcrowd model).

MONAI is imported inside :func:`build_unet` (``import monai`` takes seconds).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segmenter.data import GRAY_MODES

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "INPUT_MODES",
    "SCHEDULES",
    "ModelFileError",
    "SegmenterConfig",
    "build_unet",
    "check_state",
    "config_from_state",
    "image_hashes",
    "load_weights",
    "read_model_file",
    "save_model_file",
    "torch_device",
]

INPUT_MODES = ("resize", "tile")
SCHEDULES = ("cosine", "constant")
FILE_FORMAT = "medcrowd.segmenter"
FILE_VERSION = 1


class ModelFileError(ValueError):
    """A model file (or state) that cannot be used: corrupt, not a medcrowd model, or
    incompatible with this network."""


def torch_device(device: str | torch.device) -> torch.device:
    """The ``torch.device`` for an already resolved device name.

    Raises:
        ValueError: ``"auto"`` (resolve it first: ``ml_backend.device.resolve_device``), a
            string torch does not parse, or CUDA asked for but unavailable.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        if device == "auto":
            raise ValueError(
                "device 'auto' must be resolved by the caller "
                "(ml_backend.device.resolve_device) before it reaches the segmenter"
            )
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} requested but CUDA is not available")
    return dev


@dataclass
class SegmenterConfig:
    """Network, training schedule and inference settings of a :class:`segmenter.Segmenter`.

    Attributes:
        size: side of the square inputs the network trains on (tiles or resized images);
            a multiple of ``2 ** (len(channels) - 1)``.
        channels: feature channels per U-Net level (MONAI ``UNet(channels=...)``, stride 2
            between levels).
        steps: optimiser steps per ``fit`` call (unless ``steps`` is passed).
        batch_size: images per step (drawn epoch-wise without replacement; small sets repeat).
        lr: Adam learning rate.
        dropout: dropout probability in every U-Net unit; also what MC-dropout samples with.
        augment: random flips, 90° rotations, gamma/scale/shift intensity jitter (MONAI).
        seed: seeds initial weights, batch order, augmentation and dropout.
        device: an already resolved torch device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (a
            ``torch.device`` is stored as its string). ``"auto"`` is refused: the app
            resolves it (``ml_backend.device.resolve_device``).
        res_units: residual units per U-Net level (MONAI ``num_res_units``).
        input_mode: how ``predict_image`` brings an image of any size to the network:
            ``"resize"`` (squash to size×size, resize the probabilities back) or ``"tile"``
            (sliding size×size windows at native resolution, 25 % overlap, Gaussian
            blending). Use the mode the training data were prepared with
            (:func:`segmenter.data.prepare`).
        gray: how RGB images become gray in ``predict_image`` (:func:`segmenter.data.to_gray`:
            ``"luminance"`` or ``"green"``); prepare training data the same way.
        threshold: foreground probability cut-off of ``predict`` / ``predict_image``.
        schedule: learning rate within each ``fit`` call: ``"cosine"`` (from ``lr`` down to
            ``lr / 20`` over the call's steps; every fine-tuning call restarts at ``lr``) or
            ``"constant"``.
    """

    size: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 128)
    steps: int = 400
    batch_size: int = 8
    lr: float = 1e-3
    dropout: float = 0.1
    augment: bool = True
    seed: int = 0
    device: str | torch.device = "cpu"
    res_units: int = 2
    input_mode: str = "resize"
    gray: str = "luminance"
    threshold: float = 0.5
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.device = str(self.device)  # a torch.device is kept as its name

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this (the U-Net's total stride)."""
        return int(2 ** (len(self.channels) - 1))

    def check(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels needs >= 2 positive levels, got {self.channels}")
        if self.size < self.divisor or self.size % self.divisor:
            raise ValueError(
                f"size must be a positive multiple of {self.divisor} for {len(self.channels)} "
                f"U-Net levels, got {self.size}"
            )
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.res_units < 0:
            raise ValueError(f"res_units must be >= 0, got {self.res_units}")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.gray not in GRAY_MODES:
            raise ValueError(f"gray must be one of {GRAY_MODES}, got {self.gray!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        torch_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmenterConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are rejected (newer file)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**data)


def build_unet(config: SegmenterConfig, in_channels: int, out_channels: int = 1) -> nn.Module:
    """MONAI ``UNet`` (2-D, residual units, batch norm, dropout) for ``config``."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.res_units,
        norm="batch",
        dropout=config.dropout,
    )


def image_hashes(images: np.ndarray) -> list[str]:
    """SHA-256 of each image's pixels and shape (which inputs a network has been trained on)."""
    arr = np.asarray(images)
    return [
        hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()
        for a in arr
    ]


# -- model state --------------------------------------------------------------------------
def check_state(state: Any, kind: str, source: str = "the model state") -> dict[str, Any]:
    """``state`` if it is a ``kind`` model (``"Segmenter"``, ``"QualityAssessor"``) of our
    format and version; else :class:`ModelFileError` naming ``source`` (a path or a label)."""
    if not isinstance(state, dict) or state.get("format") != FILE_FORMAT:
        raise ModelFileError(f"{source} is not a medcrowd segmenter model file")
    if state.get("kind") != kind:
        raise ModelFileError(
            f"{source} holds a {state.get('kind')} model, not a {kind} "
            f"(load it with {state.get('kind')}.load)"
        )
    if state.get("version") != FILE_VERSION:
        raise ModelFileError(
            f"{source} has file version {state.get('version')}; this medcrowd reads "
            f"version {FILE_VERSION}"
        )
    return state


def config_from_state(
    state: dict[str, Any], device: str | torch.device, source: str = "the model state"
) -> SegmenterConfig:
    """The stored :class:`SegmenterConfig`, moved to ``device`` and validated."""
    try:
        config = SegmenterConfig.from_dict(dict(state["config"]))
        config.device = str(device)
        config.check()
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source} has an incompatible config: {exc}") from None
    return config


def load_weights(module: nn.Module, weights: Any, what: str, source: str = "model") -> None:
    """``module.load_state_dict(weights)``; a mismatch is a one-line :class:`ModelFileError`."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        first = str(exc).splitlines()[0][:300]
        raise ModelFileError(
            f"{source}: the {what} weights do not fit the network: {first}"
        ) from None


def save_model_file(path: Path, state: dict[str, Any]) -> None:
    """Write a model state (``Segmenter.state_dict()`` …) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def read_model_file(path: Path) -> dict[str, Any]:
    """The state stored by :func:`save_model_file` (tensors on the CPU, no pickled code).

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: not a readable model file (garbage, truncated, another program's).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage (pickle, zip, EOF, ...)
        raise ModelFileError(
            f"{path} is not a readable model file ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} is not a medcrowd segmenter model file")
    return state
