"""Crowd-wide STAPLE: one EM over many tasks with annotator parameters shared across tasks."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from fusion._patterns import vote_patterns
from fusion._validation import (
    BoolArray,
    FloatArray,
    IntArray,
    as_bool_array,
    as_rater_masks,
    check_em_controls,
    check_probability,
)
from fusion.metrics import dice_from_counts
from fusion.reliability import youden_reliability

# Rates are kept inside [_EPS, 1 - _EPS] so that log-likelihoods stay finite.
_EPS = 1e-6
# Tasks with at most this many raters get the unanimous-row anchor (CrowdStaple step 2).
_ANCHOR_RATERS = 3


@dataclass(frozen=True)
class CrowdFusionResult:
    """Result of :class:`CrowdStaple` over T tasks.

    Attributes:
        masks: T fused masks, each (H_t, W_t) or (D_t, H_t, W_t) bool (the gold mask itself
            on gold tasks).
        probabilities: T posterior maps of foreground, float32, same shapes as ``masks``.
        reliability: {annotator id: float in [0, 1]}, Youden index ``sens + spec - 1``
            clipped at 0 (1 = perfect, 0 = spammer or inverted).
        sensitivity: {annotator id: sensitivity over all voxels the annotator labelled,
            measured against the fused masks}.
        specificity: {annotator id: specificity, likewise}.
        fallback: None, or why the inversion/degeneracy guard replaced the EM result with a
            weighted vote (``masks`` and the rates then describe that vote).
        n_iter: EM iterations run. converged: whether ``tol`` was reached.
    """

    masks: list[BoolArray]
    probabilities: list[npt.NDArray[np.float32]]
    reliability: dict[Hashable, float]
    sensitivity: dict[Hashable, float]
    specificity: dict[Hashable, float]
    fallback: str | None
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class _Rows:
    """All (task, vote pattern[, gold value]) rows of a crowd, with one entry per vote.

    Row arrays are (P,), entry arrays (E,) with E = Σ_rows (raters of the row's task).
    """

    task: IntArray  # task index of the row
    counts: FloatArray  # voxels with this pattern
    gold: npt.NDArray[np.int8]  # gold truth of the row, -1 if the task has no gold
    unanimous: BoolArray  # all raters of the task cast the same vote
    mean_vote: FloatArray  # fraction of the task's raters voting foreground
    e_row: IntArray  # entry -> row
    e_ann: IntArray  # entry -> annotator index
    e_vote: BoolArray  # entry -> vote
    offsets: IntArray  # (T + 1,) first row of each task
    inverse: list[npt.NDArray[np.unsignedinteger]]  # per task, voxel -> row - offset


def _build_rows(
    tasks: Sequence[npt.ArrayLike],
    annotators: Sequence[Sequence[Hashable]],
    gold: Mapping[int, npt.ArrayLike],
    ann_index: dict[Hashable, int],
    start: int = 0,
) -> tuple[_Rows, list[tuple[int, ...]]]:
    """Rows of ``tasks`` (local indices 0..len-1; ``gold`` keyed the same way); ``start`` is
    the global index of ``tasks[0]``, used in error messages."""
    row_task, row_counts, row_gold, row_unan, row_mean = [], [], [], [], []
    e_row, e_ann, e_vote = [], [], []
    offsets = [0]
    inverses: list[npt.NDArray[np.unsignedinteger]] = []
    shapes: list[tuple[int, ...]] = []
    n_rows = 0
    for t, (task, ids) in enumerate(zip(tasks, annotators, strict=True)):
        m = as_rater_masks(task, f"tasks[{start + t}]")
        n_raters = m.shape[0]
        if len(ids) != n_raters:
            raise ValueError(f"task {start + t}: {n_raters} masks but {len(ids)} annotator ids")
        if len(set(ids)) != n_raters:
            raise ValueError(f"task {start + t}: an annotator appears twice")
        flat: BoolArray = m.reshape(n_raters, -1)
        gold_value = -1
        if t in gold:
            g = as_bool_array(gold[t], f"gold[{start + t}]")
            if g.shape != m.shape[1:]:
                raise ValueError(f"gold[{start + t}] has shape {g.shape}, task has {m.shape[1:]}")
            flat = np.concatenate([flat, g.reshape(1, -1)], axis=0)
            gold_value = 0
        pat = vote_patterns(flat)
        n_pat = pat.counts.size
        votes = pat.votes[:, :n_raters]
        n_fg = votes.sum(axis=1)
        row_task.append(np.full(n_pat, t, dtype=np.int64))
        row_counts.append(pat.counts.astype(np.float64))
        row_gold.append(
            pat.votes[:, n_raters].astype(np.int8)
            if gold_value == 0
            else np.full(n_pat, -1, np.int8)
        )
        row_unan.append((n_fg == 0) | (n_fg == n_raters))
        row_mean.append(n_fg / n_raters)
        ann = np.array([ann_index[a] for a in ids], dtype=np.int64)
        e_row.append(np.repeat(np.arange(n_rows, n_rows + n_pat), n_raters))
        e_ann.append(np.tile(ann, n_pat))
        e_vote.append(votes.reshape(-1))
        dtype = np.uint8 if n_pat <= 256 else np.uint16 if n_pat <= 65536 else np.uint64
        inverses.append(pat.inverse.astype(dtype))
        shapes.append(tuple(m.shape[1:]))
        n_rows += n_pat
        offsets.append(n_rows)
    rows = _Rows(
        task=np.concatenate(row_task),
        counts=np.concatenate(row_counts),
        gold=np.concatenate(row_gold),
        unanimous=np.concatenate(row_unan),
        mean_vote=np.concatenate(row_mean),
        e_row=np.concatenate(e_row),
        e_ann=np.concatenate(e_ann),
        e_vote=np.concatenate(e_vote),
        offsets=np.asarray(offsets, dtype=np.int64),
        inverse=inverses,
    )
    return rows, shapes


@dataclass(frozen=True)
class _Votes:
    """A subset of the vote entries of :class:`_Rows`, fixed for the whole EM.

    ``code = annotator + n_annotators · vote``, so one ``bincount`` gives both vote sums.
    """

    row: IntArray  # (E',) entry -> row
    code: IntArray  # (E',) annotator index + n_annotators * vote
    weight: FloatArray | None = None  # (E',) extra weight of each entry, None = all 1

    @staticmethod
    def select(rows: _Rows, keep_rows: BoolArray, n_annotators: int) -> _Votes:
        sel = keep_rows[rows.e_row]
        return _Votes(row=rows.e_row[sel], code=rows.e_ann[sel] + n_annotators * rows.e_vote[sel])


def _m_sums(
    rows: _Rows,
    votes: _Votes,
    row_weight: FloatArray,
    posterior: FloatArray,
    n_annotators: int,
    n_tasks: int,
    prior_weight: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The M-step's sufficient statistics over some rows, and the per-task prior.

    With c = voxel count × ``row_weight`` (a (P,) float64 weight, 0 for rows left out) and W
    the ``posterior``: ``s_fg[a + A·v] = Σ c·W`` and ``s_bg[a + A·v] = Σ c·(1 − W)`` over the
    ``votes`` v of annotator a, each (2A,) float64; these add up over disjoint sets of tasks,
    which is what lets the EM run over chunks of tasks (:func:`_reduce`); a vote entry with
    a ``votes.weight`` counts that many times. The prior of task t, ``Σ c'·W / Σ c'`` over
    its rows with c' = voxel count × ``prior_weight`` (default ``row_weight``), is local to
    the task. Returns (s_fg, s_bg, prior (T,)).
    """
    c = rows.counts * row_weight
    c_fg = c * posterior
    c_bg = c - c_fg
    # bincount with float weights returns float64 (astype(copy=False) only tells the typing)
    e_fg, e_bg = c_fg[votes.row], c_bg[votes.row]
    if votes.weight is not None:
        e_fg, e_bg = e_fg * votes.weight, e_bg * votes.weight
    s_fg = np.bincount(votes.code, weights=e_fg, minlength=2 * n_annotators)
    s_bg = np.bincount(votes.code, weights=e_bg, minlength=2 * n_annotators)
    if prior_weight is not None:
        c = rows.counts * prior_weight
        c_fg = c * posterior
    fg = np.bincount(rows.task, weights=c_fg, minlength=n_tasks)
    tot = np.bincount(rows.task, weights=c, minlength=n_tasks)
    prior = np.full(n_tasks, 0.5)
    np.divide(fg, tot, out=prior, where=tot > 0)
    return (
        s_fg.astype(np.float64, copy=False),
        s_bg.astype(np.float64, copy=False),
        np.clip(prior, _EPS, 1 - _EPS),
    )


def _rates(
    s_fg: FloatArray,
    s_bg: FloatArray,
    n_annotators: int,
    init: tuple[float, float],
    pseudo_count: float,
) -> tuple[FloatArray, FloatArray]:
    """Annotator sensitivity/specificity from the summed statistics of :func:`_m_sums`.

    ``p_a = (Σ c·W·[v=1] + k·p0) / (Σ c·W + k)`` and ``q_a = (Σ c·(1−W)·[v=0] + k·q0) /
    (Σ c·(1−W) + k)`` (k = ``pseudo_count``, a Beta prior towards ``init`` = (p0, q0)).
    Returns (p (A,), q (A,)), clipped to [_EPS, 1 − _EPS].
    """
    p_num, p_den = s_fg[n_annotators:], s_fg[:n_annotators] + s_fg[n_annotators:]
    q_num, q_den = s_bg[:n_annotators], s_bg[:n_annotators] + s_bg[n_annotators:]
    p = np.full(n_annotators, init[0])
    q = np.full(n_annotators, init[1])
    np.divide(
        p_num + pseudo_count * init[0], p_den + pseudo_count, out=p, where=p_den + pseudo_count > 0
    )
    np.divide(
        q_num + pseudo_count * init[1], q_den + pseudo_count, out=q, where=q_den + pseudo_count > 0
    )
    return np.clip(p, _EPS, 1 - _EPS), np.clip(q, _EPS, 1 - _EPS)


def _reduce(parts: Sequence[FloatArray]) -> FloatArray:
    """Element-wise sum of per-chunk statistics, always in chunk order.

    Floating-point addition is not associative: a fixed order is what makes the in-process
    EM and the Dask one (:mod:`fusion.distributed`) agree bit for bit.
    """
    total = np.array(parts[0], dtype=np.float64, copy=True)
    for part in parts[1:]:
        total += part
    return total


def _truncation(
    p: FloatArray, q: FloatArray, slot_task: IntArray, slot_ann: IntArray, n_tasks: int
) -> FloatArray:
    """(T,) log-odds correction ``log(1 − A_0) − log(1 − A_1)`` for EM on disagreement rows.

    ``A_1 = Π p_r + Π (1 − p_r)`` and ``A_0 = Π q_r + Π (1 − q_r)`` (products over the raters
    of the task) are the probabilities that all raters agree given truth 1 / 0, so
    ``P(v | z, disagreement) = P(v | z) / (1 − A_z)``.
    """
    lp, l1p = np.log(p)[slot_ann], np.log1p(-p)[slot_ann]
    lq, l1q = np.log(q)[slot_ann], np.log1p(-q)[slot_ann]

    def total(x: FloatArray) -> FloatArray:
        return np.bincount(slot_task, weights=x, minlength=n_tasks).astype(np.float64)

    a1 = np.exp(total(lp)) + np.exp(total(l1p))
    a0 = np.exp(total(lq)) + np.exp(total(l1q))
    # A_z < 1 whenever rates are clipped inside (0, 1) and a task has >= 2 raters.
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log1p(-np.minimum(a0, 1 - 1e-12)) - np.log1p(-np.minimum(a1, 1 - 1e-12))
    return np.nan_to_num(out)


def _e_step(
    rows: _Rows,
    votes: _Votes,
    free: BoolArray,
    p: FloatArray,
    q: FloatArray,
    prior: FloatArray,
    correction: FloatArray | None = None,
) -> FloatArray:
    """Posterior of foreground for the rows in ``free`` (other rows: 0, overwritten later).

    ``log W/(1−W) = logit(g_t) + Σ_votes [v·log(p_a/(1−q_a)) + (1−v)·log((1−p_a)/q_a)]``,
    the sum over ``votes`` (the entries of the free rows). Rates are clipped to
    [_EPS, 1−_EPS] by :func:`_m_step`, so every log is finite.
    """
    llr = np.concatenate([np.log1p(-p) - np.log(q), np.log(p) - np.log1p(-q)])
    logit = np.bincount(votes.row, weights=llr[votes.code], minlength=rows.counts.size)
    g = prior[rows.task]
    logit = logit + np.log(g) - np.log1p(-g)
    if correction is not None:
        logit = logit + correction[rows.task]
    # exp overflow for very confident rows gives 1/(1+inf) = 0, the correct limit.
    with np.errstate(over="ignore"):
        post = 1.0 / (1.0 + np.exp(-logit))
    return np.where(free, post, 0.0)


@dataclass
class CrowdStaple:
    """Crowd-wide binary STAPLE: one EM over all tasks; each annotator has one sensitivity
    and one specificity shared by every task they labelled; each task has its own prior.

    Steps:
        1. Per task, group voxels by their vote pattern (and gold value on gold tasks):
           the whole crowd becomes a table of (task, pattern) rows with voxel counts, so an
           EM iteration costs O(#rows × raters per task), independent of the image size.
        2. With ``disagreement_only`` (default), rows where all raters of the task agree
           are decided directly (foreground iff all voted foreground) and mostly left out of
           the parameter estimates: on thin, class-imbalanced structures the huge unanimous
           background would otherwise push every specificity to ≈1 and make a single
           foreground vote decisive. Parameters then mean "where the crowd disagrees".
           With ``truncation`` the E-step uses the likelihood conditional on the raters
           disagreeing, ``P(v | z) / (1 − P(all agree | z))``.
           ``anchor``: on tasks with at most 3 raters, each of the task's two unanimous rows
           (all-background, all-foreground) still enters the M-step of the annotator
           rates, with at most ``anchor`` × (the task's disagreement voxels) voxels. With 2
           raters the disagreement patterns (10, 01) say nothing, and with 3 the 6 patterns
           are fitted as well by a split along one rater's votes (EM specificity 0 for the
           rater who draws largest) as by the truth: on real 3-expert cell masks (BU-BIL,
           B01–B17) that fused 10 % too large, Dice 0.860 vs majority vote 0.899; anchored:
           0.900. Two limits keep the anchor from biasing what it need not fix: (a) each
           annotator's anchored votes are weighted by its share of disagreement voxels on
           such small tasks (``anchor_share_``): in a unanimous row every rater is right by
           construction, so the anchor inflates the rates, most of all a spammer's who
           agrees by chance; an annotator whose rates the larger tasks identify (share ≈ 0)
           gets almost no anchor, one seen only on small tasks (share 1) the full anchor.
           (b) The task prior is estimated on the disagreement rows only, as the truncated
           E-step assumes (its prior is P(foreground | the raters disagree)); the
           unanimous rows would pull it towards the task's background. Without (a) and (b)
           the anchor cost 0.0016 / 0.0098 Dice on ISBI with 20 / 40 % spammers (one task
           labelled by 3 spammers fell from 0.29 to 0.02; pooled rates moved the rest).
           ``anchor=0`` restores the pure disagreement-only estimate everywhere. Tasks with
           more raters are not anchored (always anchoring cost 0.004–0.012 Dice in the
           simulated crowds of 3–15 raters per task).
           Chosen by measurement (``benchmarks/fusion_accuracy.py``, seed 0): estimating on
           disagreement rows was better than on all voxels in all 9 simulated settings
           (DRIVE, SAM-Med2D, ISBI × 0/20/40 % spammers), e.g. DRIVE 0 %: Dice 0.967 vs
           0.833; ``anchor=1`` was chosen among 0.3, 0.5, 1, 2 on BU-BIL B01–B17 and the
           ``--quick`` simulated crowds (``docs/fusion.md`` has the tables).
           Known weakness: spatially independent (salt-and-pepper) rater noise, where
           estimating on all voxels is better.
        3. Gold tasks: the posterior is clamped to the gold mask.
        4. Initialise the posterior with the vote fraction (with gold tasks: with the
           E-step under the rates measured on the gold tasks); alternate the M-step (annotator
           p, q with a weak Beta prior, per-task prior g_t) and the E-step (posterior of
           the free rows) until no p, q or g changes by more than ``tol``.
        5. Guard: if annotators holding most of the votes have ``p + q < 1 − margin`` (label
           inversion), or the fused masks of most non-gold tasks are all-foreground or
           all-background where the majority vote is not (degenerate solution), the result
           is replaced by a weighted vote (weights: each annotator's Dice on the gold tasks,
           or equal weights without gold) and ``fallback`` says why.

    The tasks are processed in chunks of ``chunk_size``: rows, posteriors and task priors
    stay inside their chunk, and each EM iteration sums the chunks' annotator statistics in
    chunk order. :class:`fusion.distributed.DaskCrowdStaple` runs the very same chunk steps
    on a Dask cluster, so for equal parameters its result is identical bit for bit.

    Paper: STAPLE (Warfield, Zou & Wells, IEEE TMI 23(7):903–921, 2004,
    https://doi.org/10.1109/TMI.2004.828354) with parameters shared across images as in
    Dawid & Skene, "Maximum likelihood estimation of observer error-rates using the EM
    algorithm", JRSS C 28(1):20–28, 1979, https://doi.org/10.2307/2346806.

    Args:
        max_iter: maximum EM iterations (>= 1).
        tol: convergence tolerance on the largest change of any p, q or task prior.
        threshold: ``mask = posterior > threshold``.
        disagreement_only: estimate only where the raters of a task disagree (step 2).
        init_sensitivity, init_specificity: Beta-prior means p0, q0 in (0, 1).
        pseudo_count: strength (in voxels) of that Beta prior; keeps annotators with few
            disagreement voxels near (p0, q0).
        truncation: with ``disagreement_only``, condition the E-step likelihood on
            disagreement (step 2).
        anchor: with ``disagreement_only``, on tasks with <= 3 raters, the weight of the
            unanimous rows in the M-step of the rates as a multiple of the task's
            disagreement voxels, times each annotator's ``anchor_share_`` (step 2); >= 0,
            0 = none.
        guard: enable the inversion/degeneracy guard (step 5).
        guard_margin: an annotator counts as inverted when ``p + q < 1 - guard_margin``
            (spammers sit at p + q ≈ 1 and must not trigger the guard).
        chunk_size: tasks per chunk (>= 1). Changes results only at floating-point rounding
            level (the order of the annotator sums); on Dask, one chunk is one task of work.

    Attributes:
        annotators_: list of annotator ids (order of the arrays below).
        sensitivity_, specificity_: (A,) float64, each annotator's rates over all voxels
            they labelled, measured against the fused masks (what ``reliability`` uses).
        em_sensitivity_, em_specificity_: (A,) float64, the EM's own parameters (with
            ``disagreement_only`` they are conditional on the raters disagreeing).
        task_prior_: (T,) float64 estimated foreground prior per task (with
            ``disagreement_only``: among the voxels where its raters disagree).
        anchor_share_: (A,) float64, each annotator's non-gold disagreement voxels on tasks
            with <= 3 raters / on all tasks (0 when nothing is anchored).
        fallback_: None or the guard's reason. n_iter_: int. converged_: bool.

    Example:
        >>> import numpy as np
        >>> truth = np.zeros((16, 16), bool); truth[4:12, 4:12] = True
        >>> rng = np.random.default_rng(0)
        >>> tasks = [np.stack([truth, truth, rng.random((16, 16)) < 0.5]) for _ in range(4)]
        >>> res = CrowdStaple().fit_predict(tasks, [["a", "b", "spam"]] * 4)
        >>> bool((res.masks[0] == truth).all()), res.reliability["spam"] < 0.2
        (True, True)
    """

    max_iter: int = 200
    tol: float = 1e-6
    threshold: float = 0.5
    disagreement_only: bool = True
    init_sensitivity: float = 0.8
    init_specificity: float = 0.8
    pseudo_count: float = 1.0
    truncation: bool = True
    anchor: float = 1.0
    guard: bool = True
    guard_margin: float = 0.1
    chunk_size: int = 1024

    annotators_: list[Hashable] = field(init=False, repr=False)
    sensitivity_: FloatArray = field(init=False, repr=False)
    specificity_: FloatArray = field(init=False, repr=False)
    em_sensitivity_: FloatArray = field(init=False, repr=False)
    em_specificity_: FloatArray = field(init=False, repr=False)
    task_prior_: FloatArray = field(init=False, repr=False)
    anchor_share_: FloatArray = field(init=False, repr=False)
    fallback_: str | None = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_em_controls(self.max_iter, self.tol)
        check_probability(self.threshold, "threshold")
        check_probability(self.init_sensitivity, "init_sensitivity", open_interval=True)
        check_probability(self.init_specificity, "init_specificity", open_interval=True)
        if not 0 <= self.guard_margin < 1:
            raise ValueError(f"guard_margin must be in [0, 1), got {self.guard_margin}")
        if not (np.isfinite(self.anchor) and self.anchor >= 0):
            raise ValueError(f"anchor must be a finite number >= 0, got {self.anchor}")
        if not self.pseudo_count >= 0:
            raise ValueError(f"pseudo_count must be >= 0, got {self.pseudo_count}")
        if isinstance(self.chunk_size, bool) or not (
            isinstance(self.chunk_size, int | np.integer) and self.chunk_size >= 1
        ):
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")

    def fit_predict(
        self,
        tasks: Sequence[npt.ArrayLike],
        annotators: Sequence[Sequence[Hashable]],
        gold: Mapping[int, npt.ArrayLike] | None = None,
    ) -> CrowdFusionResult:
        """Fuse every task of a crowd.

        Args:
            tasks: T arrays, task t of shape (R_t, H_t, W_t) or (R_t, D_t, H_t, W_t), bool
                (or 0/1); tasks may differ in size and rater count.
            annotators: T sequences, ``annotators[t][i]`` = hashable id of the rater of
                ``tasks[t][i]``; ids are unique within a task.
            gold: optional {task index: (H_t, W_t) or (D_t, H_t, W_t) bool gold mask}.

        Raises:
            ValueError: empty crowd, mismatched lengths or shapes, duplicate ids in a task,
                bad gold keys.
        """
        return self._fit(_InProcess(), tasks, annotators, gold)

    def _fit(
        self,
        runner: ChunkRunner,
        tasks: Sequence[Any],
        annotators: Sequence[Sequence[Hashable]],
        gold: Mapping[int, Any] | None,
    ) -> CrowdFusionResult:
        """The EM over chunks of ``chunk_size`` tasks, each step mapped by ``runner``.

        Every per-row and per-task quantity is computed inside its chunk; the only values
        that cross chunks are annotator statistics, summed in chunk order by
        :func:`_reduce`. So the result depends on ``chunk_size`` (at rounding level) but not
        on where the chunks run.
        """
        if len(tasks) == 0:
            raise ValueError("tasks is empty")
        if len(tasks) != len(annotators):
            raise ValueError(f"{len(tasks)} tasks but {len(annotators)} annotator lists")
        gold = {} if gold is None else gold
        for key in gold:
            if not (isinstance(key, int | np.integer) and 0 <= key < len(tasks)):
                raise ValueError(f"gold key {key!r} is not a task index")
        ann_index: dict[Hashable, int] = {}
        for ids in annotators:
            for a in ids:
                ann_index.setdefault(a, len(ann_index))
        n_ann, n_tasks = len(ann_index), len(tasks)
        init = (self.init_sensitivity, self.init_specificity)
        inputs = [
            _ChunkInput(
                start=start,
                tasks=list(tasks[start : start + self.chunk_size]),
                annotators=[list(ids) for ids in annotators[start : start + self.chunk_size]],
                gold={
                    int(k) - start: v
                    for k, v in gold.items()
                    if start <= k < start + self.chunk_size
                },
            )
            for start in range(0, n_tasks, self.chunk_size)
        ]
        chunks, built = runner.map(_chunk_build, runner.put(inputs), self, ann_index)
        votes_per_ann = _reduce([b[0] for b in built])
        if self.disagreement_only and self.anchor > 0:
            # Each annotator's anchor weight: the share of its disagreement votes that lie
            # on tasks with <= 3 raters, where only the anchor identifies its rates (step 2).
            dis_small, dis_all = _reduce([b[2] for b in built]), _reduce([b[3] for b in built])
            share = np.zeros(n_ann)
            np.divide(dis_small, dis_all, out=share, where=dis_all > 0)
            chunks, _ = runner.map(_chunk_anchor_share, chunks, share)
            self.anchor_share_ = share
        else:
            self.anchor_share_ = np.zeros(n_ann)

        has_gold = any(b[1] for b in built)
        chunks, p, q, n_iter, converged = self._em(runner, chunks, n_ann, has_gold)
        em_p, em_q = p, q
        # Reported rates: every voxel each annotator labelled against the fused mask
        # (unconditional, unlike the EM's disagreement-only rates), with a tiny prior.
        chunks, sums = runner.map(_chunk_hard_sums, chunks, self, n_ann)
        p, q = _rates(_reduce([s[0] for s in sums]), _reduce([s[1] for s in sums]), n_ann,
                      init, 1e-9)  # fmt: skip
        fallback = None
        if self.guard:
            fallback = self._inversion(votes_per_ann, p, q)
            if fallback is None:
                chunks, counts = runner.map(_chunk_degenerate, chunks, self)
                fallback = _degenerate(counts)
        if fallback is not None:
            chunks, gold_sums = runner.map(_chunk_gold_dice, chunks, n_ann)
            weights = _fallback_weights(
                _reduce([g[0] for g in gold_sums]), _reduce([g[1] for g in gold_sums]),
                _reduce([g[2] for g in gold_sums]),
            )  # fmt: skip
            chunks, _ = runner.map(_chunk_fallback, chunks, weights)
            chunks, sums = runner.map(_chunk_hard_sums, chunks, self, n_ann)
            p, q = _rates(_reduce([s[0] for s in sums]), _reduce([s[1] for s in sums]), n_ann,
                          init, 1e-9)  # fmt: skip
        _, outputs = runner.map(_chunk_output, chunks, self)

        ids = list(ann_index)
        self.annotators_ = ids
        self.sensitivity_, self.specificity_ = p, q
        self.task_prior_ = np.concatenate([o[2] for o in outputs])
        self.em_sensitivity_, self.em_specificity_ = em_p, em_q
        self.fallback_, self.n_iter_, self.converged_ = fallback, n_iter, converged
        reliability = youden_reliability(p, q)
        return CrowdFusionResult(
            masks=[m for o in outputs for m in o[0]],
            probabilities=[prob for o in outputs for prob in o[1]],
            reliability={a: float(reliability[i]) for i, a in enumerate(ids)},
            sensitivity={a: float(p[i]) for i, a in enumerate(ids)},
            specificity={a: float(q[i]) for i, a in enumerate(ids)},
            fallback=fallback,
            n_iter=n_iter,
            converged=converged,
        )

    def _em(
        self, runner: ChunkRunner, chunks: list[Any], n_ann: int, has_gold: bool
    ) -> tuple[list[Any], FloatArray, FloatArray, int, bool]:
        """Start (vote fraction, or the gold-informed start) and EM iterations until ``tol``.

        Returns (chunks, EM sensitivity (A,), EM specificity (A,), iterations, converged).
        """
        init = (self.init_sensitivity, self.init_specificity)
        p: FloatArray = np.full(n_ann, init[0])
        q: FloatArray = np.full(n_ann, init[1])
        if has_gold:
            # Start from the rates measured on the gold tasks: this pins the orientation
            # of the solution when a majority of the crowd is wrong in the same way.
            chunks, sums = runner.map(_chunk_gold_sums, chunks, n_ann)
            gold_p, gold_q = _rates(
                _reduce([s[0] for s in sums]), _reduce([s[1] for s in sums]), n_ann, init,
                self.pseudo_count,
            )  # fmt: skip
            chunks, _ = runner.map(_chunk_gold_start, chunks, gold_p, gold_q)
        chunks, sums = runner.map(_chunk_m_sums, chunks, n_ann)
        converged, n_iter = False, 0
        for n_iter in range(1, self.max_iter + 1):
            new_p, new_q = _rates(
                _reduce([s[0] for s in sums]), _reduce([s[1] for s in sums]), n_ann, init,
                self.pseudo_count,
            )  # fmt: skip
            chunks, steps = runner.map(_chunk_em_step, chunks, self, n_ann, new_p, new_q)
            change = max(
                float(np.abs(new_p - p).max()),
                float(np.abs(new_q - q).max()),
                max(step[2] for step in steps),
            )
            p, q = new_p, new_q
            sums = [(step[0], step[1]) for step in steps]
            if n_iter > 1 and change <= self.tol:
                converged = True
                break
        return chunks, p, q, n_iter, converged

    def _inversion(self, votes_per_ann: FloatArray, p: FloatArray, q: FloatArray) -> str | None:
        """The guard's first test: do inverted annotators (``p + q < 1 − margin``, rates over
        all their voxels against the fused masks) hold most of the votes?"""
        total = votes_per_ann.sum()
        inverted = p + q < 1.0 - self.guard_margin
        if total > 0 and votes_per_ann[inverted].sum() > 0.5 * total:
            share = votes_per_ann[inverted].sum() / total
            return f"label inversion: annotators with {share:.0%} of the votes have sens+spec<1"
        return None


def _degenerate(counts: Sequence[tuple[int, int]]) -> str | None:
    """The guard's second test from per-chunk (scored, degenerate) task counts."""
    scored = sum(c[0] for c in counts)
    degenerate = sum(c[1] for c in counts)
    if scored > 0 and degenerate > 0.5 * scored:
        return (
            f"degenerate solution: {degenerate} of {scored} tasks "
            "fused to all-foreground or all-background"
        )
    return None


def _fallback_weights(tp: FloatArray, size: FloatArray, seen: FloatArray) -> FloatArray:
    """Weighted-vote weights: each annotator's pooled Dice on the gold tasks (the median for
    annotators without gold), or all 1 without gold. Inputs: summed (A,) statistics of
    :func:`_chunk_gold_dice` (integer-valued, so their sum is exact in any order)."""
    n_ann = tp.size
    seen_any = seen > 0
    if not seen_any.any():
        return np.ones(n_ann)
    dice_w = dice_from_counts(tp, size)
    weights: FloatArray = np.where(seen_any, dice_w, np.median(dice_w[seen_any]))
    if weights.sum() <= 0:
        weights = np.ones(n_ann)
    return weights


# -- the EM over chunks of tasks ------------------------------------------------------------
# Each ``_chunk_*`` function is pure: (chunk state, broadcast args) -> (new chunk state, small
# result). A runner maps one over every chunk: in this process (:class:`_InProcess`) or on a
# Dask cluster (``fusion.distributed``), with the very same code either way.

_Out = TypeVar("_Out")


class ChunkRunner(Protocol):
    """Where the chunk functions run. ``put`` places the chunk inputs; ``map`` applies
    ``fn(chunk, *args)`` to every chunk and returns (new chunk handles, small results in
    chunk order)."""

    def put(self, inputs: list[_ChunkInput]) -> list[Any]: ...

    def map(
        self, fn: Callable[..., tuple[Any, _Out]], chunks: list[Any], *args: Any
    ) -> tuple[list[Any], list[_Out]]: ...


class _InProcess:
    """Run every chunk function here, one chunk after the other."""

    def put(self, inputs: list[_ChunkInput]) -> list[Any]:
        return list(inputs)

    def map(
        self, fn: Callable[..., tuple[Any, _Out]], chunks: list[Any], *args: Any
    ) -> tuple[list[Any], list[_Out]]:
        out = [fn(chunk, *args) for chunk in chunks]
        return [o[0] for o in out], [o[1] for o in out]


@dataclass(frozen=True)
class _ChunkInput:
    """Tasks ``start .. start + len(tasks) − 1`` of the crowd; ``gold`` keyed locally."""

    start: int
    tasks: list[Any]
    annotators: list[list[Hashable]]
    gold: dict[int, Any]


@dataclass(frozen=True)
class _Chunk:
    """One chunk's rows (task indices local to the chunk) and its part of the EM state.

    ``w`` is the posterior of its rows; ``prior`` the task priors the last E-step used and
    ``pending`` the ones the last M-step computed (the next E-step's).
    """

    rows: _Rows
    shapes: list[tuple[int, ...]]
    n_tasks: int
    slot_task: IntArray
    slot_ann: IntArray
    free: BoolArray
    is_gold: BoolArray
    fixed: FloatArray
    row_weight: FloatArray
    prior_weight: FloatArray
    m_votes: _Votes
    e_votes: _Votes
    all_votes: _Votes
    w: FloatArray
    prior: FloatArray
    pending: FloatArray


def _chunk_build(
    inp: _ChunkInput, model: CrowdStaple, ann_index: dict[Hashable, int]
) -> tuple[_Chunk, tuple[FloatArray, bool, FloatArray, FloatArray]]:
    """Vote-pattern rows of the chunk and its initial posterior (the vote fraction).

    Returns the chunk and (votes per annotator (A,), whether it holds gold rows, each
    annotator's non-gold disagreement votes on tasks with <= 3 raters (A,) and on all
    tasks (A,)).
    """
    n_ann = len(ann_index)
    rows, shapes = _build_rows(inp.tasks, inp.annotators, inp.gold, ann_index, inp.start)
    n_tasks = len(inp.tasks)
    slot_task = np.repeat(np.arange(n_tasks), [len(ids) for ids in inp.annotators])
    slot_ann = np.array([ann_index[a] for ids in inp.annotators for a in ids], dtype=np.int64)
    is_gold = rows.gold >= 0
    decided = rows.unanimous & model.disagreement_only
    estimate = ~decided
    free = estimate & ~is_gold
    row_weight = estimate.astype(np.float64)
    n_raters = np.bincount(slot_task, minlength=n_tasks)
    if model.disagreement_only and model.anchor > 0 and (n_raters <= _ANCHOR_RATERS).any():
        # On tasks with <= 3 raters each unanimous row enters the M-step with at most
        # anchor × (the task's disagreement voxels) voxels: it pins which class is
        # foreground, which the few disagreement patterns cannot (step 2).
        dis = np.bincount(rows.task, weights=rows.counts * estimate, minlength=n_tasks)
        cap = model.anchor * dis[rows.task]
        anchored = (n_raters <= _ANCHOR_RATERS)[rows.task]
        row_weight = np.where(
            estimate, 1.0, np.where(anchored, np.minimum(1.0, cap / rows.counts), 0.0)
        )
    fixed = np.where(is_gold, rows.gold, np.where(decided, rows.mean_vote, 0.0))
    chunk = _Chunk(
        rows=rows,
        shapes=shapes,
        n_tasks=n_tasks,
        slot_task=slot_task,
        slot_ann=slot_ann,
        free=free,
        is_gold=is_gold,
        fixed=fixed,
        row_weight=row_weight,
        prior_weight=estimate.astype(np.float64),
        m_votes=_Votes.select(rows, row_weight > 0, n_ann),
        e_votes=_Votes.select(rows, free, n_ann),
        all_votes=_Votes.select(rows, np.ones(rows.counts.shape, bool), n_ann),
        w=np.where(free, rows.mean_vote, fixed),
        prior=np.full(n_tasks, 0.5),
        pending=np.full(n_tasks, 0.5),
    )
    votes_per_ann = np.bincount(rows.e_ann, weights=rows.counts[rows.e_row], minlength=n_ann)
    # per annotator: disagreement voxels it voted on, in all tasks / in tasks with <= 3 raters
    dis_votes = (rows.counts * (estimate & ~is_gold))[rows.e_row]
    small = (n_raters <= _ANCHOR_RATERS)[rows.task][rows.e_row]
    dis_all = np.bincount(rows.e_ann, weights=dis_votes, minlength=n_ann)
    dis_small = np.bincount(rows.e_ann, weights=dis_votes * small, minlength=n_ann)
    return chunk, (
        votes_per_ann.astype(np.float64, copy=False),
        bool(is_gold.any()),
        dis_small.astype(np.float64, copy=False),
        dis_all.astype(np.float64, copy=False),
    )


def _chunk_anchor_share(c: _Chunk, share: FloatArray) -> tuple[_Chunk, None]:
    """Weight each anchored vote (a unanimous row's, in the M-step) by its annotator's
    ``share`` (A,); every other vote keeps weight 1."""
    rows = c.rows
    sel = (c.row_weight > 0)[rows.e_row]  # the entries of c.m_votes, in their order
    e_row, e_ann = rows.e_row[sel], rows.e_ann[sel]
    anchored = rows.unanimous[e_row]  # in the M-step only when anchored (step 2)
    weight = np.where(anchored, share[e_ann], 1.0)
    return replace(c, m_votes=replace(c.m_votes, weight=weight)), None


def _chunk_gold_sums(c: _Chunk, n_ann: int) -> tuple[_Chunk, tuple[FloatArray, FloatArray]]:
    """M-step statistics of the gold rows only (for the gold-informed start)."""
    gold_votes = _Votes.select(c.rows, (c.row_weight > 0) & c.is_gold, n_ann)
    s_fg, s_bg, _ = _m_sums(c.rows, gold_votes, c.row_weight * c.is_gold, c.w, n_ann, c.n_tasks)
    return c, (s_fg, s_bg)


def _chunk_gold_start(c: _Chunk, gold_p: FloatArray, gold_q: FloatArray) -> tuple[_Chunk, None]:
    """Initial posterior: the E-step under the gold rates and the vote-fraction prior."""
    rows = c.rows
    prior_0 = np.clip(
        np.bincount(rows.task, weights=rows.counts * rows.mean_vote, minlength=c.n_tasks)
        / np.bincount(rows.task, weights=rows.counts, minlength=c.n_tasks),
        _EPS,
        1 - _EPS,
    )
    w = np.where(c.free, _e_step(rows, c.e_votes, c.free, gold_p, gold_q, prior_0), c.fixed)
    return replace(c, w=w), None


def _chunk_m_sums(c: _Chunk, n_ann: int) -> tuple[_Chunk, tuple[FloatArray, FloatArray]]:
    """The M-step's statistics of the current posterior; the task priors become pending."""
    s_fg, s_bg, pending = _m_sums(
        c.rows, c.m_votes, c.row_weight, c.w, n_ann, c.n_tasks, c.prior_weight
    )
    return replace(c, pending=pending), (s_fg, s_bg)


def _chunk_em_step(
    c: _Chunk, model: CrowdStaple, n_ann: int, p: FloatArray, q: FloatArray
) -> tuple[_Chunk, tuple[FloatArray, FloatArray, float]]:
    """One E-step under the new rates and the pending priors, then the next M-statistics.

    Returns (s_fg, s_bg, largest change of a task prior in this chunk).
    """
    corr = (
        _truncation(p, q, c.slot_task, c.slot_ann, c.n_tasks)
        if model.disagreement_only and model.truncation
        else None
    )
    w = np.where(c.free, _e_step(c.rows, c.e_votes, c.free, p, q, c.pending, corr), c.fixed)
    change = float(np.abs(c.pending - c.prior).max())
    c = replace(c, w=w, prior=c.pending)
    c, (s_fg, s_bg) = _chunk_m_sums(c, n_ann)
    return c, (s_fg, s_bg, change)


def _chunk_hard_sums(
    c: _Chunk, model: CrowdStaple, n_ann: int
) -> tuple[_Chunk, tuple[FloatArray, FloatArray]]:
    """Statistics of every vote against the thresholded posterior (the reported rates)."""
    hard = (c.w > model.threshold).astype(np.float64)
    everywhere = np.ones(c.rows.counts.shape)
    s_fg, s_bg, _ = _m_sums(c.rows, c.all_votes, everywhere, hard, n_ann, c.n_tasks)
    return c, (s_fg, s_bg)


def _chunk_degenerate(c: _Chunk, model: CrowdStaple) -> tuple[_Chunk, tuple[int, int]]:
    """(scored, degenerate) non-gold tasks: scored where the majority vote is neither empty
    nor full; degenerate where the fused mask is all-background or all-foreground."""
    rows = c.rows
    non_gold = rows.gold < 0
    fused = (c.w > model.threshold) & non_gold
    mv = (rows.mean_vote > 0.5) & non_gold
    counts = rows.counts
    fused_fg = np.bincount(rows.task, weights=counts * fused, minlength=c.n_tasks)
    mv_fg = np.bincount(rows.task, weights=counts * mv, minlength=c.n_tasks)
    size = np.bincount(rows.task, weights=counts * non_gold, minlength=c.n_tasks)
    scored = (size > 0) & (mv_fg > 0) & (mv_fg < size)
    degenerate = scored & ((fused_fg == 0) | (fused_fg == size))
    return c, (int(scored.sum()), int(degenerate.sum()))


def _chunk_gold_dice(
    c: _Chunk, n_ann: int
) -> tuple[_Chunk, tuple[FloatArray, FloatArray, FloatArray]]:
    """Per annotator on this chunk's gold rows: (true positives, |vote| + |gold|, votes)."""
    rows = c.rows
    gold_entries = c.is_gold[rows.e_row]
    e_row, e_ann = rows.e_row[gold_entries], rows.e_ann[gold_entries]
    e_vote = rows.e_vote[gold_entries]
    counts = rows.counts[e_row]
    g = rows.gold[e_row] == 1
    tp = np.bincount(e_ann, weights=counts * (e_vote & g), minlength=n_ann)
    size = np.bincount(e_ann, weights=counts * (e_vote.astype(np.float64) + g), minlength=n_ann)
    seen = np.bincount(e_ann, minlength=n_ann).astype(np.float64)
    return c, (tp.astype(np.float64, copy=False), size.astype(np.float64, copy=False), seen)


def _chunk_fallback(c: _Chunk, weights: FloatArray) -> tuple[_Chunk, None]:
    """Replace the posterior by the weighted-vote fraction per row (gold rows: gold)."""
    rows = c.rows
    n_rows = rows.counts.size
    num = np.bincount(rows.e_row, weights=weights[rows.e_ann] * rows.e_vote, minlength=n_rows)
    den = np.bincount(rows.e_row, weights=weights[rows.e_ann], minlength=n_rows)
    frac = np.zeros(n_rows)
    np.divide(num, den, out=frac, where=den > 0)
    return replace(c, w=np.where(c.is_gold, rows.gold, frac)), None


def _chunk_output(
    c: _Chunk, model: CrowdStaple
) -> tuple[_Chunk, tuple[list[BoolArray], list[npt.NDArray[np.float32]], FloatArray]]:
    """The chunk's fused masks, posterior maps (float32) and task priors."""
    rows = c.rows
    masks, probabilities = [], []
    for t, shape in enumerate(c.shapes):
        prob = c.w[rows.offsets[t] : rows.offsets[t + 1]][rows.inverse[t]].reshape(shape)
        masks.append(prob > model.threshold)
        probabilities.append(prob.astype(np.float32))
    return c, (masks, probabilities, c.prior)
