"""A thread-safe embedding cache bounded in bytes, in memory and optionally on disk.

The image encoder is the expensive part of a box prediction (about a second for LiteMedSAM on
a CPU, tens of seconds for SAM ViT-H) while the prompt encoder and mask decoder take tens of
milliseconds. A volunteer draws several boxes on one image and several volunteers see the same
image, so embeddings are computed once and kept here, keyed by ``(model_id, image_hash)``.

Memory holds an LRU bounded by the arrays' ``nbytes``. With ``directory`` set, each entry is
also written to ``<directory>/<model_id>--<image_hash>.npz``, the directory is bounded in bytes
too (oldest modification time evicted first; a disk hit refreshes it), and a restarted backend
finds its embeddings again.

The disk tier is best effort and never fails a request:

* every file is written under a unique temporary name and renamed into place (``os.replace``),
  so several backend workers may share one directory and readers only ever see whole files;
* each file carries a SHA-256 of its contents, checked on every read: a truncated, torn or
  foreign file is a miss, logged and removed, never an embedding of garbage;
* when a write fails because the disk is full (``ENOSPC``, ``EDQUOT``) or a file-size limit is
  hit (``EFBIG``), the oldest files are evicted to make room and the write is tried once more;
  if it still fails the entry stays in memory only, and disk writes pause for
  ``disk_backoff_s`` so a full disk is not hammered on every request;
* temporary files left by a killed writer are removed once they are older than a minute.

Two threads asking for the same missing key compute it once: :meth:`EmbeddingCache.get_or_compute`
lets the second wait for the first (the server's background ``warm`` thread and a request).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["CacheKey", "CacheStats", "CachedEmbedding", "EmbeddingCache"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB

CacheKey = tuple[str, str]
"""``(model_id, image_hash)``."""


@dataclass(frozen=True)
class CachedEmbedding:
    """What a predictor needs to decode boxes without re-running the image encoder.

    Attributes:
        embedding: the image encoder's output, e.g. ``(1, 256, 64, 64) float32``.
        original_hw: ``(H, W)`` of the original image.
        resized_hw: ``(h, w)`` of the resized image inside the square model input.
    """

    embedding: np.ndarray
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return int(self.embedding.nbytes)


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was created.

    Attributes:
        hits: found in memory.
        disk_hits: not in memory, loaded from the directory.
        misses: computed (or looked up with :meth:`EmbeddingCache.get` and not found).
        bytes: bytes held in memory now.
        entries: entries held in memory now.
        disk_bytes: bytes of ``.npz`` files in the directory now (0 without a directory).
        disk_write_errors: writes to the directory that failed (full disk, file-size limit,
            I/O error); those entries were kept in memory only.
        disk_skipped: writes not attempted because the disk tier was backing off after a
            failure.
        disk_corrupt: files found unreadable or failing their checksum (removed).
    """

    hits: int
    disk_hits: int
    misses: int
    bytes: int
    entries: int
    disk_bytes: int
    disk_write_errors: int = 0
    disk_skipped: int = 0
    disk_corrupt: int = 0


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
"""errno values meaning "no room": evicting older files may make the next write fit."""
_TMP_SUFFIX = ".tmp"
_STALE_TMP_S = 60.0
"""A temporary file this old belongs to a writer that died (a write takes well under 1 s)."""


class EmbeddingCache:
    """LRU cache of :class:`CachedEmbedding` bounded in bytes; safe to share between threads.

    Args:
        max_bytes: memory bound (sum of ``embedding.nbytes``); 0 disables the memory level.
        directory: optional directory for ``.npz`` copies that survive a restart.
        max_disk_bytes: bound on the directory's ``.npz`` files.
        disk_backoff_s: after a write that failed even after evicting, skip disk writes for
            this long (memory keeps working).

    Example:
        >>> cache = EmbeddingCache(max_bytes=64 * 1024 * 1024)
        >>> entry, computed = cache.get_or_compute(("m", "h"), lambda: CachedEmbedding(
        ...     np.zeros((1, 4), np.float32), (8, 8), (8, 8)))
        >>> computed, cache.get(("m", "h")) is entry
        (True, True)
    """

    def __init__(
        self,
        max_bytes: int = 512 * MiB,
        directory: Path | str | None = None,
        max_disk_bytes: int = 2 * GiB,
        disk_backoff_s: float = 30.0,
    ) -> None:
        if max_bytes < 0 or max_disk_bytes < 0:
            raise ValueError("max_bytes and max_disk_bytes must be >= 0")
        if disk_backoff_s < 0:
            raise ValueError("disk_backoff_s must be >= 0")
        self.max_bytes = int(max_bytes)
        self.max_disk_bytes = int(max_disk_bytes)
        self.disk_backoff_s = float(disk_backoff_s)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps()
        self._entries: OrderedDict[CacheKey, CachedEmbedding] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._disk_hits = 0
        self._misses = 0
        self._disk_write_errors = 0
        self._disk_skipped = 0
        self._disk_corrupt = 0
        self._disk_paused_until = 0.0
        self._lock = threading.Lock()
        self._disk_lock = threading.Lock()
        self._in_flight: dict[CacheKey, threading.Event] = {}

    # ------------------------------------------------------------------ public API

    def get(self, key: CacheKey) -> CachedEmbedding | None:
        """The entry for ``key`` from memory, else from disk (then kept in memory), else None."""
        with self._lock:
            entry = self._memory_get(key)
            if entry is not None:
                self._hits += 1
                return entry
        entry = self._disk_get(key)
        with self._lock:
            if entry is None:
                self._misses += 1
                return None
            self._disk_hits += 1
            self._memory_put(key, entry)
        return entry

    def put(self, key: CacheKey, entry: CachedEmbedding) -> None:
        """Store ``entry`` in memory (evicting least recently used) and on disk if configured."""
        with self._lock:
            self._memory_put(key, entry)
        self._disk_put(key, entry)

    def get_or_compute(
        self, key: CacheKey, compute: Callable[[], CachedEmbedding]
    ) -> tuple[CachedEmbedding, bool]:
        """Return ``(entry, computed)``; ``compute`` runs at most once per key at a time.

        A thread that finds another thread computing the same key waits for it. If that
        computation fails, a waiting thread computes the key itself.
        """
        while True:
            with self._lock:
                entry = self._memory_get(key)
                if entry is not None:
                    self._hits += 1
                    return entry, False
                event = self._in_flight.get(key)
                if event is None:
                    self._in_flight[key] = threading.Event()
                    break
            event.wait()
        try:
            entry = self._disk_get(key)
            if entry is not None:
                with self._lock:
                    self._disk_hits += 1
                    self._memory_put(key, entry)
                return entry, False
            with self._lock:
                self._misses += 1
            entry = compute()
            self.put(key, entry)
            return entry, True
        finally:
            with self._lock:
                self._in_flight.pop(key).set()

    def __contains__(self, key: object) -> bool:
        """True when ``key`` is in memory or on disk; does not touch the counters or the LRU."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        with self._lock:
            if key in self._entries:
                return True
        path = self._path(key)
        return path is not None and path.exists()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            hits, disk_hits, misses = self._hits, self._disk_hits, self._misses
            nbytes, entries = self._bytes, len(self._entries)
            errors, skipped, corrupt = (
                self._disk_write_errors,
                self._disk_skipped,
                self._disk_corrupt,
            )
        return CacheStats(
            hits, disk_hits, misses, nbytes, entries, self._disk_usage(), errors, skipped, corrupt
        )

    def clear(self, disk: bool = False) -> None:
        """Drop every entry from memory (and from the directory when ``disk``)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        if disk and self.directory is not None:
            with self._disk_lock:
                for path in self.directory.glob("*.npz"):
                    path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ memory (lock held)

    def _memory_get(self, key: CacheKey) -> CachedEmbedding | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _memory_put(self, key: CacheKey, entry: CachedEmbedding) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        if entry.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes

    # ------------------------------------------------------------------ disk

    def _path(self, key: CacheKey) -> Path | None:
        if self.directory is None:
            return None
        model_id, image_hash = key
        return self.directory / f"{_SAFE.sub('_', model_id)}--{_SAFE.sub('_', image_hash)}.npz"

    def _disk_get(self, key: CacheKey) -> CachedEmbedding | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            handle = path.open("rb")
        except OSError:  # absent, or evicted by another worker meanwhile
            return None
        with handle:
            identity = os.fstat(handle.fileno())
            try:
                entry = _decode(handle)
            except Exception as exc:  # any unreadable file is a miss, whatever the error
                # Truncated zip (BadZipFile), torn write, bit flip (checksum), foreign file:
                # never an error for the client and never an embedding of garbage.
                logger.warning("ignoring unreadable cache file %s: %s", path, exc)
                with self._lock:
                    self._disk_corrupt += 1
                self._unlink_if_same(path, identity)
                return None
        try:
            os.utime(path)  # refresh: the directory is evicted oldest-mtime first
        except OSError:
            pass  # evicted by another worker meanwhile; the entry read is still whole
        return entry

    def _disk_put(self, key: CacheKey, entry: CachedEmbedding) -> None:
        path = self._path(key)
        if path is None or entry.nbytes > self.max_disk_bytes:
            return
        with self._lock:
            if time.monotonic() < self._disk_paused_until:
                self._disk_skipped += 1
                return
        payload = _encode(entry)
        for attempt in (1, 2):
            try:
                self._write_atomic(path, payload)
                break
            except OSError as exc:
                room = exc.errno in _FULL and attempt == 1
                if room and self._make_room(len(payload), keep=path):
                    continue
                logger.warning(
                    "could not write cache file %s (%s); keeping the embedding in memory only "
                    "and pausing disk writes for %.0f s",
                    path,
                    exc,
                    self.disk_backoff_s,
                )
                with self._lock:
                    self._disk_write_errors += 1
                    self._disk_paused_until = time.monotonic() + self.disk_backoff_s
                return
        self._evict_disk()

    def _write_atomic(self, path: Path, payload: bytes) -> None:
        """Write under a unique temporary name, then rename into place (atomic on POSIX).

        Concurrent writers of the same key each rename a whole file; the last one wins.
        The temporary file is removed on any failure, so a full disk leaves nothing behind.
        """
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _make_room(self, need: int, keep: Path) -> bool:
        """Evict the oldest files until ``need`` bytes are freed; False when nothing to evict."""
        freed = 0
        with self._disk_lock:
            for _, size, path in sorted(self._disk_files()):
                if freed >= need:
                    break
                if path == keep:
                    continue
                path.unlink(missing_ok=True)
                freed += size
        if freed:
            logger.info("cache directory full: evicted %d bytes to make room", freed)
        return freed > 0

    def _unlink_if_same(self, path: Path, identity: os.stat_result) -> None:
        """Remove ``path`` unless another worker has already replaced it with a new file."""
        try:
            now = path.stat()
        except OSError:
            return
        if (now.st_ino, now.st_dev) == (identity.st_ino, identity.st_dev):
            path.unlink(missing_ok=True)

    def _remove_stale_temps(self) -> None:
        if self.directory is None:
            return
        cutoff = time.time() - _STALE_TMP_S
        for path in self.directory.glob(f".*{_TMP_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except OSError:
                continue

    def _disk_files(self) -> list[tuple[float, int, Path]]:
        if self.directory is None:
            return []
        files = []
        for path in self.directory.glob("*.npz"):
            try:
                st = path.stat()
            except OSError:  # removed by another process meanwhile
                continue
            files.append((st.st_mtime, st.st_size, path))
        return files

    def _disk_usage(self) -> int:
        return sum(size for _, size, _ in self._disk_files())

    def _evict_disk(self) -> None:
        with self._disk_lock:
            files = sorted(self._disk_files())
            total = sum(size for _, size, _ in files)
            for _, size, path in files:
                if total <= self.max_disk_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
        self._remove_stale_temps()


def _digest(
    embedding: np.ndarray, original_hw: tuple[int, int], resized_hw: tuple[int, int]
) -> bytes:
    """SHA-256 over dtype, shape, sizes and the raw bytes: what a file must reproduce on read."""
    h = hashlib.sha256()
    h.update(f"{embedding.dtype.str}|{embedding.shape}|{original_hw}|{resized_hw}|".encode())
    h.update(np.ascontiguousarray(embedding).data)
    return h.digest()


def _encode(entry: CachedEmbedding) -> bytes:
    """The ``.npz`` bytes of an entry, with its checksum (``sha256``, 32 uint8)."""
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        embedding=entry.embedding,
        original_hw=np.asarray(entry.original_hw, dtype=np.int64),
        resized_hw=np.asarray(entry.resized_hw, dtype=np.int64),
        sha256=np.frombuffer(
            _digest(entry.embedding, entry.original_hw, entry.resized_hw), np.uint8
        ),
    )
    return buf.getvalue()


def _decode(handle: BinaryIO) -> CachedEmbedding:
    """Read an entry written by :func:`_encode`; ValueError when the checksum disagrees."""
    with np.load(handle, allow_pickle=False) as data:
        embedding = np.array(data["embedding"])
        original_hw, resized_hw = _hw(data["original_hw"]), _hw(data["resized_hw"])
        stored = bytes(np.asarray(data["sha256"], dtype=np.uint8))
    if stored != _digest(embedding, original_hw, resized_hw):
        raise ValueError("checksum mismatch")
    return CachedEmbedding(embedding=embedding, original_hw=original_hw, resized_hw=resized_hw)


def _hw(value: np.ndarray) -> tuple[int, int]:
    height, width = (int(v) for v in np.asarray(value).reshape(2))
    return height, width
