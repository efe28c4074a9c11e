"""In-process LiteMedSAM latency: cold vs warm box → mask, ONNX Runtime vs PyTorch.

Rows (p50 / p95 in ms over the SAM-Med2D demo slices, tight boxes of their masks):
  * cold: an image the predictor has never seen (fresh cache): ``set_image`` + ``predict_box``;
  * warm, predict only: another ``predict_box`` on the current image;
  * warm, set_image hit + predict: the image's embedding is cached (hash + lookup + decoder);
  * encoder: preprocessing + image encoder, ONNX Runtime vs PyTorch eager (ratio);
  * decoder: prompt encoder + mask decoder + postprocessing, ONNX Runtime vs PyTorch.
ONNX files and embeddings go to a temporary directory (nothing under ``$HOME``).

    python benchmarks/predictor_latency.py [--repeats 5] [--warm-repeats 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ml_backend.cache import EmbeddingCache  # noqa: E402
from ml_backend.predictors import LiteMedSAMPredictor, get_predictor  # noqa: E402
from tests.helpers import sammed2d_masks, shared_data_dir, tight_box  # noqa: E402


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1000.0 * (time.perf_counter() - start))
    return out


def p50_p95(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def cases(root: Path) -> list[tuple[str, np.ndarray, list[float]]]:
    """One (name, image, tight box of its first mask) per SAM-Med2D slice that has masks."""
    seen: dict[str, tuple[str, np.ndarray, list[float]]] = {}
    for organ in sammed2d_masks(root):
        if organ.image_path.stem not in seen:
            image, mask = organ.load()
            seen[organ.image_path.stem] = (organ.image_path.stem, image, tight_box(mask))
    return list(seen.values())


def bench_default(
    predictor: LiteMedSAMPredictor,
    data: list[tuple[str, np.ndarray, list[float]]],
    repeats: int,
    warm_repeats: int,
) -> dict[str, list[float]]:
    """Cold and warm rows for the default predictor (as the server builds it), interleaved:
    each cold run is followed by its share of warm runs, so machine load hits all rows alike."""
    rows: dict[str, list[float]] = {"cold": [], "warm_predict": [], "warm_set_predict": []}
    per_cold = max(1, warm_repeats // repeats)
    for _, image, box in data:
        for _ in range(repeats):
            predictor.cache = EmbeddingCache()  # never seen: the encoder runs

            def cold(image: np.ndarray = image, box: list[float] = box) -> None:
                predictor.set_image(image)
                predictor.predict_box(box)

            def warm(image: np.ndarray = image, box: list[float] = box) -> None:
                predictor.set_image(image)  # cache hit
                predictor.predict_box(box)

            rows["cold"] += timed(cold, 1)
            rows["warm_predict"] += timed(lambda box=box: predictor.predict_box(box), per_cold)
            rows["warm_set_predict"] += timed(warm, per_cold)
    return rows


def bench_backends(
    onnx: LiteMedSAMPredictor,
    torch_p: LiteMedSAMPredictor,
    data: list[tuple[str, np.ndarray, list[float]]],
    repeats: int,
    warm_repeats: int,
) -> dict[str, list[float]]:
    """Encoder and decoder, ONNX Runtime vs PyTorch, interleaved so load on the machine
    hits both alike."""
    rows: dict[str, list[float]] = {
        "encoder_onnx": [],
        "encoder_torch": [],
        "decoder_onnx": [],
        "decoder_torch": [],
    }
    chosen = onnx.decoder_backend
    for _, image, box in data:
        for _ in range(repeats):
            rows["encoder_onnx"] += timed(lambda image=image: onnx._encode(image), 1)
            rows["encoder_torch"] += timed(lambda image=image: torch_p._encode(image), 1)
        onnx.set_image(image)
        for backend in ("onnx", "torch"):  # first calls not timed
            onnx.decoder_backend = backend
            onnx.predict_box(box)
        for _ in range(warm_repeats):
            for backend in ("onnx", "torch"):
                onnx.decoder_backend = backend
                rows[f"decoder_{backend}"] += timed(lambda box=box: onnx.predict_box(box), 1)
    onnx.decoder_backend = chosen
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="cold runs per image")
    parser.add_argument("--warm-repeats", type=int, default=30, help="warm runs per image")
    args = parser.parse_args()
    root = shared_data_dir()
    if not (root / "sammed2d_demo").is_dir():
        sys.exit(f"SAM-Med2D demo data not found under {root}; set MEDCROWD_SHARED_DATA")
    data = cases(root)
    print(
        f"load average {os.getloadavg()[0]:.2f}, cpus={os.cpu_count()}, torch "
        f"{torch.__version__}, threads={torch.get_num_threads()}, "
        f"images={len(data)} ({', '.join(f'{n} {i.shape[1]}x{i.shape[0]}' for n, i, _ in data)})"
    )
    with tempfile.TemporaryDirectory(prefix="medcrowd-bench-") as tmp:
        start = time.perf_counter()
        onnx = get_predictor("litemedsam", device="cpu", cache_dir=Path(tmp))
        load_onnx = time.perf_counter() - start
        start = time.perf_counter()
        onnx_again = get_predictor("litemedsam", device="cpu", cache_dir=Path(tmp))
        reload_onnx = time.perf_counter() - start
        torch_p = get_predictor("litemedsam", device="cpu", backend="torch")
        assert isinstance(onnx, LiteMedSAMPredictor)
        assert isinstance(onnx_again, LiteMedSAMPredictor)
        assert isinstance(torch_p, LiteMedSAMPredictor)
        print(
            f"load: first (ONNX export + verify) {load_onnx:.1f} s, "
            f"later (reuse files) {reload_onnx:.1f} s; decoder chosen at load: "
            f"{onnx.decoder_backend} { ({k: round(v, 1) for k, v in onnx.decoder_ms.items()}) }"
        )
        chosen = onnx.decoder_backend
        default = bench_default(onnx, data, args.repeats, args.warm_repeats)
        backends = bench_backends(onnx, torch_p, data, args.repeats, args.warm_repeats)

    print(f"load average during the run: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"\n{'row':46s} {'p50 ms':>8s} {'p95 ms':>8s} {'n':>4s}")
    labels = {
        "cold": f"cold: set_image + predict_box ({chosen} dec)",
        "warm_predict": "warm: predict_box only",
        "warm_set_predict": "warm: set_image (cache hit) + predict_box",
        "encoder_onnx": "encoder: preprocess + ONNX Runtime",
        "encoder_torch": "encoder: preprocess + PyTorch eager",
        "decoder_onnx": "predict_box, decoder ONNX Runtime",
        "decoder_torch": "predict_box, decoder PyTorch eager",
    }
    rows = {**default, **backends}
    for key, label in labels.items():
        p50, p95 = p50_p95(rows[key])
        print(f"{label:46s} {p50:8.1f} {p95:8.1f} {len(rows[key]):4d}")
    enc_ratio = p50_p95(rows["encoder_torch"])[0] / p50_p95(rows["encoder_onnx"])[0]
    dec_ratio = p50_p95(rows["decoder_torch"])[0] / p50_p95(rows["decoder_onnx"])[0]
    cold_warm = p50_p95(rows["cold"])[0] / p50_p95(rows["warm_predict"])[0]
    print(f"\nencoder  PyTorch / ONNX Runtime p50 ratio: {enc_ratio:.2f}")
    print(f"decoder  PyTorch / ONNX Runtime p50 ratio: {dec_ratio:.2f}")
    print(f"cold / warm (predict_box only) p50 ratio:  {cold_warm:.1f}")


if __name__ == "__main__":
    main()
