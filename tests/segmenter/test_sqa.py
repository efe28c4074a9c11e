"""segmenter.sqa: the error branch finds a weak segmentation's errors; honest targets; files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segmenter.metrics import dice_scores
from segmenter.model import ModelFileError, SegmenterConfig, image_hashes
from segmenter.sqa import ProbabilityAttention, QualityAssessor, SQANet, predicted_dice
from segmenter.trainer import Segmenter

CFG = SegmenterConfig(
    size=32, channels=(8, 16, 32), steps=60, res_units=1, lr=3e-3, schedule="constant"
)


def _varied_disks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disks of random contrast (15–140 gray levels over a noisy background): a briefly
    trained network misses the faint ones and their rims, so its errors have structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    images, masks = [], []
    for _ in range(n):
        r = int(rng.integers(4, 9))
        cy, cx = rng.integers(r, 32 - r, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = 50 + rng.uniform(15, 140) * mask + rng.normal(0, 20, (32, 32))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def test_predicted_dice_hand_computed() -> None:
    seg = np.zeros((3, 2, 2))
    err = np.zeros((3, 2, 2))
    seg[0, 0, :] = 0.9  # mask of 2 pixels, one of them 50 % likely wrong, a missed pixel 50 %
    err[0, 0, 0], err[0, 1, 1] = 0.5, 0.5
    # image 1: empty mask, no error → 1; image 2: empty mask, certain miss → 0
    err[2, 0, 0] = 1.0
    got = predicted_dice(seg, err)
    np.testing.assert_allclose(got, [2 * 1.5 / (2 * 1.5 + 0.5 + 0.5), 1.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="differ"):
        predicted_dice(seg, err[:1])


def test_network_shapes_and_attention_passes_features() -> None:
    net = SQANet(CFG)
    seg_logits, err_logits = net(torch.rand(2, 1, 32, 32))
    assert seg_logits.shape == err_logits.shape == (2, 1, 32, 32)
    att = ProbabilityAttention(8)
    feats = torch.rand(2, 8, 16, 16)
    out = att(feats, torch.rand(2, 1, 32, 32))  # probability pooled to the feature size
    assert out.shape == feats.shape and (out >= feats).all() and (out <= 4 * feats).all()


def test_error_branch_flags_the_weak_segmentations_errors() -> None:
    x, y = _varied_disks(64, seed=0)
    xt, yt = _varied_disks(32, seed=9)
    qa = QualityAssessor(CFG, folds=2)
    qa.fit(x, y, steps=60)  # a deliberately weak segmentation (60 steps)
    qa.fit(x, y, steps=250, segmentation=False)  # then the error branch alone
    seg, err, score = qa.predict(xt)
    assert seg.shape == err.shape == (32, 32, 32) and score.shape == (32,)
    assert seg.dtype == err.dtype == score.dtype == np.float32
    pred = (seg >= 0.5).astype(np.uint8)
    true_err = (pred != yt).astype(float)
    true_dice = dice_scores(pred, yt)
    assert 0.02 < true_err.mean() and true_dice.mean() < 0.9  # the segmentation is weak
    # held-out images: predicted error maps vs the real errors (chance: correlation 0)
    corr = np.corrcoef(err.ravel(), true_err.ravel())[0, 1]
    assert corr > 0.5, corr
    shuffled = np.corrcoef(err.ravel(), np.roll(true_err, 1, axis=0).ravel())[0, 1]
    assert corr > shuffled + 0.3
    # the image score ranks images like their real Dice (Spearman)
    rank = np.corrcoef(np.argsort(np.argsort(score)), np.argsort(np.argsort(true_dice)))[0, 1]
    assert rank > 0.5, rank


def test_error_targets_are_out_of_sample() -> None:
    x, y = _varied_disks(12, seed=1)
    seg = Segmenter(CFG)
    seg.fit(x[:8], y[:8], steps=40)
    qa = QualityAssessor.from_segmenter(seg, folds=2)
    calls: list[tuple[int, int]] = []
    planned = qa.planned_steps(x, steps=2)
    qa.fit(x, y, steps=2, progress=lambda d, t: calls.append((d, t)))
    # the 8 seen images got k-fold records (two fold networks of CFG.steps each trained),
    # the 4 unseen ones the segmentation branch's prediction from *before* this fit
    assert qa.fold_networks_ == 2
    assert planned == 2 * CFG.steps + 2
    assert calls == [(d, planned) for d in range(1, planned + 1)]  # one count, all work
    assert len(qa.records_) == 12
    hashes = list(qa.records_)
    assert set(hashes) == set(seg.seen_)  # now all seen
    before = Segmenter(CFG)
    before.fit(x[:8], y[:8], steps=40)  # same seed → same network as seg before qa.fit
    expected = np.clip(np.rint(before.predict_proba(x[8:]) * 255), 0, 255).astype(np.uint8)
    for h, want in zip(image_hashes(x[8:]), expected, strict=True):
        np.testing.assert_array_equal(qa.records_[h], want)
    steps = seg.steps_
    assert qa.planned_steps(x, steps=3) == 3
    qa.fit(x, y, steps=3)  # all recorded: no fold networks again
    assert qa.fold_networks_ == 0
    assert seg.steps_ == steps + 3 and len(qa.records_) == 12
    with pytest.raises(ValueError, match="at least 2 training images"):
        QualityAssessor(CFG).fit(x[:1], y[:1], steps=1)


def test_save_load_predict_image_and_errors(tmp_path: Path) -> None:
    x, y = _varied_disks(16, seed=2)
    qa = QualityAssessor(SegmenterConfig(**{**CFG.to_dict(), "steps": 10}), folds=2)
    qa.fit(x, y)
    path = tmp_path / "qa.pt"
    qa.save(path)
    loaded = QualityAssessor.load(path)
    for a, b in zip(qa.predict(x), loaded.predict(x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.records_.keys() == qa.records_.keys() and loaded.folds == 2
    assert loaded.fit(x, y, steps=2) == qa.fit(x, y, steps=2)  # resumes identically
    for mode in ("resize", "tile"):
        loaded.config.input_mode = mode
        mask, error, score = loaded.predict_image(np.zeros((45, 70, 3), np.uint8))
        assert mask.shape == error.shape == (45, 70) and mask.dtype == error.dtype == np.uint8
        assert set(np.unique(error)) <= {0, 1} and isinstance(score, float) and 0 <= score <= 1
    with pytest.raises(ModelFileError, match="holds a QualityAssessor model"):
        Segmenter.load(path)
    seg_path = tmp_path / "seg.pt"
    qa.segmenter.save(seg_path)
    with pytest.raises(ModelFileError, match="holds a Segmenter model"):
        QualityAssessor.load(seg_path)
    with pytest.raises(FileNotFoundError):
        QualityAssessor.load(tmp_path / "absent.pt")
    state = qa.state_dict()  # the same state without a file
    for a, b in zip(qa.predict(x), QualityAssessor.from_state(state).predict(x), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelFileError, match="error records are damaged"):
        QualityAssessor.from_state({**state, "records": state["records"][:1]})
