"""fuse on a hand-built dataset: fused slices go back into their source volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medcrowd.dataset import AnnotationRecord, Dataset
from medcrowd.fuse import FuseOptions, fuse_dataset
from medcrowd.imaging import SliceMeta

SHAPE = (5, 12, 16)  # (Z, Y, X)
META = {"source": "/data/ct.nrrd", "axis": "axial", "shape": SHAPE,
        "spacing": (0.7, 0.8, 2.5), "origin": (-10.0, 20.0, 5.0),
        "direction": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        "modality": "CT", "window": "soft_tissue"}  # fmt: skip


def square(y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros(SHAPE[1:], bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def test_fused_slices_return_to_the_source_volume(tmp_path: Path) -> None:
    ds = Dataset(tmp_path)
    ds.init({"project": 1, "url": "http://ls"})
    truth = {10: (1, square(2, 3, 5)), 11: (3, square(4, 6, 4))}
    ann = 0
    for task, (index, mask) in truth.items():
        ds.write_task_meta(task, {**META, "index": index})
        noisy = [mask, mask, np.roll(mask, 3, axis=1)]  # two agree, one is off: majority wins
        for annotator, m in enumerate(noisy):
            ann += 1
            rel = ds.write_mask(task, ann, "2026-01-01", m)
            ds.append(AnnotationRecord(task=task, annotation=ann, annotator=annotator,
                                       annotator_email=None, gold=False,
                                       updated_at="2026-01-01", created_at=None,
                                       lead_time=None, was_cancelled=False, mask=rel))  # fmt: skip
    report = fuse_dataset(tmp_path, FuseOptions(method="majority"))
    assert report.tasks == 2 and report.volumes == 1
    image = sitk.ReadImage(str(tmp_path / "fused-majority" / "volumes" / "ct_axial.nii.gz"))
    volume = sitk.GetArrayFromImage(image)
    assert volume.shape == SHAPE
    for index, mask in truth.values():
        np.testing.assert_array_equal(volume[index], mask.astype(np.uint8))
    assert volume[[0, 2, 4]].sum() == 0
    expected = SliceMeta.from_dict({**META, "index": 0})
    np.testing.assert_allclose(image.GetSpacing(), expected.spacing)
    np.testing.assert_allclose(image.GetOrigin(), expected.origin)
    np.testing.assert_allclose(image.GetDirection(), expected.direction)
    assert (tmp_path / "fused-majority" / "report.png").stat().st_size > 0
