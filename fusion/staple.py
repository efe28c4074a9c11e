"""Binary STAPLE (Simultaneous Truth And Performance Level Estimation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fusion._patterns import vote_patterns
from fusion._validation import (
    BoolArray,
    FloatArray,
    IntArray,
    as_present,
    as_rater_masks,
    check_em_controls,
    check_probability,
)
from fusion.reliability import youden_reliability
from fusion.result import FusionResult


def _e_step(
    votes: BoolArray,
    present: BoolArray,
    sensitivity: FloatArray,
    specificity: FloatArray,
    prior: float,
) -> FloatArray:
    """Posterior P(truth = 1 | votes) for each of P vote patterns.

    Args:
        votes, present: (P, R) bool vote patterns and rater presence.
        sensitivity, specificity: (R,) float64 current rater parameters.
        prior: foreground prior in [0, 1].

    Returns:
        (P,) float64 posterior; patterns whose likelihood is 0 under both classes get the
        prior.
    """
    # A rate of exactly 0 or 1 (a perfect or a useless rater, an all-empty image) makes
    # log(0) = -inf, which is the correct limit; the resulting -inf - -inf cases are fixed
    # below, and exp overflow gives 1 / (1 + inf) = 0, also the correct limit.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_fg = np.where(votes, np.log(sensitivity), np.log1p(-sensitivity))
        log_bg = np.where(votes, np.log1p(-specificity), np.log(specificity))
        ll_fg = np.log(prior) + np.where(present, log_fg, 0.0).sum(axis=1)
        ll_bg = np.log1p(-prior) + np.where(present, log_bg, 0.0).sum(axis=1)
        posterior = 1.0 / (1.0 + np.exp(ll_bg - ll_fg))
    return np.where(np.isnan(posterior), prior, posterior)


def _m_step(
    votes: BoolArray,
    present: BoolArray,
    counts: IntArray,
    posterior: FloatArray,
    previous: tuple[FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray]:
    """Maximum-likelihood sensitivity and specificity of each rater.

    ``p_r = Σ W·[D_r=1] / Σ W`` and ``q_r = Σ (1−W)·[D_r=0] / Σ (1−W)`` over the voxels
    rater r labelled, with the sums over patterns weighted by their voxel counts. A rate
    whose denominator is 0 (e.g. no foreground at all) keeps its ``previous`` value.

    Args:
        votes, present: (P, R) bool. counts: (P,) int64. posterior: (P,) float64.
        previous: the (R,) sensitivity and specificity of the previous iteration.
    """
    w_fg = counts * posterior
    w_bg = counts * (1.0 - posterior)
    pres = present.astype(np.float64)
    fg_votes = (present & votes).astype(np.float64)
    bg_votes = (present & ~votes).astype(np.float64)
    p_den = w_fg @ pres
    q_den = w_bg @ pres
    sens = previous[0].copy()
    spec = previous[1].copy()
    np.divide(w_fg @ fg_votes, p_den, out=sens, where=p_den > 0)
    np.divide(w_bg @ bg_votes, q_den, out=spec, where=q_den > 0)
    return sens, spec


@dataclass
class Staple:
    """Binary STAPLE: EM estimate of the true mask and of each rater's sensitivity and
    specificity, on one 2D or 3D image.

    Steps (initialisation and stopping follow ITK/SimpleITK ``STAPLEImageFilter``):
        1. Group voxels by their pattern of votes (R bits packed into an integer code);
           the E-step only depends on the pattern, so every iteration costs O(#patterns).
        2. Initialise the posterior W with the fraction of present raters voting
           foreground; the foreground prior is the mean of W over all voxels (or ``prior``)
           and stays fixed.
        3. M-step: ``p_r = Σ W·D_r / Σ W``, ``q_r = Σ (1−W)(1−D_r) / Σ (1−W)``.
        4. E-step: ``W ∝ g·Π p_r^D_r (1−p_r)^(1−D_r)`` against
           ``(1−g)·Π q_r^(1−D_r) (1−q_r)^D_r`` (absent raters are left out).
        5. Stop when no sensitivity or specificity changed by more than ``tol`` (the
           parameter change, not the posterior change) or after ``max_iter`` iterations.

    Paper: S. K. Warfield, K. H. Zou, W. M. Wells, "Simultaneous truth and performance level
    estimation (STAPLE): an algorithm for the validation of image segmentation", IEEE TMI
    23(7):903–921, 2004, https://doi.org/10.1109/TMI.2004.828354.

    Args:
        max_iter: maximum number of EM iterations (>= 1).
        tol: convergence tolerance on the largest absolute change of any p_r or q_r;
            1e-10 is ITK's value.
        threshold: ``mask = probability_ > threshold``.
        prior: fixed foreground prior in (0, 1); None uses the mean initial vote fraction.

    Attributes:
        sensitivity_: (R,) float64, estimated p_r (kept at 1.0 when undefined, e.g. no
            foreground anywhere).
        specificity_: (R,) float64, estimated q_r (kept at 1.0 when undefined).
        prior_: float, the foreground prior used.
        probability_: (H, W) or (D, H, W) float64 posterior of foreground.
        n_iter_: int, EM iterations run. converged_: bool, whether ``tol`` was reached.

    Example:
        >>> import numpy as np
        >>> masks = np.zeros((3, 4, 4), bool); masks[:, 1:3, 1:3] = True; masks[2, 0, 0] = True
        >>> mask, reliability = Staple().fit_predict(masks)
        >>> int(mask.sum())
        4
    """

    max_iter: int = 1000
    tol: float = 1e-10
    threshold: float = 0.5
    prior: float | None = None

    sensitivity_: FloatArray = field(init=False, repr=False)
    specificity_: FloatArray = field(init=False, repr=False)
    prior_: float = field(init=False, repr=False)
    probability_: FloatArray = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_em_controls(self.max_iter, self.tol)
        check_probability(self.threshold, "threshold")
        if self.prior is not None:
            check_probability(self.prior, "prior", open_interval=True)

    def fit_predict(
        self, masks: npt.ArrayLike, present: npt.ArrayLike | None = None
    ) -> FusionResult:
        """Estimate the true mask of one image.

        Args:
            masks: (R, H, W) or (R, D, H, W) bool (or 0/1) rater masks.
            present: optional bool, (R,) per rater or broadcastable to ``masks`` (per voxel);
                False = the rater did not label that voxel (left out of E- and M-step).

        Returns:
            :class:`FusionResult` with the thresholded mask, ``youden(p_, q_)`` as
            reliability and the posterior as ``probability``.
        """
        m = as_rater_masks(masks)
        n_raters = m.shape[0]
        pres = as_present(present, m.shape)
        flat_pres = None if pres is None else np.ascontiguousarray(pres).reshape(n_raters, -1)
        pat = vote_patterns(m.reshape(n_raters, -1), flat_pres)

        n_present = pat.present.sum(axis=1)
        w0 = np.zeros(pat.counts.shape)
        np.divide((pat.votes & pat.present).sum(axis=1), n_present, out=w0, where=n_present > 0)
        mean_w0 = float(pat.counts @ w0 / pat.counts.sum())
        prior = mean_w0 if self.prior is None else self.prior
        w: FloatArray = np.where(n_present > 0, w0, prior)

        sens: FloatArray = np.ones(n_raters)
        spec: FloatArray = np.ones(n_raters)
        converged = False
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            new_sens, new_spec = _m_step(pat.votes, pat.present, pat.counts, w, (sens, spec))
            w = _e_step(pat.votes, pat.present, new_sens, new_spec, prior)
            change = max(np.abs(new_sens - sens).max(), np.abs(new_spec - spec).max())
            sens, spec = new_sens, new_spec
            if n_iter > 1 and change <= self.tol:
                converged = True
                break

        probability = w[pat.inverse].reshape(m.shape[1:])
        self.sensitivity_, self.specificity_ = sens, spec
        self.prior_ = prior
        self.probability_ = probability
        self.n_iter_, self.converged_ = n_iter, converged
        return FusionResult(
            mask=probability > self.threshold,
            reliability=youden_reliability(sens, spec),
            probability=probability,
        )
