"""The downstream segmenter: a MONAI 2-D U-Net trained with Dice + cross-entropy.

One :class:`Segmenter` is built from a :class:`SegmenterConfig`, trained (and fine-tuned by
calling :meth:`Segmenter.fit` again) on N×S×S uint8 arrays, and predicts probabilities, masks,
MC-dropout uncertainty, or a mask for one image of any size (:meth:`Segmenter.predict_image`).
MONAI and torch are heavy imports: MONAI is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from segmenter.data import GRAY_MODES, to_gray

__all__ = [
    "INPUT_MODES",
    "SCHEDULES",
    "ModelFileError",
    "Segmenter",
    "SegmenterConfig",
    "build_unet",
    "image_hashes",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
StepCallback = Callable[[int, int, float], None]
"""Called after every optimiser step with (step done, steps in this call, loss)."""

INPUT_MODES = ("resize", "tile")
SCHEDULES = ("cosine", "constant")
FILE_FORMAT = "medcrowd.segmenter"
FILE_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read: corrupt, not a medcrowd model, or incompatible."""


@dataclass
class SegmenterConfig:
    """Network, training schedule and inference settings of a :class:`Segmenter`.

    Attributes:
        size: side of the square inputs the network trains on (tiles or resized images);
            a multiple of ``2 ** (len(channels) - 1)``.
        channels: feature channels per U-Net level (MONAI ``UNet(channels=...)``, stride 2
            between levels).
        steps: optimiser steps per :meth:`Segmenter.fit` call (unless ``steps`` is passed).
        batch_size: images per step (drawn epoch-wise without replacement; small sets repeat).
        lr: Adam learning rate.
        dropout: dropout probability in every U-Net unit; also what MC-dropout samples with.
        augment: random flips, 90° rotations, gamma/scale/shift intensity jitter (MONAI).
        seed: seeds initial weights, batch order, augmentation and dropout.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        res_units: residual units per U-Net level (MONAI ``num_res_units``).
        input_mode: how :meth:`Segmenter.predict_image` brings an image of any size to the
            network: ``"resize"`` (squash to size×size, resize the probabilities back) or
            ``"tile"`` (sliding size×size windows at native resolution, 25 % overlap,
            Gaussian blending). Use the mode the training data were prepared with
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
    device: str = "auto"
    res_units: int = 2
    input_mode: str = "resize"
    gray: str = "luminance"
    threshold: float = 0.5
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)

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
        resolve_device(self.device)

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


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA if available else CPU; anything else must be a valid torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


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


# -- shared training machinery (also used by segmenter.sqa) ---------------------------------
def _to_tensor(images: np.ndarray, in_channels: int, name: str = "images") -> torch.Tensor:
    """N×H×W (or N×H×W×C) uint8 → N×C×H×W float32 in [0, 1] on the CPU."""
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


def _mask_tensor(masks: np.ndarray, images: torch.Tensor) -> torch.Tensor:
    arr = np.asarray(masks)
    want = (int(images.shape[0]), *(int(s) for s in images.shape[2:]))
    if arr.shape != want:
        raise ValueError(f"masks {arr.shape} must be N×H×W = {want}, matching the images")
    return torch.from_numpy((arr != 0).astype(np.float32))[:, None]


def _check_side(t: torch.Tensor, divisor: int, name: str = "images") -> None:
    h, w = t.shape[-2:]
    if h % divisor or w % divisor or h == 0 or w == 0:
        raise ValueError(
            f"{name} are {h}×{w}; both sides must be positive multiples of {divisor} "
            "(use predict_image for arbitrary sizes)"
        )


class _Batches:
    """Endless index batches: shuffled passes over 0..n-1 (a batch may span two passes)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator) -> None:
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self._queue: list[int] = []

    def next(self) -> list[int]:
        while len(self._queue) < self.batch_size:
            self._queue.extend(self.rng.permutation(self.n).tolist())
        out, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        return out


class _Augment:
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
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
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


def _seeds(seed: int, call: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds for fit call number ``call`` of a model seeded ``seed``."""
    return [int(s) for s in np.random.SeedSequence([seed, call]).generate_state(n)]


def _save_file(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load_file(path: Path, kind: str) -> dict[str, Any]:
    """Read a file written by ``_save_file`` and check it is a ``kind`` model of our format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage (pickle, zip, EOF, ...)
        raise ModelFileError(
            f"{path} is not a readable model file ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ModelFileError(f"{path} is not a medcrowd segmenter model file")
    if payload.get("kind") != kind:
        raise ModelFileError(
            f"{path} holds a {payload.get('kind')} model, not a {kind} "
            f"(load it with {payload.get('kind')}.load)"
        )
    if payload.get("version") != FILE_VERSION:
        raise ModelFileError(
            f"{path} has file version {payload.get('version')}; this medcrowd reads "
            f"version {FILE_VERSION}"
        )
    return payload


def _config_from(payload: dict[str, Any], path: Path, device: str) -> SegmenterConfig:
    try:
        config = SegmenterConfig.from_dict(dict(payload["config"]))
        config.device = device
        config.check()
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path} has an incompatible config: {exc}") from None
    return config


def _load_state(module: nn.Module, state: Any, path: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        first = str(exc).splitlines()[0][:300]
        raise ModelFileError(
            f"{path}: the {what} weights do not fit the network: {first}"
        ) from None


class Segmenter:
    """A MONAI U-Net for binary 2-D segmentation, trained with DiceCE and Adam.

    Steps of :meth:`fit`: draw a batch (shuffled passes over the data), augment each image
    and mask (MONAI flips, 90° rotations, intensity jitter), one Adam step on MONAI
    ``DiceCELoss(sigmoid=True, batch=True)`` (Dice over the whole batch, so empty tiles
    are fine), learning rate by ``config.schedule`` (cosine decay per call by default).
    Calling :meth:`fit` again continues from the current weights and optimiser state
    (incremental fine-tuning). Everything random is seeded from ``config.seed`` and the
    number of earlier ``fit`` calls, so a run is reproducible on the CPU.

    Network: O. Ronneberger et al., "U-Net", MICCAI 2015 (https://arxiv.org/abs/1505.04597),
    MONAI's residual variant (Kerfoot et al. 2018). MC-dropout: Y. Gal, Z. Ghahramani,
    ICML 2016 (https://arxiv.org/abs/1506.02142).

    Attributes:
        config: the :class:`SegmenterConfig` (validated).
        in_channels: 1 (gray) or 3 (RGB) input channels.
        device: the torch device in use.
        net: the MONAI ``UNet`` (one output channel: foreground logit).
        steps_: optimiser steps taken over all ``fit`` calls.
        fit_calls_: number of ``fit`` calls so far.
        seen_: pixel hashes (:func:`image_hashes`) of every image trained on.

    Example:
        >>> cfg = SegmenterConfig(size=32, channels=(8, 16), steps=5, augment=False)
        >>> x = np.zeros((4, 32, 32), np.uint8); y = np.zeros((4, 32, 32), np.uint8)
        >>> seg = Segmenter(cfg); _ = seg.fit(x, y); seg.predict(x).shape
        (4, 32, 32)
    """

    kind = "Segmenter"

    def __init__(self, config: SegmenterConfig, in_channels: int = 1) -> None:
        config = copy.deepcopy(config)
        config.check()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (gray) or 3 (RGB), got {in_channels}")
        self.config = config
        self.in_channels = in_channels
        self.device = resolve_device(config.device)
        with _seeded(config.seed, torch.device("cpu")):
            self.net = build_unet(config, in_channels).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self._loss: nn.Module | None = None
        self._augment: _Augment | None = None
        self.steps_ = 0
        self.fit_calls_ = 0
        self.seen_: set[str] = set()

    # -- training ---------------------------------------------------------------------------
    def loss_fn(self) -> nn.Module:
        if self._loss is None:
            from monai.losses import DiceCELoss

            self._loss = DiceCELoss(sigmoid=True, batch=True)
        return self._loss

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One Adam step on a prepared batch (B×C×H×W float in [0, 1], B×1×H×W {0, 1})."""
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn()(self.net(x.to(self.device)), y.to(self.device))
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def fit(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        steps: int | None = None,
        on_step: StepCallback | None = None,
    ) -> list[float]:
        """Train (or keep training) on ``images`` N×H×W uint8 and ``masks`` N×H×W {0, 1}.

        H and W are usually ``config.size`` (any multiple of ``config.divisor`` works).
        ``steps`` overrides ``config.steps`` for this call. Returns the loss of every step.
        """
        x = _to_tensor(images, self.in_channels)
        y = _mask_tensor(masks, x)
        _check_side(x, self.config.divisor)
        n_steps = self.config.steps if steps is None else int(steps)
        if n_steps < 0:
            raise ValueError(f"steps must be >= 0, got {n_steps}")
        if len(x) == 0:
            raise ValueError("fit needs at least one image")
        torch_seed, aug_seed, batch_seed = _seeds(self.config.seed, self.fit_calls_, 3)
        batches = _Batches(len(x), self.config.batch_size, np.random.default_rng(batch_seed))
        augment = self._augmenter(aug_seed)
        losses: list[float] = []
        with _seeded(torch_seed, self.device):
            for step in range(n_steps):
                idx = batches.next()
                batch = {"image": x[idx], "label": y[idx]}
                if augment is not None:
                    batch = augment(batch)
                set_lr(self.opt, lr_at(self.config, step, n_steps))
                losses.append(self.train_step(batch["image"], batch["label"]))
                if on_step is not None:
                    on_step(step + 1, n_steps, losses[-1])
        self.steps_ += n_steps
        self.fit_calls_ += 1
        if n_steps:
            self.seen_.update(image_hashes(images))
        return losses

    def _augmenter(self, seed: int) -> _Augment | None:
        if not self.config.augment:
            return None
        if self._augment is None:
            self._augment = _Augment(["image", "label"])
        self._augment.reseed(seed)
        return self._augment

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def _forward_proba(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        out = [
            torch.sigmoid(self.net(x[i : i + batch_size].to(self.device))).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out)[:, 0] if out else torch.zeros((0, *x.shape[2:]))

    def predict_proba(self, images: np.ndarray, batch_size: int = 16) -> F32:
        """Foreground probability, float32 N×H×W, for N×H×W (or N×H×W×C) uint8 ``images``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = _to_tensor(images, self.in_channels)
        _check_side(x, self.config.divisor)
        self.net.eval()
        return self._forward_proba(x, batch_size).numpy().astype(np.float32)

    def predict(self, images: np.ndarray) -> U8:
        """Binary masks, uint8 {0, 1} N×H×W (probability >= ``config.threshold``)."""
        return (self.predict_proba(images) >= self.config.threshold).astype(np.uint8)

    def mc_dropout(
        self, images: np.ndarray, samples: int = 8, batch_size: int = 16
    ) -> tuple[F32, F32]:
        """MC-dropout: ``samples`` stochastic passes with dropout on (batch norm frozen).

        Returns ``(mean probability, uncertainty)``, both float32 N×H×W; the uncertainty is
        the per-pixel standard deviation of the sampled probabilities. Seeded by
        ``config.seed``: the same call gives the same result.
        """
        if samples < 2:
            raise ValueError(f"samples must be >= 2, got {samples}")
        x = _to_tensor(images, self.in_channels)
        _check_side(x, self.config.divisor)
        self.net.eval()
        for module in self.net.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.train()
        try:
            with _seeded(self.config.seed, self.device):
                draws = torch.stack([self._forward_proba(x, batch_size) for _ in range(samples)])
        finally:
            self.net.eval()
        mean = draws.mean(0).numpy().astype(np.float32)
        std = draws.std(0).numpy().astype(np.float32)
        return mean, std

    def _image_input(self, image: np.ndarray) -> U8:
        """One image of any size → H×W (gray) or H×W×3 uint8 for this network."""
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"expected one HW or HWC image, got shape {arr.shape}")
        if self.in_channels == 1:
            return to_gray(arr, self.config.gray)  # type: ignore[arg-type]
        if arr.dtype != np.uint8:
            raise ValueError(f"RGB images must be uint8, got {arr.dtype}")
        if arr.ndim == 2:
            return np.repeat(arr[..., None], 3, axis=-1)
        if arr.shape[-1] not in (3, 4):
            raise ValueError(f"expected 3 or 4 channels, got shape {arr.shape}")
        return np.ascontiguousarray(arr[..., :3])

    def predict_image_proba(self, image: np.ndarray) -> F32:
        """Foreground probability, float32 H×W, for one uint8 gray/RGB image of any H×W.

        ``config.input_mode`` says how: ``"resize"`` squashes the image to size×size and
        resizes the probabilities back (bilinear); ``"tile"`` slides size×size windows over
        the native-resolution image (MONAI ``sliding_window_inference``, 25 % overlap,
        Gaussian-weighted blending; images smaller than a window are padded).
        """
        arr = self._image_input(image)
        h, w = arr.shape[:2]
        size = self.config.size
        self.net.eval()
        if self.config.input_mode == "resize":
            from PIL import Image

            small = np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))
            prob = self.predict_proba(small[None])[0]
            if (h, w) == (size, size):
                return prob
            back = Image.fromarray(prob, mode="F").resize((w, h), Image.Resampling.BILINEAR)
            return np.clip(np.asarray(back, np.float32), 0.0, 1.0)
        from monai.inferers import sliding_window_inference

        x = _to_tensor(arr[None], self.in_channels).to(self.device)

        def run(window: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(window))

        with torch.no_grad():
            out = sliding_window_inference(
                x, roi_size=(size, size), sw_batch_size=8, predictor=run, overlap=0.25,
                mode="gaussian",
            )  # fmt: skip
        prob_t = torch.as_tensor(out)[0, 0, :h, :w].float().cpu()
        return prob_t.numpy().astype(np.float32)

    def predict_image(self, image: np.ndarray) -> U8:
        """uint8 {0, 1} mask of the same H×W for one uint8 gray/RGB image of any size
        (see :meth:`predict_image_proba` for resize vs sliding-window tiles)."""
        return (self.predict_image_proba(image) >= self.config.threshold).astype(np.uint8)

    # -- persistence ------------------------------------------------------------------------
    def clone(self) -> Segmenter:
        """An independent copy (weights, optimiser state, counters)."""
        return copy.deepcopy(self)

    def _payload(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "in_channels": self.in_channels,
            "net": {k: v.cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "steps": self.steps_,
            "fit_calls": self.fit_calls_,
            "seen": sorted(self.seen_),
        }

    def save(self, path: Path) -> None:
        """Write one file: weights, config, optimiser state and counters (atomic replace)."""
        _save_file(path, self._payload())

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> Segmenter:
        """Rebuild a :class:`Segmenter` saved by :meth:`save`, on ``device``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ModelFileError (a ValueError): not a readable medcrowd Segmenter file, or weights
                that do not fit the stored config.
        """
        path = Path(path)
        payload = _load_file(path, cls.kind)
        config = _config_from(payload, path, device)
        seg = cls(config, in_channels=int(payload.get("in_channels", 1)))
        seg._restore(payload, path)
        return seg

    def _restore(self, payload: dict[str, Any], path: Path) -> None:
        _load_state(self.net, payload.get("net"), path, "network")
        if "optimizer" in payload:
            with contextlib.suppress(ValueError, KeyError):
                self.opt.load_state_dict(payload["optimizer"])
        self.steps_ = int(payload.get("steps", 0))
        self.fit_calls_ = int(payload.get("fit_calls", 0))
        self.seen_ = set(payload.get("seen", []))
