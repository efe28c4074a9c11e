"""New label maps by elastic + affine deformation of real ones, with topology checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["DeformedMaskGenerator", "topology_problem"]

LabelMaps = npt.NDArray[np.integer[Any]]


def topology_problem(
    mask: LabelMaps,
    reference: LabelMaps,
    component_ratio: tuple[float, float],
    min_fraction: float,
) -> str | None:
    """Why ``mask`` is not a valid variant of ``reference``, or None when it is.

    Args:
        mask, reference: (H, W) integer class ids, 0 = background.
        component_ratio: each class present in ``reference`` with n connected components
            (8-connectivity) must have between floor(lo·n) (at least 1) and ceil(hi·n) in
            ``mask``.
        min_fraction: each such class must cover at least this fraction of the
            reference's area for that class (no vanishing or empty classes).
    """
    structure = np.ones((3, 3), dtype=bool)
    for cls in np.unique(reference):
        if cls == 0:
            continue
        ref = reference == cls
        new = mask == cls
        if new.sum() < min_fraction * ref.sum() or not new.any():
            return f"class {int(cls)} shrank to {int(new.sum())} of {int(ref.sum())} pixels"
        n_ref = ndimage.label(ref, structure)[1]
        n_new = ndimage.label(new, structure)[1]
        lo = max(1, int(np.floor(component_ratio[0] * n_ref)))
        hi = max(lo, int(np.ceil(component_ratio[1] * n_ref)))
        if not lo <= n_new <= hi:
            return f"class {int(cls)} has {n_new} components, allowed {lo}..{hi}"
    return None


@dataclass
class DeformedMaskGenerator:
    """Sample new label maps by deforming real ones: random affine + smooth elastic field.

    Steps, per new mask:
    1. pick a source mask uniformly;
    2. draw an affine map (rotation, isotropic scale, shear, translation, optional flips)
       about the image centre, and an elastic displacement field: white noise per axis,
       Gaussian-smoothed with ``elastic_sigma`` px, scaled to ``elastic_alpha`` px RMS;
    3. resample the label map through both with nearest-neighbour (labels stay labels),
       reflecting at the border;
    4. keep it if ``topology_problem`` finds nothing (no empty or vanishing classes,
       component counts within ``component_ratio`` of the source), else redraw, up to
       ``max_tries`` times; a source that never passes is dropped (``dropped_`` lists
       them) and another source is drawn; ``RuntimeError`` only when every source fails.

    Elastic deformation after P. Y. Simard, D. Steinkraus, J. C. Platt, "Best practices for
    convolutional neural networks applied to visual document analysis", ICDAR 2003.
    https://doi.org/10.1109/ICDAR.2003.1227801

    Attributes are the hyperparameters below; nothing is fitted.

    Example:
        >>> masks = np.zeros((1, 64, 64), np.uint8); masks[0, 20:44, 20:44] = 1
        >>> new, src = DeformedMaskGenerator().sample(masks, 3, seed=0)
        >>> new.shape, src.tolist()
        ((3, 64, 64), [0, 0, 0])
    """

    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear_deg: float = 5.0
    translate: float = 0.05
    """Maximum shift as a fraction of the side."""
    flip: bool = True
    elastic_alpha: float = 4.0
    """RMS displacement of the elastic field in pixels (at the mask's own size)."""
    elastic_sigma: float = 12.0
    component_ratio: tuple[float, float] = (0.5, 2.0)
    min_fraction: float = 0.5
    max_tries: int = 20
    dropped_: list[int] = field(default_factory=list, init=False, repr=False)
    """Source masks the last ``sample`` dropped (none of their deformations passed)."""

    def sample(
        self, masks: LabelMaps, n: int, seed: int = 0
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """Draw ``n`` new masks.

        Args:
            masks: (N, H, W) integer class ids (0 = background, < 256), the real masks.
            n: how many to draw.
            seed: seeds every random choice; same inputs + seed → same outputs.

        Returns:
            (n, H, W) uint8 new label maps, and (n,) int64 index of each one's source mask.
        """
        masks = np.asarray(masks)
        if masks.ndim != 3 or len(masks) == 0:
            raise ValueError(f"masks must be a non-empty (N, H, W) array, got {masks.shape}")
        if masks.min() < 0 or masks.max() > 255:
            raise ValueError("class ids must lie in 0..255")
        usable = [i for i in range(len(masks)) if masks[i].any()]
        if not usable:
            raise ValueError("every source mask is empty")
        rng = np.random.default_rng(seed)
        out = np.zeros((n, *masks.shape[1:]), dtype=np.uint8)
        sources = np.zeros(n, dtype=np.int64)
        failed: dict[int, str] = {}
        for k in range(n):
            while True:
                if not usable:
                    reasons = "; ".join(f"mask {i}: {why}" for i, why in sorted(failed.items()))
                    raise RuntimeError(f"no source mask deforms validly ({reasons})")
                src = int(rng.choice(usable))
                try:
                    out[k] = self._one(masks[src], rng)
                except RuntimeError as exc:  # this source cannot keep its topology: drop it
                    failed[src] = str(exc)
                    usable.remove(src)
                    continue
                sources[k] = src
                break
        self.dropped_ = sorted(failed)
        return out, sources

    def _one(self, mask: LabelMaps, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
        problem = None
        for _ in range(self.max_tries):
            new = _warp(mask, self._coordinates(mask.shape, rng))
            problem = topology_problem(new, mask, self.component_ratio, self.min_fraction)
            if problem is None:
                return new
        raise RuntimeError(f"no valid deformation in {self.max_tries} tries: {problem}")

    def _coordinates(
        self, shape: tuple[int, ...], rng: np.random.Generator
    ) -> npt.NDArray[np.float64]:
        h, w = shape
        yy, xx = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
        cy, cx = (h - 1) / 2, (w - 1) / 2
        angle = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg))
        shear = np.deg2rad(rng.uniform(-self.shear_deg, self.shear_deg))
        s = rng.uniform(*self.scale)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shr = np.array([[1.0, np.tan(shear)], [0.0, 1.0]])
        flips = np.diag(
            [rng.choice([-1.0, 1.0]) if self.flip else 1.0 for _ in range(2)]
        )  # fmt: skip
        # inverse map: output pixel → source pixel
        inv = np.linalg.inv(rot @ shr @ flips * s)
        shift = rng.uniform(-self.translate, self.translate, size=2) * np.array([h, w])
        dy, dx = yy - cy - shift[0], xx - cx - shift[1]
        src_y = inv[0, 0] * dy + inv[0, 1] * dx + cy
        src_x = inv[1, 0] * dy + inv[1, 1] * dx + cx
        if self.elastic_alpha > 0:
            for coord in (src_y, src_x):
                field = ndimage.gaussian_filter(rng.standard_normal((h, w)), self.elastic_sigma)
                rms = float(np.sqrt(np.mean(field**2))) or 1.0
                coord += field * (self.elastic_alpha / rms)
        return np.stack([src_y, src_x])


def _warp(mask: LabelMaps, coords: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    warped = ndimage.map_coordinates(mask.astype(np.uint8), coords, order=0, mode="reflect")
    return np.asarray(warped, dtype=np.uint8)
