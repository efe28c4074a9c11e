"""Collapsed stacks (py-spy ``--format raw``) → a flame-graph SVG and CPU shares per stage.

Used by ``benchmarks/profile_box.py``; also a command of its own::

    python benchmarks/profile_flame.py stacks.txt out.svg --title "backend, warm box"

A line of the input is ``frame;frame;...;frame COUNT`` (root first), as py-spy and
Brendan Gregg's ``stackcollapse`` tools write it. py-spy samples only threads that are not
idle (no ``--idle``), so the counts are CPU samples.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["classify", "read_stacks", "stage_shares", "write_svg"]


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """``[(frames root first, count)]`` from a collapsed-stack file."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


IDLE = "idle wait (not CPU)"
"""The stage of samples whose leaf frame is a blocking wait (epoll/poll, a socket read,
a queue get): py-spy sometimes counts such a thread as active, so they are set apart."""


def classify(frames: Sequence[str], rules: Sequence[tuple[str, str]]) -> str:
    """The stage of one stack. A rule's pattern (a regex) may start with

    * ``leaf:`` — matched against the leaf frame only, before anything else (blocking waits);
    * ``any:`` — matched against every frame, in rule order (a call that owns its subtree,
      such as "serialise the task for the backend");

    the remaining rules are tried frame by frame from the leaf up, so the innermost frame
    that matches decides (a SQL query inside a serializer is SQL). No match: ``other``.
    """
    compiled = []
    for stage, pattern in rules:
        kind, _, rest = pattern.partition(":")
        if kind in ("leaf", "any"):
            compiled.append((stage, kind, re.compile(rest)))
        else:
            compiled.append((stage, "", re.compile(pattern)))
    for stage, kind, regex in compiled:
        if kind == "leaf" and frames and regex.search(frames[-1]):
            return stage
    for stage, kind, regex in compiled:
        if kind == "any" and any(regex.search(frame) for frame in frames):
            return stage
    for frame in reversed(frames):
        for stage, kind, regex in compiled:
            if not kind and regex.search(frame):
                return stage
    return "other"


def stage_shares(
    stacks: Iterable[tuple[list[str], int]], rules: Sequence[tuple[str, str]]
) -> tuple[dict[str, float], float]:
    """(fraction of the busy CPU samples in each stage, largest first; the fraction of all
    samples that were idle waits, see :data:`IDLE`)."""
    totals: dict[str, int] = {}
    for frames, count in stacks:
        stage = classify(frames, rules)
        totals[stage] = totals.get(stage, 0) + count
    idle = totals.pop(IDLE, 0)
    n = sum(totals.values()) or 1
    shares = {k: v / n for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    return shares, idle / ((n + idle) or 1)


def write_svg(
    stacks: list[tuple[list[str], int]],
    out: Path,
    title: str,
    width: int = 1200,
    min_px: float = 1.0,
) -> None:
    """A flame graph (root at the bottom); hover a frame for its samples and share. Frames
    narrower than ``min_px`` are left out (with their children)."""
    tree: dict[str, object] = {"n": 0, "kids": {}}
    for frames, count in stacks:
        node = tree
        node["n"] = int(node["n"]) + count  # type: ignore[call-overload]
        for frame in frames:
            kids: dict[str, dict[str, object]] = node["kids"]  # type: ignore[assignment]
            node = kids.setdefault(frame, {"n": 0, "kids": {}})
            node["n"] = int(node["n"]) + count  # type: ignore[call-overload]
    total = int(tree["n"]) or 1  # type: ignore[call-overload]
    row, rects, depth_max = 16, [], 0

    def walk(node: dict[str, object], x: float, depth: int) -> None:
        nonlocal depth_max
        kids: dict[str, dict[str, object]] = node["kids"]  # type: ignore[assignment]
        for name, kid in sorted(kids.items()):
            n = int(kid["n"])  # type: ignore[call-overload]
            w = width * n / total
            if w >= min_px:
                rects.append((x, depth, w, name, n))
                depth_max = max(depth_max, depth)
                walk(kid, x, depth + 1)
            x += w

    walk(tree, 0.0, 0)
    height = (depth_max + 3) * row + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="100%" height="100%" fill="#fdfdf6"/>'
        f'<text x="6" y="14" font-size="13">{html.escape(title)} — {total} CPU samples</text>',
    ]
    for x, depth, w, name, n in rects:
        y = height - (depth + 1) * row - 4
        hue = int(hashlib.md5(name.encode()).hexdigest()[:2], 16)  # noqa: S324 - a colour
        label = html.escape(name)
        chars = int(w / 6.6)
        text = html.escape(name[:chars] if chars < len(name) else name) if chars > 2 else ""
        parts.append(
            f"<g><title>{label} — {n} samples, {100 * n / total:.1f} %</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{max(w - 0.3, 0.2):.1f}" height="{row - 1}" '
            f'fill="hsl({20 + hue % 40},{70 + hue % 25}%,{55 + hue % 15}%)"/>'
            f'<text x="{x + 2:.1f}" y="{y + 11}">{text}</text></g>'
        )
    parts.append("</svg>")
    out.write_text("\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("stacks", type=Path)
    ap.add_argument("svg", type=Path)
    ap.add_argument("--title", default="CPU profile")
    args = ap.parse_args()
    if not args.stacks.is_file():
        raise SystemExit(f"error: no such file: {args.stacks}")
    write_svg(read_stacks(args.stacks), args.svg, args.title)
    print(args.svg)


if __name__ == "__main__":
    main()
