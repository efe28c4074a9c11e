"""Segmentation quality assessment (SQA): where is the segmentation probably wrong?

:class:`SQANet` has two branches. The *segmentation branch* is the downstream MONAI U-Net of
:class:`segmenter.trainer.Segmenter` (same network, loss and schedule). The *error branch*
predicts, per pixel, the probability that the segmentation branch's mask is wrong there, and
attends with the segmentation probabilities ("probability attention"). The image-level quality
score is the Dice the error map implies (higher = better), so unlabelled images can be ranked
for labelling (``medcrowd select``, active learning in :mod:`segmenter.active`).

The idea follows the two-branch "segmentation + difficulty/error" networks with probability
attention of S. Xie et al., "DEAL: Difficulty-aware Active Learning for Semantic
Segmentation", ACCV 2020 (https://arxiv.org/abs/2010.08705), and the segmentation-quality
assessment used for active learning by Zhang et al. 2023 (as described in medcrowd issue 7).
The design below is medcrowd's own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from fusion.metrics import dice_from_counts
from segmenter.model import (
    ModelFileError,
    SegmenterConfig,
    build_unet,
    check_state,
    config_from_state,
    image_hashes,
    load_weights,
    read_model_file,
    save_model_file,
)
from segmenter.trainer import Segmenter
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
    seeded,
    set_lr,
)

__all__ = ["ProbabilityAttention", "QualityAssessor", "SQANet", "predicted_dice"]


def _boundary(prob: torch.Tensor) -> torch.Tensor:
    """4 p (1 − p): 1 where the segmentation is undecided (p = 0.5), 0 where it is sure."""
    return 4.0 * prob * (1.0 - prob)


class ProbabilityAttention(nn.Module):
    """Channel then spatial attention of error features, both driven by the seg probability.

    Channel attention: each channel is pooled twice, weighted by the foreground probability p
    and by 1 − p (how the feature behaves inside vs outside the predicted object); a shared
    MLP maps the 2C values to C sigmoid weights (squeeze-and-excitation with probability
    pooling). Spatial attention: [p, 4p(1 − p), channel mean, channel max] → 7×7 conv →
    sigmoid map (CBAM-style, with the probability and its boundary uncertainty as extra
    descriptors). Both scale as ``f · (1 + a)`` so an untrained attention passes features on.

    Args:
        channels: C of the features.
        reduction: MLP hidden width = max(4, C // reduction).
    """

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial = nn.Conv2d(4, 1, kernel, padding=kernel // 2)

    def forward(self, feats: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """feats B×C×h×w, prob B×1×H×W in [0, 1] (pooled to h×w) → B×C×h×w."""
        if prob.shape[-2:] != feats.shape[-2:]:
            prob = F.adaptive_avg_pool2d(prob, (int(feats.shape[-2]), int(feats.shape[-1])))
        eps = 1e-6
        inside = (feats * prob).sum((2, 3)) / (prob.sum((2, 3)) + eps)
        outside = (feats * (1 - prob)).sum((2, 3)) / ((1 - prob).sum((2, 3)) + eps)
        channel = torch.sigmoid(self.mlp(torch.cat([inside, outside], 1)))[:, :, None, None]
        feats = feats * (1 + channel)
        desc = torch.cat(
            [prob, _boundary(prob), feats.mean(1, keepdim=True), feats.amax(1, keepdim=True)], 1
        )
        return feats * (1 + torch.sigmoid(self.spatial(desc)))


class _ErrorBranch(nn.Module):
    """Small encoder–decoder (MONAI blocks) with probability attention at every level.

    Input: the image, the segmentation probability p and its boundary uncertainty
    4p(1 − p) as channels. Encoder: one strided MONAI residual unit per level (H/2, H/4, …),
    each followed by :class:`ProbabilityAttention`; decoder: transposed convolutions with
    skip connections back to H/2, a last transposed convolution to H×W concatenated with
    the input channels, and a 3×3 convolution to one error logit per pixel. Like MONAI's
    ``UNet`` it does no convolution on full-resolution features except the last, so it costs
    about as much as the segmentation branch.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution, ResidualUnit

        self.enc = nn.ModuleList()
        self.att = nn.ModuleList()
        cin = in_channels + 2
        for c in channels:
            self.enc.append(
                ResidualUnit(2, cin, c, strides=2, subunits=1, norm="batch", dropout=dropout)
            )
            self.att.append(ProbabilityAttention(c))
            cin = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(channels) - 1, 0, -1):
            self.up.append(
                Convolution(
                    2,
                    channels[i],
                    channels[i - 1],
                    strides=2,
                    is_transposed=True,
                    norm="batch",
                    dropout=dropout,
                )
            )
            self.dec.append(
                ResidualUnit(
                    2,
                    2 * channels[i - 1],
                    channels[i - 1],
                    subunits=1,
                    norm="batch",
                    dropout=dropout,
                )
            )
        self.last_up = Convolution(
            2, channels[0], channels[0], strides=2, is_transposed=True, norm="batch"
        )
        self.head = nn.Conv2d(channels[0] + in_channels + 2, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([image, prob, _boundary(prob)], 1)
        h = x0
        skips = []
        for enc, att in zip(self.enc, self.att, strict=True):
            h = att(enc(h), prob)
            skips.append(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1]), strict=True):
            h = dec(torch.cat([up(h), skip], 1))
        out: torch.Tensor = self.head(torch.cat([self.last_up(h), x0], 1))
        return out


def error_channels(config: SegmenterConfig) -> tuple[int, ...]:
    """Error-branch widths: the segmentation U-Net's levels at half width (at least 8)."""
    return tuple(max(8, c // 2) for c in config.channels)


class SQANet(nn.Module):
    """Two-branch SQA network: segmentation (MONAI U-Net) + error map (probability attention).

    ``forward(x, prob=None)`` returns ``(seg_logits, error_logits)``, both B×1×H×W. The error
    branch sees the image and the segmentation probability: by default the segmentation
    branch's own, *detached* (the error loss never changes the segmentation), or ``prob``
    when given (training on honest out-of-sample probabilities, see
    :meth:`QualityAssessor.fit`).

    Args:
        config: sizes of the segmentation branch (error branch: :func:`error_channels`).
        in_channels: 1 (gray) or 3 (RGB).
        seg: an existing segmentation network to use as the segmentation branch.
    """

    def __init__(
        self, config: SegmenterConfig, in_channels: int = 1, seg: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.seg = seg if seg is not None else build_unet(config, in_channels)
        self.error = _ErrorBranch(in_channels, error_channels(config), config.dropout)

    def forward(
        self, x: torch.Tensor, prob: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seg_logits = self.seg(x)
        p = torch.sigmoid(seg_logits).detach() if prob is None else prob
        return seg_logits, self.error(x, p)


def predicted_dice(seg_prob: np.ndarray, error_prob: np.ndarray, threshold: float = 0.5) -> F32:
    """Image quality implied by an error map: the Dice the mask would have if the error
    probabilities were right.

    With mask M = seg_prob ≥ threshold and error probability E: expected true positives
    TP = Σ M(1 − E), false positives FP = Σ M·E, false negatives FN = Σ (1 − M)·E;
    score = 2TP / (2TP + FP + FN), 1.0 when the denominator is 0 (empty mask, no error).

    Args:
        seg_prob, error_prob: N×H×W (or H×W) floats in [0, 1].

    Returns:
        float32 (N,) scores in [0, 1], higher = better.
    """
    p = np.asarray(seg_prob, np.float64)
    e = np.asarray(error_prob, np.float64)
    if p.shape != e.shape:
        raise ValueError(f"seg_prob {p.shape} and error_prob {e.shape} differ")
    if p.ndim == 2:
        p, e = p[None], e[None]
    m = p >= threshold
    axes = (1, 2)
    tp = np.where(m, 1 - e, 0).sum(axes)
    fp = np.where(m, e, 0).sum(axes)
    fn = np.where(m, 0, e).sum(axes)
    return dice_from_counts(tp, 2 * tp + fp + fn).astype(np.float32)


class QualityAssessor:
    """Trains an :class:`SQANet` and predicts segmentation, error map and quality score.

    Honest error targets. Errors of a network on its own training images vanish as it
    overfits, so the error branch never learns from those. For every training image the
    assessor keeps one *out-of-sample* segmentation probability map (``records_``) and the
    error branch learns "where is this probability map wrong" from (image, that map, mask):

    * an image the segmentation branch has never been trained on (not in
      ``segmenter.seen_``) while that branch is already trained: its current prediction —
      in active learning this is exactly the prediction made before the image was labelled;
    * otherwise (first fit, or images it has already seen): k-fold out-of-fold predictions:
      for each of ``folds`` folds a fresh network (same config, its own seed) trains for
      ``fold_steps`` (default ``config.steps``) on the other folds and predicts the
      held-out fold.

    At prediction time the error branch gets the current segmentation probabilities. Since
    it conditions on the probability map, errors recorded from earlier or fold networks teach
    it about the final network too (fold networks see less data, so they err somewhat more:
    the error estimate is, if anything, pessimistic).

    Each :meth:`fit` step: one segmentation step exactly as :meth:`Segmenter.fit` (unless
    ``segmentation=False``) and one error-branch step (MONAI ``DiceCELoss`` against the
    recorded map's error ``(record ≥ threshold) ≠ mask``) on the same augmented batch;
    Adam for each branch. Calling :meth:`fit` again fine-tunes both.

    Attributes:
        config: the segmentation branch's :class:`SegmenterConfig`.
        folds: k of the k-fold out-of-fold predictions.
        fold_steps: training steps of each fold network (None: ``config.steps``).
        segmenter: the segmentation branch as a :class:`Segmenter` (shares its network).
        net: the :class:`SQANet` (``net.seg`` is ``segmenter.net``).
        records_: pixel hash → out-of-sample probability map (H×W uint8, p·255).
        fit_calls_: number of ``fit`` calls.
        error_losses_: error-branch loss per step of the last ``fit``.
        fold_networks_: out-of-fold networks the last ``fit`` trained (0: every image
            already had a record or an honest prediction of the segmentation branch).

    Example:
        >>> cfg = SegmenterConfig(size=32, channels=(8, 16), steps=4, augment=False)
        >>> x = np.zeros((4, 32, 32), np.uint8); y = np.zeros((4, 32, 32), np.uint8)
        >>> qa = QualityAssessor(cfg, folds=2); _ = qa.fit(x, y)
        >>> seg, err, score = qa.predict(x); score.shape
        (4,)
    """

    kind = "QualityAssessor"

    def __init__(
        self,
        config: SegmenterConfig,
        in_channels: int = 1,
        folds: int = 3,
        fold_steps: int | None = None,
    ) -> None:
        self._init(Segmenter(config, in_channels), folds, fold_steps)

    def _init(self, segmenter: Segmenter, folds: int, fold_steps: int | None) -> None:
        if folds < 2:
            raise ValueError(f"folds must be >= 2, got {folds}")
        if fold_steps is not None and fold_steps < 1:
            raise ValueError(f"fold_steps must be >= 1, got {fold_steps}")
        self.fold_steps = fold_steps
        self.segmenter = segmenter
        self.config = segmenter.config
        self.in_channels = segmenter.in_channels
        self.device = segmenter.device
        self.folds = folds
        with seeded(self.config.seed + 7919, torch.device("cpu")):
            self.net = SQANet(self.config, self.in_channels, seg=segmenter.net).to(self.device)
        self.opt_error = torch.optim.Adam(self.net.error.parameters(), lr=self.config.lr)
        self._loss: nn.Module | None = None
        self._augment: Augment | None = None
        self.records_: dict[str, U8] = {}
        self.fit_calls_ = 0
        self.error_losses_: list[float] = []
        self.fold_networks_ = 0

    @classmethod
    def from_segmenter(
        cls, segmenter: Segmenter, folds: int = 3, fold_steps: int | None = None
    ) -> QualityAssessor:
        """An assessor whose segmentation branch is ``segmenter`` (used as is, not copied;
        its ``seen_`` set decides which images still need out-of-fold predictions)."""
        qa = cls.__new__(cls)
        qa._init(segmenter, folds, fold_steps)
        return qa

    # -- honest error targets -----------------------------------------------------------------
    def _record_plan(self, hashes: list[str]) -> tuple[list[int], list[tuple[int, list[int]]], int]:
        """Which images lack an error record: ``(fresh, folds, k)`` — ``fresh`` get the current
        segmentation's prediction; each ``(fold, held)`` of ``folds`` needs a fold network
        trained on the other folds of ``k``. A function of the current state only."""
        need = [i for i, h in enumerate(hashes) if h not in self.records_]
        trained = self.segmenter.steps_ > 0
        fresh = [i for i in need if trained and hashes[i] not in self.segmenter.seen_]
        oof = [i for i in need if i not in set(fresh)]
        if not oof:
            return fresh, [], 0
        n = len(hashes)
        if n < 2:
            raise ValueError(
                "out-of-fold error targets need at least 2 training images (got 1): an image's "
                "errors must come from a network that was not trained on it"
            )
        k = min(self.folds, n)
        fold_of = self._fold_of(n, k)
        folds = [(f, [i for i in oof if fold_of[i] == f]) for f in range(k)]
        return fresh, [(f, held) for f, held in folds if held], k

    def _fold_of(self, n: int, k: int) -> npt.NDArray[np.int_]:
        order = np.random.default_rng(fit_seeds(self.config.seed, 10_000 + self.fit_calls_, 1)[0])
        fold_of = np.empty(n, int)
        fold_of[order.permutation(n)] = np.arange(n) % k
        return fold_of

    def _fold_steps(self) -> int:
        return self.config.steps if self.fold_steps is None else self.fold_steps

    def planned_steps(self, images: np.ndarray, steps: int | None = None) -> int:
        """Optimiser steps :meth:`fit` (``images``, ``steps``) would take now: those of the
        out-of-fold networks it has to train plus its own — the ``total`` it reports."""
        _, folds, _ = self._record_plan(image_hashes(np.asarray(images)))
        return len(folds) * self._fold_steps() + (self.config.steps if steps is None else steps)

    def _record_missing(
        self, images: np.ndarray, masks: np.ndarray, hashes: list[str], tick: Callable[[int], None]
    ) -> None:
        fresh, folds, k = self._record_plan(hashes)
        self.fold_networks_ = len(folds)
        if fresh:
            probs = self.segmenter.predict_proba(images[fresh])
            for i, p in zip(fresh, probs, strict=True):
                self.records_[hashes[i]] = _quantise(p)
        if not folds:
            return
        fold_of = self._fold_of(len(images), k)
        fold_steps = self._fold_steps()
        for done_folds, (f, held) in enumerate(folds):
            rest = np.flatnonzero(fold_of != f)
            cfg = copy.deepcopy(self.config)
            cfg.seed = fit_seeds(self.config.seed, 20_000 + 100 * self.fit_calls_ + f, 1)[0] % 2**31
            fold_net = Segmenter(cfg, self.in_channels)
            offset = done_folds * fold_steps

            def fold_tick(done: int, _total: int, offset: int = offset) -> None:
                tick(offset + done)

            fold_net.fit(images[rest], masks[rest], steps=self.fold_steps, progress=fold_tick)
            for i, p in zip(held, fold_net.predict_proba(images[held]), strict=True):
                self.records_[hashes[i]] = _quantise(p)

    # -- training -----------------------------------------------------------------------------
    def _error_loss(self) -> nn.Module:
        if self._loss is None:
            from monai.losses import DiceCELoss

            self._loss = DiceCELoss(sigmoid=True, batch=True)
        return self._loss

    def fit(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        steps: int | None = None,
        progress: Progress | None = None,
        *,
        segmentation: bool = True,
    ) -> list[float]:
        """Train both branches on N×H×W uint8 ``images`` and {0, 1} ``masks``.

        Args:
            steps: optimiser steps of this call (default ``config.steps``).
            progress: ``progress(done, total)`` after every optimiser step: first those of
                the out-of-fold networks this call trains (``fold_networks_`` of them), then
                the joint steps; ``total`` = :meth:`planned_steps`.
            segmentation: False trains only the error branch (the segmentation branch, e.g.
                one taken over with :meth:`from_segmenter`, stays as it is).

        Returns:
            Per step: segmentation loss + error loss (``error_losses_`` has the error part).
        """
        x = images_to_tensor(images, self.in_channels)
        y = masks_to_tensor(masks, x)
        check_side(x, self.config.divisor)
        if len(x) == 0:
            raise ValueError("fit needs at least one image")
        n_steps = self.config.steps if steps is None else int(steps)
        if n_steps < 0:
            raise ValueError(f"steps must be >= 0, got {n_steps}")
        images = np.asarray(images)
        masks = np.asarray(masks)
        hashes = image_hashes(images)
        _, folds, _ = self._record_plan(hashes)
        offset = len(folds) * self._fold_steps()
        total = offset + n_steps

        def tick(done: int) -> None:
            if progress is not None:
                progress(done, total)

        self._record_missing(images, masks, hashes, tick)
        recorded = np.stack([self.records_[h] for h in hashes])
        prob = torch.from_numpy(recorded.astype(np.float32) / 255.0)[:, None]

        torch_seed, aug_seed, batch_seed = fit_seeds(self.config.seed + 1, self.fit_calls_, 3)
        batches = Batches(len(x), self.config.batch_size, np.random.default_rng(batch_seed))
        augment = None
        if self.config.augment:
            if self._augment is None:
                self._augment = Augment(["image", "label", "prob"])
            self._augment.reseed(aug_seed)
            augment = self._augment
        loss_fn = self._error_loss()
        thr = self.config.threshold
        losses: list[float] = []
        self.error_losses_ = []
        with seeded(torch_seed, self.device):
            for step in range(n_steps):
                idx = batches.next()
                batch = {"image": x[idx], "label": y[idx], "prob": prob[idx]}
                if augment is not None:
                    batch = augment(batch)
                lr = lr_at(self.config, step, n_steps)
                set_lr(self.opt_error, lr)
                set_lr(self.segmenter.opt, lr)
                seg_loss = 0.0
                if segmentation:
                    seg_loss = self.segmenter.train_step(batch["image"], batch["label"])
                self.net.error.train()
                self.opt_error.zero_grad(set_to_none=True)
                p = batch["prob"].to(self.device)
                target = ((p >= thr).float() != batch["label"].to(self.device)).float()
                logits = self.net.error(batch["image"].to(self.device), p)
                err_loss = loss_fn(logits, target)
                err_loss.backward()
                self.opt_error.step()
                self.error_losses_.append(float(err_loss.detach()))
                losses.append(seg_loss + self.error_losses_[-1])
                tick(offset + step + 1)
        if segmentation:
            self.segmenter.steps_ += n_steps
            self.segmenter.fit_calls_ += 1
            if n_steps:
                self.segmenter.seen_.update(hashes)
        self.fit_calls_ += 1
        return losses

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _maps(self, x: torch.Tensor, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """B×C×H×W inputs → (seg prob, error prob), each B×H×W float32 on the CPU."""
        self.net.eval()
        segs, errs = [], []
        for i in range(0, len(x), batch_size):
            seg_logits, err_logits = self.net(x[i : i + batch_size].to(self.device))
            segs.append(torch.sigmoid(seg_logits).float().cpu()[:, 0])
            errs.append(torch.sigmoid(err_logits).float().cpu()[:, 0])
        if not segs:
            empty = torch.zeros((0, *x.shape[2:]))
            return empty, empty
        return torch.cat(segs), torch.cat(errs)

    def predict(self, images: np.ndarray, batch_size: int = 16) -> tuple[F32, F32, F32]:
        """For N×H×W uint8 ``images``: segmentation probability N×H×W, error probability
        N×H×W (float32) and the quality score (N,) float32 = :func:`predicted_dice`."""
        x = images_to_tensor(images, self.in_channels)
        check_side(x, self.config.divisor)
        seg, err = self._maps(x, batch_size)
        seg_np, err_np = seg.numpy().astype(np.float32), err.numpy().astype(np.float32)
        return seg_np, err_np, predicted_dice(seg_np, err_np, self.config.threshold)

    def predict_image(self, image: np.ndarray) -> tuple[U8, U8, float]:
        """One uint8 gray/RGB image of any H×W → (mask H×W {0, 1}, error map H×W {0, 1}, score).

        Resize or sliding-window tiles as ``config.input_mode`` says (see
        :meth:`Segmenter.predict_image_proba`); the score is :func:`predicted_dice` of the
        full-size maps; error map = error probability ≥ 0.5.
        """
        arr = self.segmenter.image_input(image)
        h, w = arr.shape[:2]
        size = self.config.size
        if self.config.input_mode == "resize":
            from PIL import Image

            small = np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))
            seg_t, err_t = self._maps(images_to_tensor(small[None], self.in_channels))
            maps = [seg_t[0].numpy(), err_t[0].numpy()]
            if (h, w) != (size, size):
                maps = [
                    np.asarray(
                        Image.fromarray(m.astype(np.float32), mode="F").resize(
                            (w, h), Image.Resampling.BILINEAR
                        ),
                        np.float32,
                    )
                    for m in maps
                ]
            seg, err = (np.clip(m, 0.0, 1.0).astype(np.float32) for m in maps)
        else:
            from monai.inferers import sliding_window_inference

            x = images_to_tensor(arr[None], self.in_channels).to(self.device)

            def run(window: torch.Tensor) -> torch.Tensor:
                seg_logits, err_logits = self.net(window)
                return torch.sigmoid(torch.cat([seg_logits, err_logits], 1))

            self.net.eval()
            with torch.no_grad():
                out = sliding_window_inference(
                    x, roi_size=(size, size), sw_batch_size=8, predictor=run, overlap=0.25,
                    mode="gaussian",
                )  # fmt: skip
            both = torch.as_tensor(out)[0, :, :h, :w].float().cpu().numpy()
            seg, err = both[0].astype(np.float32), both[1].astype(np.float32)
        score = float(predicted_dice(seg, err, self.config.threshold)[0])
        mask = (seg >= self.config.threshold).astype(np.uint8)
        return mask, (err >= 0.5).astype(np.uint8), score

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Both branches, optimisers, config, counters and the error records as a plain dict
        (the segmentation branch's :meth:`Segmenter.state_dict` plus the error part)."""
        state = self.segmenter.state_dict()
        keys = sorted(self.records_)
        records = (
            torch.from_numpy(np.stack([self.records_[k] for k in keys]))
            if keys
            else torch.zeros((0, 0, 0), dtype=torch.uint8)
        )
        state.update(
            {
                "kind": self.kind,
                "error": {
                    k: v.detach().cpu().clone() for k, v in self.net.error.state_dict().items()
                },
                "error_optimizer": copy.deepcopy(self.opt_error.state_dict()),
                "folds": self.folds,
                "fold_steps": self.fold_steps,
                "qa_fit_calls": self.fit_calls_,
                "record_keys": keys,
                "records": records,
            }
        )
        return state

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        device: str | torch.device = "cpu",
        source: str = "the model state",
    ) -> QualityAssessor:
        """Rebuild an assessor from :meth:`state_dict` on an already resolved ``device``.

        Raises:
            ModelFileError (a ValueError): not a medcrowd QualityAssessor state, or weights
                that do not fit the stored config (``source`` names it in the message).
        """
        check_state(state, cls.kind, source)
        config = config_from_state(state, device, source)
        try:
            qa = cls(
                config,
                in_channels=int(state.get("in_channels", 1)),
                folds=int(state["folds"]),
                fold_steps=state.get("fold_steps"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source} has incompatible assessor settings: {exc}") from None
        qa.segmenter.restore_state(state, source)
        load_weights(qa.net.error, state.get("error"), "error-branch", source)
        if "error_optimizer" in state:
            try:
                qa.opt_error.load_state_dict(state["error_optimizer"])
            except (ValueError, KeyError):
                pass  # fine-tuning then starts with a fresh optimiser
        qa.fit_calls_ = int(state.get("qa_fit_calls", 0))
        keys = list(state.get("record_keys", []))
        records = state.get("records")
        if keys:
            if not isinstance(records, torch.Tensor) or len(records) != len(keys):
                raise ModelFileError(f"{source}: the error records are damaged")
            for key, rec in zip(keys, records, strict=True):
                qa.records_[str(key)] = rec.numpy().astype(np.uint8)
        return qa

    def save(self, path: Path) -> None:
        """Write :meth:`state_dict` to one file (atomic replace)."""
        save_model_file(path, self.state_dict())

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> QualityAssessor:
        """Rebuild an assessor saved by :meth:`save`, on an already resolved ``device``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ModelFileError (a ValueError): not a readable medcrowd QualityAssessor file, or
                weights that do not fit the stored config.
        """
        return cls.from_state(read_model_file(path), device, str(path))


def _quantise(prob: np.ndarray) -> U8:
    """Probability map in [0, 1] → uint8 p·255 (a 4× smaller record)."""
    return np.clip(np.rint(np.asarray(prob) * 255.0), 0, 255).astype(np.uint8)
