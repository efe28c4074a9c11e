"""ruff and mypy run as part of the test command, so lint and types cannot rot."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

LINTED = ["medcrowd", "ml_backend", "fusion", "gan", "segmenter", "tests", "benchmarks", "scripts"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (pip install .[test])")
def test_ruff_lint() -> None:
    paths = [p for p in LINTED if (REPO / p).exists()]
    result = _run("ruff", "check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (pip install .[test])")
def test_ruff_format() -> None:
    paths = [p for p in LINTED if (REPO / p).exists()]
    result = _run("ruff", "format", "--check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_engines_and_app() -> None:
    pytest.importorskip("mypy")
    result = _run(sys.executable, "-m", "mypy")  # files and settings: pyproject [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr


def _pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=full,
    )


def test_ci_without_shared_data_fails_the_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "absent"
    result = _pytest(
        "tests/test_architecture.py", env={"CI": "true", "MEDCROWD_SHARED_DATA": str(missing)}
    )
    assert result.returncode != 0
    assert "does not exist" in result.stdout + result.stderr


def test_ci_turns_a_missing_data_skip_into_a_failure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the folder exists but holds none of the data sets: the accuracy test would skip
    target = "tests/segmenter/test_real_data.py"
    local = _pytest(target, env={"CI": "", "MEDCROWD_SHARED_DATA": str(tmp_path)})
    ci = _pytest(target, env={"CI": "true", "MEDCROWD_SHARED_DATA": str(tmp_path)})
    assert local.returncode == 0 and "skipped" in local.stdout, local.stdout
    assert ci.returncode == 1 and "failed" in ci.stdout, ci.stdout
