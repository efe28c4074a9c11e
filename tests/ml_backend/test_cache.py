"""Embedding cache: LRU by bytes, disk persistence and its failures, thread safety, and the
predictor's use of it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from ml_backend.cache import CachedEmbedding, EmbeddingCache
from ml_backend.predictors import LiteMedSAMPredictor
from tests.helpers import REPO


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
    predictor.set_image(demo_image.copy())  # equal content, another array: a hash lookup
    second = predictor.predict_box([60, 40, 120, 100])
    stats = predictor.cache.stats
    # the encoder ran once: the second set_image was a memory hit, not a miss (or a disk hit)
    assert (stats.misses, stats.hits, stats.disk_hits) == (1, 1, 0)
    assert len(predictor.cache) == 1
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


# ----------------------------------------------------------------------------- a disk that fails
#
# The disk tier must survive a full disk, a file-size limit, torn files and other workers
# sharing the directory: the request keeps its answer from memory, and nothing that later
# loads as garbage is left behind. ENOSPC is provoked for real on a tiny tmpfs when this runs
# as root (mount needs CAP_SYS_ADMIN; skipped otherwise), EFBIG for real with RLIMIT_FSIZE in a
# child process (any user, Linux/POSIX).


_FILLED = """
def filled(key, nbytes=256 * 1024):
    seed = int.from_bytes(key.encode()[-4:].rjust(4, b"\\0"), "little")
    values = np.random.default_rng(seed).standard_normal(nbytes // 4).astype(np.float32)
    return CachedEmbedding(values, (len(key), 7), (64, 64))
"""
"""Source shared with the child processes below (they must not import torch via this module)."""


def filled(key: str, nbytes: int = 256 * 1024) -> CachedEmbedding:
    """An entry whose content is a function of its key: any whole file can be checked."""
    seed = int.from_bytes(key.encode()[-4:].rjust(4, b"\0"), "little")
    values = np.random.default_rng(seed).standard_normal(nbytes // 4).astype(np.float32)
    return CachedEmbedding(values, (len(key), 7), (64, 64))


def assert_directory_whole(directory: Path, nbytes: int = 256 * 1024) -> list[str]:
    """Every file decodes to exactly the entry of its key; no temporary file is left."""
    assert list(directory.glob(".*.tmp")) == [], "a partial write was left behind"
    keys = []
    for path in sorted(directory.glob("*.npz")):
        key = path.stem.split("--", 1)[1]
        got = EmbeddingCache(max_bytes=0, directory=directory).get(("m", key))
        assert got is not None, f"{path.name} does not load"
        np.testing.assert_array_equal(got.embedding, filled(key, nbytes).embedding)
        keys.append(key)
    return keys


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount tmpfs file systems of a given size (bytes) under tmp_path; unmounted after."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("provoking ENOSPC with a tiny tmpfs needs root and mount(8)")
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_truncated_file_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(("m", "k"), filled("k"))
    path = tmp_path / "m--k.npz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a torn write: numpy raises BadZipFile here
    fresh = EmbeddingCache(directory=tmp_path)
    got, computed = fresh.get_or_compute(("m", "k"), lambda: filled("k"))
    assert computed
    assert fresh.stats.disk_corrupt == 1
    np.testing.assert_array_equal(got.embedding, filled("k").embedding)
    assert path.read_bytes() == whole  # rewritten whole
    assert assert_directory_whole(tmp_path) == ["k"]


def test_checksum_rejects_a_whole_file_with_the_wrong_content(tmp_path: Path) -> None:
    """A valid .npz under the key's name but not matching its checksum is a miss.

    The zip CRC protects the bytes; the SHA-256 also covers dtype, shape and the sizes, and
    rejects files of the old format (no checksum) or written by something else.
    """
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(("m", "a"), filled("a"))
    cache.put(("m", "b"), filled("b"))
    with np.load(tmp_path / "m--a.npz") as a, np.load(tmp_path / "m--b.npz") as b:
        swapped = {"embedding": a["embedding"], "original_hw": a["original_hw"],
                   "resized_hw": a["resized_hw"], "sha256": b["sha256"]}  # fmt: skip
    np.savez(tmp_path / "m--a.npz", **swapped)
    np.savez(tmp_path / "m--b.npz", embedding=filled("b").embedding,
             original_hw=np.array([1, 7]), resized_hw=np.array([64, 64]))  # fmt: skip
    fresh = EmbeddingCache(directory=tmp_path)
    assert fresh.get(("m", "a")) is None
    assert fresh.get(("m", "b")) is None
    assert fresh.stats.disk_corrupt == 2
    assert not (tmp_path / "m--a.npz").exists() and not (tmp_path / "m--b.npz").exists()


def test_stale_temporary_files_are_cleaned_fresh_ones_kept(tmp_path: Path) -> None:
    stale = tmp_path / ".m--k.npz.dead.tmp"
    stale.write_bytes(b"\0" * 100)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    live = tmp_path / ".m--j.npz.live.tmp"  # another worker writing right now
    live.write_bytes(b"\0" * 100)
    EmbeddingCache(directory=tmp_path)
    assert not stale.exists()
    assert live.exists()


def test_full_disk_evicts_then_keeps_answering_from_memory(
    tiny_fs: Callable[[int], Path],
) -> None:
    """Real ENOSPC on a 1 MiB tmpfs holding at most three 256 KiB entries."""
    fs = tiny_fs(1024 * 1024)
    cache = EmbeddingCache(directory=fs, disk_backoff_s=3600)  # bound 2 GiB: only ENOSPC limits
    names = [f"k{i}" for i in range(10)]
    for name in names:
        cache.put(("m", name), filled(name))  # must not raise
        got = cache.get(("m", name))
        assert got is not None
        np.testing.assert_array_equal(got.embedding, filled(name).embedding)
    on_disk = assert_directory_whole(fs)
    assert names[-1] in on_disk, "the newest entry should have been written after evicting"
    assert names[0] not in on_disk, "nothing was evicted: the disk never filled up"
    assert cache.stats.disk_write_errors == 0  # evict-and-retry made room every time
    # Someone else's data fills the file system: our oldest entry makes room for the new one.
    fill_up(fs / "other-data.bin")
    cache.put(("m", "late"), filled("late"))
    assert cache.stats.disk_write_errors == 0
    assert "late" in assert_directory_whole(fs)
    # Nothing of ours left to evict and the disk full: the write fails, memory still answers.
    cache.clear(disk=True)
    fill_up(fs / "other-data.bin")
    cache.put(("m", "later"), filled("later"))
    assert cache.stats.disk_write_errors == 1
    got = cache.get(("m", "later"))
    assert got is not None
    np.testing.assert_array_equal(got.embedding, filled("later").embedding)
    cache.put(("m", "latest"), filled("latest"))  # within the back-off: not even tried
    assert cache.stats.disk_skipped == 1
    assert assert_directory_whole(fs) == []


def fill_up(path: Path, chunk: int = 16 * 1024) -> None:
    """Append to ``path`` until the file system says it is full (ENOSPC)."""
    with path.open("ab", buffering=0) as handle, pytest.raises(OSError) as info:
        while True:
            handle.write(b"\0" * chunk)
    assert info.value.errno == errno.ENOSPC


_FSIZE_CHILD = (
    r"""
import json, resource, sys
import numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from ml_backend.cache import CachedEmbedding, EmbeddingCache
"""
    + _FILLED
    + r"""

limit = 400 * 1024  # a file-size limit: entries of 256 KiB fit, 512 KiB do not
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
cache = EmbeddingCache(directory=Path(sys.argv[1]), disk_backoff_s=0)
cache.put(("m", "small"), filled("small"))
cache.put(("m", "big"), filled("big", 512 * 1024))       # EFBIG: memory only
ok = cache.get(("m", "big")) is not None
cache.put(("m", "small2"), filled("small2"))
print(json.dumps({"errors": cache.stats.disk_write_errors, "big_in_memory": ok}))
"""
)


def test_file_size_limit_keeps_the_entry_in_memory_only(tmp_path: Path) -> None:
    """Real EFBIG (RLIMIT_FSIZE in a child; Python ignores SIGXFSZ): no crash, no partial file."""
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # The write is retried once after evicting "small" (EFBIG might be a full disk) and fails.
    assert report == {"errors": 1, "big_in_memory": True}
    assert assert_directory_whole(tmp_path) == ["small2"]


_WRITER_CHILD = (
    r"""
import sys
import numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from ml_backend.cache import CachedEmbedding, EmbeddingCache
"""
    + _FILLED
    + r"""

directory, seed = Path(sys.argv[1]), int(sys.argv[2])
probe = len(filled("k0").embedding.tobytes())
# memory disabled: every get reads the shared directory; the bound forces eviction races
cache = EmbeddingCache(max_bytes=0, directory=directory, max_disk_bytes=3 * probe + 4096)
rng = np.random.default_rng(seed)
bad = 0
for _ in range(60):
    key = f"k{rng.integers(6)}"
    if rng.random() < 0.5:
        cache.put(("m", key), filled(key))
    else:
        got = cache.get(("m", key))
        if got is not None and not np.array_equal(got.embedding, filled(key).embedding):
            bad += 1
print(bad, cache.stats.disk_corrupt)
"""
)


def test_concurrent_workers_share_one_directory(tmp_path: Path) -> None:
    """Four processes write, read and evict the same keys: every read is whole and right."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER_CHILD, str(tmp_path), str(seed),
                          str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(4)
    ]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.split() == ["0", "0"], f"wrong or unreadable entries read: {out} {err}"
    assert assert_directory_whole(tmp_path)  # something is cached, all of it whole


def test_predict_answers_while_the_cache_disk_is_full(
    tiny_fs: Callable[[int], Path],
    fresh_lite: Callable[..., LiteMedSAMPredictor],
    shared_data: Path,
) -> None:
    """/predict over HTTP with the embedding directory on a 9 MiB tmpfs (two embeddings).

    Five images: the disk fills at the third and is evicted to make room; then the file
    system is filled by other data so writes fail outright. Every request answers 200 with
    the same mask as with no disk tier, and a restarted backend reading the directory gets the
    same masks again (nothing on disk is garbage).
    """
    from medcrowd.embedded import free_port
    from medcrowd.settings import config_path
    from ml_backend.config import BackendConfig
    from ml_backend.rle import rle_to_mask
    from ml_backend.server import create_app
    from tests.helpers import ThreadedServer, box_context

    fs = tiny_fs(9 * 1024 * 1024)
    xml = config_path("labeling_box_brush.xml").read_text()
    images = sorted((shared_data / "sammed2d_demo" / "images").glob("*.png"))

    def serve(cache: EmbeddingCache) -> tuple[ThreadedServer, str]:
        port = free_port()
        config = BackendConfig(port=port, label_studio_url="http://127.0.0.1:1",
                               local_files_root=shared_data, warm_on_import=False)  # fmt: skip
        return ThreadedServer(create_app(config, predictor=fresh_lite(cache=cache)), port), (
            f"http://127.0.0.1:{port}"
        )

    def predict(url: str, path: Path) -> np.ndarray:
        from PIL import Image

        width, height = Image.open(path).size
        box = [width * 0.3, height * 0.3, width * 0.7, height * 0.7]
        rel = path.relative_to(shared_data).as_posix()
        body = {
            "tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d={rel}"}}],
            "label_config": xml,
            "params": {"context": box_context(box, width, height)},
        }
        resp = httpx.post(f"{url}/predict", json=body, timeout=120)  # fmt: skip
        assert resp.status_code == 200, resp.text
        region = resp.json()["results"][0]["result"][0]
        return rle_to_mask(region["value"]["rle"], height, width)

    cache = EmbeddingCache(directory=fs, disk_backoff_s=0)
    server, url = serve(cache)
    with server:
        first = [predict(url, p) for p in images[:4]]
    assert cache.stats.disk_write_errors == 0
    assert len(assert_embeddings_whole(fs)) == 2  # the disk holds two: older ones were evicted
    restarted = EmbeddingCache(directory=fs, disk_backoff_s=0)
    server, url = serve(restarted)
    with server:
        # newest first: the two on disk are read before the misses evict them (LRU on disk)
        reread = [predict(url, p) for p in reversed(images[:4])][::-1]
        assert restarted.stats.disk_hits == 2 and restarted.stats.disk_corrupt == 0
        for path in fs.glob("*.npz"):  # now nothing of ours to evict, and the disk full
            path.unlink()
        fill_up(fs / "other-data.bin", chunk=1 << 20)
        first.append(predict(url, images[4]))
        assert restarted.stats.disk_write_errors == 1
        again = [predict(url, p) for p in images]  # all five from memory
    assert restarted.stats.hits >= 5
    assert assert_embeddings_whole(fs) == []
    for a, b in zip(first[:4], reread, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def assert_embeddings_whole(directory: Path) -> list[Path]:
    """Every .npz in ``directory`` decodes and passes its checksum; no temporary file left."""
    assert list(directory.glob(".*.tmp")) == []
    files = sorted(directory.glob("*.npz"))
    for path in files:
        model_id, image_hash = path.stem.split("--", 1)
        probe = EmbeddingCache(max_bytes=0, directory=directory)
        assert probe.get((model_id, image_hash)) is not None, path.name
        assert probe.stats.disk_corrupt == 0
    return files
