from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from medcrowd.cli_synth import export_command, synth_app

runner = CliRunner()


def _app() -> typer.Typer:
    """The two registrations medcrowd/cli.py makes."""
    app = typer.Typer()
    app.add_typer(synth_app, name="synth")
    app.command("export")(export_command)
    return app


def test_train_generate_export(tmp_path: Path, pairs_dir: Path):
    app = _app()
    run = tmp_path / "run"
    res = runner.invoke(app, ["synth", "train", str(pairs_dir), "--out", str(run), "--size", "64",
                              "--steps", "2", "--ngf", "8", "--ndf", "8", "--device", "cpu",
                              "--no-quality"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 steps on 5 pairs" in res.output
    res = runner.invoke(app, ["synth", "generate", str(run), "--n", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len((run / "synthetic" / "manifest.jsonl").read_text().splitlines()) == 2
    res = runner.invoke(app, ["export", str(pairs_dir), "--out", str(tmp_path / "nn"),
                              "--synthetic", str(run / "synthetic")])  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "nn" / "Dataset501_medcrowd" / "dataset.json").read_text())
    assert meta["numTraining"] == 8


def test_errors_exit_1_without_traceback(tmp_path: Path):
    app = _app()
    for args in (
        ["synth", "train", str(tmp_path / "missing")],
        ["synth", "generate", str(tmp_path)],
        ["export", str(tmp_path), "--out", str(tmp_path / "o")],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, args
        assert "error:" in res.output and "Traceback" not in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)


def test_help_on_every_option():
    app = _app()
    for args in (["synth", "train", "--help"], ["synth", "generate", "--help"],
                 ["export", "--help"]):  # fmt: skip
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == 0
        assert "--size" in res.output or "--n" in res.output or "--format" in res.output
