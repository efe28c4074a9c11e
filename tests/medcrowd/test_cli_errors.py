"""Every ``medcrowd`` command fails cleanly: exit code != 0, no traceback, one line that names
the problem.

The commands are enumerated from the typer app when the tests run, so a new command cannot
slip through: :func:`test_every_command_has_bad_argument_cases` fails until it has cases in
:data:`CASES`. Each command is run (in this process, through typer's ``CliRunner`` with
``catch_exceptions=False``: an exception escaping a command fails the test with its traceback)

* without its required arguments, and with an option that does not exist;
* with bad arguments: nonexistent paths, a malformed URL, nothing configured, a Label Studio
  that does not answer (a free loopback port);
* for a few commands, with a bad token against the session's real Label Studio.

The environment is isolated: no ``MEDCROWD_*`` variables, and ``MEDCROWD_HOME`` /
``XDG_DATA_HOME`` point into the test's temporary directory (so an ``instance.json`` that
``medcrowd up`` left in the user's home is never used).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from medcrowd.cli import app
from medcrowd.embedded import free_port
from tests.helpers import StudioHandle


def _leaf_commands() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "list_commands"):  # a group (lazy ones too): its subcommands
            ctx = typer.Context(cmd)
            for name in sorted(cmd.list_commands(ctx)):
                yield from walk(cmd.get_command(ctx, name), (*path, name))
        else:
            yield " ".join(path), cmd

    return walk(typer.main.get_command(app), ())


COMMANDS: dict[str, Any] = dict(_leaf_commands())
WITH_REQUIRED = sorted(
    name for name, cmd in COMMANDS.items() if any(p.required for p in cmd.params)
)

DOWN = ["--url", "{down}", "--token", "0" * 40]
"""A Label Studio that does not answer: a free loopback port."""
NOT_ANSWERING = "no Label Studio answers at http://127.0.0.1:"

CASES: dict[str, list[tuple[list[str], str]]] = {
    "up": [
        (["--images", "{missing}"], "is not a directory"),
        (["--database", "mysql://user:secret@host/db"], "--database must be a postgresql://"),
    ],
    "pull": [
        (["{empty}/out", "--project", "1", *DOWN], NOT_ANSWERING),
        (["{empty}/out", "--project", "1"], "run `medcrowd up`"),
        (["{empty}/out", "--project", "1", "--url", "not-a-url", "--token", "t"], "--url must"),
    ],
    "fuse": [
        (["{missing}"], "is not a medcrowd dataset"),
        (["{empty}", "--method", "bogus"], "unknown method 'bogus'"),
    ],
    "push": [
        (["{missing}", *DOWN], "is not a medcrowd dataset"),
        (["{empty}"], "run `medcrowd up`"),
    ],
    "import": [
        (["{missing}", "--project", "1", *DOWN], "does not exist"),
        (["{file}", "--project", "1", *DOWN], NOT_ANSWERING),
        (["{file}", "--project", "1", "--every", "0", *DOWN], "Invalid value for '--every'"),
    ],
    "status": [
        (["--project", "1", *DOWN], NOT_ANSWERING),
        (["--project", "1"], "run `medcrowd up`"),
        (["--project", "1", "--url", "ftp://host/", "--token", "t"], "--url must be an http"),
        (["--project", "1", "--url", "http://127.0.0.1:99999", "--token", "t"], "bad port"),
        (["--project", "1", "--url", "http://elsewhere.example:8080"], "no API token for"),
    ],
    "gold add": [
        (["{missing}", "--project", "1", *DOWN], "is not a folder of masks"),
        (["{empty}", "--project", "1", *DOWN], NOT_ANSWERING),
    ],
    "volunteers add": [
        (["v@example.com", "--password", "Pass-word-1!", *DOWN], NOT_ANSWERING),
    ],
    "volunteers list": [(DOWN, NOT_ANSWERING), ([], "run `medcrowd up`")],
    "volunteers link": [(DOWN, NOT_ANSWERING)],
    "volunteers promote": [(["v@example.com", *DOWN], NOT_ANSWERING), ([], "Missing argument")],
    "volunteers demote": [(["v@example.com", *DOWN], NOT_ANSWERING)],
    "experts add": [
        (["e@example.com", "--password", "Pass-word-1!", *DOWN], NOT_ANSWERING),
    ],
    "version": [(["extra"], "unexpected extra argument")],
    "backend serve": [
        (["--host", "0.0.0.0"], "without authentication"),  # noqa: S104 - refused, never bound
        (["--predictor", "medsam", "--checkpoint", "{missing}"], "not found"),
    ],
    "synth train": [(["{missing}"], "is not a folder")],
    "synth generate": [(["{missing}"], "no trained model")],
    "export": [(["{missing}", "--out", "{empty}/export"], "is not a folder")],
    "train segmenter": [(["{missing}"], "is not a folder")],
    "train sqa": [(["{missing}"], "is not a folder")],
    "train clicks": [
        (["--data", "{missing}"], "not found"),
        (["--steps", "0"], "must be >= 1"),
        (["--start", "sideways"], "must be 'student' or 'stock'"),
    ],
    "evaluate": [
        (["{missing}"], "is not a folder"),
        (["{empty}", "--lr", "0"], "--lr must be > 0"),
        (["{empty}", "--threads", "-1"], "--threads must be >= 0"),
    ],
    "propagate": [
        (["{missing}", "--box", "1,1,5,5", "--index", "0"], "does not exist"),
        (["{empty}", "--box", "1,1,5,5", "--index", "0"], "holds no png/jpeg/tiff slices"),
        (["{file}", "--box", "1,1,5,5", "--index", "0"], "not a readable image"),
        (["{empty}", "--box", "1,1,5", "--index", "0"], "--box takes 4 numbers"),
        (["{empty}", "--box", "5,1,1,5", "--index", "0"], "x1 > x0"),
        (["{empty}", "--box", "a,b,c,d", "--index", "0"], "--box takes"),
    ],
    "select": [
        ([], "--project"),
        (["--project", "1", "--strategy", "random", *DOWN], NOT_ANSWERING),
    ],
}

OWNERS: dict[str, str] = {}
"""Commands whose failure is their owner's to fix: name → "owner: …" (the test is xfail, strict,
so it fails again once fixed and the entry must go)."""

BAD_TOKEN = ["status", "pull", "volunteers list"]
"""Commands tried with a bad token against the real Label Studio (each needs it: slow)."""


def _owned(name: str) -> Any:
    if name in OWNERS:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=OWNERS[name]))
    return name


def _cases() -> list[Any]:
    out = []
    for name, cases in sorted(CASES.items()):
        for i, (args, expected) in enumerate(cases):
            marks = [pytest.mark.xfail(strict=True, reason=OWNERS[name])] if name in OWNERS else []
            out.append(pytest.param(name, args, expected, id=f"{name}-{i}", marks=marks))
    return out


def problem_lines(output: str) -> list[str]:
    """The lines that state the problem: ``error: …`` lines, or the inside of the box that
    typer draws around a usage error."""
    lines = [line.strip() for line in output.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("╭─ Error")]
    if starts:
        inside = []
        for line in lines[starts[0] + 1 :]:
            if line.startswith("╰"):
                break
            inside.append(line.strip("│").strip())
        return [line for line in inside if line]
    return [line for line in lines if line.lower().startswith("error:")]


@pytest.fixture
def run(tmp_path: Path) -> Any:
    home = tmp_path / "home"
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file.txt").write_text("not an image\n")
    places = {
        "{missing}": str(tmp_path / "does-not-exist"),
        "{empty}": str(empty),
        "{file}": str(tmp_path / "file.txt"),
        "{down}": f"http://127.0.0.1:{free_port()}",
    }
    env = {
        "MEDCROWD_HOME": str(home),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "COLUMNS": "200",
        **dict.fromkeys(
            ["MEDCROWD_URL", "MEDCROWD_TOKEN", "MEDCROWD_LABEL_STUDIO_URL",
             "MEDCROWD_LABEL_STUDIO_TOKEN", "MEDCROWD_VOLUNTEER_PASSWORD",
             "MEDCROWD_DATABASE_URL", "MEDCROWD_BACKEND_USER", "MEDCROWD_BACKEND_PASSWORD"],
        ),
    }  # fmt: skip

    def invoke(args: list[str]) -> Any:
        filled = []
        for arg in args:
            for key, value in places.items():
                arg = arg.replace(key, value)
            filled.append(arg)
        return CliRunner().invoke(app, filled, env=env, catch_exceptions=False)

    return invoke


def assert_clean_failure(result: Any, expected: str) -> None:
    out = result.output
    assert result.exit_code != 0, out
    assert "Traceback" not in out, out
    lines = problem_lines(out)
    assert len(lines) == 1, f"want one line naming the problem, got {lines!r} in:\n{out}"
    assert expected.lower() in lines[0].lower(), f"{expected!r} not in {lines[0]!r}"


def test_every_command_has_bad_argument_cases() -> None:
    assert sorted(COMMANDS) == sorted(CASES), "add the new command's bad arguments to CASES"
    assert set(OWNERS) <= set(COMMANDS)


@pytest.mark.parametrize("name", [_owned(n) for n in WITH_REQUIRED])
def test_missing_required_arguments(name: str, run: Any) -> None:
    assert_clean_failure(run(name.split()), "missing")


@pytest.mark.parametrize("name", [_owned(n) for n in sorted(COMMANDS)])
def test_unknown_option(name: str, run: Any) -> None:
    assert_clean_failure(run([*name.split(), "--no-such-option"]), "no such option")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "args", "expected"), _cases())
def test_bad_arguments(name: str, args: list[str], expected: str, run: Any) -> None:
    assert_clean_failure(run([*name.split(), *args]), expected)


@pytest.mark.e2e
@pytest.mark.parametrize("name", BAD_TOKEN)
def test_bad_token_against_a_real_label_studio(
    name: str, run: Any, label_studio: StudioHandle, tmp_path: Path
) -> None:
    args = {"status": ["--project", "1"], "pull": [str(tmp_path / "out"), "--project", "1"]}
    url = label_studio.url.rstrip("/")
    result = run([*name.split(), *args.get(name, []), "--url", url, "--token", "0" * 40])
    assert_clean_failure(result, f"token rejected by {url}")
    assert not (tmp_path / "out").exists()  # nothing written before the token was checked
