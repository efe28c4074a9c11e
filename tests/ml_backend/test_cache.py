"""Embedding cache: LRU by bytes, disk persistence, thread safety, and the predictor's use of it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ml_backend.cache import CachedEmbedding, EmbeddingCache
from ml_backend.predictors import LiteMedSAMPredictor


def entry(nbytes: int, fill: float = 0.0) -> CachedEmbedding:
    return CachedEmbedding(np.full(nbytes // 4, fill, np.float32), (10, 20), (128, 256))


# ----------------------------------------------------------------------------- the cache


def test_lru_eviction_by_bytes() -> None:
    cache = EmbeddingCache(max_bytes=3000)
    for name in "abc":
        cache.put(("m", name), entry(1000))
    assert cache.stats.bytes == 3000
    assert cache.get(("m", "a")) is not None  # "a" is now the most recently used
    cache.put(("m", "d"), entry(1000))
    assert ("m", "b") not in cache  # least recently used went first
    assert all(("m", k) in cache for k in "acd")
    cache.put(("m", "e"), entry(2000))  # needs two slots: "c" and "a" go
    assert [k for k in "acde" if ("m", k) in cache] == ["d", "e"]
    assert cache.stats.bytes == 3000
    assert len(cache) == 2


def test_entry_larger_than_cache_is_returned_not_kept() -> None:
    cache = EmbeddingCache(max_bytes=100)
    big, computed = cache.get_or_compute(("m", "x"), lambda: entry(400))
    assert computed
    assert big.nbytes == 400
    assert ("m", "x") not in cache
    assert cache.stats.bytes == 0


def test_replacing_a_key_keeps_byte_count() -> None:
    cache = EmbeddingCache(max_bytes=10_000)
    cache.put(("m", "a"), entry(1000))
    cache.put(("m", "a"), entry(2000))
    assert cache.stats.bytes == 2000
    assert cache.stats.entries == 1


def test_keys_include_model_id() -> None:
    cache = EmbeddingCache()
    cache.put(("model-1", "h"), entry(8, 1.0))
    assert cache.get(("model-2", "h")) is None
    got = cache.get(("model-1", "h"))
    assert got is not None
    assert got.embedding[0] == 1.0


def test_stats_count_hits_and_misses() -> None:
    cache = EmbeddingCache()
    calls = []
    for _ in range(3):
        cache.get_or_compute(("m", "a"), lambda: calls.append(1) or entry(16))
    stats = cache.stats
    assert (len(calls), stats.misses, stats.hits, stats.disk_hits) == (1, 1, 2, 0)


def test_concurrent_get_or_compute_computes_once() -> None:
    cache = EmbeddingCache()
    calls: list[int] = []

    def slow() -> CachedEmbedding:
        calls.append(1)
        time.sleep(0.2)
        return entry(64)

    results: list[CachedEmbedding] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute(("m", "k"), slow)[0]))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 8
    assert all(r is results[0] for r in results)


def test_failed_compute_lets_the_next_caller_retry() -> None:
    cache = EmbeddingCache()

    def boom() -> CachedEmbedding:
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        cache.get_or_compute(("m", "k"), boom)
    got, computed = cache.get_or_compute(("m", "k"), lambda: entry(8))
    assert computed
    assert got.nbytes == 8


def test_disk_persistence_across_instances(tmp_path: Path) -> None:
    first = EmbeddingCache(directory=tmp_path)
    original = CachedEmbedding(
        np.arange(12, dtype=np.float32).reshape(1, 3, 4), (31, 17), (256, 140)
    )
    first.put(("litemedsam-x", "abc"), original)
    assert list(tmp_path.glob("*.tmp")) == []  # atomic write left no temp file
    second = EmbeddingCache(directory=tmp_path)
    assert ("litemedsam-x", "abc") in second
    got, computed = second.get_or_compute(("litemedsam-x", "abc"), lambda: entry(4))
    assert not computed
    np.testing.assert_array_equal(got.embedding, original.embedding)
    assert got.embedding.dtype == np.float32
    assert (got.original_hw, got.resized_hw) == ((31, 17), (256, 140))
    assert second.stats.disk_hits == 1
    assert second.get(("litemedsam-x", "abc")) is not None  # now from memory
    assert second.stats.hits == 1


def test_disk_is_bounded_oldest_first(tmp_path: Path) -> None:
    probe = EmbeddingCache(directory=tmp_path / "probe")
    probe.put(("m", "a"), entry(4000))
    file_size = next((tmp_path / "probe").glob("*.npz")).stat().st_size
    cache = EmbeddingCache(directory=tmp_path / "bounded", max_disk_bytes=3 * file_size)
    for i, name in enumerate("abcd"):
        cache.put(("m", name), entry(4000))
        stamp = 1_000_000 + i  # distinct modification times, oldest first
        os.utime(tmp_path / "bounded" / f"m--{name}.npz", (stamp, stamp))
    names = sorted(p.stem.split("--")[1] for p in (tmp_path / "bounded").glob("*.npz"))
    assert names == ["b", "c", "d"]
    assert cache.stats.disk_bytes == 3 * file_size


def test_corrupt_disk_file_is_a_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(("m", "k"), entry(64))
    (tmp_path / "m--k.npz").write_bytes(b"not an npz")
    fresh = EmbeddingCache(directory=tmp_path)
    got, computed = fresh.get_or_compute(("m", "k"), lambda: entry(32))
    assert computed
    assert got.nbytes == 32


def test_clear(tmp_path: Path) -> None:
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(("m", "k"), entry(64))
    cache.clear()
    assert len(cache) == 0
    assert ("m", "k") in cache  # still on disk
    cache.clear(disk=True)
    assert ("m", "k") not in cache


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError):
        EmbeddingCache(max_bytes=-1)


# ----------------------------------------------------------------------------- with LiteMedSAM


def test_second_set_image_is_a_cache_hit(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    predictor.set_image(demo_image)
    first = predictor.predict_box([60, 40, 120, 100])
    assert predictor.cache.stats.misses == 1
    start = time.perf_counter()
    predictor.set_image(demo_image.copy())
    elapsed = time.perf_counter() - start
    second = predictor.predict_box([60, 40, 120, 100])
    stats = predictor.cache.stats
    assert (stats.misses, stats.hits) == (1, 1)
    assert elapsed < 0.1  # a hash and a dict lookup, no encoder
    np.testing.assert_array_equal(first[0], second[0])
    assert stats.bytes == 256 * 64 * 64 * 4


def test_image_hash_changes_with_content_and_window(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    base = predictor.image_hash(demo_image)
    assert predictor.image_hash(demo_image.copy()) == base
    changed = demo_image.copy()
    changed[0, 0, 0] ^= 1
    assert predictor.image_hash(changed) != base
    assert predictor.image_hash(demo_image[..., 0]) != base  # shape is part of the key
    assert predictor.image_hash(demo_image.astype(np.uint16)) != base  # so is dtype
    assert fresh_lite(window="lung").image_hash(demo_image) != base  # and the window


def test_window_changes_the_embedding_key(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    cache = EmbeddingCache()
    hu = demo_image[..., 0].astype(np.int16) * 8 - 1000  # a fake CT slice in HU
    fresh_lite(cache=cache).set_image(hu)
    fresh_lite(cache=cache, window="soft_tissue").set_image(hu)
    assert cache.stats.misses == 2
    assert cache.stats.entries == 2


def test_warm_caches_without_changing_the_current_image(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    other = np.ascontiguousarray(demo_image[::-1])
    predictor.set_image(demo_image)
    mask_before, _ = predictor.predict_box([60, 40, 120, 100])
    assert predictor.warm(other) is True  # computed
    mask_after, _ = predictor.predict_box([60, 40, 120, 100])
    np.testing.assert_array_equal(mask_before, mask_after)  # still the same current image
    assert predictor.warm(other) is False  # already cached
    predictor.reset_image()
    assert predictor.warm(demo_image) is False
    assert not predictor.is_image_set  # warm never sets the current image
    predictor.set_image(other)
    assert predictor.cache.stats.misses == 2  # other was warm: no third encoder run


def test_warm_in_a_thread_while_predicting(
    fresh_lite: Callable[..., LiteMedSAMPredictor], demo_image: np.ndarray
) -> None:
    predictor = fresh_lite()
    predictor.set_image(demo_image)
    expected, _ = predictor.predict_box([60, 40, 120, 100])
    others = [np.ascontiguousarray(np.rot90(demo_image))]
    errors: list[BaseException] = []

    def warm_all() -> None:
        try:
            for image in others:
                predictor.warm(image)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=warm_all)
    thread.start()
    while thread.is_alive():
        mask, _ = predictor.predict_box([60, 40, 120, 100])
        np.testing.assert_array_equal(mask, expected)
    thread.join()
    assert errors == []
    assert predictor.cache.stats.entries == 2


def test_disk_cache_survives_a_restart(
    fresh_lite: Callable[..., LiteMedSAMPredictor], tmp_path: Path, demo_image: np.ndarray
) -> None:
    """Two predictor instances (a restarted backend) share embeddings through the directory."""
    first = fresh_lite(cache=EmbeddingCache(directory=tmp_path))
    first.set_image(demo_image)
    mask1, score1 = first.predict_box([60, 40, 120, 100])
    assert len(list(tmp_path.glob("*.npz"))) == 1
    second_cache = EmbeddingCache(directory=tmp_path)
    second = fresh_lite(cache=second_cache)
    second.set_image(demo_image)
    mask2, score2 = second.predict_box([60, 40, 120, 100])
    assert (second_cache.stats.disk_hits, second_cache.stats.misses) == (1, 0)
    np.testing.assert_array_equal(mask1, mask2)
    assert score1 == pytest.approx(score2)
