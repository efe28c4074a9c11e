"""The pulled dataset's manifest survives a kill at any point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcrowd.dataset import AnnotationRecord, Dataset


def record(ann: int, updated: str = "2026-01-01T00:00:00Z", mask: str | None = None):
    return AnnotationRecord(task=1, annotation=ann, annotator=7, annotator_email="v@x",
                            gold=False, updated_at=updated, created_at=None, lead_time=1.0,
                            was_cancelled=False, mask=mask)  # fmt: skip


def test_torn_last_line_is_ignored_then_repaired(tmp_path: Path) -> None:
    ds = Dataset(tmp_path)
    ds.init({"project": 1, "url": "http://ls"})
    ds.append(record(1))
    with ds.manifest_path.open("a") as fh:
        fh.write('{"task": 1, "annot')  # a pull killed mid-write
    assert [r.annotation for r in ds.records()] == [1]
    ds.append(record(2))
    assert [r.annotation for r in ds.records()] == [1, 2]
    assert ds.manifest_path.read_text().count("\n") == 2


def test_edited_annotation_supersedes_but_keeps_history(tmp_path: Path) -> None:
    ds = Dataset(tmp_path)
    ds.init({"project": 1, "url": "http://ls"})
    m1 = ds.write_mask(1, 5, "2026-01-01", np.eye(4, dtype=bool))
    m2 = ds.write_mask(1, 5, "2026-02-01", np.ones((4, 4), bool))
    assert m1 != m2
    ds.append(record(5, "2026-01-01", m1))
    ds.append(record(5, "2026-02-01", m2))
    assert len(ds.records()) == 2
    (latest,) = ds.latest()
    assert latest.mask == m2
    assert ds.load_mask(m2).all() and ds.load_mask(m1).sum() == 4


def test_other_project_refused(tmp_path: Path) -> None:
    Dataset(tmp_path).init({"project": 1, "url": "http://ls"})
    with pytest.raises(ValueError, match="holds project 1"):
        Dataset(tmp_path).init({"project": 2, "url": "http://ls"})
