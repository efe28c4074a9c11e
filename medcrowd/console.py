"""The CLI's shared output: stdout and stderr consoles, and progress bars on stderr.

On a terminal the bars are rich's. When stderr is not a terminal (a batch job, ``nohup``,
a cluster log) a rich bar would print nothing until it ends, so :class:`LineProgress`
writes one plain line per task instead, at most every ``MEDCROWD_PROGRESS_SECONDS``
seconds (default 30) and when the task completes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.console import Console

__all__ = ["LineProgress", "bars", "console", "err", "error", "progress"]

# soft wrap: a long line stays one line (a terminal folds it for the eye; a log, a pipe or a
# test keeps it whole) instead of being broken at 80 columns when there is no terminal
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def error(message: object) -> None:
    """``error: <message>`` on stderr as one line: never wrapped at the terminal width, and
    brackets in the message are printed as they are (not read as rich markup)."""
    from rich.markup import escape

    text = " ".join(str(message).split())
    err.print(f"[red]error:[/red] {escape(text)}", soft_wrap=True, highlight=False)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MEDCROWD_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class LineProgress:
    """The part of rich's ``Progress`` that medcrowd uses (``add_task``, ``update``,
    ``advance``, ``start``, ``stop``, context manager), written as plain lines such as
    ``train: 1200/4800 (25 %) elapsed 0:03:10 ETA 0:09:30``: one per task at most every
    ``interval`` seconds, and one when a task completes."""

    def __init__(self, console: Console, interval: float | None = None) -> None:
        self._console = console
        self._interval = _interval() if interval is None else interval
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Nothing to start: lines are written as the tasks advance."""

    def stop(self) -> None:
        """Write the last state of every task that did not complete."""
        for task in self._tasks.values():
            if not task["finished"] and task["completed"]:
                self._write(task)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        tid = len(self._tasks)
        now = time.monotonic()
        self._tasks[tid] = {
            "description": description, "total": total, "completed": 0.0, "fields": fields,
            "start": now, "last": now, "finished": False,
        }  # fmt: skip
        return tid

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if description is not None:
            task["description"] = description
        task["fields"].update(fields)
        done = task["total"] is not None and task["completed"] >= task["total"] > 0
        now = time.monotonic()
        if (done and not task["finished"]) or now - task["last"] >= self._interval:
            task["finished"] = done
            task["last"] = now
            self._write(task)

    def _write(self, task: dict[str, Any]) -> None:
        completed, total = task["completed"], task["total"]
        elapsed = time.monotonic() - task["start"]
        line = f"{task['description']}: {completed:g}"
        if total:
            line += f"/{total:g} ({100 * completed / total:.0f} %)"
        line += f" elapsed {_duration(elapsed)}"
        if total and 0 < completed < total:
            line += f" ETA {_duration(elapsed * (total - completed) / completed)}"
        info = task["fields"].get("info")
        if info:
            line += f" {info}"
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


def progress(description: str) -> Callable[[Iterable[Any], int], Iterable[Any]]:
    """A ``(items, total) -> items`` wrapper that shows a progress bar on stderr
    (plain lines when stderr is not a terminal)."""
    from rich.progress import track

    def lines(items: Iterable[Any], total: int) -> Iterator[Any]:
        with LineProgress(err) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)

    def wrap(items: Iterable[Any], total: int) -> Iterable[Any]:
        if not err.is_terminal:
            return lines(items, total)
        return track(items, total=total, description=description, console=err)

    return wrap


def bars(*extra: Any) -> Any:
    """A rich ``Progress`` on stderr: description, bar, done/total, elapsed, ETA, then
    ``extra`` columns (a :class:`LineProgress` when stderr is not a terminal). Use as a
    context manager; add one task per stage."""
    if not err.is_terminal:
        return LineProgress(err)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        *extra,
        console=err,
    )
