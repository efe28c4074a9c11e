from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from gan import (
    DISCRIMINATORS,
    GENERATORS,
    Pix2PixConfig,
    Pix2PixTrainer,
    UNetGenerator,
    batch_at,
    masks_to_onehot,
    tensor_to_images,
)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_one_step_changes_weights_and_lowers_l1(tiny_config, tiny_batch, tiny_pairs):
    # lr 1e-3 so that three steps move the L1 by a clear margin on this fixed batch
    trainer = Pix2PixTrainer(replace(tiny_config, lr=1e-3))
    g0, d0 = _params(trainer.generator), _params(trainer.discriminator)
    before = float(
        (trainer.generate(tiny_batch["mask"], seed=5) - tiny_batch["image"]).abs().mean()
    )
    losses = trainer.train_step(tiny_batch)
    assert set(losses) == {
        "loss_D",
        "loss_D_fake",
        "loss_D_real",
        "loss_G",
        "loss_G_GAN",
        "loss_G_L1",
    }
    assert all(isinstance(v, float) and np.isfinite(v) for v in losses.values())
    assert any(
        not torch.equal(a, b) for a, b in zip(g0, trainer.generator.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, trainer.discriminator.parameters(), strict=True)
    )
    logged: list[dict[str, float]] = []
    done: list[tuple[int, int]] = []
    new = trainer.fit(*tiny_pairs, steps=2, batch_size=2, on_log=logged.append,
                      progress=lambda d, t: done.append((d, t)))  # fmt: skip
    assert new == logged and len(new) == 2 and done == [(1, 2), (2, 2)]
    after = float((trainer.generate(tiny_batch["mask"], seed=5) - tiny_batch["image"]).abs().mean())
    assert after < before - 0.01
    assert trainer.step_ == 3 and len(trainer.history_) == 3


def test_resume_reproduces(tiny_config, tiny_pairs):
    a = Pix2PixTrainer(tiny_config)
    a.fit(*tiny_pairs, steps=2)
    state = copy.deepcopy(a.state_dict())
    a.fit(*tiny_pairs, steps=2)
    b = Pix2PixTrainer.from_state(state)
    assert b.step_ == 2
    b.fit(*tiny_pairs, steps=2)
    for pa, pb in zip(
        a.generator.state_dict().values(), b.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb)
    for pa, pb in zip(
        a.discriminator.state_dict().values(), b.discriminator.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb)
    assert a.history_ == b.history_


def test_batch_at_is_a_function_of_seed_and_step(tiny_pairs):
    images, labels = tiny_pairs
    one = batch_at(images, labels, 2, step=3, seed=7)
    assert torch.equal(one["image"], batch_at(images, labels, 2, step=3, seed=7)["image"])
    # step 3, batch size 1: sample 3 = epoch 1, position 1 of that epoch's permutation
    idx = int(np.random.default_rng([7, 1]).permutation(2)[1])
    flip = bool(np.random.default_rng([7, 1, 1]).integers(2))
    want = images[idx][:, ::-1] if flip else images[idx]
    assert np.array_equal(tensor_to_images(one["image"])[0], want)
    two = batch_at(images, labels, 2, step=1, seed=7, batch_size=2)  # samples 2 and 3
    assert two["image"].shape == (2, 1, 64, 64) and torch.equal(two["image"][1], one["image"][0])
    assert two["mask"].shape == (2, 2, 64, 64)


def test_seeded_init(tiny_config):
    a, b = Pix2PixTrainer(tiny_config), Pix2PixTrainer(tiny_config)
    c = Pix2PixTrainer(replace(tiny_config, seed=1))
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.generator.parameters(), b.generator.parameters(), strict=True)
    )
    assert not all(
        torch.equal(x, y)
        for x, y in zip(a.generator.parameters(), c.generator.parameters(), strict=True)
    )


@pytest.mark.parametrize(("size", "channels", "classes"), [(64, 1, 2), (128, 3, 4)])
def test_generator_output_shape_and_range(size, channels, classes):
    cfg = Pix2PixConfig(
        image_size=size, image_channels=channels, mask_channels=classes, ngf=4, ndf=4, device="cpu"
    )
    trainer = Pix2PixTrainer(cfg)
    labels = np.random.default_rng(0).integers(0, classes, (2, size, size))
    out = trainer.generate(masks_to_onehot(labels, classes), seed=0)
    assert out.shape == (2, channels, size, size)
    assert out.dtype == torch.float32
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    again = trainer.generate(masks_to_onehot(labels, classes), seed=0)
    assert torch.equal(out, again)  # dropout noise is seeded
    images = tensor_to_images(out)
    assert images.dtype == np.uint8
    assert images.shape == ((2, size, size) if channels == 1 else (2, size, size, 3))


def test_generator_512_depth_and_divisibility():
    g = UNetGenerator(2, 1, num_downs=8, ngf=2)
    assert g(torch.zeros(1, 2, 512, 512)).shape == (1, 1, 512, 512)
    with pytest.raises(ValueError, match="divisible"):
        g(torch.zeros(1, 2, 200, 200))


def test_onehot_multilabel():
    labels = np.array([[[0, 1], [2, 3]]])
    onehot = masks_to_onehot(labels, 4)
    assert onehot.shape == (1, 4, 2, 2)
    assert torch.equal(onehot.sum(1), torch.ones(1, 2, 2))
    assert onehot[0, 3, 1, 1] == 1
    with pytest.raises(ValueError):
        masks_to_onehot(labels, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"image_size": 32},
        {"image_size": 96},
        {"image_channels": 2},
        {"mask_channels": 1},
        {"generator": "resnet"},
        {"discriminator": "pixel"},
    ],
)
def test_bad_config_raises(tiny_config, change):
    with pytest.raises(ValueError):
        Pix2PixTrainer(replace(tiny_config, **change))


def test_registries_and_bad_batch(tiny_config):
    assert set(GENERATORS) == {"unet"} and set(DISCRIMINATORS) == {"patch", "monai_patch"}
    trainer = Pix2PixTrainer(tiny_config)
    with pytest.raises(ValueError, match="mask"):
        trainer.train_step({"mask": torch.zeros(1, 3, 64, 64), "image": torch.zeros(1, 1, 64, 64)})
    with pytest.raises(ValueError, match="missing"):
        trainer.train_step({"mask": torch.zeros(1, 2, 64, 64)})
    with pytest.raises(ValueError, match="not a pix2pix trainer state"):
        Pix2PixTrainer.from_state({"config": {}})
    with pytest.raises(ValueError, match="images"):
        trainer.fit(np.zeros((2, 64, 64), np.uint8), np.zeros((3, 64, 64), np.uint8), steps=1)


def test_device_must_be_resolved(tiny_config):
    with pytest.raises(ValueError, match="resolve"):
        Pix2PixTrainer(replace(tiny_config, device="auto"))
    trainer = Pix2PixTrainer(replace(tiny_config, device=torch.device("cpu")))
    assert trainer.config.device == "cpu" and trainer.device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            Pix2PixTrainer(replace(tiny_config, device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_step(tiny_batch):
    cfg = Pix2PixConfig(image_size=64, ngf=8, ndf=8, device="cuda", amp=True)
    trainer = Pix2PixTrainer(cfg)
    assert trainer.use_amp
    losses = trainer.train_step(tiny_batch)
    assert all(np.isfinite(v) for v in losses.values())


def test_patchgan_shape():
    from gan import PatchGANDiscriminator

    assert PatchGANDiscriminator(3, ndf=4)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.slow
def test_monai_patch_variant_trains(tiny_config, tiny_batch):
    pytest.importorskip("monai")
    trainer = Pix2PixTrainer(replace(tiny_config, discriminator="monai_patch"))
    assert all(np.isfinite(v) for v in trainer.train_step(tiny_batch).values())
