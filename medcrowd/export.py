"""``medcrowd export``: the enhanced dataset (real / fused + synthetic) for a segmenter.

Input: a dataset folder in any layout :func:`medcrowd.pairs.load_pairs` reads (pulled +
fused, plain pairs, ISBI, DRIVE, BU-BIL) plus any number of ``medcrowd synth generate``
outputs. Every pair keeps its own size; mask values become consecutive class ids 0..K
(0 = background).

Formats (``FORMATS``)::

    nnunet   OUT/Dataset<ID>_<NAME>/                   nnU-Net v2 raw dataset
               imagesTr/<case>_0000.png               one file per case (gray, or RGB in one
                                                      file: channel_names R, G, B)
               labelsTr/<case>.png                    uint8 class ids 0..K
               dataset.json                           channel_names, labels, numTraining,
                                                      file_ending ".png", and under "medcrowd"
                                                      which cases are synthetic
    nifti    OUT/images/<case>.nii.gz (gray, or 3-component vector pixels for RGB)
             OUT/labels/<case>.nii.gz (uint8 class ids)
    png      OUT/images/<case>.png, OUT/masks/<case>.png (class ids 0..K)

Every format also writes ``OUT/…/cases.csv`` (case, kind, source image, source mask) with kind
``real`` | ``fused`` | ``synthetic``. nnU-Net v2 reads 2-D PNG with its ``NaturalImage2DIO``
(chosen from ``file_ending``); hand it ``nnUNet_raw/Dataset<ID>_<NAME>``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from medcrowd.pairs import Pair
from medcrowd.synth import read_pairs

__all__ = ["FORMATS", "ExportOptions", "ExportReport", "export_dataset", "nnunet_problems"]

KINDS = {"expert": "real", "fused": "fused", "synthetic": "synthetic"}
"""``Pair.source`` → the kind written to cases.csv and case ids."""
CASE_RE = re.compile(r"^[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*$")
NNUNET_IMAGE_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\..+)$")


@dataclass
class ExportOptions:
    """Options of ``export_dataset``.

    Attributes:
        fmt: a key of ``FORMATS``.
        method: which ``fused-<method>`` masks to take from a pulled dataset.
        synthetic: ``synth generate`` output folders to add.
        invert_masks: the input dataset's binary masks have foreground 0 (ISBI ``label/``).
        dataset_id, name: nnU-Net's ``Dataset<ID>_<NAME>`` (IDs 500–999 are for users).
        label_names: names of classes 1..K for dataset.json (class 0 is always
            "background", as nnU-Net requires); default class_<k>.
    """

    fmt: str = "nnunet"
    method: str = "crowd-staple"
    synthetic: list[Path] = field(default_factory=list)
    invert_masks: bool = False
    dataset_id: int = 501
    name: str = "medcrowd"
    label_names: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    out: Path
    cases: int
    kinds: dict[str, int]


class _PngWriter:
    """images/<case>.png + masks/<case>.png."""

    def __init__(self, out: Path, options: ExportOptions) -> None:
        self.root = out
        self.images, self.labels = out / "images", out / "masks"

    def write(self, case: str, image: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> None:
        Image.fromarray(image).save(self.images / f"{case}.png")
        Image.fromarray(labels).save(self.labels / f"{case}.png")

    def finish(self, cases: list[dict[str, str]], classes: list[str], rgb: bool) -> None:
        return None


class _NiftiWriter(_PngWriter):
    """images/<case>.nii.gz + labels/<case>.nii.gz (SimpleITK)."""

    def __init__(self, out: Path, options: ExportOptions) -> None:
        super().__init__(out, options)
        self.labels = out / "labels"

    def write(self, case: str, image: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> None:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(image, isVector=image.ndim == 3)
        sitk.WriteImage(img, str(self.images / f"{case}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(self.labels / f"{case}.nii.gz"))


class _NnunetWriter(_PngWriter):
    """nnU-Net v2 raw dataset (see the module docstring)."""

    def __init__(self, out: Path, options: ExportOptions) -> None:
        if not 1 <= options.dataset_id <= 999:
            raise ValueError(f"nnU-Net dataset ids are 1..999, got {options.dataset_id}")
        if not re.fullmatch(r"[A-Za-z0-9-]+", options.name):
            raise ValueError(f"dataset name {options.name!r}: letters, digits and '-' only")
        root = out / f"Dataset{options.dataset_id:03d}_{options.name}"
        super().__init__(root, options)
        self.images, self.labels = root / "imagesTr", root / "labelsTr"

    def write(self, case: str, image: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> None:
        Image.fromarray(image).save(self.images / f"{case}_0000.png")
        Image.fromarray(labels).save(self.labels / f"{case}.png")

    def finish(self, cases: list[dict[str, str]], classes: list[str], rgb: bool) -> None:
        channels = {"0": "R", "1": "G", "2": "B"} if rgb else {"0": "image"}
        meta = {
            "channel_names": channels,
            "labels": {name: i for i, name in enumerate(classes)},
            "numTraining": len(cases),
            "file_ending": ".png",
            "name": self.root.name,
            "description": "exported by medcrowd: real/fused + synthetic (pix2pix) pairs",
            "medcrowd": {
                "synthetic": [c["case"] for c in cases if c["kind"] == "synthetic"],
                "kinds": {c["case"]: c["kind"] for c in cases},
            },
        }
        (self.root / "dataset.json").write_text(json.dumps(meta, indent=2))


FORMATS: dict[str, type[_PngWriter]] = {
    "nnunet": _NnunetWriter,
    "nifti": _NiftiWriter,
    "png": _PngWriter,
}


def _case_id(kind: str, name: str, taken: set[str]) -> str:
    base = f"{kind}_" + (re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "case")
    case, k = base, 1
    while case in taken:
        case, k = f"{base}-{k}", k + 1
    taken.add(case)
    return case


def export_dataset(
    dataset: Path,
    out: Path,
    options: ExportOptions,
    progress: Callable[[list[Any], int], Any] | None = None,
) -> ExportReport:
    """Write ``dataset`` (+ ``options.synthetic``) to ``out`` in ``options.fmt``."""
    if options.fmt not in FORMATS:
        raise ValueError(f"unknown format {options.fmt!r}; choose from {', '.join(FORMATS)}")
    pairs: list[Pair] = read_pairs(dataset, options.method, options.invert_masks)
    for folder in options.synthetic:
        pairs.extend(replace(p, source="synthetic") for p in read_pairs(folder))
    values = sorted({0} | {int(v) for p in pairs for v in np.unique(p.mask)})
    names = options.label_names or [f"class_{k}" for k in range(1, len(values))]
    if len(names) != len(values) - 1:
        raise ValueError(
            f"{len(names)} label names for {len(values) - 1} foreground classes (values {values})"
        )
    if "background" in names:
        raise ValueError("'background' is class 0's name; name only the foreground classes")
    classes = ["background", *names]
    rgb = any(p.image.ndim == 3 for p in pairs)
    lut = np.zeros(256, dtype=np.uint8)
    for i, v in enumerate(values):
        lut[v] = i
    writer = FORMATS[options.fmt](out, options)
    writer.images.mkdir(parents=True, exist_ok=True)
    writer.labels.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows = []
    items: Any = progress(pairs, len(pairs)) if progress else pairs
    for p in items:
        kind = KINDS[p.source]
        case = _case_id(kind, p.name, taken)
        image = p.image
        if rgb and image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        writer.write(case, image, lut[p.mask])
        rows.append(
            {
                "case": case,
                "kind": kind,
                "image": str(p.image_path),
                "mask": str(p.mask_path),
            }
        )
    writer.finish(rows, classes, rgb)
    with (writer.root / "cases.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case", "kind", "image", "mask"])
        w.writeheader()
        w.writerows(rows)
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    return ExportReport(writer.root, len(rows), kinds)


def nnunet_problems(root: Path) -> list[str]:
    """Check an nnU-Net v2 raw dataset folder against nnU-Net's naming rules.

    Checks: dataset folder named ``Dataset<3 digits>_<name>``; dataset.json has
    channel_names, labels (background 0, consecutive ids), numTraining, file_ending; every
    image is ``<case>_<4-digit channel>.<ending>`` with channels 0..C-1 for every case;
    every label is ``<case>.<ending>`` with a matching case and vice versa; numTraining
    equals the number of cases. Returns the problems found (empty = valid).
    """
    problems = []
    if not re.fullmatch(r"Dataset\d{3}_[A-Za-z0-9-]+", root.name):
        problems.append(f"folder name {root.name!r} is not Dataset<XXX>_<name>")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        return [*problems, "dataset.json missing"]
    meta = json.loads(meta_path.read_text())
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        if key not in meta:
            problems.append(f"dataset.json lacks {key!r}")
    if problems:
        return problems
    ending = meta["file_ending"]
    labels = meta["labels"]
    if labels.get("background") != 0 or sorted(labels.values()) != list(range(len(labels))):
        problems.append(f"labels must be background=0 and consecutive ids, got {labels}")
    n_channels = len(meta["channel_names"])
    image_cases: dict[str, set[int]] = {}
    for f in sorted((root / "imagesTr").iterdir()):
        m = NNUNET_IMAGE_RE.match(f.name)
        if m is None or m["ending"] != ending:
            problems.append(f"imagesTr/{f.name} is not <case>_XXXX{ending}")
            continue
        image_cases.setdefault(m["case"], set()).add(int(m["channel"]))
    label_cases = set()
    for f in sorted((root / "labelsTr").iterdir()):
        if not f.name.endswith(ending):
            problems.append(f"labelsTr/{f.name} does not end in {ending}")
            continue
        label_cases.add(f.name[: -len(ending)])
    # RGB PNG: nnU-Net's NaturalImage2DIO reads the three channels from one _0000 file
    expected = {0} if ending == ".png" else set(range(n_channels))
    for case, channels in image_cases.items():
        if channels != expected:
            problems.append(f"case {case} has channels {sorted(channels)}, want {expected}")
    if set(image_cases) != label_cases:
        odd = sorted(set(image_cases) ^ label_cases)[:5]
        problems.append(f"images and labels disagree on cases, e.g. {odd}")
    if meta["numTraining"] != len(label_cases):
        problems.append(f"numTraining {meta['numTraining']} != {len(label_cases)} cases")
    return problems
