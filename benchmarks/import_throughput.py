"""Import throughput (slices/s) and Label Studio's memory with N tasks.

Starts a fresh embedded Label Studio (SQLite) in a temporary directory, builds a synthetic
CT-like NRRD volume of N axial slices (a bright ellipse moving through soft tissue, HU
values, seeded), and imports it with ``medcrowd.importer.import_path`` exactly as
``medcrowd import`` does. Reports slices/s for the first import and for the idempotent
re-import, and the Label Studio process tree's RSS before and after.

    python benchmarks/import_throughput.py [--slices 1000] [--size 256]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcrowd.embedded import LabelStudioProcess, free_port  # noqa: E402
from medcrowd.importer import ImportOptions, import_path  # noqa: E402
from medcrowd.settings import config_path  # noqa: E402
from medcrowd.studio import Studio  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, from /proc, in MiB."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def synthetic_volume(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    vol = np.empty((n, size, size), np.int16)
    for z in range(n):
        cx = size / 2 + size / 4 * np.sin(2 * np.pi * z / max(n, 1))
        inside = ((xx - cx) / (size / 6)) ** 2 + ((yy - size / 2) / (size / 8)) ** 2 < 1
        noise = rng.normal(0, 20, (size, size))
        vol[z] = np.where(inside, 200, 40) + noise
    return vol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slices", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medcrowd-import-bench-"))
    volume = work / "synthetic.nrrd"
    image = sitk.GetImageFromArray(synthetic_volume(args.slices, args.size, args.seed))
    image.SetSpacing((0.8, 0.8, 1.5))
    sitk.WriteImage(image, str(volume))
    ls = LabelStudioProcess(
        data_dir=work / "ls",
        email="bench@example.com",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        port=free_port(),
    )
    t = time.perf_counter()
    ls.start()
    print(f"Label Studio first start: {time.perf_counter() - t:.0f} s")
    try:
        assert ls.proc is not None
        studio = Studio(ls.url, ls.token)
        pid = studio.ensure_project("bench", config_path("labeling_box_brush.xml").read_text())
        time.sleep(2)
        rss_before = tree_rss_mb(ls.proc.pid)
        options = ImportOptions(modality="CT", window="soft_tissue")
        t = time.perf_counter()
        first = import_path(studio, pid, volume, options)
        t_first = time.perf_counter() - t
        rss_after = tree_rss_mb(ls.proc.pid)
        t = time.perf_counter()
        again = import_path(studio, pid, volume, options)
        t_again = time.perf_counter() - t
        tasks = len(list(studio.client.tasks.list(project=pid)))
        print(f"volume: {args.slices} slices of {args.size}x{args.size} (seed {args.seed})")
        print(f"first import : {first.created} tasks in {t_first:.1f} s = "
              f"{first.created / t_first:.1f} slices/s")  # fmt: skip
        print(f"re-import    : {again.created} created, {again.skipped} skipped in "
              f"{t_again:.1f} s = {args.slices / t_again:.1f} slices/s")  # fmt: skip
        print(f"tasks in project: {tasks}")
        print(f"Label Studio RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB with "
              f"{tasks} tasks")  # fmt: skip
    finally:
        ls.stop()


if __name__ == "__main__":
    main()
