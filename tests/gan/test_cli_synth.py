from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_errors_exit_1_with_one_line(tmp_path: Path, pairs_dir: Path):
    app = _app()
    run = tmp_path / "run"
    assert runner.invoke(app, ["synth", "train", str(pairs_dir), "--out", str(run), "--size", "64",
                               "--steps", "1", "--ngf", "8", "--ndf", "8", "--device", "cpu",
                               "--no-quality"]).exit_code == 0  # fmt: skip
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((run / "run.json").read_text())
    (broken / "checkpoint.pt").write_bytes(b"truncated")
    cases = {
        "not a folder": ["synth", "train", str(tmp_path / "missing")],
        "matches no known pairs layout": ["synth", "train", str(tmp_path)],
        "power of two": ["synth", "train", str(pairs_dir), "--out", str(tmp_path / "r2"),
                         "--size", "100", "--device", "cpu"],
        "unsupported device": ["synth", "train", str(pairs_dir), "--device", "tpu"],
        "--checkpoint-every must be >= 1": ["synth", "train", str(pairs_dir),
                                            "--checkpoint-every", "0"],
        "holds no trained model": ["synth", "generate", str(tmp_path)],
        "--n must be >= 1": ["synth", "generate", str(run), "--n", "0"],
        "not a readable checkpoint": ["synth", "generate", str(broken), "--device", "cpu"],
        "unknown format": ["export", str(pairs_dir), "--out", str(tmp_path / "o"),
                           "--format", "dicom"],
        "matches no known": ["export", str(tmp_path / "o2"), "--out", str(tmp_path / "o")],
    }  # fmt: skip
    (tmp_path / "o2").mkdir()
    for message, args in cases.items():
        res = runner.invoke(app, args, env={"COLUMNS": "80"})
        assert res.exit_code == 1, (args, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), args
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (message, res.output)
        assert "Traceback" not in res.output


def _options(app: typer.Typer, *path: str) -> list[tuple[list[str], str | None]]:
    """(names, help) of every option of the command at ``path`` (typer may vendor click,
    so the objects are read by attribute, not by class)."""
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return [
        (list(p.opts) + list(p.secondary_opts), p.help)
        for p in command.params
        if p.param_type_name == "option" and p.name != "help"
    ]


def test_help_names_every_option():
    app = _app()
    for path in (("synth", "train"), ("synth", "generate"), ("export",)):
        options = _options(app, *path)
        assert len(options) >= 3, path
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        for names, text in options:
            assert text, f"{names} has no help text"
            for name in names:
                assert name in res.output, (path, name)
