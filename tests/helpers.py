"""Helpers shared by tests and benchmarks: real-data loaders, boxes, Dice, LS contexts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class OrganMask:
    image_path: Path
    mask_path: Path
    structure: str

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(Image.open(self.image_path).convert("RGB"))
        mask = np.asarray(Image.open(self.mask_path)) > 0
        return image, mask


def sammed2d_masks(root: Path) -> list[OrganMask]:
    """All 30 SAM-Med2D demo masks with their image (README: <stem>_<structure>_<i>.png)."""
    demo = root / "sammed2d_demo"
    stems = sorted(p.stem for p in (demo / "images").glob("*.png"))
    out = []
    for mask_path in sorted((demo / "masks").glob("*.png")):
        stem = next(s for s in stems if mask_path.stem.startswith(s + "_"))
        structure = mask_path.stem[len(stem) + 1 :]
        out.append(OrganMask(demo / "images" / f"{stem}.png", mask_path, structure))
    return out


def tight_box(mask: np.ndarray) -> list[float]:
    """XYXY pixel box around a mask: x1/y1 are one past the last foreground column/row."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * inter / total)


def box_context(box: list[float], width: int, height: int, label: str = "Organ") -> dict:
    x0, y0, x1, y1 = box
    return {
        "result": [
            {
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "from_name": "box",
                "to_name": "image",
                "type": "rectanglelabels",
                "value": {
                    "x": 100.0 * x0 / width,
                    "y": 100.0 * y0 / height,
                    "width": 100.0 * (x1 - x0) / width,
                    "height": 100.0 * (y1 - y0) / height,
                    "rotation": 0,
                    "rectanglelabels": [label],
                },
            }
        ]
    }
