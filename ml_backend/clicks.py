"""The previous answer of each region a volunteer is refining with clicks (bounded, LRU), and
the box and clicks of each volunteer's current region (:class:`Regions`).

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
from dataclasses import dataclass

import numpy as np

__all__ = ["ClickMemory", "RegionState", "Regions"]


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


Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RegionState:
    """A volunteer's current region on a task: its box and every click on it so far.

    Attributes:
        box_xyxy: XYXY pixels in the original image.
        region: the region's key (:attr:`ml_backend.labeling.Prompt.region` of its box).
        points: (x, y) pixel clicks, oldest first.
        labels: 1 positive / 0 negative, one per point.
    """

    box_xyxy: Box
    region: str
    points: tuple[Point, ...] = ()
    labels: tuple[int, ...] = ()


class Regions:
    """LRU map ``(task, annotator, label) → RegionState``: what a click refines, thread-safe.

    Why: Label Studio 1.23's labelling page sends, with a click, only the smart keypoints of
    the same label (``getConnectedDynamicRegions`` keeps regions of the clicked region's own
    type), never the box the mask came from; and once a suggestion is accepted (auto-accept,
    as ``medcrowd up`` sets it), it deletes those keypoints, so the next click arrives alone.
    The backend therefore keeps each volunteer's last box per task and label and the clicks
    on it: a click is answered from that box and every click so far. A new box starts a new
    region.

    Example::

        regions = Regions(max_regions=256)
        regions.start(("7", "", "Organ"), (10.0, 12.0, 80.0, 90.0), "box:…")
        state = regions.click(("7", "", "Organ"), [(40.0, 50.0)], [0])
        state.box_xyxy, state.points    # (10.0, 12.0, 80.0, 90.0), ((40.0, 50.0),)
    """

    def __init__(self, max_regions: int = 256, same_px: float = 0.5) -> None:
        if max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.max_regions = max_regions
        self.same_px = same_px
        self._items: OrderedDict[Hashable, RegionState] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def start(
        self,
        key: Hashable,
        box_xyxy: Box,
        region: str,
        points: tuple[Point, ...] = (),
        labels: tuple[int, ...] = (),
    ) -> RegionState:
        """A box (with the clicks sent along with it, if any) starts the key's region."""
        state = RegionState(box_xyxy, region, tuple(points), tuple(labels))
        self._put(key, state)
        return state

    def click(
        self,
        key: Hashable,
        points: list[Point] | tuple[Point, ...],
        labels: list[int] | tuple[int, ...],
    ) -> RegionState | None:
        """Add clicks to the key's region; None when it has none (no box drawn yet).

        A click within ``same_px`` pixels of one already there (Label Studio sends the
        page's remaining keypoints again with every click) is not added twice; a repeated
        point takes its latest label.
        """
        with self._lock:
            state = self._items.get(key)
            if state is None:
                return None
            merged = list(state.points)
            kinds = list(state.labels)
            for (x, y), label in zip(points, labels, strict=True):
                same = next(
                    (
                        i
                        for i, (px, py) in enumerate(merged)
                        if abs(px - x) <= self.same_px and abs(py - y) <= self.same_px
                    ),
                    None,
                )
                if same is None:
                    merged.append((float(x), float(y)))
                    kinds.append(int(label))
                else:
                    kinds[same] = int(label)
            state = RegionState(state.box_xyxy, state.region, tuple(merged), tuple(kinds))
            self._items[key] = state
            self._items.move_to_end(key)
            return state

    def _put(self, key: Hashable, state: RegionState) -> None:
        with self._lock:
            self._items[key] = state
            self._items.move_to_end(key)
            while len(self._items) > self.max_regions:
                self._items.popitem(last=False)
