"""Fixtures for the fusion tests: the shared real data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared_data() -> Path:
    return Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def drive_test_dir() -> Path:
    """``<shared data>/drive/test`` (DRIVE test set, two expert raters); skips if absent."""
    path = _shared_data() / "drive" / "test"
    if not (path / "manual1").is_dir() or not (path / "manual2").is_dir():
        pytest.skip(f"DRIVE test data not found at {path} (set MEDCROWD_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def load_drive_pair(drive_test_dir: Path):  # type: ignore[no-untyped-def]
    """Function ``image_id -> (manual1, manual2)`` as (584, 565) bool arrays."""
    image_mod = pytest.importorskip("PIL.Image")

    def load(image_id: int) -> tuple[np.ndarray, np.ndarray]:
        m1 = np.array(image_mod.open(drive_test_dir / "manual1" / f"{image_id:02d}_manual1.gif"))
        m2 = np.array(image_mod.open(drive_test_dir / "manual2" / f"{image_id:02d}_manual2.gif"))
        return m1 > 0, m2 > 0

    return load


@pytest.fixture(scope="session")
def shared_data_isbi() -> list[np.ndarray]:
    """The first 30 ISBI 2012 membrane masks (``label == 0``), (512, 512) bool, in the
    order of ``benchmarks/fusion_accuracy.py``; skips if absent."""
    image_mod = pytest.importorskip("PIL.Image")
    folder = _shared_data() / "isbi2012_em" / "train" / "label"
    if not folder.is_dir():
        pytest.skip(f"ISBI 2012 labels not found at {folder} (set MEDCROWD_SHARED_DATA)")
    files = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:30]
    return [np.array(image_mod.open(p)) == 0 for p in files]
