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
