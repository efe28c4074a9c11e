"""``medcrowd select --simulate``: replay select → label → fine-tune rounds on labelled data.

Reads a labelled folder (:func:`medcrowd.pairs.load_pairs`), squashes every pair to
``size``×``size`` gray, holds out ``test_fraction`` of the images (seeded), runs
:func:`segmenter.active.simulate_active_learning` (SQA, random and MC-dropout selection) on
the rest and writes ``curves.png`` (Dice vs % labelled) and ``curves.json``.
:func:`plot_curves` is also what ``benchmarks/active_learning.py`` draws with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from segmenter.active import ALResult
    from segmenter.training import Progress

__all__ = ["SimulateOptions", "SimulateReport", "plot_curves", "simulate_selection"]


@dataclass
class SimulateOptions:
    """Options of :func:`simulate_selection` (the CLI's ``--help`` documents each)."""

    initial: int = 4
    per_round: int = 4
    rounds: int = 4
    size: int = 64
    steps: int = 300
    finetune_steps: int = 150
    test_fraction: float = 0.3
    invert_masks: bool = False
    seed: int = 0
    device: str = "auto"


@dataclass
class SimulateReport:
    out: Path
    pool: int
    test: int
    full_dice: float
    results: list[ALResult] = field(default_factory=list)


def simulate_selection(
    data: Path,
    out: Path,
    options: SimulateOptions,
    progress: Progress | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> SimulateReport:
    """Run the simulation on ``data``; write ``out/curves.png`` and ``out/curves.json``.

    ``progress(done, total)`` counts optimiser steps of the whole simulation; ``on_log``
    gets :func:`segmenter.active.simulate_active_learning`'s events.

    Raises:
        ValueError / FileNotFoundError: bad options or device, a missing or too small folder.
    """
    from medcrowd.pairs import binary_arrays, load_pairs
    from ml_backend.device import resolve_device
    from segmenter.active import simulate_active_learning
    from segmenter.data import prepare
    from segmenter.model import SegmenterConfig

    device = resolve_device(options.device)
    if not Path(data).is_dir():
        raise FileNotFoundError(f"{data} is not a folder")
    _, images, masks = binary_arrays(load_pairs(data, invert_masks=options.invert_masks))
    if len(images) < options.initial + options.per_round + 2:
        raise ValueError(f"{len(images)} labelled images are too few for this simulation")
    x, y = prepare(images, masks, options.size)
    order = np.random.default_rng(options.seed).permutation(len(x))
    n_test = max(1, round(len(x) * options.test_fraction))
    test_idx, pool_idx = order[:n_test], order[n_test:]
    config = SegmenterConfig(
        size=options.size, steps=options.steps, seed=options.seed, device=device
    )
    results, full = simulate_active_learning(
        x[pool_idx], y[pool_idx], x[test_idx], y[test_idx],
        initial=options.initial, per_round=options.per_round, rounds=options.rounds,
        config=config, finetune_steps=options.finetune_steps, seed=options.seed,
        progress=progress, on_log=on_log,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(results, full, out / "curves.png")
    payload = {
        "data": str(Path(data).resolve()),
        "pool": len(pool_idx),
        "test": int(n_test),
        "full_data_dice": full,
        "results": [r.to_dict() for r in results],
    }
    (out / "curves.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return SimulateReport(out, len(pool_idx), int(n_test), full, results)


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
