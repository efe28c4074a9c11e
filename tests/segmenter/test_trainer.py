"""segmenter.trainer / segmenter.model: shapes, determinism, learning a bright-disk task,
fine-tuning, state and files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from segmenter.metrics import dice_scores
from segmenter.model import ModelFileError, SegmenterConfig, torch_device
from segmenter.trainer import Segmenter
from segmenter.training import lr_at
from tests.helpers import DiskFactory

TINY = SegmenterConfig(size=32, channels=(8, 16, 32), steps=5, res_units=1, batch_size=4)


def _tiny(**changes: object) -> SegmenterConfig:
    return SegmenterConfig(**{**TINY.to_dict(), **changes})  # type: ignore[arg-type]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="size must be a positive multiple of 4"):
        _tiny(size=30).check()
    with pytest.raises(ValueError, match="channels needs >= 2"):
        _tiny(channels=(8,)).check()
    with pytest.raises(ValueError, match="dropout"):
        Segmenter(_tiny(dropout=1.0))
    with pytest.raises(ValueError, match="input_mode"):
        Segmenter(_tiny(input_mode="crop"))
    with pytest.raises(ValueError, match="invalid device"):
        Segmenter(_tiny(device="gpu0"))
    with pytest.raises(ValueError, match="'auto' must be resolved by the caller"):
        Segmenter(_tiny(device="auto"))  # the app resolves it (ml_backend.device)
    with pytest.raises(ValueError, match="in_channels"):
        Segmenter(TINY, in_channels=2)
    with pytest.raises(ValueError, match="schedule"):
        _tiny(schedule="step").check()


def test_device_is_taken_as_resolved() -> None:
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device(torch.device("cpu")) == torch.device("cpu")
    assert _tiny(device=torch.device("cpu")).device == "cpu"
    assert Segmenter(_tiny(device=torch.device("cpu"))).device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            torch_device("cuda:0")


def test_learning_rate_schedules() -> None:
    cosine = _tiny(lr=2e-3)
    rates = [lr_at(cosine, s, 11) for s in range(11)]
    assert rates[0] == pytest.approx(2e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[5] == pytest.approx((2e-3 + 1e-4) / 2)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert lr_at(_tiny(lr=2e-3, schedule="constant"), 7, 11) == 2e-3


def test_shapes_dtypes_and_input_checks(disks: DiskFactory) -> None:
    x, y = disks(6)
    seg = Segmenter(TINY)
    losses = seg.fit(x, y, steps=2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    prob = seg.predict_proba(x, batch_size=4)
    assert prob.shape == (6, 32, 32) and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1
    mask = seg.predict(x)
    assert mask.shape == (6, 32, 32) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    mean, unc = seg.mc_dropout(x[:2], samples=4)
    assert mean.shape == unc.shape == (2, 32, 32) and unc.dtype == np.float32
    assert (unc >= 0).all() and unc.max() > 0  # dropout is really sampled
    np.testing.assert_array_equal(mean, seg.mc_dropout(x[:2], samples=4)[0])  # seeded
    with pytest.raises(ValueError, match="must be uint8"):
        seg.fit(x.astype(np.float32), y)
    with pytest.raises(ValueError, match=r"masks .* must be N×H×W"):
        seg.fit(x, y[:3])
    with pytest.raises(ValueError, match="multiples of 4"):
        seg.predict_proba(x[:, :30, :30])
    with pytest.raises(ValueError, match="channel"):
        seg.predict_proba(np.zeros((1, 32, 32, 3), np.uint8))
    rgb = Segmenter(TINY, in_channels=3)
    rgb.fit(np.repeat(x[..., None], 3, axis=-1), y, steps=1)
    assert rgb.predict(x).shape == (6, 32, 32)  # gray input is repeated to 3 channels


def test_seeded_training_is_deterministic_and_leaves_global_rng_alone(disks: DiskFactory) -> None:
    x, y = disks(8)
    torch.manual_seed(123)
    before = torch.rand(3)
    a, b, c = Segmenter(TINY), Segmenter(TINY), Segmenter(_tiny(seed=1))
    torch.manual_seed(123)
    la, lb, lc = a.fit(x, y), b.fit(x, y), c.fit(x, y)
    assert torch.equal(torch.rand(3), before)  # the caller's RNG stream is untouched
    assert la == lb and la != lc
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    assert not np.array_equal(a.predict_proba(x), c.predict_proba(x))


def test_learns_bright_disks_and_fine_tunes(disks: DiskFactory) -> None:
    x, y = disks(48, seed=0)
    xt, yt = disks(16, seed=99)
    seg = Segmenter(_tiny(steps=250, batch_size=8, lr=3e-3))
    first = Segmenter(_tiny(steps=250, batch_size=8, lr=3e-3)).predict(xt)
    calls: list[tuple[int, int]] = []
    losses = seg.fit(x, y, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(d, 250) for d in range(1, 251)] and len(losses) == 250
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    dice = dice_scores(seg.predict(xt), yt)
    assert dice.mean() > 0.9, dice
    assert dice_scores(first, yt).mean() < 0.5  # an untrained net does not get there
    more = seg.fit(x, y, steps=20)  # continues: starts near where it stopped
    assert np.mean(more[:5]) < np.mean(losses[:20]) * 0.6
    assert seg.steps_ == 270 and seg.fit_calls_ == 2


def test_save_load_round_trip_and_resume(tmp_path: Path, disks: DiskFactory) -> None:
    x, y = disks(8)
    seg = Segmenter(_tiny(dropout=0.2))
    seg.fit(x, y)
    path = tmp_path / "sub" / "seg.pt"
    seg.save(path)
    loaded = Segmenter.load(path)
    assert loaded.config == seg.config and loaded.steps_ == 5 and loaded.seen_ == seg.seen_
    np.testing.assert_array_equal(loaded.predict_proba(x), seg.predict_proba(x))
    np.testing.assert_array_equal(loaded.mc_dropout(x)[1], seg.mc_dropout(x)[1])
    # training after loading continues exactly like the original would (optimiser, seeds)
    assert loaded.fit(x, y, steps=3) == seg.fit(x, y, steps=3)


def test_state_dict_round_trip_in_memory(disks: DiskFactory) -> None:
    x, y = disks(8)
    seg = Segmenter(_tiny())
    seg.fit(x, y)
    state = seg.state_dict()
    assert state["kind"] == "Segmenter" and state["steps"] == 5
    again = Segmenter.from_state(state, device="cpu")
    np.testing.assert_array_equal(again.predict_proba(x), seg.predict_proba(x))
    assert again.fit(x, y, steps=2) == seg.fit(x, y, steps=2)
    with pytest.raises(ModelFileError, match="my state is not a medcrowd segmenter model"):
        Segmenter.from_state({"weights": 1}, source="my state")
    with pytest.raises(ModelFileError, match="has file version 99"):
        Segmenter.from_state({**state, "version": 99})


def test_load_errors_are_clear(tmp_path: Path, disks: DiskFactory) -> None:
    with pytest.raises(FileNotFoundError, match="no model file"):
        Segmenter.load(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a readable model file"):
        Segmenter.load(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="not a medcrowd segmenter model file"):
        Segmenter.load(other)
    seg = Segmenter(TINY)
    good = tmp_path / "good.pt"
    seg.save(good)
    payload = torch.load(good, weights_only=True)
    payload["config"]["channels"] = [4, 8, 16]  # weights no longer fit
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="weights do not fit"):
        Segmenter.load(tmp_path / "bad.pt")
    payload["config"]["colour"] = "blue"
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(ModelFileError, match="incompatible config"):
        Segmenter.load(tmp_path / "newer.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelFileError):
        Segmenter.load(truncated)
    assert isinstance(ModelFileError("x"), ValueError)  # the CLI prints ValueErrors


def test_predict_image_resize_and_tile_modes(disks: DiskFactory) -> None:
    x, y = disks(48, seed=0)
    seg = Segmenter(_tiny(steps=200, batch_size=8, lr=3e-3, input_mode="tile"))
    seg.fit(x, y)
    # a 70×90 canvas with three disks, RGB: sliding 32-px windows at native resolution
    canvas = np.zeros((70, 90), np.uint8)
    truth = np.zeros((70, 90), np.uint8)
    xs, ys = disks(3, seed=5)
    for (r, c), im, m in zip([(0, 0), (35, 20), (10, 58)], xs, ys, strict=True):
        canvas[r : r + 32, c : c + 32] = im
        truth[r : r + 32, c : c + 32] = m
    background = np.clip(50 + np.random.default_rng(1).normal(0, 20, canvas.shape), 0, 255)
    canvas = np.where(canvas == 0, background.astype(np.uint8), canvas)
    rgb = np.repeat(canvas[..., None], 3, axis=-1)
    mask = seg.predict_image(rgb)
    assert mask.shape == (70, 90) and mask.dtype == np.uint8
    assert dice_scores(mask, truth)[0] > 0.85
    tiny = seg.predict_image(np.zeros((5, 7), np.uint8))  # smaller than one window: padded
    assert tiny.shape == (5, 7)
    # resize mode: a 64×64 upscaled disk image is squashed to 32 and the mask scaled back
    seg.config.input_mode = "resize"
    big = np.kron(xs[0], np.ones((2, 2), np.uint8))
    big_truth = np.kron(ys[0], np.ones((2, 2), np.uint8))
    out = seg.predict_image(big)
    assert out.shape == (64, 64) and dice_scores(out, big_truth)[0] > 0.85
    with pytest.raises(ValueError, match="expected one HW or HWC image"):
        seg.predict_image(np.zeros((2, 3, 4, 5), np.uint8))
