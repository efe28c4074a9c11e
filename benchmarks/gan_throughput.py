"""pix2pix throughput on this machine: train steps/s and generated pairs/s.

Generated pairs/s counts the whole synthesis of one pair: a new mask by elastic + affine
deformation (with its topology checks) plus one generator forward pass.

    python benchmarks/gan_throughput.py                       # 256 px, paper sizes (ngf=ndf=64)
    python benchmarks/gan_throughput.py --size 128 --ngf 32   # a lighter config

Prints a table and one JSON line. Random masks/images (seeded): speed does not depend on
content. Reference ratio: the 256-px paper config against the lighter config given.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from gan import DeformedMaskGenerator, Pix2PixConfig, Pix2PixTrainer, masks_to_onehot
from ml_backend.device import resolve_device


def _measure(size: int, ngf: int, steps: int, pairs: int, batch: int, device: str) -> dict:
    rng = np.random.default_rng(0)
    cfg = Pix2PixConfig(image_size=size, ngf=ngf, ndf=ngf, device=device, seed=0)
    trainer = Pix2PixTrainer(cfg)
    labels = np.zeros((batch, size, size), np.uint8)
    for lab in labels:  # a few blobs so the deformation's checks have something to check
        for _ in range(5):
            y, x = rng.integers(size // 8, size - size // 8, 2)
            lab[y - size // 16 : y + size // 16, x - size // 16 : x + size // 16] = 1
    batch_t = {
        "mask": masks_to_onehot(labels, 2),
        "image": torch.from_numpy(rng.uniform(-1, 1, (batch, 1, size, size)).astype("float32")),
    }
    trainer.train_step(batch_t)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch_t)
    train_s = (time.perf_counter() - t0) / steps
    deformer = DeformedMaskGenerator()
    trainer.generate(batch_t["mask"][:1], seed=0)  # warm-up
    t0 = time.perf_counter()
    for k in range(pairs):
        new, _ = deformer.sample(labels, 1, seed=k)
        trainer.generate(masks_to_onehot(new, 2), seed=k)
    gen_s = (time.perf_counter() - t0) / pairs
    params = sum(p.numel() for p in trainer.generator.parameters())
    return {
        "size": size,
        "ngf": ngf,
        "batch": batch,
        "generator_params_M": round(params / 1e6, 2),
        "train_steps_per_s": round(1 / train_s, 3),
        "generated_pairs_per_s": round(1 / gen_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--ngf", type=int, default=64, help="generator/discriminator width")
    ap.add_argument("--light-ngf", type=int, default=16, help="width of the reference config")
    ap.add_argument("--steps", type=int, default=5, help="timed train steps")
    ap.add_argument("--pairs", type=int, default=10, help="timed generated pairs")
    ap.add_argument("--batch", type=int, default=1, help="train batch size (paper: 1)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = [
        _measure(args.size, ngf, args.steps, args.pairs, args.batch, device)
        for ngf in (args.ngf, args.light_ngf)
    ]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")  # fmt: skip
    print(f"{'size':>5} {'ngf':>4} {'G params (M)':>12} {'train steps/s':>14} {'pairs/s':>8}")
    for r in rows:
        print(
            f"{r['size']:>5} {r['ngf']:>4} {r['generator_params_M']:>12} "
            f"{r['train_steps_per_s']:>14} {r['generated_pairs_per_s']:>8}"
        )
    ratio = rows[1]["train_steps_per_s"] / rows[0]["train_steps_per_s"]
    print(f"train speed-up of ngf={args.light_ngf} over ngf={args.ngf}: {ratio:.1f}x")
    print(json.dumps({"rows": rows, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
