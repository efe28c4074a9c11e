from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcrowd.pairs import load_pairs
from medcrowd.synth import (
    SynthOptions,
    generate_synth,
    read_pairs,
    segmentation_dice,
    train_synth,
)
from tests.helpers import blob_pairs

TINY = SynthOptions(
    size=64, steps=3, ngf=8, ndf=8, device="cpu", seg_epochs=1, quality_synthetic=4,
    checkpoint_every=2, grid_rows=2,
)  # fmt: skip


def test_read_pairs_both_layouts(pairs_dir: Path, fused_dir: Path):
    plain = read_pairs(pairs_dir)
    assert [p.name for p in plain] == [f"case{i}" for i in range(6)]
    assert all(p.source == "expert" and p.image.ndim == 2 for p in plain)
    assert set(np.unique(plain[0].mask)) == {0, 255}
    fused = read_pairs(fused_dir)
    assert [p.name for p in fused] == ["task-10", "task-11", "task-12"]
    assert all(p.source == "fused" and p.image.shape == (64, 64, 3) for p in fused)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        read_pairs(fused_dir.parent / "nothing")
    (fused_dir / "fused-crowd-staple").rename(fused_dir / "other")
    with pytest.raises(ValueError, match="medcrowd fuse"):
        read_pairs(fused_dir, method="staple")


def test_read_pairs_keeps_synth_order(tmp_path: Path):
    for stem in ("b10", "b2", "3", "12"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "images" / f"{stem}.png")
        Image.fromarray(np.eye(4, dtype=np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    # the train / held-out split is drawn over this order: all-digit names first
    assert [p.name for p in read_pairs(tmp_path)] == ["3", "12", "b10", "b2"]
    assert [p.name for p in load_pairs(tmp_path)] == ["3", "12", "b2", "b10"]


def test_train_writes_run_and_resumes(tmp_path: Path, pairs_dir: Path):
    run = tmp_path / "run"
    calls: list[int] = []
    logs: list[dict[str, float]] = []
    report = train_synth(pairs_dir, run, TINY, progress=lambda d, t: calls.append(d),
                         on_log=logs.append)  # fmt: skip
    assert report.steps == 3 and report.resumed_from == 0
    assert (report.train, report.held_out) == (5, 1)
    for name in ("checkpoint.pt", "run.json", "losses.csv", "losses.png", "samples.png",
                 "quality.json", "quality.png"):  # fmt: skip
        assert (run / name).is_file(), name
    grid = Image.open(run / "samples.png")
    assert grid.size == (3 * 64, 64 + 18)  # one held-out row: mask | real | synthetic
    q = json.loads((run / "quality.json").read_text())
    assert 0 <= q["tstr"]["dice_train_synthetic_test_real"] <= 1
    assert q["reconstruction"]["psnr_mean_db"] > 0
    assert set(q["histogram"]["train_real_vs_synthetic"]) == {"wasserstein", "intersection"}
    assert calls == [1, 2, 3] and len(logs) == 3 and logs[-1] == report.last_losses
    more = train_synth(pairs_dir, run, replace(TINY, steps=5, quality=False))
    assert more.resumed_from == 3 and more.steps == 5
    assert len((run / "losses.csv").read_text().splitlines()) == 1 + 5


def test_resumed_run_equals_straight_run(tmp_path: Path, pairs_dir: Path):
    import torch

    opts = replace(TINY, quality=False)
    train_synth(pairs_dir, tmp_path / "a", replace(opts, steps=4))
    train_synth(pairs_dir, tmp_path / "b", replace(opts, steps=2))
    train_synth(pairs_dir, tmp_path / "b", replace(opts, steps=4))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert a["history"] == b["history"] and a["classes"] == [0, 255]
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    train_synth(pairs_dir, tmp_path / "c", replace(opts, steps=4))
    c = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(a["generator"][k], c["generator"][k]) for k in a["generator"])
    assert (tmp_path / "a" / "samples.png").read_bytes() == (
        tmp_path / "c" / "samples.png"
    ).read_bytes()  # seeded: the same weights generate the same held-out images


def test_generate_writes_marked_pairs(tmp_path: Path, fused_dir: Path):
    run = tmp_path / "run"
    train_synth(fused_dir, run, replace(TINY, quality=False, steps=2))
    out = tmp_path / "syn"
    report = generate_synth(run, out, 5, seed=1, device="cpu")
    assert report.written == 5
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in records] == [f"syn-{k:05d}" for k in range(5)]
    assert all(r["synthetic"] is True for r in records)
    pairs = load_pairs(out)
    assert len(pairs) == 5 and all(p.source == "synthetic" for p in pairs)
    assert all(p.image.shape == (64, 64, 3) and set(np.unique(p.mask)) <= {0, 255} for p in pairs)
    assert all(p.mask.any() for p in pairs)
    generate_synth(run, out, 2, seed=2, device="cpu")  # appends
    assert len(load_pairs(out)) == 7
    with pytest.raises(FileNotFoundError, match="synth train"):
        generate_synth(tmp_path / "nowhere", out, 1)
    # a checkpoint written before the class table was stored in it: run.json supplies it
    import torch

    state = torch.load(run / "checkpoint.pt", weights_only=False)
    del state["classes"]
    torch.save(state, run / "checkpoint.pt")
    generate_synth(run, tmp_path / "old", 5, seed=1, device="cpu")
    for k in range(5):
        name = f"syn-{k:05d}.png"
        assert (tmp_path / "old" / "images" / name).read_bytes() == (
            out / "images" / name
        ).read_bytes()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        generate_synth(run, out, 1, device="cpu")


def test_real_isbi_pairs(shared_data: Path):
    pairs = read_pairs(shared_data / "isbi2012_em" / "train", invert_masks=True)
    assert len(pairs) == 30
    membrane = np.mean([(p.mask > 0).mean() for p in pairs])
    assert 0.15 < membrane < 0.3  # README: the 255 (interior) class covers 73–83 %


def test_segmentation_dice_real_pairs_beat_shuffled_pairs():
    """The train-on-synthetic score's segmenter learns from pairs, not from masks alone."""
    images, labels = blob_pairs(12, 64, seed=11)
    test_images, test_labels = blob_pairs(6, 64, seed=12)
    test = (test_images, test_labels * 255)
    real = segmentation_dice((images, labels * 255), test, epochs=10, seed=0)
    shuffled_masks = (labels * 255)[np.roll(np.arange(12), 5)]  # each image with another mask
    shuffled = segmentation_dice((images, shuffled_masks), test, epochs=10, seed=0)
    assert real > 0.5 and real > shuffled + 0.3, (real, shuffled)
    assert segmentation_dice((images, labels), (test_images, test_labels), epochs=10) == real
