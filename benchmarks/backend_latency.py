"""Box → mask latency of the ML backend: cold (new image) and warm (cached embedding).

Measured two ways on the same images:
  * in-process: ``predictor.set_image`` + ``predictor.predict_box``;
  * through HTTP: ``POST /predict`` to the real server (uvicorn on loopback, Basic auth),
    with the task's image as a Label Studio local-files URL read from disk, exactly as the
    backend serves a Label Studio that shares its filesystem.

Cold = an image the backend has never seen (fresh embedding cache); warm = another box on an
image whose embedding is cached. Images: the 5 SAM-Med2D slices and 30 ISBI EM slices from
``MEDCROWD_SHARED_DATA`` (default ../shared/data). Prints p50/p95 in ms and warm/cold ratios,
and how fast a full backend refuses (503 + Retry-After, the bounded queue's promise: the
timings tests/ml_backend/test_server_queue.py no longer asserts) while its one slot is held.

    python benchmarks/backend_latency.py [--backend auto|onnx|torch] [--warm-repeats 40]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcrowd.embedded import free_port  # noqa: E402
from medcrowd.settings import config_path  # noqa: E402
from ml_backend import get_predictor  # noqa: E402
from ml_backend.cache import EmbeddingCache  # noqa: E402
from ml_backend.config import BackendConfig  # noqa: E402
from ml_backend.server import create_app  # noqa: E402
from tests.helpers import ImageHost, box_context  # noqa: E402


def percentiles(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def image_paths(root: Path) -> list[Path]:
    sam = sorted((root / "sammed2d_demo" / "images").glob("*.png"))
    em = sorted((root / "isbi2012_em" / "train" / "image").glob("*.png"), key=lambda p: p.stem)
    return sam + em


def centre_box(width: int, height: int, frac: float, rng: np.random.Generator) -> list[float]:
    w, h = width * frac, height * frac
    x0 = rng.uniform(0, width - w)
    y0 = rng.uniform(0, height - h)
    return [x0, y0, x0 + w, y0 + h]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", default="auto", help="predictor backend: auto | onnx | torch")
    ap.add_argument("--warm-repeats", type=int, default=40)
    args = ap.parse_args()
    root = Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))
    paths = image_paths(root)
    if not paths:
        sys.exit(f"no images under {root}; set MEDCROWD_SHARED_DATA")
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="medcrowd-bench-"))
    xml = config_path("labeling_box_brush.xml").read_text()

    def fresh_predictor():  # type: ignore[no-untyped-def]
        return get_predictor(
            "litemedsam",
            device="auto",
            backend=args.backend,
            cache_dir=work / "models",
            cache=EmbeddingCache(max_bytes=512 * 1024 * 1024),
        )

    t0 = time.perf_counter()
    predictor = fresh_predictor()
    print(f"model load: {time.perf_counter() - t0:.1f} s  ({predictor.model_id})")

    # -- in-process ---------------------------------------------------------------------
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    predictor.set_image(images[0])  # one-time warm-up of the runtime, not counted
    predictor.predict_box([1, 1, 20, 20])
    predictor = fresh_predictor()
    cold_in, warm_in = [], []
    for img in images[1:]:
        h, w = img.shape[:2]
        t = time.perf_counter()
        predictor.set_image(img)
        predictor.predict_box(centre_box(w, h, 0.3, rng))
        cold_in.append((time.perf_counter() - t) * 1000)
    img = images[1]
    for _ in range(args.warm_repeats):
        h, w = img.shape[:2]
        t = time.perf_counter()
        predictor.set_image(img)
        predictor.predict_box(centre_box(w, h, 0.3, rng))
        warm_in.append((time.perf_counter() - t) * 1000)

    # -- through HTTP ---------------------------------------------------------------------
    import uvicorn

    port = free_port()
    auth = ("bench", secrets.token_urlsafe(12))
    config = BackendConfig(
        port=port,
        basic_auth=auth,
        label_studio_url="http://127.0.0.1:1",  # never contacted: images are local files
        local_files_root=root,
        warm_on_import=False,
    )
    app = create_app(config, predictor=fresh_predictor())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=auth, timeout=120)

    def post(path: Path, box: list[float], width: int, height: int) -> float:
        rel = path.relative_to(root).as_posix()
        body = {
            "tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d={rel}"}}],
            "label_config": xml,
            "params": {"context": box_context(box, width, height)},
        }
        t = time.perf_counter()
        resp = client.post("/predict", json=body)
        elapsed = (time.perf_counter() - t) * 1000
        resp.raise_for_status()
        return elapsed

    sizes = [img.shape[:2] for img in images]
    post(paths[0], centre_box(sizes[0][1], sizes[0][0], 0.3, rng), sizes[0][1], sizes[0][0])
    cold_http = [
        post(p, centre_box(w, h, 0.3, rng), w, h)
        for p, (h, w) in zip(paths[1:], sizes[1:], strict=True)
    ]
    h, w = sizes[1]
    warm_http = [post(paths[1], centre_box(w, h, 0.3, rng), w, h) for _ in range(args.warm_repeats)]
    server.should_exit = True
    refused = refusal_latencies(predictor, paths[0], args.warm_repeats)

    print(
        f"\n{len(images) - 1} cold images, {args.warm_repeats} warm boxes; 2-core CPU unless CUDA"
    )
    print(
        f"{'path':12s} {'cold p50':>9s} {'cold p95':>9s} {'warm p50':>9s} {'warm p95':>9s} "
        f"{'warm/cold':>9s}"
    )
    for name, cold, warm in (("in-process", cold_in, warm_in), ("HTTP", cold_http, warm_http)):
        c50, c95 = percentiles(cold)
        w50, w95 = percentiles(warm)
        print(f"{name:12s} {c50:9.1f} {c95:9.1f} {w50:9.1f} {w95:9.1f} {w50 / c50:9.3f}")
    r50, r95 = percentiles(refused)
    print(f"\n503 when full (1 running, queue 0): p50 {r50:.1f} ms, p95 {r95:.1f} ms "
          f"(vs warm HTTP p50 {percentiles(warm_http)[0]:.1f} ms)")  # fmt: skip


def refusal_latencies(predictor: Any, png: Path, repeats: int) -> list[float]:
    """ms to answer 503 while the backend's one slot is taken (a fetch held by the host)."""
    import uvicorn

    width, height = Image.open(png).size
    host = ImageHost(files={"0/slice.png": png.read_bytes()})
    port = free_port()
    auth = ("bench", secrets.token_urlsafe(12))
    config = BackendConfig(port=port, basic_auth=auth, label_studio_url=host.url,
                           max_inflight=1, max_queue=0, warm_on_import=False)  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, predictor=predictor), host="127.0.0.1", port=port,
                       log_level="error")
    )  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    body = {
        "tasks": [{"id": 1, "data": {"image": "/data/upload/0/slice.png"}}],
        "label_config": config_path("labeling_box_brush.xml").read_text(),
        "params": {"context": box_context([10, 10, width / 2, height / 2], width, height)},
    }
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=auth, timeout=120) as client:
        host.hold()
        blocker = threading.Thread(target=client.post, args=("/predict",), kwargs={"json": body})
        blocker.start()
        if not host.arrived.acquire(timeout=60):
            sys.exit("the blocking request never reached the image host")
        for _ in range(repeats):
            t = time.perf_counter()
            resp = client.post("/predict", json=body)
            out.append((time.perf_counter() - t) * 1000)
            if resp.status_code != 503:
                sys.exit(f"expected 503 while full, got {resp.status_code}: {resp.text}")
        host.release()
        blocker.join()
    server.should_exit = True
    host.close()
    return out


if __name__ == "__main__":
    main()
