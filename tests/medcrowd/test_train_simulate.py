"""``medcrowd train segmenter|sqa`` and ``select --simulate`` on tiny disk folders: the app
modules (medcrowd.train, medcrowd.simulate) and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medcrowd.cli import app
from medcrowd.simulate import SimulateOptions, plot_curves, simulate_selection
from medcrowd.train import TrainOptions, train_model
from segmenter.model import ModelFileError
from segmenter.sqa import QualityAssessor
from segmenter.trainer import Segmenter
from tests.helpers import disks

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 bright-disk pairs (images/ + masks/, masks 0/255)."""
    root = tmp_path_factory.mktemp("disks")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    images, masks = disks(12, size=32, seed=4)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"{i}.png")
    return root


def _one_line_error(result: object, text: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and text in lines[0], output


TRAIN = ["--size", "32", "--steps", "3", "--channels", "8,16", "--device", "cpu"]


def test_train_segmenter_and_sqa_write_loadable_models(folder: Path, tmp_path: Path) -> None:
    seg_file, sqa_file = tmp_path / "m" / "seg.pt", tmp_path / "sqa.pt"
    out = runner.invoke(app, ["train", "segmenter", str(folder), "--out", str(seg_file), *TRAIN])
    assert out.exit_code == 0, out.output
    assert "trained segmenter on 12 pairs, final loss" in out.output
    seg = Segmenter.load(seg_file)
    assert seg.steps_ == 3 and seg.config.device == "cpu" and seg.config.channels == (8, 16)
    out = runner.invoke(
        app, ["train", "sqa", str(folder), "--out", str(sqa_file), "--folds", "2", *TRAIN]
    )
    assert out.exit_code == 0, out.output
    assert QualityAssessor.load(sqa_file).segmenter.steps_ == 3
    with pytest.raises(ModelFileError, match="holds a QualityAssessor model"):
        Segmenter.load(sqa_file)


def test_train_model_progress_counts_every_step(folder: Path, tmp_path: Path) -> None:
    ticks: list[tuple[int, int]] = []
    options = TrainOptions(size=32, steps=4, channels=(8, 16), device="cpu", folds=2)
    report = train_model(
        "sqa", folder, tmp_path / "q.pt", options, progress=lambda d, t: ticks.append((d, t))
    )
    assert report.pairs == 12 and np.isfinite(report.final_loss)
    # two out-of-fold networks of 4 steps, then the 4 joint steps: one count
    assert ticks == [(d, 12) for d in range(1, 13)]
    with pytest.raises(ValueError, match="unknown model kind"):
        train_model("unet", folder, tmp_path / "x.pt", options)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--device", "gpu0"], "unsupported device 'gpu0'"),
        (["--size", "31"], "size must be a positive multiple of 2"),
    ],
)
def test_train_errors_are_one_line(
    folder: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["train", "segmenter", str(folder), "--out", str(tmp_path / "m.pt")]
    _one_line_error(runner.invoke(app, [*base, *TRAIN, *args]), message)


def test_train_data_errors_are_one_line(folder: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["train", "segmenter", str(tmp_path / "nope"), *TRAIN])
    _one_line_error(missing, "is not a folder")
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    (broken / "masks").mkdir()
    (broken / "images" / "0.png").write_bytes(b"not a png")
    (broken / "masks" / "0.png").write_bytes((folder / "masks" / "0.png").read_bytes())
    _one_line_error(runner.invoke(app, ["train", "segmenter", str(broken), *TRAIN]), "0.png")
    one = tmp_path / "one"
    for sub in ("images", "masks"):
        (one / sub).mkdir(parents=True)
        (one / sub / "0.png").write_bytes((folder / sub / "0.png").read_bytes())
    result = runner.invoke(app, ["train", "sqa", str(one), "--out", str(tmp_path / "q.pt"), *TRAIN])
    _one_line_error(result, "at least 2 training images")


SIM = ["--initial", "2", "--per-round", "2", "--rounds", "1", "--size", "32", "--steps", "4",
       "--finetune-steps", "2", "--device", "cpu"]  # fmt: skip


def test_select_simulate_prints_curves_and_writes_files(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = runner.invoke(app, ["select", "--simulate", str(folder), "--out", str(out), *SIM])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "curves.json").read_text())
    assert doc["pool"] == 8 and doc["test"] == 4
    assert [r["strategy"] for r in doc["results"]] == ["sqa", "random", "mc-dropout"]
    for r in doc["results"]:
        line = f"{r['strategy']:>10}  " + ", ".join(
            f"{f * 100:.0f}%: {d:.3f}" for f, d in zip(r["fractions"], r["dice"], strict=True)
        )
        assert line in result.output
    assert f"full-data Dice {doc['full_data_dice']:.3f}" in result.output
    with Image.open(out / "curves.png") as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_simulate_selection_is_seeded_and_reports_events(folder: Path, tmp_path: Path) -> None:
    options = SimulateOptions(initial=2, per_round=2, rounds=1, size=32, steps=4,
                              finetune_steps=2, device="cpu")  # fmt: skip
    events: list[dict[str, object]] = []
    a = simulate_selection(folder, tmp_path / "a", options, on_log=events.append)
    b = simulate_selection(folder, tmp_path / "b", options)
    assert [r.dice for r in a.results] == [r.dice for r in b.results]
    assert a.full_dice == b.full_dice and events[-1] == {"stage": "full pool", "dice": a.full_dice}
    png = tmp_path / "deep" / "c.png"
    plot_curves(a.results, a.full_dice, png, title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_errors_are_one_line(folder: Path, tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["select"]), "give --project (live mode) or --simulate")
    _one_line_error(
        runner.invoke(app, ["select", "--simulate", str(tmp_path / "nope"), *SIM]),
        "is not a folder",
    )
    too_many = [*SIM, "--rounds", "9"]
    _one_line_error(
        runner.invoke(
            app, ["select", "--simulate", str(folder), "--out", str(tmp_path), *too_many]
        ),
        "exceeds the pool",
    )
    _one_line_error(
        runner.invoke(app, ["select", "--simulate", str(folder), *SIM, "--initial", "20"]),
        "too few for this simulation",
    )
