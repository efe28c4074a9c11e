from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcrowd.export import ExportOptions, export_dataset, nnunet_problems
from medcrowd.synth import SynthOptions, generate_synth, train_synth


@pytest.fixture
def synthetic_dir(tmp_path: Path, pairs_dir: Path) -> Path:
    opts = SynthOptions(size=64, steps=1, ngf=8, ndf=8, device="cpu", quality=False)
    train_synth(pairs_dir, tmp_path / "run", opts)
    generate_synth(tmp_path / "run", tmp_path / "syn", 3, device="cpu")
    return tmp_path / "syn"


def test_nnunet_layout(tmp_path: Path, pairs_dir: Path, synthetic_dir: Path):
    options = ExportOptions(fmt="nnunet", synthetic=[synthetic_dir], dataset_id=777, name="Blobs")
    report = export_dataset(pairs_dir, tmp_path / "raw", options)
    root = tmp_path / "raw" / "Dataset777_Blobs"
    assert report.out == root and report.cases == 9
    assert report.kinds == {"real": 6, "synthetic": 3}
    assert nnunet_problems(root) == []
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "image"}
    assert meta["labels"] == {"background": 0, "class_1": 1}
    assert meta["numTraining"] == 9 and meta["file_ending"] == ".png"
    assert meta["medcrowd"]["synthetic"] == [f"synthetic_syn-{k:05d}" for k in range(3)]
    names = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert names[0] == "real_case0_0000.png"
    label = np.asarray(Image.open(root / "labelsTr" / "real_case0.png"))
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    with (root / "cases.csv").open() as fh:
        assert {r["kind"] for r in csv.DictReader(fh)} == {"real", "synthetic"}


def test_nnunet_rgb_fused(tmp_path: Path, fused_dir: Path):
    report = export_dataset(fused_dir, tmp_path / "raw", ExportOptions(label_names=["vessel"]))
    assert nnunet_problems(report.out) == []
    meta = json.loads((report.out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert meta["labels"] == {"background": 0, "vessel": 1}
    img = np.asarray(Image.open(report.out / "imagesTr" / "fused_task-10_0000.png"))
    assert img.shape == (64, 64, 3)


def test_nnunet_checker_catches_bad_names(tmp_path: Path, pairs_dir: Path):
    report = export_dataset(pairs_dir, tmp_path / "raw", ExportOptions())
    (report.out / "imagesTr" / "real_case0_0000.png").rename(report.out / "imagesTr" / "x_0.png")
    problems = nnunet_problems(report.out)
    assert any("x_0.png" in p for p in problems)
    assert any("disagree" in p for p in problems)


@pytest.mark.parametrize(("fmt", "image", "label"), [
    ("png", "images/real_case0.png", "masks/real_case0.png"),
    ("nifti", "images/real_case0.nii.gz", "labels/real_case0.nii.gz"),
])  # fmt: skip
def test_png_and_nifti(tmp_path: Path, pairs_dir: Path, fmt: str, image: str, label: str):
    report = export_dataset(pairs_dir, tmp_path / fmt, ExportOptions(fmt=fmt))
    assert (report.out / image).is_file() and (report.out / label).is_file()
    assert report.cases == 6 and (report.out / "cases.csv").is_file()
    if fmt == "nifti":
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(report.out / label)))
        assert arr.shape == (64, 64) and set(np.unique(arr)) == {0, 1}


def test_bad_options(tmp_path: Path, pairs_dir: Path):
    with pytest.raises(ValueError, match="unknown format"):
        export_dataset(pairs_dir, tmp_path, ExportOptions(fmt="dicom"))
    with pytest.raises(ValueError, match="label names"):
        export_dataset(pairs_dir, tmp_path, ExportOptions(label_names=["a", "b"]))
    with pytest.raises(ValueError, match="letters"):
        export_dataset(pairs_dir, tmp_path, replace(ExportOptions(), name="bad name"))
