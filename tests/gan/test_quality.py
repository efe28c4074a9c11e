from __future__ import annotations

import numpy as np
import pytest

from gan import histogram_distance, mean_dice, psnr, ssim


def test_psnr_ssim_known_values():
    a = np.full((32, 32), 100, np.uint8)
    assert psnr(a, a) == float("inf")
    b = a + 10  # MSE 100 → 10·log10(255² / 100)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, 255 - img) < 0.1
    with pytest.raises(ValueError):
        ssim(img, img[..., 0])


def test_histogram_distance_known_values():
    a = np.full(1000, 40, np.uint8)
    same = histogram_distance(a, a)
    assert same["wasserstein"] == 0 and same["intersection"] == 0
    shifted = histogram_distance(a, a + 32, bins=256)
    assert shifted["wasserstein"] == pytest.approx(32)
    assert shifted["intersection"] == pytest.approx(1.0)


def test_mean_dice():
    t = np.array([[[0, 1, 1, 2]]])
    assert mean_dice(t, t, 3) == 1.0
    assert mean_dice(t, np.array([[[0, 1, 0, 2]]]), 3) == pytest.approx((2 / 3 + 1) / 2)
