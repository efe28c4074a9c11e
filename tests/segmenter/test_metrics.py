"""segmenter.metrics: Dice and HD95 against hand-computed values and a brute-force reference."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from segmenter.metrics import dice_scores, hd95_scores


def test_dice_hand_computed() -> None:
    pred = np.zeros((3, 4, 4), np.uint8)
    gt = np.zeros((3, 4, 4), np.uint8)
    pred[0, 0, :4] = 1  # 4 pixels
    gt[0, 0, 1:4] = 1  # 3 of them + 3 more
    gt[0, 1, :3] = 1
    # image 1: both empty; image 2: prediction only
    pred[2, 2, 2] = 1
    scores = dice_scores(pred, gt)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    np.testing.assert_allclose(scores, [2 * 3 / (4 + 6), 1.0, 0.0])
    np.testing.assert_allclose(dice_scores(pred[0] * 255, gt[0]), [0.6])  # one HW pair, any nonzero


def _edges(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask & ~ndimage.binary_erosion(mask))


def _hd95_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Brute force: all edge-to-edge Euclidean distances, 95th percentile both ways."""
    ea, eb = _edges(a.astype(bool)), _edges(b.astype(bool))
    dist = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(dist.min(1), 95), np.percentile(dist.min(0), 95)))


def test_hd95_single_points_and_shapes() -> None:
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[1, 1], b[4, 5] = 1, 1  # a 3-4-5 triangle
    assert hd95_scores(a, b).tolist() == [5.0]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    pred, gt = [], []
    for _ in range(4):
        cy, cx, r = rng.integers(12, 28), rng.integers(12, 28), rng.integers(4, 10)
        gt.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        sq = np.zeros((40, 40), bool)
        y0, x0 = rng.integers(5, 20, 2)
        sq[y0 : y0 + 14, x0 : x0 + 10] = True
        pred.append(sq)
    got = hd95_scores(np.stack(pred), np.stack(gt))
    want = [_hd95_reference(p, g) for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (got > 0).all()


def test_hd95_undefined_cases() -> None:
    empty = np.zeros((2, 8, 8), np.uint8)
    one = empty.copy()
    one[:, 3, 3] = 1
    out = hd95_scores(np.stack([empty[0], one[0]]), np.stack([empty[1], empty[1]]))
    assert out[0] == 0.0  # both empty: perfect agreement
    assert np.isnan(out[1])  # one empty: no distance exists
    assert np.isnan(hd95_scores(empty[0], one[0])[0])
