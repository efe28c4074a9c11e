"""Active-learning simulation: which images should volunteers label first?

:func:`simulate_active_learning` replays labelling on a pool whose ground truth is known:
every strategy starts from the same initially labelled images and the same trained network,
then each round selects ``per_round`` pool images, "labels" them (reveals their masks),
fine-tunes the network on everything labelled so far, and records the test Dice. The
reference is a network trained on the whole pool with the same number of optimiser steps.

Strategies (registry :data:`STRATEGIES`):

* ``sqa`` — most predicted errors first: :class:`segmenter.sqa.QualityAssessor` (its
  segmentation branch is the network being fine-tuned; its error branch scores images;
  :class:`SQASettings` chooses between expected wrong pixels and predicted Dice);
* ``mc-dropout`` — highest mean per-pixel MC-dropout standard deviation first (Gal et al.
  2017, "Deep Bayesian Active Learning with Image Data", https://arxiv.org/abs/1703.02910);
* ``random`` — uniformly at random (the baseline every strategy has to beat).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from segmenter.metrics import dice_scores
from segmenter.model import SegmenterConfig
from segmenter.trainer import Segmenter
from segmenter.training import Progress, StepCounter

__all__ = [
    "STRATEGIES",
    "ALResult",
    "SQASettings",
    "planned_steps",
    "results_json",
    "simulate_active_learning",
]

Log = Callable[[dict[str, Any]], None]
"""``on_log(event)``: what just happened, e.g. ``{"stage": "sqa: round 1/4", "strategy":
"sqa", "round": 1, "rounds": 4, "labelled": 12, "dice": 0.81}``."""


@dataclass
class ALResult:
    """One strategy's learning curve.

    Attributes:
        strategy: a key of :data:`STRATEGIES`.
        fractions: labelled share of the pool at each point (point 0: the initial set).
        dice: mean test Dice of the network at each point.
        labelled: pool indices labelled at each point: point 0 the initial set, then the
            images selected in that round (all labelled so far = concatenation).
        scores: per round, the selection scores of the chosen images (empty for point 0).
    """

    strategy: str
    fractions: list[float] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)
    labelled: list[list[int]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SQASettings:
    """How the ``sqa`` strategy trains its error branch.

    Attributes:
        folds: k of the out-of-fold predictions for the initial labelled set.
        fold_steps: steps of each fold network (None: ``config.steps``).
        error_steps: error-branch-only steps after the initial training (None:
            ``config.steps``); later rounds train it jointly during fine-tuning.
        acquisition: ``"error"`` — most predicted error pixels first (mean error
            probability; the candidates are equal-size tiles, so this is the expected number
            of wrong pixels, what a whole-image Dice loses); ``"dice"`` — lowest predicted
            Dice first (the assessor's image score; it favours tiles with almost no
            foreground, where a few wrong pixels make the Dice collapse).
        power: β > 0 (default 1) — *power sampling*:
            draw ``per_round`` images without replacement with probability ∝ priority^β
            (Kirsch et al., "Stochastic Batch Acquisition: A Simple Baseline for Deep Active
            Learning", TMLR 2023, https://arxiv.org/abs/2106.12059), which avoids a batch of
            near-duplicates; priorities are then positive error means (``"error"``) or
            1 − predicted Dice (``"dice"``). None — the ``per_round`` highest priorities.
    """

    folds: int = 3
    fold_steps: int | None = None
    error_steps: int | None = None
    acquisition: str = "error"
    power: float | None = 1.0

    def __post_init__(self) -> None:
        if self.acquisition not in ("error", "dice"):
            raise ValueError(f"acquisition must be 'error' or 'dice', got {self.acquisition!r}")
        if self.power is not None and self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")


class _Learner:
    """A network being fine-tuned in the simulation plus its selection rule."""

    def __init__(self, segmenter: Segmenter, sqa: SQASettings) -> None:
        self.segmenter = segmenter

    @staticmethod
    def prepare_steps(sqa: SQASettings, config: SegmenterConfig, initial: int) -> int:
        """Optimiser steps :meth:`prepare` takes on ``initial`` images."""
        return 0

    def prepare(self, images: np.ndarray, masks: np.ndarray, tick: Progress) -> None:
        """Anything the rule needs after the initial training (SQA: the error branch)."""

    def scores(self, images: np.ndarray, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        """Priority of each candidate: higher = label first."""
        raise NotImplementedError

    def fine_tune(self, images: np.ndarray, masks: np.ndarray, steps: int, tick: Progress) -> None:
        self.segmenter.fit(images, masks, steps=steps, progress=tick)


class _Random(_Learner):
    def scores(self, images: np.ndarray, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        return rng.random(len(images))


class _MCDropout(_Learner):
    samples = 8

    def scores(self, images: np.ndarray, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        _, unc = self.segmenter.mc_dropout(images, samples=self.samples)
        return unc.mean(axis=(1, 2)).astype(np.float64)


class _SQA(_Learner):
    def __init__(self, segmenter: Segmenter, sqa: SQASettings) -> None:
        from segmenter.sqa import QualityAssessor

        super().__init__(segmenter, sqa)
        self.settings = sqa
        self.qa = QualityAssessor.from_segmenter(
            segmenter, folds=sqa.folds, fold_steps=sqa.fold_steps
        )

    @staticmethod
    def prepare_steps(sqa: SQASettings, config: SegmenterConfig, initial: int) -> int:
        # every initial image was trained on: each of the k folds trains a fold network
        fold = config.steps if sqa.fold_steps is None else sqa.fold_steps
        error = config.steps if sqa.error_steps is None else sqa.error_steps
        return min(sqa.folds, initial) * fold + error

    def prepare(self, images: np.ndarray, masks: np.ndarray, tick: Progress) -> None:
        # the initial network was trained on these images: records come from k-fold networks
        self.qa.fit(
            images, masks, steps=self.settings.error_steps, progress=tick, segmentation=False
        )

    def scores(self, images: np.ndarray, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        _, error, quality = self.qa.predict(images)
        if self.settings.acquisition == "dice":
            priority = 1.0 - quality.astype(np.float64)  # lowest predicted Dice first
        else:
            priority = error.mean(axis=(1, 2)).astype(np.float64)  # most wrong pixels first
        if self.settings.power is None:
            return priority
        # Gumbel-top-k: the top k of log(p^β) + Gumbel noise are a draw without replacement
        # with probability ∝ p^β
        with np.errstate(divide="ignore"):  # log(0) = -inf: never drawn before positives
            keys = self.settings.power * np.log(priority)
        return np.asarray(keys + rng.gumbel(size=len(priority)), np.float64)

    def fine_tune(self, images: np.ndarray, masks: np.ndarray, steps: int, tick: Progress) -> None:
        # new images get their error records from the current network before it sees them
        self.qa.fit(images, masks, steps=steps, progress=tick)


STRATEGIES: dict[str, type[_Learner]] = {"sqa": _SQA, "random": _Random, "mc-dropout": _MCDropout}


def _mean_dice(seg: Segmenter, images: np.ndarray, masks: np.ndarray) -> float:
    return float(np.mean(dice_scores(seg.predict(images), masks)))


def planned_steps(
    strategies: tuple[str, ...],
    *,
    initial: int,
    rounds: int,
    config: SegmenterConfig,
    finetune_steps: int,
    sqa: SQASettings | None = None,
) -> int:
    """Optimiser steps :func:`simulate_active_learning` takes (the ``total`` it reports)."""
    settings = sqa or SQASettings()
    per_strategy = sum(
        STRATEGIES[name].prepare_steps(settings, config, initial) + rounds * finetune_steps
        for name in strategies
    )
    return config.steps + per_strategy + config.steps + rounds * finetune_steps


def simulate_active_learning(
    pool_images: np.ndarray,
    pool_masks: np.ndarray,
    test_images: np.ndarray,
    test_masks: np.ndarray,
    *,
    strategies: tuple[str, ...] = ("sqa", "random", "mc-dropout"),
    initial: int,
    per_round: int,
    rounds: int,
    config: SegmenterConfig,
    finetune_steps: int,
    seed: int = 0,
    progress: Progress | None = None,
    on_log: Log | None = None,
    candidates: int | None = None,
    sqa: SQASettings | None = None,
) -> tuple[list[ALResult], float]:
    """Simulate labelling rounds for each strategy; return the curves and the full-data Dice.

    Steps: draw ``initial`` pool images with ``seed`` (the same for every strategy) and train
    one network on them for ``config.steps``; every strategy starts from a copy of it. Then
    ``rounds`` times: score unlabelled pool images (a random subset of ``candidates`` of them
    if given, to bound the cost), label the ``per_round`` with the highest priority,
    fine-tune on all labelled images for ``finetune_steps`` (incremental: weights and
    optimiser carry on), and measure the mean test Dice. Reference: a fresh network trained
    on the whole pool for the same total ``config.steps + rounds * finetune_steps``.

    Args:
        pool_images, pool_masks: N×S×S uint8 images and {0, 1} masks ("unlabelled" pool
            whose masks are revealed on selection).
        test_images, test_masks: M×S×S held-out images and masks, only used for Dice.
        strategies: keys of :data:`STRATEGIES`.
        initial, per_round, rounds: labelling schedule.
        config: network and initial training (``config.seed`` is replaced by ``seed``;
            ``config.device`` already resolved).
        finetune_steps: optimiser steps after each round.
        seed: seeds the initial set, the networks and random selection.
        progress: ``progress(done, total)`` in optimiser steps over the whole simulation
            (``total`` = :func:`planned_steps`).
        on_log: called with a dict after each measured point: ``{"stage": "initial
            network", "dice"}``, ``{"stage": "<strategy>: round r/R", "strategy", "round",
            "rounds", "labelled", "dice"}``, ``{"stage": "full pool", "dice"}``.
        candidates: score at most this many unlabelled images per round (None: all).
        sqa: error-branch training of the ``sqa`` strategy (:class:`SQASettings`).

    Returns:
        ``(results, full_dice)``: one :class:`ALResult` per strategy, in order, and the
        reference Dice of the network trained on the whole pool.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    n = len(pool_images)
    if len(pool_masks) != n or len(test_images) != len(test_masks) or not len(test_images):
        raise ValueError("pool and test need as many masks as images, and >= 1 test image")
    if initial < 2 or per_round < 1 or rounds < 0 or finetune_steps < 0:
        raise ValueError("need initial >= 2, per_round >= 1, rounds >= 0, finetune_steps >= 0")
    if initial + rounds * per_round > n:
        raise ValueError(
            f"initial {initial} + {rounds} rounds × {per_round} exceeds the pool of {n} images"
        )
    log = on_log or (lambda _event: None)
    cfg = SegmenterConfig(**{**config.to_dict(), "seed": seed})
    settings = sqa or SQASettings()
    steps = StepCounter(
        planned_steps(
            strategies, initial=initial, rounds=rounds, config=cfg,
            finetune_steps=finetune_steps, sqa=settings,
        ),
        progress,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    start = sorted(rng.choice(n, size=initial, replace=False).tolist())

    base = Segmenter(cfg)
    base.fit(pool_images[start], pool_masks[start], progress=steps.part())
    base_dice = _mean_dice(base, test_images, test_masks)
    log({"stage": "initial network", "dice": base_dice})

    results: list[ALResult] = []
    for name in strategies:
        learner = STRATEGIES[name](base.clone(), settings)
        learner.prepare(pool_images[start], pool_masks[start], steps.part())
        result = ALResult(name, [initial / n], [base_dice], [list(start)], [[]])
        labelled = list(start)
        pick_rng = np.random.default_rng([seed, list(STRATEGIES).index(name), 1])
        for r in range(rounds):
            chosen = set(labelled)
            free = np.array([i for i in range(n) if i not in chosen])
            if candidates is not None and len(free) > candidates:
                free = np.sort(pick_rng.choice(free, size=candidates, replace=False))
            priority = learner.scores(pool_images[free], pick_rng)
            top = np.argsort(-priority, kind="stable")[:per_round]
            new = [int(i) for i in free[top]]
            labelled += new
            learner.fine_tune(
                pool_images[labelled], pool_masks[labelled], finetune_steps, steps.part()
            )
            result.fractions.append(len(labelled) / n)
            result.dice.append(_mean_dice(learner.segmenter, test_images, test_masks))
            result.labelled.append(new)
            result.scores.append([float(priority[i]) for i in top])
            log({"stage": f"{name}: round {r + 1}/{rounds}", "strategy": name, "round": r + 1,
                 "rounds": rounds, "labelled": len(labelled), "dice": result.dice[-1]})  # fmt: skip
        results.append(result)

    total = cfg.steps + rounds * finetune_steps
    full = Segmenter(cfg)
    full.fit(pool_images, pool_masks, steps=total, progress=steps.part())
    full_dice = _mean_dice(full, test_images, test_masks)
    log({"stage": "full pool", "dice": full_dice})
    return results, full_dice


def results_json(results: list[ALResult], full_dice: float) -> str:
    """The curves and the reference as a JSON document."""
    return json.dumps({"full_dice": full_dice, "results": [r.to_dict() for r in results]}, indent=2)
