"""The interaction-cost model now lives in :mod:`medcrowd.effort` (the assisted crowd of
``medcrowd evaluate`` prices its corrections with it); this module keeps
``from _effort_model import …`` working in the benchmarks."""

from medcrowd.effort import (
    CostModel,
    Effort,
    assisted_effort,
    brush_correct,
    brush_effort,
    manual_effort,
    polygon_effort,
)

__all__ = [
    "CostModel",
    "Effort",
    "assisted_effort",
    "brush_correct",
    "brush_effort",
    "manual_effort",
    "polygon_effort",
]
