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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segmenter.metrics import dice_scores
from segmenter.trainer import Segmenter, SegmenterConfig

__all__ = [
    "STRATEGIES",
    "ALResult",
    "SQASettings",
    "plot_curves",
    "results_json",
    "simulate_active_learning",
]

Progress = Callable[[str, int, int], None]
"""Called with (stage description, done, total)."""


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

    def prepare(self, images: np.ndarray, masks: np.ndarray, say: Progress) -> None:
        """Anything the rule needs after the initial training (SQA: the error branch)."""

    def scores(self, images: np.ndarray, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        """Priority of each candidate: higher = label first."""
        raise NotImplementedError

    def fine_tune(self, images: np.ndarray, masks: np.ndarray, steps: int, say: Progress) -> None:
        self.segmenter.fit(
            images, masks, steps=steps, on_step=lambda d, t, _l: say("fine-tuning", d, t)
        )


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

    def prepare(self, images: np.ndarray, masks: np.ndarray, say: Progress) -> None:
        # the initial network was trained on these images: records come from k-fold networks
        self.qa.fit(
            images,
            masks,
            steps=self.settings.error_steps,
            segmentation=False,
            on_step=lambda d, t, _l: say("SQA error branch", d, t),
            on_progress=say,
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

    def fine_tune(self, images: np.ndarray, masks: np.ndarray, steps: int, say: Progress) -> None:
        # new images get their error records from the current network before it sees them
        self.qa.fit(images, masks, steps=steps, on_step=lambda d, t, _l: say("fine-tuning", d, t))


STRATEGIES: dict[str, type[_Learner]] = {"sqa": _SQA, "random": _Random, "mc-dropout": _MCDropout}


def _mean_dice(seg: Segmenter, images: np.ndarray, masks: np.ndarray) -> float:
    return float(np.mean(dice_scores(seg.predict(images), masks)))


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
    on_progress: Progress | None = None,
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
        config: network and initial training (``config.seed`` is replaced by ``seed``).
        finetune_steps: optimiser steps after each round.
        seed: seeds the initial set, the networks and random selection.
        on_progress: called with (stage, done, total).
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
    say = on_progress or (lambda *_: None)
    cfg = SegmenterConfig(**{**config.to_dict(), "seed": seed})
    rng = np.random.default_rng(seed)
    start = sorted(rng.choice(n, size=initial, replace=False).tolist())

    say("initial training", 0, cfg.steps)
    base = Segmenter(cfg)
    base.fit(
        pool_images[start],
        pool_masks[start],
        on_step=lambda d, t, _l: say("initial training", d, t),
    )
    base_dice = _mean_dice(base, test_images, test_masks)
    say(f"initial network: Dice {base_dice:.4f}", 1, 1)

    results: list[ALResult] = []
    for name in strategies:
        learner = STRATEGIES[name](base.clone(), sqa or SQASettings())

        def tell(stage: str, done: int, total: int, name: str = name) -> None:
            say(f"{name}: {stage}", done, total)

        learner.prepare(pool_images[start], pool_masks[start], tell)
        result = ALResult(name, [initial / n], [base_dice], [list(start)], [[]])
        labelled = list(start)
        pick_rng = np.random.default_rng([seed, list(STRATEGIES).index(name), 1])
        for r in range(rounds):
            chosen = set(labelled)
            free = np.array([i for i in range(n) if i not in chosen])
            if candidates is not None and len(free) > candidates:
                free = np.sort(pick_rng.choice(free, size=candidates, replace=False))
            tell(f"round {r + 1}/{rounds}: scoring {len(free)} images", r, rounds)
            priority = learner.scores(pool_images[free], pick_rng)
            top = np.argsort(-priority, kind="stable")[:per_round]
            new = [int(i) for i in free[top]]
            labelled += new
            learner.fine_tune(pool_images[labelled], pool_masks[labelled], finetune_steps, tell)
            result.fractions.append(len(labelled) / n)
            result.dice.append(_mean_dice(learner.segmenter, test_images, test_masks))
            result.labelled.append(new)
            result.scores.append([float(priority[i]) for i in top])
            tell(f"round {r + 1}/{rounds}: Dice {result.dice[-1]:.4f}", r + 1, rounds)
        results.append(result)

    total = cfg.steps + rounds * finetune_steps
    full = Segmenter(cfg)
    full.fit(pool_images, pool_masks, steps=total, on_step=lambda d, t, _l: say("full pool", d, t))
    return results, _mean_dice(full, test_images, test_masks)


def plot_curves(
    results: list[ALResult], full_dice: float, path: Path, title: str | None = None
) -> None:
    """Test Dice vs % of the pool labelled, one line per strategy, with the full-data Dice
    and 97 % of it as horizontal references; written as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = {"sqa": "#d62828", "random": "#6c757d", "mc-dropout": "#277da1"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for res in results:
        ax.plot(
            [100 * f for f in res.fractions],
            res.dice,
            marker="o",
            label=res.strategy,
            color=colours.get(res.strategy),
        )
    ax.axhline(full_dice, color="black", lw=1, label=f"full pool ({full_dice:.3f})")
    ax.axhline(0.97 * full_dice, color="black", lw=1, ls="--", label="97 % of full pool")
    ax.set_xlabel("% of the pool labelled")
    ax.set_ylabel("test Dice")
    ax.set_title(title or "Active learning: Dice vs labelled share")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_json(results: list[ALResult], full_dice: float) -> str:
    """The curves and the reference as a JSON document."""
    return json.dumps({"full_dice": full_dice, "results": [r.to_dict() for r in results]}, indent=2)
