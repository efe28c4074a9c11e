"""``medcrowd import`` into a real Label Studio: volumes, DICOM, bad files, idempotence."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import SimpleITK as sitk

from medcrowd.imaging import SliceMeta, mask_to_volume
from medcrowd.studio import Studio
from tests.helpers import StudioHandle, em_volume, write_volume

pytestmark = pytest.mark.e2e


def test_import_volume_dicom_and_bad_file(
    label_studio: StudioHandle, shared_data: Path, tmp_path: Path
) -> None:
    images, labels = em_volume(shared_data, n=6)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_volume(images, inputs / "em.nrrd")
    ct = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
    (inputs / "ct.dcm").write_bytes(ct.read_bytes())
    (inputs / "broken.nii.gz").write_bytes(b"definitely not a volume")
    title = f"import {uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token,
           "COLUMNS": "200"}  # fmt: skip
    cmd = [sys.executable, "-m", "medcrowd", "import", str(inputs), "--project", title,
           "--every", "2", "--modality", "CT", "--window", "soft_tissue"]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 tasks created" in first.stdout  # slices 0, 2, 4 of the volume + the CT slice
    assert "1 unreadable" in first.stdout and "broken.nii.gz" in first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert "0 tasks created, 4 already there" in again.stdout, again.stdout
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.find_project(title)
    assert project_id is not None
    tasks = list(studio.client.tasks.list(project=project_id, fields="all"))
    assert len(tasks) == 4
    metas = {t.id: SliceMeta.from_dict(t.data["medcrowd"]) for t in tasks}
    em_tasks = {m.index: tid for tid, m in metas.items() if m.source.endswith("em.nrrd")}
    assert sorted(em_tasks) == [0, 2, 4]
    # Geometry round trip through Label Studio: slice 4's mask lands on slice 4 of the volume.
    meta = metas[em_tasks[4]]
    back = sitk.GetArrayFromImage(mask_to_volume(labels[4], meta))
    np.testing.assert_array_equal(back[4], labels[4])
    assert back.sum() == labels[4].sum()
    src = sitk.ReadImage(str(inputs / "em.nrrd"))
    assert mask_to_volume(labels[4], meta).TransformIndexToPhysicalPoint(
        (10, 20, 4)
    ) == pytest.approx(src.TransformIndexToPhysicalPoint((10, 20, 4)))


def test_pull_and_fuse_rebuild_the_volume(
    label_studio: StudioHandle, shared_data: Path, tmp_path: Path
) -> None:
    """import → annotate a slice → pull → fuse: the mask lands in the source volume."""
    from ml_backend.labeling import brush_result

    images, labels = em_volume(shared_data, n=4)
    write_volume(images, tmp_path / "em.nrrd")
    title = f"rebuild {uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token}

    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "medcrowd", *args], capture_output=True,
                              text=True, env=env, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    cli("import", str(tmp_path / "em.nrrd"), "--project", title, "--modality", "CT")
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.find_project(title)
    assert project_id is not None
    for task in studio.client.tasks.list(project=project_id, fields="all"):
        if SliceMeta.from_dict(task.data["medcrowd"]).index == 2:
            studio.client.annotations.create(
                int(task.id), result=[brush_result(labels[2], "Organ")]
            )
    out = tmp_path / "ds"
    cli("pull", str(out), "--project", title)
    assert "1 source volume(s) rebuilt" in cli("fuse", str(out), "--method", "majority")
    rebuilt = sitk.ReadImage(str(out / "fused-majority" / "volumes" / "em_axial.nii.gz"))
    arr = sitk.GetArrayFromImage(rebuilt)
    np.testing.assert_array_equal(arr[2], labels[2])
    assert arr.sum() == labels[2].sum()
    src = sitk.ReadImage(str(tmp_path / "em.nrrd"))
    np.testing.assert_allclose(rebuilt.GetDirection(), src.GetDirection())
    np.testing.assert_allclose(rebuilt.GetOrigin(), src.GetOrigin())
