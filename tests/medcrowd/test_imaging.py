"""Reading, windowing and slicing medical images, and putting masks back into volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medcrowd.imaging import (
    SliceMeta,
    find_inputs,
    mask_to_volume,
    read_volume,
    slice_volume,
    window_to_uint8,
)
from tests.helpers import (
    VOLUME_DIRECTION,
    VOLUME_ORIGIN,
    VOLUME_SPACING,
    em_volume,
    write_volume,
)

SPACING, ORIGIN, DIRECTION = VOLUME_SPACING, VOLUME_ORIGIN, VOLUME_DIRECTION


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_volume_geometry_round_trip(shared_data: Path, tmp_path: Path, suffix: str) -> None:
    images, labels = em_volume(shared_data)
    path = tmp_path / f"em{suffix}"
    write_volume(images, path)
    vol = read_volume(path)
    assert vol.array.shape == images.shape
    np.testing.assert_allclose(vol.spacing, SPACING)
    np.testing.assert_allclose(vol.origin, ORIGIN)
    np.testing.assert_allclose(vol.direction, DIRECTION)
    slices = list(slice_volume(vol, "axial", every=2, modality="CT", preset="soft_tissue"))
    assert [meta.index for _, meta in slices] == [0, 2, 4]
    # A volunteer's mask for slice 4 goes back to slice 4 of a volume with the same geometry.
    _, meta = slices[2]
    meta = SliceMeta.from_dict(meta.to_dict())  # as stored in, and read back from, the task
    back = mask_to_volume(labels[4], meta)
    arr = sitk.GetArrayFromImage(back)
    np.testing.assert_array_equal(arr[4], labels[4].astype(np.uint8))
    assert arr[[0, 1, 2, 3, 5]].sum() == 0
    np.testing.assert_allclose(back.GetSpacing(), SPACING)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN)
    np.testing.assert_allclose(back.GetDirection(), DIRECTION)
    # The same physical point: index (x=3, y=7, z=4) maps to the same mm in both images.
    src = sitk.ReadImage(str(path))
    assert src.TransformIndexToPhysicalPoint((3, 7, 4)) == pytest.approx(
        back.TransformIndexToPhysicalPoint((3, 7, 4))
    )


def test_coronal_and_sagittal_slices(shared_data: Path, tmp_path: Path) -> None:
    images, _ = em_volume(shared_data, n=4)
    path = tmp_path / "em.nrrd"
    write_volume(images, path)
    vol = read_volume(path)
    cor = list(slice_volume(vol, "coronal", every=256))
    assert [m.index for _, m in cor] == [0, 256] and cor[0][0].shape == (4, 512)
    sag = next(iter(slice_volume(vol, "sagittal", every=512)))
    assert sag[0].shape == (4, 512)
    mask = np.ones((4, 512), bool)
    arr = sitk.GetArrayFromImage(mask_to_volume(mask, cor[1][1]))
    assert arr[:, 256, :].all() and arr.sum() == 4 * 512


def test_content_only_skips_blank_slices(tmp_path: Path) -> None:
    vol = np.zeros((5, 16, 16), np.int16)
    vol[2, 4:10, 4:10] = 300
    path = tmp_path / "blank.nii.gz"
    write_volume(vol, path)
    kept = list(slice_volume(read_volume(path), content_only=True, modality="CT"))
    assert [m.index for _, m in kept] == [2]


def test_ct_window_and_percentile() -> None:
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]])
    out = window_to_uint8(hu, "CT", "soft_tissue")  # W400 L40 → [-160, 240]
    assert out.tolist() == [[0, 0, 128, 255, 255]]
    mr = np.linspace(0, 1000, 1001).reshape(1, -1)
    pct = window_to_uint8(mr, "MR")
    assert pct.min() == 0 and pct.max() == 255
    with pytest.raises(ValueError, match="unknown CT window"):
        window_to_uint8(hu, "CT", "liver")


def test_pydicom_bundled_ct_reads_in_hounsfield() -> None:
    import pydicom.data

    path = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
    vol = read_volume(path)
    assert vol.modality == "CT" and vol.array.shape == (1, 128, 128)
    assert vol.array.min() < 0  # rescale intercept applied: air/fat are negative HU
    ((image, meta),) = slice_volume(vol)
    assert image.dtype == np.uint8 and meta.window == "soft_tissue"


def test_sixteen_bit_png(tmp_path: Path) -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    vol = read_volume(path)
    assert vol.array.max() == 63000
    ((image, meta),) = slice_volume(vol)
    assert image.shape == (8, 8) and meta.window == "percentile"


def test_unreadable_files_raise_value_error(tmp_path: Path) -> None:
    for name, data in (("bad.nii.gz", b"not gz"), ("bad.dcm", b"DICM?"), ("bad.png", b"x")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="not a readable image"):
            read_volume(tmp_path / name)


def test_find_inputs_groups_a_dicom_series(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    image = sitk.GetImageFromArray(np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8))
    image.SetSpacing((0.5, 0.5, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(3):
        s = image[:, :, z]
        s.SetMetaData("0008|0060", "CT")
        s.SetMetaData("0020|0013", str(z + 1))
        s.SetMetaData("0020|0032", f"0\\0\\{3.0 * z}")
        s.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        s.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.2")
        writer.SetFileName(str(series / f"{z}.dcm"))
        writer.Execute(s)
    (tmp_path / "other.png").write_bytes(b"x")
    inputs = find_inputs(tmp_path)
    assert series in inputs and tmp_path / "other.png" in inputs
    vol = read_volume(series)
    assert vol.array.shape == (3, 8, 8) and vol.modality == "CT"
    assert vol.spacing[2] == pytest.approx(3.0)


def test_window_presets_agree_with_the_backend() -> None:
    """configs/windows.yaml (importer) and the backend's CT_WINDOWS must not drift apart."""
    from medcrowd.imaging import window_presets
    from ml_backend.preprocessing import CT_WINDOWS

    yaml_ct = {k: (v["width"], v["level"]) for k, v in window_presets()["ct"].items()}
    assert yaml_ct == CT_WINDOWS
