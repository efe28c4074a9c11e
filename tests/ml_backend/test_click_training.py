"""The click-aware LiteMedSAM: simulated clicks, a tiny real training run, the shipped file.

Real parts only: the session's LiteMedSAM (ONNX export once, ``tests/conftest.py``), real
training images from the shared data (``shenzhen_cxr``), the weights file in the package.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medcrowd.train_clicks import (
    SOURCES,
    ClickTrainOptions,
    embed_cached,
    load_structures,
    parse_image_counts,
)
from ml_backend.click_training import (
    ClickDecoderTrainer,
    load_click_weights,
    model_frame_mask,
    next_click,
)
from ml_backend.errors import ModelUnavailable
from ml_backend.predictors import (
    CLICK_WEIGHTS,
    PREDICTORS,
    LiteMedSAMClicksPredictor,
    LiteMedSAMPredictor,
    Prediction,
    get_predictor,
)
from tests.helpers import tight_box


def test_next_click_goes_to_the_deepest_point_of_the_largest_error() -> None:
    truth = np.zeros((20, 30), dtype=bool)
    truth[2:12, 2:12] = True  # 100 px object
    pred = np.zeros_like(truth)
    pred[2:12, 2:7] = True  # misses columns 7..11 (50 px)
    pred[15:18, 20:29] = True  # a 27 px false part
    x, y, label = next_click(pred, truth)  # type: ignore[misc]
    assert label == 1  # the missed part is the larger error
    # deepest pixels of the 10×5 missed band: column 9, rows 4..9 (3 px from every edge)
    assert x == 9.5 and 4.5 <= y <= 9.5
    x, y, label = next_click(truth | (pred & ~truth), truth)  # type: ignore[misc]
    assert label == 0 and y == 16.5 and 21.5 <= x <= 27.5  # the false 3×9 band's middle row
    assert next_click(truth, truth) is None


def test_model_frame_mask_scales_the_longest_side_to_256_and_pads() -> None:
    mask = np.zeros((100, 200), dtype=bool)
    mask[:, :100] = True
    out = model_frame_mask(mask, (128, 256))
    assert out.shape == (256, 256) and out.dtype == bool
    assert out[:128, :128].all() and not out[:128, 128:].any() and not out[128:].any()


def test_image_counts_override_the_defaults_and_bad_ones_are_refused() -> None:
    defaults = ClickTrainOptions().images
    assert set(defaults) == set(SOURCES) and defaults["spleen_ct_bones"] == 0  # opt-in
    counts = parse_image_counts("spleen_ct_bones=20, drive_train=0", defaults)
    assert counts == {**defaults, "spleen_ct_bones": 20, "drive_train": 0}
    assert parse_image_counts("", defaults) == defaults
    for bad in ("sammed2d_demo=3", "drive_train", "drive_train=-1", "drive_train=two"):
        with pytest.raises(ValueError, match="--images"):
            parse_image_counts(bad, defaults)
    from typer.testing import CliRunner

    from medcrowd.cli import app

    help_text = CliRunner().invoke(app, ["train", "clicks", "--help"], env={"COLUMNS": "200"})
    for name, count in defaults.items():  # the help states the defaults the code uses
        assert f"{name}={count}" in help_text.output


def test_ct_bones_are_the_dense_components_of_the_spleen_volumes_slices(
    shared_data: Path,
) -> None:
    images, structures, sources = load_structures(shared_data, {"spleen_ct_bones": 6}, seed=0)
    assert 0 < len(images) <= 6 and set(sources) == {"spleen_ct_bones"}
    per_image = np.bincount([s.image for s in structures])
    assert per_image.max() <= 2  # the two largest components of a slice
    for s in structures:
        assert s.mask.sum() >= 60
        # > 200 HU is white in the soft-tissue window (40 +- 200 HU)
        assert np.median(images[s.image][..., 0][s.mask]) == 255


@pytest.fixture(scope="module")
def tiny_set(shared_data: Path, lite: LiteMedSAMPredictor, tmp_path_factory: Any) -> Any:
    """Two shenzhen_cxr images (four lungs), embedded once into a cache file."""
    images, structures, _ = load_structures(shared_data, {"shenzhen_cxr": 2}, seed=0)
    cache = tmp_path_factory.mktemp("clicks") / "embeddings.npz"
    embeddings, sizes = embed_cached(lite, images, cache)
    targets = np.stack([model_frame_mask(s.mask, sizes[s.image]) for s in structures])
    return images, structures, embeddings, sizes, targets, cache


def test_embeddings_are_cached_in_one_file_and_reused(tiny_set: Any, lite: Any) -> None:
    images, _, embeddings, sizes, _, cache = tiny_set
    assert cache.is_file() and embeddings.shape == (2, 1, 256, 64, 64)
    assert embeddings.dtype == np.float16
    mtime = cache.stat().st_mtime_ns

    class NoEncoder:  # the cache must answer: computing again would fail the test
        model_id = lite.model_id
        image_hash = lite.image_hash

        def embed(self, image: np.ndarray) -> Any:
            raise AssertionError("embedding recomputed although it is in the cache file")

    again, sizes_again = embed_cached(NoEncoder(), images, cache)
    np.testing.assert_array_equal(again, embeddings)
    assert sizes_again == sizes and cache.stat().st_mtime_ns == mtime


def test_a_tiny_seeded_run_changes_the_decoder_and_lowers_the_loss(
    tiny_set: Any, lite: LiteMedSAMPredictor
) -> None:
    _, structures, embeddings, sizes, targets, _ = tiny_set
    image_of = [s.image for s in structures]
    stock = {k: v.clone() for k, v in lite.prompt_decoder.state_dict().items()}

    def run(steps: int) -> ClickDecoderTrainer:
        trainer = ClickDecoderTrainer(
            steps=steps, batch_size=2, lr=1e-3, rounds=3, box_only_rate=0.0, seed=3
        )
        return trainer.fit(lite.prompt_decoder, embeddings, targets, image_of, sizes)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core box one thread is several times faster
    try:
        trainer = run(8)
        short, again = run(2), run(2)
    finally:
        torch.set_num_threads(threads)
    for key, value in lite.prompt_decoder.state_dict().items():  # the teacher is untouched
        assert torch.equal(value, stock[key]), key
    assert trainer.decoder_ is not None
    trained = trainer.decoder_.state_dict()
    changed = [k for k in stock if not torch.equal(stock[k], trained[k])]
    assert len(changed) > len(stock) // 2
    losses = [step["loss"] for step in trainer.losses_]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert short.decoder_ is not None and again.decoder_ is not None
    for key, value in again.decoder_.state_dict().items():  # seeded: same run, same weights
        assert torch.equal(value, short.decoder_.state_dict()[key]), key


def test_episodes_start_from_the_trained_decoders_box_answer_or_the_stocks(
    tiny_set: Any, lite: LiteMedSAMPredictor
) -> None:
    _, structures, embeddings, sizes, targets, _ = tiny_set
    image_of = [s.image for s in structures]
    with pytest.raises(ValueError, match="start"):
        ClickDecoderTrainer(start="teacher")

    def run(start: str) -> dict[str, torch.Tensor]:
        # rounds=1: each episode ends after its click, so the second step starts new episodes
        # from a box answered by the once-updated student ("student") or the stock ("stock")
        trainer = ClickDecoderTrainer(
            steps=2, batch_size=len(targets), lr=1e-3, rounds=1, box_only_rate=0.0,
            start=start, seed=3,
        )  # fmt: skip
        trainer.fit(lite.prompt_decoder, embeddings, targets, image_of, sizes)
        assert trainer.decoder_ is not None
        return trainer.decoder_.state_dict()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        student, stock = run("student"), run("stock")
    finally:
        torch.set_num_threads(threads)
    differ = [k for k in student if not torch.equal(student[k], stock[k])]
    assert differ, "the second step's first answers came from the same decoder"


def test_the_shipped_weights_match_their_json() -> None:
    meta = json.loads(CLICK_WEIGHTS.with_suffix(".json").read_text())
    assert meta["file"] == CLICK_WEIGHTS.name
    assert CLICK_WEIGHTS.stat().st_size == meta["bytes"] < 12_000_000
    import hashlib

    assert hashlib.sha256(CLICK_WEIGHTS.read_bytes()).hexdigest() == meta["sha256"]
    assert meta["command"].startswith("medcrowd train clicks")
    assert meta["seed"] == meta["options"]["seed"] and meta["steps"] > 0
    used = set(meta["data"]["structures"])
    assert used <= set(SOURCES)  # training sets only: never sammed2d_demo or drive/test
    state, loaded = load_click_weights(CLICK_WEIGHTS)
    assert loaded == meta and all(v.dtype == torch.float32 for v in state.values())


def test_a_tampered_weights_file_is_refused(tmp_path: Path, lite_cache_dir: Path) -> None:
    copy = tmp_path / "clicks.pt"
    shutil.copy(CLICK_WEIGHTS, copy)
    shutil.copy(CLICK_WEIGHTS.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_click_weights(copy)
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        get_predictor("litemedsam-clicks", device="cpu", checkpoint=copy, cache_dir=lite_cache_dir)


@pytest.fixture(scope="module")
def clicks_predictor(lite_cache_dir: Path) -> LiteMedSAMClicksPredictor:
    # the session's cache dir: the stock ONNX files exported there are found and reused
    predictor = get_predictor("litemedsam-clicks", device="cpu", cache_dir=lite_cache_dir)
    assert isinstance(predictor, LiteMedSAMClicksPredictor)
    return predictor


def test_the_click_aware_predictor_answers_the_prompt_api(
    clicks_predictor: LiteMedSAMClicksPredictor, lite: LiteMedSAMPredictor, tiny_set: Any
) -> None:
    images, structures, *_ = tiny_set
    image, truth = images[structures[0].image], structures[0].mask
    box = tight_box(truth)
    assert "litemedsam-clicks" in PREDICTORS
    assert clicks_predictor.refines_with_logits and not lite.refines_with_logits
    assert clicks_predictor.model_id.startswith("litemedsam-clicks-")
    assert clicks_predictor.box_only_decoder == "clicks"
    clicks_predictor.set_image(image)
    lite.set_image(image)
    first = clicks_predictor.predict(box=box)
    assert isinstance(first, Prediction) and first.mask.shape == truth.shape
    mask, score = clicks_predictor.predict_box(box)
    np.testing.assert_array_equal(mask, first.mask)
    assert score == pytest.approx(first.score, abs=1e-6)
    # the box-only answer on ONNX Runtime (if chosen) is the PyTorch click decoder's
    torch_first = clicks_predictor._run_click(
        clicks_predictor._current.embedding,  # type: ignore[union-attr]
        np.asarray(box, np.float32) * (256 / max(truth.shape)),
        None, None, None, "torch",
    )[0]  # fmt: skip
    agree = (np.asarray(torch_first).reshape(256, 256) > 0) == (first.logits > 0)
    assert agree.mean() > 0.999
    stock = lite.predict(box=box)
    clicks_predictor.box_only_decoder = "stock"
    try:  # routed to the stock fast path: exactly litemedsam's answer
        as_stock = clicks_predictor.predict(box=box)
    finally:
        clicks_predictor.box_only_decoder = "clicks"
    np.testing.assert_array_equal(as_stock.mask, stock.mask)
    assert not np.allclose(first.logits, stock.logits, atol=1e-3)  # its own decoder
    click = next_click(first.mask, truth)
    assert click is not None
    points, labels = [[click[0], click[1]]], [click[2]]
    refined = clicks_predictor.predict(
        box=box, points=points, labels=labels, mask_input=first.logits
    )
    assert refined.mask.shape == truth.shape and refined.mask.dtype == bool
    assert refined.logits.shape == (256, 256) and refined.logits.dtype == np.float32
    assert 0.0 <= refined.score <= 1.0
    assert not np.array_equal(refined.logits, first.logits)
    stock_refined = lite.predict(box=box, points=points, labels=labels, mask_input=first.logits)
    assert not np.allclose(refined.logits, stock_refined.logits, atol=1e-3)
