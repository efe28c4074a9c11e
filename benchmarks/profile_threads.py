"""The decoder's CPU per warm box for each ``--threads`` and ONNX Runtime spinning setting.

One LiteMedSAM predictor, one CT slice, its embedding cached; then for each setting a fresh
ONNX Runtime decoder session (``OnnxRunner(num_threads=..., spinning=...)``) runs
``--boxes`` boxes with a ``--gap`` pause between them (a volunteer's requests do not come
back to back), and the process's CPU time (user + system, all threads: a spinning pool
thread counts) is divided by the boxes. Wall p50 is printed too, with the load average:
on a shared machine it is only a rough figure.

    python benchmarks/profile_threads.py --boxes 40 --gap 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ml_backend.cache import EmbeddingCache  # noqa: E402
from ml_backend.onnx_export import OnnxRunner  # noqa: E402
from ml_backend.predictors import get_predictor  # noqa: E402


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--boxes", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between boxes")
    ap.add_argument("--cache-dir", default=None, help="where the ONNX exports live / go")
    ap.add_argument("--out", default="profile_threads.json")
    args = ap.parse_args()
    data = Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))
    image_path = data / "sammed2d_demo" / "images" / "amos_0004_75.png"
    if not image_path.is_file():
        raise SystemExit(f"error: {image_path} not found; set MEDCROWD_SHARED_DATA")
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="medcrowd-thr-"))
    predictor: Any = get_predictor("litemedsam", device="cpu", cache=EmbeddingCache(),
                                   cache_dir=cache_dir)  # fmt: skip
    if predictor.decoder_onnx is None:
        raise SystemExit("error: no ONNX decoder (the export failed)")
    predictor.set_image(np.asarray(Image.open(image_path).convert("RGB")))
    decoder_path = predictor.decoder_onnx.path
    box = [150.0, 150.0, 330.0, 330.0]
    rows = []
    for threads in (1, 2):
        for spinning in (True, False):
            predictor.decoder_onnx = OnnxRunner(decoder_path, num_threads=threads,
                                                spinning=spinning)  # fmt: skip
            predictor.decoder_backend = "onnx"
            for _ in range(3):
                predictor.predict_box(box)
            walls = []
            c0, load = cpu_s(), os.getloadavg()
            for _ in range(args.boxes):
                w0 = time.perf_counter()
                predictor.predict_box(box)
                walls.append((time.perf_counter() - w0) * 1000)
                time.sleep(args.gap)
            rows.append({
                "threads": threads,
                "spinning": spinning,
                "cpu_ms_per_box": round((cpu_s() - c0) * 1000 / args.boxes, 1),
                "wall_ms_p50": round(float(np.percentile(walls, 50)), 1),
                "loadavg": [round(x, 2) for x in load],
            })  # fmt: skip
            print(json.dumps(rows[-1]))
    Path(args.out).write_text(json.dumps({"boxes": args.boxes, "gap_s": args.gap, "rows": rows},
                                         indent=2))  # fmt: skip
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
