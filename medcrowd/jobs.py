"""Side-by-side work for long batch commands: worker processes, one progress bar.

``medcrowd evaluate --jobs N`` trains its networks (and labels its pool) in ``N`` processes
at once. On a small CPU that is what pays: a U-Net step at 128 px takes the same time with 1
or 2 PyTorch threads (docs/evaluation.md), so two single-threaded processes do twice the
work of one two-threaded one.

:class:`Jobs` runs top-level (picklable) functions:

* ``jobs=1``: inline, in this process, each call as it is submitted: the behaviour of a run
  without workers, exceptions included.
* ``jobs>1``: in ``jobs`` *spawned* processes (never forked: the parent has PyTorch and
  ONNX Runtime thread pools running), each set to ``threads`` CPU threads by
  :func:`ml_backend.device.configure_threads` before it runs anything.

Every call gets a ``progress=`` keyword; in a worker it posts ``(task, done, total)`` on a
queue that a thread of this process hands to the caller's callback, so one progress bar
counts the work of all workers. A call's result (or its exception) comes back through its
:class:`concurrent.futures.Future`.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["Jobs"]

Progress = Callable[[int, int], None]

_QUEUE: Any = None
"""In a worker: the queue its calls post progress on (set by :func:`_start_worker`)."""


def _start_worker(queue: Any, threads: int, device: str) -> None:
    global _QUEUE
    _QUEUE = queue
    if threads > 0 and device == "cpu":
        from ml_backend.device import configure_threads

        configure_threads(threads)


def _call(task: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    def tick(done: int, total: int) -> None:
        _QUEUE.put((task, done, total))

    return fn(*args, progress=tick, **kwargs)


class Jobs:
    """Run calls inline (``jobs=1``) or in ``jobs`` spawned worker processes (module doc).

    Use as a context manager; leaving it waits for the running calls (and cancels the
    queued ones when the block raised).
    """

    def __init__(self, jobs: int = 1, threads: int = 1, device: str = "cpu") -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self._ticks: dict[int, Progress] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._listener: threading.Thread | None = None
        self._closed = False
        if jobs > 1:
            context = mp.get_context("spawn")
            self._queue: Any = context.Queue()
            self._pool = ProcessPoolExecutor(
                jobs, mp_context=context, initializer=_start_worker,
                initargs=(self._queue, threads, device),
            )  # fmt: skip
            self._listener = threading.Thread(target=self._relay, name="jobs-progress", daemon=True)
            self._listener.start()

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, progress: Progress, **kwargs: Any
    ) -> Future[Any]:
        """``fn(*args, progress=..., **kwargs)``; inline it has run when this returns."""
        if self._closed:
            raise RuntimeError("these jobs are closed")
        if self._pool is None:
            done: Future[Any] = Future()
            done.set_result(fn(*args, progress=progress, **kwargs))
            return done
        task = len(self._ticks)
        self._ticks[task] = progress
        return self._pool.submit(_call, task, fn, args, kwargs)

    def _relay(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            task, done, total = message
            self._ticks[task](done, total)

    def close(self, cancel: bool = False) -> None:
        """Wait for the workers (dropping queued calls if ``cancel``), then flush progress."""
        self._closed = True
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pool = None
        self._queue.put(None)  # after every worker has exited and flushed its posts
        if self._listener is not None:
            self._listener.join()

    def __enter__(self) -> Jobs:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(cancel=exc_type is not None)
