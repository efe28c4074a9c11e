"""Image-quality measures for synthetic data: pure functions on uint8 arrays, no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["histogram_distance", "mean_dice", "psnr", "ssim"]


def psnr(real: npt.NDArray[np.uint8], fake: npt.NDArray[np.uint8]) -> float:
    """Peak signal-to-noise ratio in dB of (H, W[, 3]) uint8 images (data range 255)."""
    diff = np.asarray(real, np.float64) - np.asarray(fake, np.float64)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(real: npt.NDArray[np.uint8], fake: npt.NDArray[np.uint8]) -> float:
    """Structural similarity (Wang et al. 2004; scikit-image, 7×7 window) of uint8 images.

    (H, W) gray or (H, W, 3) RGB (mean over channels).
    """
    from skimage.metrics import structural_similarity

    real, fake = np.asarray(real), np.asarray(fake)
    if real.shape != fake.shape:
        raise ValueError(f"shapes differ: {real.shape} vs {fake.shape}")
    axis = -1 if real.ndim == 3 else None
    return float(structural_similarity(real, fake, data_range=255, channel_axis=axis))


def histogram_distance(
    real: npt.NDArray[np.uint8], fake: npt.NDArray[np.uint8], bins: int = 64
) -> dict[str, float]:
    """Distances between the intensity histograms of two image sets (any shape, uint8).

    Returns ``wasserstein`` (earth mover's distance between the two intensity
    distributions, in grey levels 0..255) and ``intersection`` (1 − Σ min(p, q) over
    ``bins`` bins; 0 = identical histograms, 1 = disjoint).
    """
    edges = np.linspace(0, 256, bins + 1)
    p = np.histogram(np.asarray(real).ravel(), edges)[0].astype(np.float64)
    q = np.histogram(np.asarray(fake).ravel(), edges)[0].astype(np.float64)
    if p.sum() == 0 or q.sum() == 0:
        raise ValueError("both image sets must hold pixels")
    p, q = p / p.sum(), q / q.sum()
    # 1-D Wasserstein-1 = area between the CDFs
    emd = float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))) * (edges[1] - edges[0]))
    return {"wasserstein": emd, "intersection": float(1.0 - np.minimum(p, q).sum())}


def mean_dice(truth: npt.NDArray[Any], pred: npt.NDArray[Any], num_classes: int) -> float:
    """Mean over foreground classes 1..num_classes-1 of Dice over the whole (N, H, W) set."""
    from fusion.metrics import dice

    truth, pred = np.asarray(truth), np.asarray(pred)
    return float(np.mean([dice(truth == c, pred == c) for c in range(1, num_classes)]))
