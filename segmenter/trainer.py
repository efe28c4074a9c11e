"""The downstream segmenter: a MONAI 2-D U-Net trained with Dice + cross-entropy.

One :class:`Segmenter` is built from a :class:`segmenter.model.SegmenterConfig`, trained (and
fine-tuned by calling :meth:`Segmenter.fit` again) on N×S×S uint8 arrays, and predicts
probabilities, masks, MC-dropout uncertainty, or a mask for one image of any size
(:meth:`Segmenter.predict_image`). Its state is a plain dict (:meth:`Segmenter.state_dict`,
:meth:`Segmenter.from_state`); :meth:`Segmenter.save` / :meth:`Segmenter.load` write and read
it through :mod:`segmenter.model`. MONAI is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segmenter.model import (
    FILE_FORMAT,
    FILE_VERSION,
    ModelFileError,
    SegmenterConfig,
    build_unet,
    check_state,
    config_from_state,
    image_hashes,
    load_weights,
    read_model_file,
    save_model_file,
    torch_device,
)
from segmenter.training import (
    F32,
    U8,
    Augment,
    Batches,
    Progress,
    check_side,
    fit_seeds,
    images_to_tensor,
    lr_at,
    masks_to_tensor,
    network_input,
    seeded,
    set_lr,
)

__all__ = ["ModelFileError", "Segmenter", "SegmenterConfig"]


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
        config: the :class:`segmenter.model.SegmenterConfig` (validated).
        in_channels: 1 (gray) or 3 (RGB) input channels.
        device: the torch device in use.
        net: the MONAI ``UNet`` (one output channel: foreground logit).
        steps_: optimiser steps taken over all ``fit`` calls.
        fit_calls_: number of ``fit`` calls so far.
        seen_: pixel hashes (:func:`segmenter.model.image_hashes`) of every image trained on.

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
        self.device = torch_device(config.device)
        with seeded(config.seed, torch.device("cpu")):
            self.net = build_unet(config, in_channels).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self._loss: nn.Module | None = None
        self._augment: Augment | None = None
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
        progress: Progress | None = None,
    ) -> list[float]:
        """Train (or keep training) on ``images`` N×H×W uint8 and ``masks`` N×H×W {0, 1}.

        H and W are usually ``config.size`` (any multiple of ``config.divisor`` works).
        ``steps`` overrides ``config.steps`` for this call; ``progress(done, total)`` is
        called after every optimiser step. Returns the loss of every step.
        """
        x = images_to_tensor(images, self.in_channels)
        y = masks_to_tensor(masks, x)
        check_side(x, self.config.divisor)
        n_steps = self.config.steps if steps is None else int(steps)
        if n_steps < 0:
            raise ValueError(f"steps must be >= 0, got {n_steps}")
        if len(x) == 0:
            raise ValueError("fit needs at least one image")
        torch_seed, aug_seed, batch_seed = fit_seeds(self.config.seed, self.fit_calls_, 3)
        batches = Batches(len(x), self.config.batch_size, np.random.default_rng(batch_seed))
        augment = self._augmenter(aug_seed)
        losses: list[float] = []
        with seeded(torch_seed, self.device):
            for step in range(n_steps):
                idx = batches.next()
                batch = {"image": x[idx], "label": y[idx]}
                if augment is not None:
                    batch = augment(batch)
                set_lr(self.opt, lr_at(self.config, step, n_steps))
                losses.append(self.train_step(batch["image"], batch["label"]))
                if progress is not None:
                    progress(step + 1, n_steps)
        self.steps_ += n_steps
        self.fit_calls_ += 1
        if n_steps:
            self.seen_.update(image_hashes(images))
        return losses

    def _augmenter(self, seed: int) -> Augment | None:
        if not self.config.augment:
            return None
        if self._augment is None:
            self._augment = Augment(["image", "label"])
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
        x = images_to_tensor(images, self.in_channels)
        check_side(x, self.config.divisor)
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
        x = images_to_tensor(images, self.in_channels)
        check_side(x, self.config.divisor)
        self.net.eval()
        for module in self.net.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.train()
        try:
            with seeded(self.config.seed, self.device):
                draws = torch.stack([self._forward_proba(x, batch_size) for _ in range(samples)])
        finally:
            self.net.eval()
        mean = draws.mean(0).numpy().astype(np.float32)
        std = draws.std(0).numpy().astype(np.float32)
        return mean, std

    def image_input(self, image: np.ndarray) -> U8:
        """One image of any size → H×W (gray) or H×W×3 uint8 for this network
        (:func:`segmenter.training.network_input`)."""
        return network_input(image, self.in_channels, self.config.gray)

    def predict_image_proba(self, image: np.ndarray) -> F32:
        """Foreground probability, float32 H×W, for one uint8 gray/RGB image of any H×W.

        ``config.input_mode`` says how: ``"resize"`` squashes the image to size×size and
        resizes the probabilities back (bilinear); ``"tile"`` slides size×size windows over
        the native-resolution image (MONAI ``sliding_window_inference``, 25 % overlap,
        Gaussian-weighted blending; images smaller than a window are padded).
        """
        arr = self.image_input(image)
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

        x = images_to_tensor(arr[None], self.in_channels).to(self.device)

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

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild and keep training this network, as a plain dict:
        format tag, kind, config, weights (CPU tensors), optimiser state and counters — all
        copies, independent of this network."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "in_channels": self.in_channels,
            # copies: a state must not share tensors with the live network or optimiser
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.opt.state_dict()),
            "steps": self.steps_,
            "fit_calls": self.fit_calls_,
            "seen": sorted(self.seen_),
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        device: str | torch.device = "cpu",
        source: str = "the model state",
    ) -> Segmenter:
        """Rebuild a :class:`Segmenter` from :meth:`state_dict` on an already resolved
        ``device``.

        Raises:
            ModelFileError (a ValueError): not a medcrowd Segmenter state, or weights that do
                not fit the stored config (``source`` names it in the message).
        """
        check_state(state, cls.kind, source)
        config = config_from_state(state, device, source)
        seg = cls(config, in_channels=int(state.get("in_channels", 1)))
        seg.restore_state(state, source)
        return seg

    def restore_state(self, state: dict[str, Any], source: str = "the model state") -> None:
        """Load weights, optimiser state and counters of :meth:`state_dict` into this network
        (built with the same config)."""
        load_weights(self.net, state.get("net"), "network", source)
        if "optimizer" in state:
            with contextlib.suppress(ValueError, KeyError):
                self.opt.load_state_dict(state["optimizer"])
        self.steps_ = int(state.get("steps", 0))
        self.fit_calls_ = int(state.get("fit_calls", 0))
        self.seen_ = set(state.get("seen", []))

    def save(self, path: Path) -> None:
        """Write :meth:`state_dict` to one file (atomic replace)."""
        save_model_file(path, self.state_dict())

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> Segmenter:
        """Rebuild a :class:`Segmenter` saved by :meth:`save`, on an already resolved
        ``device``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ModelFileError (a ValueError): not a readable medcrowd Segmenter file, or weights
                that do not fit the stored config.
        """
        return cls.from_state(read_model_file(path), device, str(path))
