"""The previous answer of each region a volunteer is refining with clicks (bounded, LRU).

A refinement click is answered from the box, every click of the region so far and the
region's previous low-resolution logits (the SAM / CVPR 2025 interactive protocol). The
logits live here, keyed by ``(task, annotator, region)``: a region is the volunteer's box
(:attr:`ml_backend.labeling.Prompt.region`), so a new box starts a new region. At most
``max_regions`` are kept (the backend's ``click_regions`` setting, default 256 × 128 KiB =
32 MiB as float16); the least recently used goes.

Example::

    memory = ClickMemory(max_regions=256)
    memory.put(("task-7", "ann-3", "box:10.00,…"), prediction.logits)
    previous = memory.get(("task-7", "ann-3", "box:10.00,…"))   # float32 or None
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

__all__ = ["ClickMemory"]


class ClickMemory:
    """LRU map ``key → (256, 256) float32 logits``, thread-safe.

    Attributes:
        max_regions: most regions kept.
        hits, misses: lookups that found / did not find logits.
    """

    def __init__(self, max_regions: int = 256) -> None:
        if max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.max_regions = max_regions
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The region's previous logits (float32), or None; marks it recently used."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value.astype(np.float32)

    def put(self, key: Hashable, logits: np.ndarray) -> None:
        """Remember the region's latest logits (stored as float16)."""
        with self._lock:
            self._items[key] = np.asarray(logits, dtype=np.float16)
            self._items.move_to_end(key)
            while len(self._items) > self.max_regions:
                self._items.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)
