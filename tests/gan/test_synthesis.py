"""gan.synthesis: the class table, fit_pix2pix on arrays, Synthesizer generate/state."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from gan import ClassTable, DeformedMaskGenerator, Pix2PixConfig, Synthesizer, fit_pix2pix
from tests.helpers import blob_pairs

CONFIG = Pix2PixConfig(image_size=64, ngf=8, ndf=8, device="cpu", seed=0)


def _weights(synth: Synthesizer) -> list[torch.Tensor]:
    return list(synth.trainer.generator.state_dict().values())


def test_class_table_round_trip_and_unknown_values() -> None:
    table = ClassTable([255, 85, 0, 170])
    assert table.values == [0, 85, 170, 255] and len(table) == 4
    masks = np.array([[[0, 85], [170, 255]]], np.uint8)
    ids = table.to_ids(masks)
    assert ids.tolist() == [[[0, 1], [2, 3]]] and ids.dtype == np.uint8
    assert np.array_equal(table.to_values(ids), masks)
    assert ClassTable.from_masks(masks).values == [0, 85, 170, 255]
    with pytest.raises(ValueError, match=r"mask values \[7\] are not in the class table"):
        table.to_ids(np.array([[7]]))
    with pytest.raises(ValueError, match="every mask is empty"):
        ClassTable([0])


def test_fit_pix2pix_on_0_255_masks() -> None:
    images, labels = blob_pairs(4, 64, seed=2)
    masks = labels * 255
    done: list[tuple[int, int]] = []
    logs: list[dict[str, float]] = []
    synth = fit_pix2pix(images, masks, CONFIG, steps=3, batch_size=2,
                        progress=lambda d, t: done.append((d, t)), on_log=logs.append)  # fmt: skip
    assert synth.classes_ == [0, 255] and synth.config.mask_channels == 2
    assert synth.config.image_channels == 1 and synth.step_ == 3
    assert done == [(1, 3), (2, 3), (3, 3)] and logs == synth.history_ and len(logs) == 3
    assert set(logs[0]) >= {"loss_D", "loss_G_GAN", "loss_G_L1"}
    new, _ = DeformedMaskGenerator().sample(masks, 5, seed=0)
    chunks: list[tuple[int, int]] = []
    out = synth.generate(new, seed=3, batch_size=2, progress=lambda d, t: chunks.append((d, t)))
    assert out.shape == (5, 64, 64) and out.dtype == np.uint8
    assert chunks == [(2, 5), (4, 5), (5, 5)]
    # chunk at mask i draws from seed + i: generating the tail alone repeats it
    assert np.array_equal(synth.generate(new[4:], seed=3 + 4), out[4:])
    with pytest.raises(ValueError, match="not in the class table"):
        synth.generate(labels)  # {0, 1}: 1 is not a label value of this model


def test_rgb_layout_and_explicit_classes() -> None:
    images, labels = blob_pairs(2, 64, seed=4, rgb=True)
    synth = fit_pix2pix(images, labels, CONFIG, steps=1, classes=[0, 1, 2])
    assert synth.classes_ == [0, 1, 2] and synth.config.image_channels == 3
    assert synth.generate(labels).shape == (2, 64, 64, 3)


def test_seeded_fits_are_identical() -> None:
    images, labels = blob_pairs(3, 64, seed=5)
    a = fit_pix2pix(images, labels, CONFIG, steps=3, batch_size=2)
    b = fit_pix2pix(images, labels, CONFIG, steps=3, batch_size=2)
    c = fit_pix2pix(images, labels, replace(CONFIG, seed=1), steps=3)
    assert a.history_ == b.history_
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))
    assert np.array_equal(a.generate(labels, seed=9), b.generate(labels, seed=9))
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c), strict=True))


def test_state_round_trip_resumes_bit_for_bit() -> None:
    images, labels = blob_pairs(3, 64, seed=6)
    straight = fit_pix2pix(images, labels * 255, CONFIG, steps=4, batch_size=1)
    half = fit_pix2pix(images, labels * 255, CONFIG, steps=2, batch_size=1)
    state = copy.deepcopy(half.state_dict())
    assert state["classes"] == [0, 255] and state["step"] == 2
    resumed = Synthesizer.from_state(state, device="cpu")
    resumed.fit(images, labels * 255, steps=2, batch_size=1)
    assert resumed.history_ == straight.history_
    assert all(
        torch.equal(x, y) for x, y in zip(_weights(resumed), _weights(straight), strict=True)
    )
    bare = {k: v for k, v in state.items() if k != "classes"}
    with pytest.raises(ValueError, match="class table"):
        Synthesizer.from_state(bare)
    assert Synthesizer.from_state(bare, classes=[0, 255]).classes_ == [0, 255]


def test_bad_inputs() -> None:
    images, labels = blob_pairs(2, 64, seed=7)
    with pytest.raises(ValueError, match="image_size is 128: resize first"):
        fit_pix2pix(images, labels, replace(CONFIG, image_size=128), steps=1)
    with pytest.raises(ValueError, match="uint8"):
        fit_pix2pix(images.astype(np.float32), labels, CONFIG, steps=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="as many images as masks"):
        fit_pix2pix(images, labels[:1], CONFIG, steps=1)
    with pytest.raises(ValueError, match="resolve"):
        fit_pix2pix(images, labels, replace(CONFIG, device="auto"), steps=1)
