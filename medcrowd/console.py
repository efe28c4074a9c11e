"""The CLI's shared output: stdout and stderr consoles, and progress bars on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console

__all__ = ["bars", "console", "err", "error", "progress"]

console = Console()
err = Console(stderr=True)


def error(message: object) -> None:
    """``error: <message>`` on stderr as one line: never wrapped at the terminal width, and
    brackets in the message are printed as they are (not read as rich markup)."""
    from rich.markup import escape

    text = " ".join(str(message).split())
    err.print(f"[red]error:[/red] {escape(text)}", soft_wrap=True, highlight=False)


def progress(description: str) -> Callable[[Iterable[Any], int], Iterable[Any]]:
    """A ``(items, total) -> items`` wrapper that shows a rich progress bar on stderr."""
    from rich.progress import track

    def wrap(items: Iterable[Any], total: int) -> Iterable[Any]:
        return track(items, total=total, description=description, console=err)

    return wrap


def bars(*extra: Any) -> Any:
    """A rich ``Progress`` on stderr: description, bar, done/total, elapsed, ETA, then
    ``extra`` columns. Use as a context manager; add one task per stage."""
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
