from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcrowd.synth import SynthOptions, generate_synth, load_pairs, train_synth
from tests.helpers import shared_data_dir

TINY = SynthOptions(
    size=64, steps=3, ngf=8, ndf=8, device="cpu", seg_epochs=1, quality_synthetic=4,
    checkpoint_every=2, grid_rows=2,
)  # fmt: skip


def test_load_pairs_both_layouts(pairs_dir: Path, fused_dir: Path):
    plain = load_pairs(pairs_dir)
    assert [p.name for p in plain] == [f"case{i}" for i in range(6)]
    assert all(p.kind == "real" and p.image.ndim == 2 for p in plain)
    assert set(np.unique(plain[0].mask)) == {0, 255}
    fused = load_pairs(fused_dir)
    assert [p.name for p in fused] == ["task-10", "task-11", "task-12"]
    assert all(p.kind == "fused" and p.image.shape == (64, 64, 3) for p in fused)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_pairs(fused_dir.parent / "nothing")
    (fused_dir / "fused-crowd-staple").rename(fused_dir / "other")
    with pytest.raises(FileNotFoundError, match="medcrowd fuse"):
        load_pairs(fused_dir, method="staple")


def test_train_writes_run_and_resumes(tmp_path: Path, pairs_dir: Path):
    run = tmp_path / "run"
    calls: list[int] = []
    report = train_synth(pairs_dir, run, TINY, progress=lambda d, t, loss: calls.append(d))
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
    assert calls[:3] == [1, 2, 3]
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
    assert a["history"] == b["history"]
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])


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
    assert len(pairs) == 5 and all(p.kind == "synthetic" for p in pairs)
    assert all(p.image.shape == (64, 64, 3) and set(np.unique(p.mask)) <= {0, 255} for p in pairs)
    assert all(p.mask.any() for p in pairs)
    generate_synth(run, out, 2, seed=2, device="cpu")  # appends
    assert len(load_pairs(out)) == 7
    with pytest.raises(FileNotFoundError, match="synth train"):
        generate_synth(tmp_path / "nowhere", out, 1)


def test_real_isbi_pairs():
    root = shared_data_dir() / "isbi2012_em"
    if not (root / "train" / "image").is_dir():
        pytest.skip(f"ISBI 2012 data not found under {root} (set MEDCROWD_SHARED_DATA)")
    pairs = load_pairs(root / "train", invert_masks=True)
    assert len(pairs) == 30
    membrane = np.mean([(p.mask > 0).mean() for p in pairs])
    assert 0.15 < membrane < 0.3  # README: the 255 (interior) class covers 73–83 %
