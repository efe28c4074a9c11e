"""The CLI's shared output: stdout and stderr consoles, and progress bars on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console

__all__ = ["console", "err", "progress"]

console = Console()
err = Console(stderr=True)


def progress(description: str) -> Callable[[Iterable[Any], int], Iterable[Any]]:
    """A ``(items, total) -> items`` wrapper that shows a rich progress bar on stderr."""
    from rich.progress import track

    def wrap(items: Iterable[Any], total: int) -> Iterable[Any]:
        return track(items, total=total, description=description, console=err)

    return wrap
