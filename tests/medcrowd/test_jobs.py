"""medcrowd.jobs: calls inline or in spawned workers, one progress count for all of them."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from medcrowd.jobs import Jobs


def count_to(n: int, progress: Callable[[int, int], None]) -> tuple[int, int]:
    """A job: ``n`` progress ticks; returns (n, the process id it ran in)."""
    for done in range(1, n + 1):
        progress(done, n)
    return n, os.getpid()


def fail(message: str, progress: Callable[[int, int], None]) -> None:
    progress(1, 1)
    raise ValueError(message)


def torch_threads(progress: Callable[[int, int], None]) -> int:
    import torch

    return int(torch.get_num_threads())


def test_inline_runs_in_this_process_as_submitted() -> None:
    seen: list[tuple[int, int]] = []
    with Jobs(1) as jobs:
        future = jobs.submit(count_to, 3, progress=lambda d, t: seen.append((d, t)))
        assert future.done() and seen == [(1, 3), (2, 3), (3, 3)]
    assert future.result() == (3, os.getpid())
    with pytest.raises(ValueError, match="boom"):  # inline: the exception is the caller's
        Jobs(1).submit(fail, "boom", progress=lambda d, t: None)


def test_workers_relay_progress_and_results() -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}
    with Jobs(2, threads=1) as jobs:
        a = jobs.submit(count_to, 5, progress=lambda d, _t: seen["a"].append(d))
        b = jobs.submit(count_to, 4, progress=lambda d, _t: seen["b"].append(d))
        threads = jobs.submit(torch_threads, progress=lambda d, t: None)
        bad = jobs.submit(fail, "in a worker", progress=lambda d, t: None)
        assert a.result()[0] == 5 and b.result()[0] == 4
        assert {a.result()[1], b.result()[1]} - {os.getpid()} == {a.result()[1], b.result()[1]}
        assert threads.result() == 1  # set in the worker before any call
        with pytest.raises(ValueError, match="in a worker"):
            bad.result()
    # every tick reached this process, in order, once the jobs are closed
    assert seen == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4]}
    with pytest.raises(RuntimeError, match="closed"):
        jobs.submit(count_to, 1, progress=lambda d, t: None)


def test_bad_job_count() -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        Jobs(0)
