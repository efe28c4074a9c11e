"""Seeded simulated-annotator models: turn one expert mask into a crowd's masks.

Every model is a pure function ``model(expert, rng) -> mask`` on a 2D (H, W) or 3D
(D, H, W) bool expert mask, using only numpy and scipy.ndimage; the randomness comes from
the ``numpy.random.Generator`` passed in, so a crowd is reproducible from one seed.

Models (``ANNOTATOR_MODELS``):

* ``good``: small boundary noise — the signed distance to the expert boundary is
  compared with smooth noise of ~0.6 px amplitude.
* ``sloppy``: the same with ~2 px amplitude and coarser noise (wobbly outline).
* ``dilate`` / ``erode``: systematic bias — boundary moved out by 2 px / in by 1 px, plus
  ``good`` noise.
* ``miss_small``: drops connected components below 64 voxels and structures thinner than
  3 px (binary opening), i.e. misses thin vessels and small lesions.
* ``spammer_blobs``: random smooth blobs covering about the expert's foreground fraction,
  unrelated to the image content.
* ``spammer_random``: independent random voxels at the expert's foreground fraction.
* ``partial``: labels like ``good`` but only inside a random half of the image (the rest
  is left empty).

Example:
    >>> import numpy as np
    >>> expert = np.zeros((64, 64), bool); expert[20:40, 10:50] = True
    >>> crowd = simulate_crowd(expert, ["good", "sloppy", "spammer_blobs"], seed=0)
    >>> crowd.shape, crowd.dtype
    ((3, 64, 64), dtype('bool'))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

BoolArray = npt.NDArray[np.bool_]
AnnotatorModel = Callable[[BoolArray, np.random.Generator], BoolArray]


def _signed_distance(mask: BoolArray) -> npt.NDArray[np.float64]:
    """Negative inside, positive outside, in voxels (≈ ±0.5 at the boundary)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    if mask.all():
        return np.full(mask.shape, -np.inf)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(mask)
    return np.asarray(outside - inside, dtype=np.float64)


def _smooth_noise(
    shape: tuple[int, ...], rng: np.random.Generator, sigma: float
) -> npt.NDArray[np.float64]:
    """Gaussian-smoothed white noise rescaled to zero mean, unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return np.asarray((noise - noise.mean()) / (noise.std() + 1e-12), dtype=np.float64)


def _boundary_noise(
    mask: BoolArray, rng: np.random.Generator, amplitude: float, sigma: float, shift: float = 0.0
) -> BoolArray:
    """Move the boundary by ``shift`` voxels (positive = outwards) plus smooth noise."""
    sd = _signed_distance(mask)
    return np.asarray(sd < shift + 0.5 + amplitude * _smooth_noise(mask.shape, rng, sigma))


def good(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Careful annotator: ~0.6 px boundary noise."""
    return _boundary_noise(expert, rng, amplitude=0.6, sigma=2.0)


def sloppy(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Sloppy outline: ~2 px smooth boundary noise."""
    return _boundary_noise(expert, rng, amplitude=2.0, sigma=4.0)


def dilate(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Systematically too large: boundary 2 px outwards, plus small noise."""
    return _boundary_noise(expert, rng, amplitude=0.6, sigma=2.0, shift=2.0)


def erode(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Systematically too small: boundary 1 px inwards, plus small noise."""
    return _boundary_noise(expert, rng, amplitude=0.6, sigma=2.0, shift=-1.0)


def miss_small(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Misses small and thin structures: opening (3-voxel ball) then drops components < 64."""
    structure = ndimage.generate_binary_structure(expert.ndim, 1)
    opened = ndimage.binary_opening(expert, structure=structure, iterations=1)
    labels, n = ndimage.label(opened)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 64
        keep[0] = False
        opened = keep[labels]
    return good(np.asarray(opened, dtype=bool), rng)


def spammer_blobs(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Random smooth blobs covering about the expert's foreground fraction."""
    frac = float(np.clip(expert.mean(), 0.01, 0.99))
    noise = _smooth_noise(expert.shape, rng, sigma=max(2.0, min(expert.shape) / 32))
    return np.asarray(noise > np.quantile(noise, 1.0 - frac))


def spammer_random(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Independent random voxels at the expert's foreground fraction."""
    frac = float(np.clip(expert.mean(), 0.01, 0.99))
    return np.asarray(rng.random(expert.shape) < frac)


def partial(expert: BoolArray, rng: np.random.Generator) -> BoolArray:
    """Careful, but labels only one random half of the image (split along a random axis)."""
    out = good(expert, rng)
    axis = int(rng.integers(expert.ndim))
    cut = expert.shape[axis] // 2
    keep_low = bool(rng.integers(2))
    index = np.arange(expert.shape[axis])
    region = index < cut if keep_low else index >= cut
    shape = [1] * expert.ndim
    shape[axis] = -1
    return np.asarray(out & region.reshape(shape))


ANNOTATOR_MODELS: dict[str, AnnotatorModel] = {
    "good": good,
    "sloppy": sloppy,
    "dilate": dilate,
    "erode": erode,
    "miss_small": miss_small,
    "spammer_blobs": spammer_blobs,
    "spammer_random": spammer_random,
    "partial": partial,
}


def simulate_crowd(expert: npt.ArrayLike, kinds: Sequence[str], seed: int) -> BoolArray:
    """Apply one annotator model per entry of ``kinds`` to ``expert``.

    Args:
        expert: (H, W) or (D, H, W) bool expert mask.
        kinds: names from ``ANNOTATOR_MODELS``, one per simulated rater.
        seed: seed of the ``numpy.random.Generator`` shared by the raters (in order).

    Returns:
        (R, H, W) or (R, D, H, W) bool, R = len(kinds).

    Raises:
        ValueError: ``expert`` not 2D/3D, ``kinds`` empty or naming an unknown model, or a
            negative ``seed``.
    """
    mask = np.asarray(expert, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"expert must be 2D (H, W) or 3D (D, H, W), got shape {mask.shape}")
    if len(kinds) == 0:
        raise ValueError("kinds is empty: name at least one annotator model")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    unknown = [k for k in kinds if k not in ANNOTATOR_MODELS]
    if unknown:
        raise ValueError(f"unknown annotator models {unknown}; known: {sorted(ANNOTATOR_MODELS)}")
    rng = np.random.default_rng(seed)
    return np.stack([ANNOTATOR_MODELS[k](mask, rng) for k in kinds]).astype(bool)
