"""ClickMemory: the previous logits per region, bounded and least-recently-used."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.clicks import ClickMemory


def test_put_get_round_trips_as_float32() -> None:
    memory = ClickMemory(max_regions=2)
    logits = np.linspace(-20, 20, 256 * 256, dtype=np.float32).reshape(256, 256)
    memory.put(("t", "a", "box:1"), logits)
    got = memory.get(("t", "a", "box:1"))
    assert got is not None and got.dtype == np.float32 and got.shape == (256, 256)
    np.testing.assert_allclose(got, logits, atol=0.02)  # stored as float16
    assert memory.get(("t", "a", "box:2")) is None
    assert (memory.hits, memory.misses) == (1, 1)


def test_the_least_recently_used_region_goes_first() -> None:
    memory = ClickMemory(max_regions=2)
    zeros = np.zeros((256, 256), np.float32)
    memory.put("a", zeros)
    memory.put("b", zeros + 1)
    assert memory.get("a") is not None  # a is now the most recent
    memory.put("c", zeros + 2)
    assert len(memory) == 2
    assert memory.get("b") is None
    assert memory.get("a") is not None and memory.get("c") is not None
    memory.forget("a")
    assert memory.get("a") is None


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="max_regions"):
        ClickMemory(max_regions=0)
