"""Box, then clicks: the CVPR 2025 interactive protocol, per predictor, on the evaluation sets.

Data (evaluation sets only; nothing is tuned on them): the 30 SAM-Med2D demo masks, and the
14 DRIVE ``test/`` images (the vessel tree of ``manual1``; its tight box is about the whole
field of view). Per mask: the tight box of the expert mask → mask; then up to 5 clicks, each
at the point deepest inside the largest error region (:func:`ml_backend.click_training.next_click`:
a missed part → positive click, a false part → negative click; the distance-transform
maximum, as in the challenge's simulator), with every click so far given again. Two ways to
refine:

* ``clicks``: box + all clicks;
* ``clicks+logits``: box + all clicks + the previous answer's logits as ``mask_input``
  (the SAM / CVPR 2025 recipe).

Predictors: ``litemedsam`` (as shipped), ``litemedsam-clicks`` (the click-aware decoder of
``medcrowd train clicks``, which also answers the box), ``litemedsam-clicks:stock-box`` (the
same, but the box alone answered by the stock decoder), ``sam_vit_b`` etc. when
``--checkpoint`` is given.

Printed per predictor and data set: mean Dice after 0..5 clicks, the area under the
Dice-vs-clicks curve (normalised to [0, 1]), NoC@85 / NoC@90 (clicks needed, 6 when never
reached, mean), ms per click in-process (p50 / p95), and with ``--http-repeats N`` the warm
refinement click through HTTP (the real backend app under uvicorn on loopback: ``/predict``
with the box and the keypoints in ``params.context`` as Label Studio sends them; p50 / p95).
``--markdown`` prints the tables as in docs/interactive.md.

    python benchmarks/interactive.py [--predictors litemedsam,litemedsam-clicks,...]
        [--datasets sammed2d,drive] [--clicks 5] [--http-repeats 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _machine import describe  # noqa: E402

from fusion.metrics import dice  # noqa: E402
from ml_backend.click_training import next_click  # noqa: E402
from ml_backend.predictors import get_predictor  # noqa: E402
from tests.helpers import (  # noqa: E402
    ThreadedServer,
    box_context,
    sammed2d_masks,
    shared_data_dir,
    tight_box,
)

VARIANTS = ("clicks", "clicks+logits")


def run_protocol(predictor: Any, organs: list[Any], clicks: int) -> dict[str, np.ndarray]:
    """``variant → (masks, clicks + 1)`` Dice; also ``"ms"`` per refinement click."""
    out = {v: np.zeros((len(organs), clicks + 1)) for v in VARIANTS}
    times: list[float] = []
    for i, organ in enumerate(organs):
        image, truth = organ.load()
        predictor.set_image(image)
        box = tight_box(truth)
        first = predictor.predict(box=box)
        for variant in VARIANTS:
            answer = first
            points: list[list[float]] = []
            labels: list[int] = []
            out[variant][i, 0] = dice(answer.mask, truth)
            for k in range(1, clicks + 1):
                click = next_click(answer.mask, truth)
                if click is None:  # perfect: nothing left to click
                    out[variant][i, k] = out[variant][i, k - 1]
                    continue
                points.append([click[0], click[1]])
                labels.append(click[2])
                start = time.perf_counter()
                answer = predictor.predict(
                    box=box,
                    points=points,
                    labels=labels,
                    mask_input=answer.logits if variant == "clicks+logits" else None,
                )
                times.append(1000.0 * (time.perf_counter() - start))
                out[variant][i, k] = dice(answer.mask, truth)
    out["ms"] = np.asarray(times)
    return out


def noc(curve: np.ndarray, threshold: float) -> float:
    """Mean clicks to reach ``threshold`` Dice (0 = the box alone; never → clicks + 1)."""
    reached = curve >= threshold
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), curve.shape[1])
    return float(first.mean())


def http_click_latency(predictor: Any, organ: Any, repeats: int) -> tuple[float, float]:
    """Warm refinement clicks through the real app over HTTP: (p50, p95) ms."""
    import httpx
    from PIL import Image

    from medcrowd.embedded import free_port
    from medcrowd.settings import config_path
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app

    image, truth = organ.load()
    height, width = truth.shape
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.fromarray(image).save(root / "slice.png")
        port = free_port()
        auth = ("labelstudio", secrets.token_urlsafe(12))
        config = BackendConfig(host="127.0.0.1", port=port, basic_auth=auth, local_files_root=root)
        app = create_app(config, predictor=predictor)
        xml = config_path("labeling_box_brush.xml").read_text()
        task = {"id": 1, "data": {"image": "/data/local-files/?d=slice.png"}}
        box = tight_box(truth)
        context = box_context(box, width, height)
        pred = np.zeros_like(truth)
        times: list[float] = []
        with ThreadedServer(app, port), httpx.Client(auth=auth, timeout=120) as client:

            def ask(ctx: dict[str, Any]) -> np.ndarray:
                from ml_backend.rle import rle_to_mask

                body = {"tasks": [task], "label_config": xml, "params": {"context": ctx}}
                resp = client.post(f"http://127.0.0.1:{port}/predict", json=body)
                resp.raise_for_status()
                region = resp.json()["results"][0]["result"][0]
                return rle_to_mask(region["value"]["rle"], height, width)

            pred = ask(context)  # cold: the embedding; not timed
            for _ in range(repeats):
                click = next_click(pred, truth) or (width / 2, height / 2, 1)
                ctx = {"result": [*context["result"], _keypoint(click, width, height)]}
                start = time.perf_counter()
                ask(ctx)
                times.append(1000.0 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _keypoint(click: tuple[float, float, int], width: int, height: int) -> dict[str, Any]:
    return {
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "from_name": "click",
        "to_name": "image",
        "type": "keypointlabels",
        "is_positive": bool(click[2]),
        "value": {
            "x": 100.0 * click[0] / width,
            "y": 100.0 * click[1] / height,
            "width": 0.5,
            "keypointlabels": ["Organ"],
        },
    }


def drive_test(root: Path) -> list[Any]:
    """The 14 DRIVE test images with their ``manual1`` vessel tree (an evaluation set)."""
    from PIL import Image

    base = root / "drive" / "test"

    class Vessels:
        def __init__(self, image_path: Path, mask_path: Path) -> None:
            self.image_path = image_path
            self.mask_path = mask_path

        def load(self) -> tuple[np.ndarray, np.ndarray]:
            image = np.asarray(Image.open(self.image_path).convert("RGB"))
            return image, np.asarray(Image.open(self.mask_path)) > 0

    return [
        Vessels(p, base / "manual1" / f"{p.stem.split('_')[0]}_manual1.gif")
        for p in sorted((base / "images").glob("*.tif"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--http-repeats", type=int, default=0, help="0: skip the HTTP timing")
    parser.add_argument(
        "--predictors", default="litemedsam,litemedsam-clicks,litemedsam-clicks:stock-box"
    )
    parser.add_argument("--datasets", default="sammed2d,drive")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as loaded)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    import torch

    root = shared_data_dir()
    sets: dict[str, list[Any]] = {}
    for name in args.datasets.split(","):
        if name == "sammed2d":
            sets[name] = sammed2d_masks(root)
            if len(sets[name]) != 30:
                raise SystemExit(f"expected the 30 SAM-Med2D masks, found {len(sets[name])}")
        elif name == "drive":
            sets[name] = drive_test(root)
            if len(sets[name]) != 14:
                raise SystemExit(f"expected the 14 DRIVE test images, found {len(sets[name])}")
        else:
            raise SystemExit(f"unknown data set {name!r} (sammed2d, drive)")
    rows = []
    for name in args.predictors.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            registry_name, _, routing = name.partition(":")
            checkpoint = args.checkpoint if registry_name != "litemedsam" else None
            predictor = get_predictor(registry_name, device="cpu", checkpoint=checkpoint,
                                      cache_dir=Path(tmp))  # fmt: skip
            if routing == "stock-box":  # litemedsam-clicks answering a box alone as stock
                predictor.box_only_decoder = "stock"  # type: ignore[attr-defined]
            elif routing:
                raise SystemExit(f"unknown routing {routing!r} (only :stock-box)")
            if args.threads:
                torch.set_num_threads(args.threads)
            for set_name, organs in sets.items():
                result = run_protocol(predictor, organs, args.clicks)
                ms = result["ms"]
                for variant in VARIANTS:
                    curve = result[variant]
                    means = curve.mean(axis=0)
                    auc = float(np.trapezoid(means, dx=1.0) / max(args.clicks, 1))
                    rows.append((name, set_name, variant, means, auc, noc(curve, 0.85),
                                 noc(curve, 0.90), ms))  # fmt: skip
                print_rows(rows[-len(VARIANTS) :], args.clicks, args.markdown)
            if args.http_repeats > 0 and "sammed2d" in sets:
                organ = next(o for o in sets["sammed2d"] if o.image_path.stem == "amos_0004_75")
                p50, p95 = http_click_latency(predictor, organ, args.http_repeats)
                print(f"{name}: warm refinement click through HTTP: p50 {p50:.0f} ms, p95 "
                      f"{p95:.0f} ms ({args.http_repeats} clicks; goal p95 <= 80 ms)")  # fmt: skip
    print("\nall rows:")
    print_rows(rows, args.clicks, args.markdown)
    print(describe())


def print_rows(rows: list[Any], clicks: int, markdown: bool) -> None:
    if markdown:
        head = " | ".join(f"{k}" for k in range(clicks + 1))
        print(f"| predictor | data | refinement | {head} | AUC | NoC@85 | NoC@90 | ms/click p50 |")
        print("|" + "---|" * (clicks + 8))
    for name, set_name, variant, means, auc, n85, n90, ms in rows:
        p50 = float(np.percentile(ms, 50)) if ms.size else float("nan")
        if markdown:
            cells = " | ".join(f"{m:.3f}" for m in means)
            print(f"| {name} | {set_name} | {variant} | {cells} | {auc:.3f} | {n85:.2f} | "
                  f"{n90:.2f} | {p50:.0f} |")  # fmt: skip
        else:
            cells = " ".join(f"{m:.3f}" for m in means)
            print(f"{name:18s} {set_name:9s} {variant:14s} {cells}  AUC {auc:.3f}  NoC@85 "
                  f"{n85:.2f}  NoC@90 {n90:.2f}  ms/click p50 {p50:.0f} p95 "
                  f"{np.percentile(ms, 95) if ms.size else float('nan'):.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
