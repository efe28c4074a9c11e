"""pix2pix trainer: conditional GAN mask → image with L1 (λ=100) + adversarial loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from gan.discriminator import MonaiPatchDiscriminator, PatchGANDiscriminator
from gan.generator import UNetGenerator, default_num_downs

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "Batch",
    "Pix2PixConfig",
    "Pix2PixTrainer",
    "batch_at",
    "images_to_tensor",
    "masks_to_onehot",
    "tensor_to_images",
]

Batch = dict[str, torch.Tensor]
"""``{"mask": (B, C_mask, H, W) float one-hot, "image": (B, C_img, H, W) float in [-1, 1]}``."""


@dataclass
class Pix2PixConfig:
    """Hyperparameters (Isola et al. 2017 defaults) and run settings.

    Attributes:
        image_size: square side in pixels, a power of two in 64..512.
        image_channels: 1 (grayscale) or 3 (RGB).
        mask_channels: one-hot classes, background included (2 for a binary mask).
        ngf, ndf: first-layer filters of generator / discriminator (64, 64).
        num_downs: U-Net levels; None → log2(image_size), at most 8.
        n_layers_d: PatchGAN strided layers (3 → 70×70 patches).
        generator, discriminator: keys of ``GENERATORS`` / ``DISCRIMINATORS``.
        lambda_l1: weight of the L1 term (100).
        lr, beta1, beta2: Adam (2e-4, 0.5, 0.999) for both networks.
        dropout: generator decoder dropout (0.5).
        init_gain: std of the N(0, σ) weight init (0.02).
        device: an already resolved device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
            ``torch.device`` (kept as its string). ``"auto"`` is refused: the app resolves it
            (``ml_backend.device.resolve_device``).
        amp: mixed precision (float16 autocast + GradScaler), used on CUDA only.
        seed: seeds init, dropout and everything this trainer draws.
    """

    image_size: int = 256
    image_channels: int = 1
    mask_channels: int = 2
    ngf: int = 64
    ndf: int = 64
    num_downs: int | None = None
    n_layers_d: int = 3
    generator: str = "unet"
    discriminator: str = "patch"
    lambda_l1: float = 100.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    dropout: float = 0.5
    init_gain: float = 0.02
    device: str | torch.device = "cpu"
    amp: bool = True
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata saved with the checkpoint (label values, data source …)."""

    def __post_init__(self) -> None:
        self.device = str(self.device)  # a torch.device is kept as its name

    def validate(self) -> None:
        if not 64 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in 64..512, got {self.image_size}")
        default_num_downs(self.image_size)  # power of two check
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
        if self.mask_channels < 2:
            raise ValueError("mask_channels counts background too: at least 2")
        if self.generator not in GENERATORS:
            raise ValueError(f"unknown generator {self.generator!r}; have {sorted(GENERATORS)}")
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(
                f"unknown discriminator {self.discriminator!r}; have {sorted(DISCRIMINATORS)}"
            )
        if self.device == "auto":
            raise ValueError(
                "device 'auto' must be resolved by the caller "
                "(ml_backend.device.resolve_device); pass 'cpu', 'cuda' or 'cuda:N'"
            )


def _unet(config: Pix2PixConfig) -> nn.Module:
    downs = config.num_downs or default_num_downs(config.image_size)
    return UNetGenerator(
        config.mask_channels, config.image_channels, downs, config.ngf, config.dropout
    )


def _patch(config: Pix2PixConfig) -> nn.Module:
    return PatchGANDiscriminator(
        config.mask_channels + config.image_channels, config.ndf, config.n_layers_d
    )


def _monai_patch(config: Pix2PixConfig) -> nn.Module:
    return MonaiPatchDiscriminator(
        config.mask_channels + config.image_channels, config.ndf, config.n_layers_d
    )


GENERATORS: dict[str, Callable[[Pix2PixConfig], nn.Module]] = {"unet": _unet}
DISCRIMINATORS: dict[str, Callable[[Pix2PixConfig], nn.Module]] = {
    "patch": _patch,
    "monai_patch": _monai_patch,
}


def _init_weights(module: nn.Module, gain: float) -> None:
    """pix2pix init: conv weights N(0, gain), BatchNorm weights N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def _device(name: str) -> torch.device:
    """``torch.device(name)`` of a resolved name; a CUDA device torch cannot see is refused."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} given but torch sees no CUDA device")
    return device


class Pix2PixTrainer:
    """Train and run a pix2pix mask → image model.

    Steps per ``train_step`` (Isola et al. 2017, https://arxiv.org/abs/1611.07004):
    1. fake = G(mask);
    2. D step: BCE(D(mask, real), 1) + BCE(D(mask, fake), 0), halved;
    3. G step: BCE(D(mask, fake), 1) + λ·L1(fake, real).

    Fitted attributes:
        step_: optimisation steps done.
        history_: one loss dict per step.

    Example:
        >>> cfg = Pix2PixConfig(image_size=64, ngf=8, ndf=8, device="cpu")
        >>> trainer = Pix2PixTrainer(cfg)
        >>> batch = {"mask": torch.zeros(1, 2, 64, 64), "image": torch.zeros(1, 1, 64, 64)}
        >>> sorted(trainer.train_step(batch))[:2]
        ['loss_D', 'loss_D_fake']
    """

    def __init__(self, config: Pix2PixConfig) -> None:
        config.validate()
        self.config = config
        self.device = _device(str(config.device))
        self.use_amp = config.amp and self.device.type == "cuda"
        torch.manual_seed(config.seed)
        self.generator = GENERATORS[config.generator](config).to(self.device)
        self.discriminator = DISCRIMINATORS[config.discriminator](config).to(self.device)
        _init_weights(self.generator, config.init_gain)
        _init_weights(self.discriminator, config.init_gain)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.gan_loss = nn.BCEWithLogitsLoss()
        self.l1_loss = nn.L1Loss()
        self.step_ = 0
        self.history_: list[dict[str, float]] = []

    # -- training ---------------------------------------------------------------------------
    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, enabled=self.use_amp)

    def _gan_target(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return self.gan_loss(logits, target)

    def backward_d(
        self, mask: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, float]:
        """Discriminator loss on a real and a fake pair, backpropagated into D only."""
        with self._autocast():
            # fake.detach(): this loss must not push gradients into the generator
            pred_fake = self.discriminator(torch.cat([mask, fake.detach()], dim=1))
            loss_fake = self._gan_target(pred_fake, real=False)
            pred_real = self.discriminator(torch.cat([mask, real], dim=1))
            loss_real = self._gan_target(pred_real, real=True)
            # halved (pix2pix): slows D relative to G
            loss = (loss_fake + loss_real) * 0.5
        self.scaler.scale(loss).backward()
        return {
            "loss_D": float(loss.detach()),
            "loss_D_fake": float(loss_fake.detach()),
            "loss_D_real": float(loss_real.detach()),
        }

    def backward_g(
        self, mask: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, float]:
        """Generator loss: fool D (conditioned on the mask) + λ·L1 to the real image."""
        with self._autocast():
            # no detach: gradients flow through D into G; D's own grads are discarded
            # (D's optimiser is stepped before this and zeroed before its next step)
            pred_fake = self.discriminator(torch.cat([mask, fake], dim=1))
            loss_gan = self._gan_target(pred_fake, real=True)
            loss_l1 = self.l1_loss(fake.float(), real)
            loss = loss_gan + self.config.lambda_l1 * loss_l1
        self.scaler.scale(loss).backward()
        return {
            "loss_G": float(loss.detach()),
            "loss_G_GAN": float(loss_gan.detach()),
            "loss_G_L1": float(loss_l1.detach()),
        }

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One D update then one G update on ``batch``; returns the losses as floats."""
        mask, real = self._to_device(batch)
        self.generator.train()
        self.discriminator.train()
        with self._autocast():
            fake = self.generator(mask)
        self.opt_d.zero_grad(set_to_none=True)
        losses = self.backward_d(mask, real, fake)
        self.scaler.step(self.opt_d)
        # D is frozen for the G step so its parameters collect no gradient
        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        losses |= self.backward_g(mask, real, fake)
        self.scaler.step(self.opt_g)
        self.discriminator.requires_grad_(True)
        self.scaler.update()
        self.step_ += 1
        self.history_.append(losses)
        return losses

    def fit(
        self,
        images: npt.NDArray[np.uint8],
        labels: npt.NDArray[np.integer[Any]],
        steps: int,
        *,
        batch_size: int = 1,
        progress: Callable[[int, int], None] | None = None,
        on_log: Callable[[dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run ``steps`` more train steps on seeded batches of the given pairs.

        Args:
            images: (N, S, S) gray or (N, S, S, 3) RGB uint8, S = ``config.image_size``.
            labels: (N, S, S) integer class ids 0..mask_channels-1.
            steps: train steps to add (continues from ``step_``).
            batch_size: pairs per step (the paper's is 1). Step ``k``'s batch is
                :func:`batch_at` (``seed`` = ``config.seed``), a function of ``k`` only, so a
                resumed trainer sees the batches an uninterrupted one would have.
            progress: ``progress(done, steps)`` after every step of this call.
            on_log: called with each step's losses.

        Returns:
            the loss dict of every new step.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images, labels = np.asarray(images), np.asarray(labels)
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(
                f"need as many images as labels (>= 1), got {len(images)}, {len(labels)}"
            )
        out: list[dict[str, float]] = []
        for k in range(steps):
            batch = batch_at(
                images, labels, self.config.mask_channels, self.step_, self.config.seed, batch_size
            )
            losses = self.train_step(batch)
            out.append(losses)
            if on_log is not None:
                on_log(losses)
            if progress is not None:
                progress(k + 1, steps)
        return out

    def _to_device(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            mask, image = batch["mask"], batch["image"]
        except KeyError as exc:
            raise ValueError(f"batch needs 'mask' and 'image', missing {exc}") from None
        cfg = self.config
        if mask.ndim != 4 or mask.shape[1] != cfg.mask_channels:
            raise ValueError(f"mask must be (B, {cfg.mask_channels}, H, W), got {mask.shape}")
        if image.shape[1] != cfg.image_channels or image.shape[2:] != mask.shape[2:]:
            raise ValueError(f"image {tuple(image.shape)} does not match mask {mask.shape}")
        return mask.to(self.device).float(), image.to(self.device).float()

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, mask: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """(B, C_mask, H, W) one-hot → (B, C_img, H, W) float32 in [-1, 1], on the CPU.

        As in the paper, G runs as in training (dropout on, batch statistics) so dropout is
        its noise; ``seed`` makes that noise reproducible. BatchNorm running statistics are
        left untouched (momentum is not updated here).
        """
        mask = mask.to(self.device).float()
        state = {m: m.momentum for m in self.generator.modules() if isinstance(m, nn.BatchNorm2d)}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            self.generator.train()
            for m in state:
                m.momentum = 0.0  # keep running stats as trained
            try:
                with self._autocast():
                    out = self.generator(mask)
            finally:
                for m, momentum in state.items():
                    m.momentum = momentum
        return out.float().clamp(-1, 1).cpu()

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # the trainer draws only from torch's RNG (dropout); numpy/python are the caller's
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "config": asdict(self.config),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step_,
            "history": self.history_,
            "rng": rng,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], device: str | torch.device | None = None
    ) -> Pix2PixTrainer:
        """Rebuild a trainer from :meth:`state_dict`; training continues where it stopped.

        ``device`` (resolved) replaces the device stored in the state. Restores torch's
        global RNG state too, so that resuming repeats the dropout an uninterrupted run
        draws.

        Raises:
            ValueError: ``state`` is not a trainer state (a key is missing).
        """
        try:
            config = Pix2PixConfig(**state["config"])
            if device is not None:
                config.device = str(device)
            trainer = cls(config)
            trainer.generator.load_state_dict(state["generator"])
            trainer.discriminator.load_state_dict(state["discriminator"])
            trainer.opt_g.load_state_dict(state["opt_g"])
            trainer.opt_d.load_state_dict(state["opt_d"])
            trainer.scaler.load_state_dict(state["scaler"])
            trainer.step_ = int(state["step"])
            trainer.history_ = list(state["history"])
            rng = state["rng"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a pix2pix trainer state: {exc!r}") from None
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return trainer


# -- array ↔ tensor -----------------------------------------------------------------------
def batch_at(
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.integer[Any]],
    num_classes: int,
    step: int,
    seed: int,
    batch_size: int = 1,
) -> Batch:
    """The batch of train step ``step``: a function of (seed, step) only, so resume repeats it.

    Sample ``k = step · batch_size + j`` (j < batch_size) is pair ``perm[k mod N]`` of an
    epoch-wise seeded permutation (epoch ``k // N``), flipped left–right with probability ½.

    Args:
        images: (N, S, S) gray or (N, S, S, 3) RGB uint8.
        labels: (N, S, S) class ids 0..num_classes-1.
    """
    n = len(images)
    imgs, labs = [], []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        idx = int(np.random.default_rng([seed, epoch]).permutation(n)[pos])
        flip = bool(np.random.default_rng([seed, epoch, pos]).integers(2))
        img, lab = images[idx], labels[idx]
        if flip:
            img, lab = img[:, ::-1], lab[:, ::-1]
        imgs.append(img)
        labs.append(lab)
    return {
        "mask": masks_to_onehot(np.stack(labs), num_classes),
        "image": images_to_tensor(np.stack(imgs)),
    }


def masks_to_onehot(labels: npt.NDArray[np.integer[Any]], num_classes: int) -> torch.Tensor:
    """(B, H, W) integer class ids 0..num_classes-1 → (B, num_classes, H, W) float one-hot."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    t = torch.from_numpy(labels.astype(np.int64))
    return nn.functional.one_hot(t, num_classes).permute(0, 3, 1, 2).float()


def images_to_tensor(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    """(B, H, W) gray or (B, H, W, 3) RGB uint8 → (B, C, H, W) float in [-1, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W) or (B, H, W, C), got {images.shape}")
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def tensor_to_images(tensor: torch.Tensor) -> npt.NDArray[np.uint8]:
    """(B, C, H, W) float in [-1, 1] → (B, H, W) gray or (B, H, W, 3) RGB uint8."""
    arr = ((tensor.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    out = arr.permute(0, 2, 3, 1).cpu().numpy()
    return out[..., 0] if out.shape[-1] == 1 else out
