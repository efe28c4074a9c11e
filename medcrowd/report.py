"""The figure ``medcrowd fuse`` writes next to its tables (``report.png``).

Top row: each volunteer's reliability (as the fusion method estimated it) against their Dice
on gold tasks, and the histogram of per-task agreement (mean pairwise Dice). Bottom row: the
tasks with the lowest agreement, each volunteer's outline in its own colour and the fused
mask in white, on the task image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["WorstTask", "write_report"]


@dataclass
class WorstTask:
    task: int
    agreement: float
    image: npt.NDArray[np.generic] | None
    masks: npt.NDArray[np.bool_]  # (R, H, W)
    fused: npt.NDArray[np.bool_]


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    from scipy import ndimage

    return np.asarray(mask & ~ndimage.binary_erosion(mask))


def write_report(
    path: Path,
    method: str,
    reliability: dict[int, float],
    gold_dice: dict[int, float],
    agreements: list[float],
    worst: list[WorstTask],
) -> None:
    """Render the figure to ``path`` (PNG, 150 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_bottom = max(1, len(worst))
    fig = plt.figure(figsize=(4 * max(2, n_bottom), 8), layout="constrained")
    grid = fig.add_gridspec(2, max(2, n_bottom))
    ax = fig.add_subplot(grid[0, 0])
    both = sorted(set(reliability) & set(gold_dice))
    if both:
        x = [gold_dice[a] for a in both]
        y = [reliability[a] for a in both]
        ax.scatter(x, y)
        for a, xi, yi in zip(both, x, y, strict=True):
            ax.annotate(str(a), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=8)
        if len(both) > 1 and np.std(x) > 0 and np.std(y) > 0:
            r = float(np.corrcoef(x, y)[0, 1])
            ax.set_title(f"reliability vs gold (Pearson r = {r:.2f})")
        else:
            ax.set_title("reliability vs gold")
    else:
        ax.text(0.5, 0.5, "no gold tasks", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("reliability vs gold")
    ax.set_xlabel("Dice vs gold")
    ax.set_ylabel(f"reliability ({method})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax = fig.add_subplot(grid[0, 1])
    values = [a for a in agreements if not np.isnan(a)]
    ax.hist(values, bins=[i / 20 for i in range(21)], color="tab:gray")
    ax.set_xlabel("mean pairwise Dice per task")
    ax.set_ylabel("tasks")
    ax.set_title(f"agreement ({len(values)} tasks with ≥ 2 annotators)")
    colours = plt.get_cmap("tab10")
    for i, item in enumerate(worst):
        ax = fig.add_subplot(grid[1, i])
        h, w = item.fused.shape
        canvas = np.zeros((h, w, 3))
        if item.image is not None:
            img = item.image.astype(np.float64)
            img = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
            canvas = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        for r, mask in enumerate(item.masks):
            canvas[_outline(mask)] = colours(r % 10)[:3]
        canvas[_outline(item.fused)] = (1.0, 1.0, 1.0)
        ax.imshow(canvas)
        ax.set_title(f"task {item.task}: agreement {item.agreement:.2f}")
        ax.axis("off")
    fig.suptitle(f"medcrowd fuse — {method}")
    fig.savefig(path, dpi=150)
    plt.close(fig)
