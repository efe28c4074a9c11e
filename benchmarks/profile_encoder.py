"""Cold box: LiteMedSAM's image encoder, fp32 ONNX vs dynamically quantised int8 ONNX.

Quantises the verified fp32 encoder export (ONNX Runtime ``quantize_dynamic``: int8
weights, activations quantised at run time; ``--ops`` picks the operator types) and runs
both on the 30 SAM-Med2D demo masks with the tight ground-truth box (as
``tests/ml_backend/test_accuracy.py``): Dice of each against the expert mask, the mean Dice
difference, and the encoder's time per image — wall p50/p95 and CPU-ms (process time, which
a busy machine distorts far less) — with ``--threads`` intra-op threads, spinning off.

    python benchmarks/profile_encoder.py --threads 2 --out encoder.json

The int8 model is never used by the backend unless it meets both bars (Dice within 0.005
of fp32 and p95 <= 500 ms); this script only measures.
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
sys.path.insert(0, str(REPO / "benchmarks"))

from _machine import machine as machine_info  # noqa: E402

from fusion.metrics import dice  # noqa: E402
from ml_backend.cache import EmbeddingCache  # noqa: E402
from ml_backend.device import configure_threads  # noqa: E402
from ml_backend.onnx_export import OnnxRunner  # noqa: E402
from ml_backend.predictors import get_predictor  # noqa: E402


def demo_masks(data: Path) -> list[tuple[Path, Path]]:
    demo = data / "sammed2d_demo"
    return [
        (image, mask)
        for image in sorted((demo / "images").glob("*.png"))
        for mask in sorted((demo / "masks").glob(f"{image.stem}_*.png"))
    ]


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def run(predictor: Any, pairs: list[tuple[Path, Path]], repeats: int) -> dict[str, Any]:
    scores, walls, cpus = [], [], []
    images = {p: np.asarray(Image.open(p).convert("RGB")) for p, _ in pairs}
    for image_path in sorted(images):
        for _ in range(repeats):  # encoder time: a fresh embedding every time
            predictor.cache.clear()
            predictor.reset_image()
            w0, c0 = time.perf_counter(), time.process_time()
            predictor.set_image(images[image_path])
            walls.append((time.perf_counter() - w0) * 1000)
            cpus.append((time.process_time() - c0) * 1000)
    for image_path, mask_path in pairs:
        truth = np.asarray(Image.open(mask_path)) > 0
        predictor.set_image(images[image_path])
        mask, _ = predictor.predict_box(tight_box(truth))
        scores.append(dice(mask, truth))
    return {
        "dice": [round(float(s), 4) for s in scores],
        "mean_dice": round(float(np.mean(scores)), 4),
        "encoder_wall_ms_p50": round(float(np.percentile(walls, 50)), 1),
        "encoder_wall_ms_p95": round(float(np.percentile(walls, 95)), 1),
        "encoder_cpu_ms_mean": round(float(np.mean(cpus)), 1),
        "runs": len(walls),
    }


def _matching_nodes(path: Path, ops: list[str], pattern: str) -> list[str]:
    """Names of the ``ops`` nodes of the ONNX graph at ``path`` that match ``pattern``."""
    import re

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    regex = re.compile(pattern)
    return [n.name for n in graph.node if n.op_type in ops and regex.search(n.name)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="encoder runs per image")
    ap.add_argument("--ops", default="MatMul,Gemm", help="operator types quantised to int8")
    ap.add_argument(
        "--per-channel", action="store_true", help="int8 scales per output channel (not per tensor)"
    )
    ap.add_argument(
        "--exclude",
        default="",
        help="regular expression: nodes whose names match stay fp32 (e.g. the first stages)",
    )
    ap.add_argument("--cache-dir", default=None, help="where the fp32 export lives / goes")
    ap.add_argument("--out", default="profile_encoder.json")
    args = ap.parse_args()
    data = Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))
    pairs = demo_masks(data)
    if len(pairs) != 30:
        raise SystemExit(f"error: expected the 30 SAM-Med2D demo masks under {data}")
    configure_threads(args.threads)
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="medcrowd-enc-"))
    predictor: Any = get_predictor(
        "litemedsam", device="cpu", cache=EmbeddingCache(), cache_dir=cache_dir
    )
    if predictor.encoder_onnx is None:
        raise SystemExit("error: no ONNX encoder (the export failed); nothing to quantise")
    fp32_path = predictor.encoder_onnx.path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = fp32_path.with_name(fp32_path.stem + "-int8.onnx")
    ops = [op for op in args.ops.split(",") if op]
    excluded = _matching_nodes(fp32_path, ops, args.exclude) if args.exclude else []
    t0 = time.perf_counter()
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=ops,
        per_channel=args.per_channel,
        nodes_to_exclude=excluded,
    )
    quantise_s = time.perf_counter() - t0
    load = os.getloadavg()
    fp32 = run(predictor, pairs, args.repeats)
    predictor.encoder_onnx = OnnxRunner(int8_path)
    int8 = run(predictor, pairs, args.repeats)
    result = {
        "benchmark": "profile_encoder",
        "machine": machine_info(),
        "threads": args.threads,
        "ops": args.ops,
        "per_channel": args.per_channel,
        "exclude": args.exclude,
        "nodes_excluded": len(excluded),
        "quantise_s": round(quantise_s, 1),
        "sizes_mb": {
            "fp32": round(fp32_path.stat().st_size / 1e6, 1),
            "int8": round(int8_path.stat().st_size / 1e6, 1),
        },
        "fp32": fp32,
        "int8": int8,
        "mean_dice_change": round(int8["mean_dice"] - fp32["mean_dice"], 4),
        "max_abs_dice_change": round(
            max(abs(a - b) for a, b in zip(int8["dice"], fp32["dice"], strict=True)), 4
        ),
        "loadavg": [round(x, 2) for x in load],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    for name in ("fp32", "int8"):
        r = result[name]
        print(
            f"{name}: mean Dice {r['mean_dice']}, encoder wall p50 {r['encoder_wall_ms_p50']} ms "
            f"p95 {r['encoder_wall_ms_p95']} ms, CPU {r['encoder_cpu_ms_mean']} ms"
        )
    print(
        f"mean Dice change {result['mean_dice_change']:+.4f} (largest per mask "
        f"{result['max_abs_dice_change']}); load average {result['loadavg']} → "
        f"{result['loadavg_end']}"
    )
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
