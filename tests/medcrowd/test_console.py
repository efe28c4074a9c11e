"""Progress in a batch log: plain lines when stderr is not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from medcrowd import console as console_module
from medcrowd.console import LineProgress


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_line_progress_writes_throttled_lines_and_the_end() -> None:
    out, buffer = _console()
    with LineProgress(out, interval=3600) as bar:
        task = bar.add_task("train", total=4)
        bar.update(task, completed=1)
        bar.update(task, completed=2)
        assert buffer.getvalue() == ""  # throttled: nothing before the interval or the end
        bar.update(task, completed=4)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("train: 4/4 (100 %) elapsed 0:00:")


def test_line_progress_every_update_with_interval_zero_and_eta() -> None:
    out, buffer = _console()
    bar = LineProgress(out, interval=0)
    task = bar.add_task("label", total=None)
    bar.update(task, completed=1, total=4, description="labelling", info="loss 0.5")
    bar.stop()
    line = buffer.getvalue().splitlines()[0]
    assert line.startswith("labelling: 1/4 (25 %) elapsed ")
    assert " ETA " in line and line.endswith("loss 0.5")
    # stop() repeats the last state of an unfinished task, so a log ends with where it stopped
    assert len(buffer.getvalue().splitlines()) == 2


def test_bars_and_progress_are_plain_without_a_terminal(monkeypatch) -> None:
    out, buffer = _console()
    monkeypatch.setattr(console_module, "err", out)
    monkeypatch.setenv("MEDCROWD_PROGRESS_SECONDS", "0")
    assert isinstance(console_module.bars(), LineProgress)
    items = list(console_module.progress("pull")(iter("abc"), 3))
    assert items == ["a", "b", "c"]
    assert buffer.getvalue().splitlines()[-1].startswith("pull: 3/3 (100 %)")
