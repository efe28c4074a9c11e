"""3-D propagation for real: a volunteer submits one slice of an imported volume in Label
Studio → Label Studio's webhook → our backend proposes masks on the neighbouring slices'
tasks, and ``medcrowd status`` tells which proposals were submitted untouched or edited; and
``medcrowd propagate``'s offline writer on the same volume.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.metrics import dice
from medcrowd.imaging import read_volume
from medcrowd.importer import ImportOptions, import_path
from medcrowd.propagate import propagate_to_folder
from medcrowd.settings import config_path
from medcrowd.status import project_status
from medcrowd.studio import Studio
from ml_backend.labeling import PROPAGATED_PREFIX, brush_result
from ml_backend.rle import rle_to_mask
from tests.helpers import BackendHandle, StudioHandle, tight_box

pytestmark = pytest.mark.e2e


def _spleen(shared_data: Path) -> tuple[Path, np.ndarray]:
    folder = shared_data / "msd_spleen_ct"
    label = read_volume(folder / "spleen2_label.nii.gz").array > 0
    return folder / "spleen2_ct.nii.gz", label


@pytest.mark.timeout(1800)  # 17 slice embeddings on a busy 2-core machine
def test_a_submitted_slice_is_proposed_on_its_neighbours(
    label_studio: StudioHandle, backend: BackendHandle, shared_data: Path
) -> None:
    ct, truth = _spleen(shared_data)
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.ensure_project(
        f"e2e propagate {uuid.uuid4().hex[:8]}", config_path("labeling_box_brush.xml").read_text()
    )
    studio.connect_backend(project_id, backend.url, backend.auth)
    summary = import_path(
        studio, project_id, ct, ImportOptions(window="soft_tissue", modality="CT")
    )
    assert summary.created == truth.shape[0]
    tasks = {
        int(t.data["medcrowd"]["index"]): t
        for t in studio.client.tasks.list(project=project_id, fields="all")
    }
    engine = backend.app.state.engine
    before = len(engine.propagations)
    middle = 12
    height, width = truth.shape[1:]
    region = brush_result(truth[middle], "Organ")
    studio.create_annotation(int(tasks[middle].id), [region])  # the volunteer submits
    deadline = time.monotonic() + 1200
    while len(engine.propagations) == before and time.monotonic() < deadline:
        time.sleep(1.0)
    assert len(engine.propagations) > before, "Label Studio's webhook did not propagate"
    record = engine.propagations[-1]
    assert record["task"] == tasks[middle].id and record["index"] == middle
    proposed = record["proposed_slices"]
    assert proposed, record
    assert middle not in proposed
    assert set(proposed) <= set(range(middle - 8, middle + 9))
    # the proposals are predictions on those slices' tasks, and they are the spleen
    scores = {}
    for z in proposed:
        predictions = [
            p for p in studio.predictions(int(tasks[z].id))
            if p.model_version.startswith("propagated-")
        ]  # fmt: skip
        assert len(predictions) == 1, (z, predictions)
        brush = predictions[0].result[0]
        assert brush["type"] == "brushlabels" and brush["value"]["brushlabels"] == ["Organ"]
        scores[z] = dice(rle_to_mask(brush["value"]["rle"], height, width), truth[z])
    print("\nproposed slice Dice:", {z: round(d, 3) for z, d in sorted(scores.items())})
    assert float(np.mean(list(scores.values()))) >= 0.85, scores
    # submitting again replaces the proposals instead of piling them up
    studio.create_annotation(int(tasks[middle].id), [region])
    deadline = time.monotonic() + 1200
    while len(engine.propagations) < before + 2 and time.monotonic() < deadline:
        time.sleep(1.0)
    z = proposed[0]
    again = [
        p for p in studio.predictions(int(tasks[z].id)) if p.model_version.startswith("propagated-")
    ]
    assert len(again) == 1
    # which proposals volunteers kept: one slice submitted untouched, one edited. No new
    # proposals meanwhile (a submit on a proposed slice would propagate from it in the
    # background and replace its neighbours' proposals under the comparison).
    assert len(proposed) >= 2
    kept_slices, engine.propagate_slices = engine.propagate_slices, 0
    try:
        z_keep, z_edit = proposed[0], proposed[-1]
        untouched = next(
            p for p in studio.predictions(int(tasks[z_keep].id))
            if p.model_version.startswith(PROPAGATED_PREFIX)
        ).result  # fmt: skip
        studio.create_annotation(int(tasks[z_keep].id), untouched)
        studio.create_annotation(int(tasks[z_edit].id), [brush_result(truth[z_edit], "Organ")])
        review = project_status(studio, project_id)["proposals"]
    finally:
        engine.propagate_slices = kept_slices
    assert review["proposed"] == len(proposed)
    assert (review["reviewed"], review["accepted"], review["edited"]) == (2, 1, 1), review
    by_index = {row["index"]: row for row in review["slices"]}
    assert by_index[z_keep]["annotations"][0]["accepted"]
    (edited,) = by_index[z_edit]["annotations"]
    assert not edited["accepted"] and edited["dice"] == pytest.approx(scores[z_edit], abs=1e-3)


def test_offline_propagation_writes_masks_geometry_and_record(
    litemedsam: Any, shared_data: Path, tmp_path: Path
) -> None:
    ct, truth = _spleen(shared_data)
    middle = 12
    summary = propagate_to_folder(
        ct, tight_box(truth[middle]), middle, tmp_path, window="soft_tissue", modality="CT",
        predictor=litemedsam,
    )  # fmt: skip
    record = json.loads((tmp_path / "propagation.json").read_text())
    assert record["proposed"] == summary.proposed
    assert len(list((tmp_path / "masks").glob("*.png"))) == len(summary.proposed)
    written = sitk.ReadImage(str(tmp_path / "mask.nii.gz"))
    source = sitk.ReadImage(str(ct))
    assert written.GetSize() == source.GetSize()
    assert written.GetSpacing() == pytest.approx(source.GetSpacing())
    assert written.GetOrigin() == pytest.approx(source.GetOrigin())
    volume = sitk.GetArrayFromImage(written) > 0
    assert dice(volume, truth) >= 0.90
    assert len(summary.stop_reasons) == 2
