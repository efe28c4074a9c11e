"""``medcrowd train clicks``: fine-tune LiteMedSAM's decoder for clicks (issue 16).

Registered in ``medcrowd/cli.py`` (``train_app.command("clicks")``). The command parses its
options, calls :func:`medcrowd.train_clicks.train_clicks` and prints; every expected failure
is one ``error:`` line (:func:`medcrowd.connection.cli_errors`). Torch is imported only when
the command runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from medcrowd.connection import cli_errors
from medcrowd.console import bars, console

__all__ = ["clicks_command"]


def clicks_command(
    out: Annotated[
        Path, typer.Option(help="Weights file to write (a JSON with its SHA-256 goes beside it).")
    ] = Path("litemedsam_clicks.pt"),
    data: Annotated[
        Path | None,
        typer.Option(
            help="Shared data folder (default: $MEDCROWD_SHARED_DATA or ../shared/data). Only "
            "its training sets are read, never sammed2d_demo or drive/test."
        ),
    ] = None,
    cache: Annotated[
        Path,
        typer.Option(help="Embedding cache file (.npz): computed once, reused by later runs."),
    ] = Path("click-embeddings.npz"),
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 600,
    batch_size: Annotated[int, typer.Option(help="Structures per step (one round each).")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (warm-up, cosine decay).")] = 2e-4,
    rounds: Annotated[int, typer.Option(help="Clicks per simulated episode.")] = 8,
    box_only_rate: Annotated[
        float, typer.Option(help="Share of rounds that are box-only, with distillation.")
    ] = 0.25,
    distill_weight: Annotated[
        float, typer.Option(help="Weight of the distillation toward the stock box-only answer.")
    ] = 1.0,
    start: Annotated[
        str,
        typer.Option(
            help="Which decoder answers each episode's box before the first click: 'student' "
            "(the one being trained, as the click-aware predictor answers a box) or 'stock'."
        ),
    ] = "stock",
    seed: Annotated[int, typer.Option(help="Seeds the data draw, the order and torch.")] = 0,
    threads: Annotated[
        int, typer.Option(help="Torch CPU threads (1 is fastest on a shared, busy machine).")
    ] = 1,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Write a training checkpoint here every 50 steps.")
    ] = None,
    images: Annotated[
        str,
        typer.Option(
            help="Images drawn per training source, over the defaults: SOURCE=N,... (0 drops "
            "one). Sources and defaults: shenzhen_cxr=30, bubil_cells=15, drive_train=8, "
            "isbi2012_em=12, msd_spleen_ct=20, spleen_ct_bones=0 (bone by density on the "
            "spleen volume's slices)."
        ),
    ] = "",
) -> None:
    """Fine-tune LiteMedSAM's prompt encoder + mask decoder for clicks on cached embeddings.

    Simulated interaction on the training sets (jittered box, then clicks at the largest error
    with the previous logits fed back); serve the result with
    `medcrowd backend serve --model litemedsam-clicks --checkpoint OUT`.
    """
    import os

    from medcrowd.train_clicks import ClickTrainOptions, parse_image_counts, train_clicks

    root = data or Path(
        os.environ.get("MEDCROWD_SHARED_DATA", Path.cwd().parent / "shared" / "data")
    )
    with cli_errors():
        counts = parse_image_counts(images, ClickTrainOptions().images)
    options = ClickTrainOptions(
        images=counts,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        rounds=rounds,
        box_only_rate=box_only_rate,
        distill_weight=distill_weight,
        start=start,
        seed=seed,
        threads=threads,
    )
    command = "medcrowd train clicks " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else [])
    with cli_errors(), bars() as bar:
        report = train_clicks(options, root, out, cache, command.strip(), checkpoint, bar)
    meta = report.meta
    size, sha, seconds = meta["bytes"] / 1e6, meta["sha256"][:12], meta["train_seconds"]
    console.print(f"wrote {report.weights} ({size:.1f} MB, sha256 {sha}…) in {seconds:.0f} s")
    console.print(f"loss {meta['loss_first_10pct']:.3f} → {meta['loss_last_10pct']:.3f} "
                  "(first / last 10 % of steps)")  # fmt: skip
    curves = (
        ("stock + logits", report.val_stock),
        ("trained", report.val_trained),
        ("trained, stock box", report.val_trained_stock_box),
    )
    for name, curve in curves:
        if curve:
            console.print(f"held-out training-set structures, {name}: Dice after 0..5 clicks "
                          + " ".join(f"{d:.3f}" for d in curve))  # fmt: skip
