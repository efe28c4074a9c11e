"""One ONNX graph for every prompt mix: ``_TokenDecoder`` against the PyTorch prompt encoder.

The click-aware LiteMedSAM answers a box, clicks and its previous logits through one ONNX
Runtime graph whose number of points is a dynamic axis (``ml_backend.predictors``). These
tests hold it to the PyTorch path it replaces: the same module on tokens equals
``_PromptDecoder.prompts`` for every mix, and the exported graph equals PyTorch on point
counts it was never verified on at export. Real weights: the session's LiteMedSAM and the
shipped click decoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ml_backend.predictors import (
    LiteMedSAMClicksPredictor,
    LiteMedSAMPredictor,
    _prompt_tokens,
    _run_prompts,
    _token_inputs,
    _TokenDecoder,
)
from tests.helpers import tight_box

BOX = np.array([30.0, 40.0, 200.0, 210.0], np.float32)


def _mixes(rng: np.random.Generator) -> list[tuple[Any, ...]]:
    logits = (6.0 * rng.standard_normal((256, 256))).astype(np.float32)
    clicks = np.array([[100.0, 120.0], [50.0, 60.0], [150.0, 40.0], [20.0, 220.0]], np.float32)
    marks = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    return [
        (BOX, None, None, None),  # a box alone
        (BOX, clicks[:1], marks[:1], None),  # box + one click
        (BOX, clicks, marks, logits),  # box + four clicks + the previous logits
        (None, clicks[:1], marks[:1], None),  # a click alone (SAM pads a no-point token)
        (None, clicks[:3], marks[:3], logits),  # clicks + logits, no box
    ]


def test_tokens_put_clicks_first_then_the_box_corners_or_one_padding_token() -> None:
    coords, labels = _prompt_tokens(BOX, np.array([[1.0, 2.0]]), np.array([0.0]))
    np.testing.assert_array_equal(coords, [[[1.0, 2.0], [30.0, 40.0], [200.0, 210.0]]])
    np.testing.assert_array_equal(labels, [[0.0, 2.0, 3.0]])
    coords, labels = _prompt_tokens(None, np.array([[5.0, 6.0]]), np.array([1.0]))
    np.testing.assert_array_equal(coords, [[[5.0, 6.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(labels, [[1.0, -1.0]])


def test_the_token_module_equals_the_prompt_encoder_for_every_mix(
    lite: LiteMedSAMPredictor,
) -> None:
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    tokens = _TokenDecoder(lite.prompt_decoder).eval()
    for box, points, labels, mask in _mixes(rng):
        expected = _run_prompts(lite.prompt_decoder, "cpu", embedding, box, points, labels, mask)
        inputs = _token_inputs(embedding, box, points, labels, mask)
        with torch.inference_mode():
            got = tokens(*(torch.from_numpy(x) for x in inputs))
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


def test_the_click_decoder_graph_equals_pytorch_on_point_counts_never_verified(
    clicks_lite: LiteMedSAMClicksPredictor,
) -> None:
    assert clicks_lite.click_onnx is not None, "the token graph did not export"
    assert clicks_lite.click_backend in ("onnx", "torch")
    rng = np.random.default_rng(1)
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    # 4 and 3 points: the export verified 2 clicks + a box and 1 click + a padding token
    for box, points, labels, mask in _mixes(rng)[2:]:
        onnx = clicks_lite._run_click(embedding, box, points, labels, mask, "onnx")
        torch_ = clicks_lite._run_click(embedding, box, points, labels, mask, "torch")
        np.testing.assert_allclose(onnx[0], torch_[0].numpy(), atol=1e-3, rtol=0)
        np.testing.assert_allclose(onnx[1], torch_[1].numpy(), atol=1e-4, rtol=0)


def test_a_refinement_through_onnx_gives_the_pytorch_mask(
    clicks_lite: LiteMedSAMClicksPredictor, demo_masks: list[Any]
) -> None:
    image, truth = demo_masks[0].load()
    box = tight_box(truth)
    clicks_lite.set_image(image)
    answers = {}
    backend = clicks_lite.click_backend
    try:
        for name in ("onnx", "torch"):
            clicks_lite.click_backend = name
            first = clicks_lite.predict(box=box)
            missed = truth & ~first.mask
            y, x = np.argwhere(missed if missed.any() else truth)[0]
            answers[name] = clicks_lite.predict(
                box=box, points=[[float(x), float(y)]], labels=[1], mask_input=first.logits
            )
    finally:
        clicks_lite.click_backend = backend
    agree = answers["onnx"].mask == answers["torch"].mask
    assert agree.mean() > 0.999
    assert answers["onnx"].score == pytest.approx(answers["torch"].score, abs=1e-4)
