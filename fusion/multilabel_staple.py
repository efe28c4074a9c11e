"""Multi-label STAPLE on integer label maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fusion._validation import FloatArray, IntArray, check_em_controls


def _label_patterns(labels: IntArray, n_labels: int) -> tuple[IntArray, IntArray, IntArray]:
    """Group the columns of (R, N) labels: (P, R) patterns, (P,) counts, (N,) inverse."""
    n_raters = labels.shape[0]
    if n_raters * np.log2(max(n_labels, 2)) < 62:
        code = np.zeros(labels.shape[1], dtype=np.int64)
        for r in range(n_raters):
            code = code * n_labels + labels[r]
        used, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
        patterns: IntArray = np.empty((used.size, n_raters), dtype=np.int64)
        rest = used.copy()
        for r in range(n_raters - 1, -1, -1):
            patterns[:, r] = rest % n_labels
            rest //= n_labels
    else:
        patterns, inverse, counts = np.unique(
            labels.T, axis=0, return_inverse=True, return_counts=True
        )
    return patterns.astype(np.int64), counts.astype(np.int64), inverse.reshape(-1).astype(np.int64)


def _e_step(patterns: IntArray, log_confusion: FloatArray, log_prior: FloatArray) -> FloatArray:
    """(P, L) posterior over true labels: ``W[p, k] ∝ π_k Π_r θ_r[D_pr, k]``.

    Args:
        patterns: (P, R) int64 labels per pattern. log_confusion: (R, L, L) float64,
            ``log θ_r[j, k] = log P(rater r says j | truth k)``. log_prior: (L,) float64.
    """
    n_raters = patterns.shape[1]
    ll = np.broadcast_to(log_prior, (patterns.shape[0], log_prior.size)).copy()
    for r in range(n_raters):
        ll += log_confusion[r][patterns[:, r]]
    # Rows where every class has likelihood 0 give -inf - -inf = nan; they get the prior.
    with np.errstate(invalid="ignore"):
        ll -= ll.max(axis=1, keepdims=True)
        post = np.exp(ll)
        post /= post.sum(axis=1, keepdims=True)
    bad = ~np.isfinite(post).all(axis=1)
    post[bad] = np.exp(log_prior)
    return post


def _m_step(
    patterns: IntArray, counts: IntArray, posterior: FloatArray, n_labels: int
) -> FloatArray:
    """(R, L, L) confusion ``θ_r[j, k] = Σ_{D_r=j} W_k / Σ W_k`` (count-weighted).

    A truth class with no posterior mass keeps the identity column (no evidence of error).
    """
    n_raters = patterns.shape[1]
    weighted = counts[:, None] * posterior  # (P, L)
    totals = weighted.sum(axis=0)  # (L,)
    confusion = np.zeros((n_raters, n_labels, n_labels))
    for r in range(n_raters):
        np.add.at(confusion[r], patterns[:, r], weighted)
    out = np.broadcast_to(np.eye(n_labels), confusion.shape).copy()
    np.divide(confusion, totals[None, None, :], out=out, where=totals[None, None, :] > 0)
    return out


@dataclass
class MultiLabelStaple:
    """Multi-label STAPLE: EM estimate of the true label map and of a confusion matrix per
    rater, for label maps with L classes (0 = background).

    Steps:
        1. Group voxels by their pattern of R labels (one integer code per voxel).
        2. Initialise the posterior W (P, L) with the per-voxel label vote shares; the class
           prior π is the label frequency over all raters and voxels and stays fixed.
        3. M-step: ``θ_r[j, k] = Σ_{D_r=j} W_k / Σ W_k`` (R confusion matrices, L × L).
        4. E-step: ``W_k ∝ π_k Π_r θ_r[D_r, k]``.
        5. Stop when no entry of any θ_r changed by more than ``tol``, or at ``max_iter``.
        6. Label = argmax_k W_k (ties go to the lower label).

    Papers: S. K. Warfield, K. H. Zou, W. M. Wells, IEEE TMI 23(7):903–921, 2004,
    https://doi.org/10.1109/TMI.2004.828354 (multi-category STAPLE), and T. Rohlfing,
    D. B. Russakoff, C. R. Maurer, "Performance-based classifier combination in atlas-based
    image segmentation using expectation-maximization parameter estimation", IEEE TMI
    23(8):983–994, 2004, https://doi.org/10.1109/TMI.2004.830803.

    Args:
        max_iter: maximum number of EM iterations (>= 1).
        tol: convergence tolerance on the largest absolute change of any θ entry.

    Attributes:
        confusion_: (R, L, L) float64, ``confusion_[r, j, k] = P(rater r says j | truth k)``.
        prior_: (L,) float64 class prior used.
        probability_: (L, H, W) or (L, D, H, W) float64 posterior per class.
        reliability_: (R,) float64 in [0, 1], ``(mean_k θ_r[k, k] − 1/L) / (1 − 1/L)``
            clipped at 0 (balanced accuracy rescaled so a spammer scores 0; equals the Youden
            index for L = 2).
        n_iter_: int; converged_: bool.

    Example:
        >>> import numpy as np
        >>> labels = np.array([[[0, 1, 2]], [[0, 1, 2]], [[0, 2, 2]]])
        >>> MultiLabelStaple().fit_predict(labels)
        array([[0, 1, 2]])
    """

    max_iter: int = 1000
    tol: float = 1e-8

    confusion_: FloatArray = field(init=False, repr=False)
    prior_: FloatArray = field(init=False, repr=False)
    probability_: FloatArray = field(init=False, repr=False)
    reliability_: FloatArray = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_em_controls(self.max_iter, self.tol)

    def fit_predict(self, labels: npt.ArrayLike, n_labels: int | None = None) -> IntArray:
        """Estimate the true label map of one image.

        Args:
            labels: (R, H, W) or (R, D, H, W) non-negative integer label maps.
            n_labels: number of classes L; default ``labels.max() + 1`` (at least 2).

        Returns:
            (H, W) or (D, H, W) int64 fused label map.
        """
        arr = np.asarray(labels)
        if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
            raise ValueError(f"labels must be an integer array, got dtype {arr.dtype}")
        if arr.ndim not in (3, 4) or arr.shape[0] < 1 or arr[0].size == 0:
            raise ValueError(f"labels must have shape (R, H, W) or (R, D, H, W), got {arr.shape}")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise ValueError("labels must be non-negative")
        n_cls = max(int(arr.max()) + 1, 2) if n_labels is None else n_labels
        if n_cls < 2 or int(arr.max()) >= n_cls:
            raise ValueError(f"n_labels={n_labels} must be >= 2 and exceed every label")
        n_raters = arr.shape[0]
        patterns, counts, inverse = _label_patterns(arr.reshape(n_raters, -1), n_cls)

        one_hot_share = np.zeros((patterns.shape[0], n_cls))
        for r in range(n_raters):
            one_hot_share[np.arange(patterns.shape[0]), patterns[:, r]] += 1.0 / n_raters
        prior = counts @ one_hot_share / counts.sum()
        # A class nobody used has prior 0; log(0) = -inf excludes it, as intended.
        with np.errstate(divide="ignore"):
            log_prior = np.log(prior)

        w: FloatArray = one_hot_share
        confusion = np.broadcast_to(np.eye(n_cls), (n_raters, n_cls, n_cls)).copy()
        converged = False
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            new_confusion = _m_step(patterns, counts, w, n_cls)
            # θ = 0 is a legitimate estimate (never confused); its log is -inf.
            with np.errstate(divide="ignore"):
                w = _e_step(patterns, np.log(new_confusion), log_prior)
            change = float(np.abs(new_confusion - confusion).max())
            confusion = new_confusion
            if n_iter > 1 and change <= self.tol:
                converged = True
                break

        spatial = arr.shape[1:]
        self.confusion_ = confusion
        self.prior_ = prior
        self.probability_ = np.moveaxis(w[inverse], -1, 0).reshape((n_cls, *spatial))
        diag = np.diagonal(confusion, axis1=1, axis2=2).mean(axis=1)
        self.reliability_ = np.clip((diag - 1.0 / n_cls) / (1.0 - 1.0 / n_cls), 0.0, 1.0)
        self.n_iter_, self.converged_ = n_iter, converged
        return np.asarray(np.argmax(w, axis=1)[inverse].reshape(spatial), dtype=np.int64)
