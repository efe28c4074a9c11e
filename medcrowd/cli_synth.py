"""``medcrowd synth train|generate`` and ``medcrowd export``: thin commands over the engines.

Registered in ``medcrowd/cli.py`` with ``app.add_typer(synth_app, name="synth")`` and
``app.command("export")(export_command)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from medcrowd.console import bars, console, error, progress

__all__ = ["export_command", "synth_app"]

synth_app = typer.Typer(
    help="Synthetic image–mask pairs: pix2pix mask → image, new masks by deformation.",
    no_args_is_help=True,
)

# what the engines raise for bad input or unreadable files (OSError: missing, unreadable or
# not an image); anything else is a bug → traceback
_USER_ERRORS = (ValueError, OSError, RuntimeError)


@contextmanager
def _bar(
    description: str, total: int, finishing: str = ""
) -> Iterator[tuple[Callable[[int, int], None], Callable[[dict[str, float]], None]]]:
    """A rich progress bar with ETA; yields ``(progress(done, total), on_log(losses))``.

    The bar appears with the first progress report, so an error while the data is still
    being read prints its one line alone.
    """
    from rich.progress import TextColumn

    state: dict[str, Any] = {}

    def task() -> tuple[Any, Any]:
        if not state:
            bar = bars(TextColumn("{task.fields[info]}"))
            bar.start()
            state.update(bar=bar, task=bar.add_task(description, total=total, info=""))
        return state["bar"], state["task"]

    def update(done: int, total_: int) -> None:
        bar, tid = task()
        if done >= total_ and finishing:
            bar.update(tid, info=finishing)
        bar.update(tid, completed=done, total=total_)

    def log(losses: dict[str, float]) -> None:
        bar, tid = task()
        keys = ("loss_D", "loss_G_GAN", "loss_G_L1")
        bar.update(tid, info=" ".join(f"{k[5:]} {losses[k]:.3f}" for k in keys if k in losses))

    try:
        yield update, log
    finally:
        if state:
            state["bar"].stop()


@synth_app.command("train")
def train(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="Pulled + fused dataset, or a pairs folder (images/ + masks/, ISBI, DRIVE)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder (checkpoint, curves, samples, quality report).",
            show_default="DATASET/synth-run",
        ),
    ] = None,
    size: Annotated[int, typer.Option(help="Square size in px, a power of two in 64..512.")] = 256,
    steps: Annotated[int, typer.Option(help="Total train steps (batch size 1).")] = 2000,
    ngf: Annotated[int, typer.Option(help="Generator width (paper: 64).")] = 64,
    ndf: Annotated[int, typer.Option(help="Discriminator width (paper: 64).")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate for G and D.")] = 2e-4,
    seed: Annotated[int, typer.Option(help="Seeds init, data order, split and dropout.")] = 0,
    holdout: Annotated[
        float, typer.Option(help="Fraction of pairs held out for the quality report.")
    ] = 0.2,
    method: Annotated[
        str, typer.Option(help="Which fused-<method>/masks of a pulled dataset to use.")
    ] = "crowd-staple",
    invert_masks: Annotated[
        bool, typer.Option(help="Binary masks with foreground 0 (ISBI 2012 label/).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA.")] = True,
    checkpoint_every: Annotated[int, typer.Option(help="Save every N steps.")] = 200,
    quality: Annotated[bool, typer.Option(help="Write quality.json + quality.png at the end.")] = (
        True
    ),
    seg_epochs: Annotated[
        int,
        typer.Option(help="Epochs of the downstream segmenter (train-on-synthetic score)."),
    ] = 8,
) -> None:
    """Train pix2pix (mask → image); resumes from OUT/checkpoint.pt when it exists."""
    from medcrowd.synth import SynthOptions, train_synth

    options = SynthOptions(
        size=size,
        steps=steps,
        ngf=ngf,
        ndf=ndf,
        lr=lr,
        seed=seed,
        holdout=holdout,
        method=method,
        invert_masks=invert_masks,
        device=device,
        amp=amp,
        checkpoint_every=checkpoint_every,
        quality=quality,
        seg_epochs=seg_epochs,
    )
    run_dir = out or dataset / "synth-run"
    try:
        finishing = "quality report…" if quality else ""
        with _bar("pix2pix", steps, finishing=finishing) as (update, log):
            report = train_synth(dataset, run_dir, options, progress=update, on_log=log)
    except _USER_ERRORS as exc:
        error(exc)
        raise typer.Exit(1) from None
    resumed = f" (resumed at step {report.resumed_from})" if report.resumed_from else ""
    console.print(
        f"{report.steps} steps on {report.train} pairs{resumed}, {report.held_out} held out "
        f"→ {report.run_dir}"
    )
    if report.quality:
        q = report.quality
        r, t = q["reconstruction"], q["tstr"]
        w = q["histogram"]["train_real_vs_synthetic"]["wasserstein"]
        console.print(
            f"held-out SSIM {r['ssim_mean']:.3f}, PSNR {r['psnr_mean_db']:.1f} dB; Dice "
            f"train-synthetic/test-real {t['dice_train_synthetic_test_real']:.3f} "
            f"(train-real {t['dice_train_real_test_real']:.3f}); histogram W1 {w:.1f}"
        )


@synth_app.command("generate")
def generate(
    run: Annotated[Path, typer.Argument(help="Run folder written by medcrowd synth train.")],
    n: Annotated[int, typer.Option("--n", help="How many synthetic pairs to write.")] = 100,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (images/ + masks/ + manifest.jsonl); appended to.",
            show_default="RUN/synthetic",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds the mask deformations and dropout.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Write N synthetic pairs: deformed real masks → the trained generator."""
    from medcrowd.synth import generate_synth

    target = out or run / "synthetic"
    try:
        with _bar("generate", n) as (update, _):
            report = generate_synth(run, target, n, seed=seed, device=device, progress=update)
    except _USER_ERRORS as exc:
        error(exc)
        raise typer.Exit(1) from None
    console.print(f"{report.written} synthetic pairs → {report.out} (samples.png, manifest.jsonl)")


def export_command(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="Pulled + fused dataset, or a pairs folder (images/ + masks/, ISBI, DRIVE)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    format: Annotated[str, typer.Option("--format", help="nnunet | nifti | png.")] = "nnunet",
    synthetic: Annotated[
        list[Path] | None,
        typer.Option(help="A medcrowd synth generate output to include (repeatable)."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="Which fused-<method>/masks of a pulled dataset to use.")
    ] = "crowd-staple",
    invert_masks: Annotated[
        bool, typer.Option(help="Binary masks with foreground 0 (ISBI 2012 label/).")
    ] = False,
    dataset_id: Annotated[int, typer.Option(help="nnU-Net dataset id (use 500..999).")] = 501,
    name: Annotated[str, typer.Option(help="nnU-Net dataset name.")] = "medcrowd",
    label: Annotated[
        list[str] | None,
        typer.Option(help="Name of class 1, 2, … (repeatable); default class_<k>."),
    ] = None,
) -> None:
    """Export real/fused + synthetic pairs as nnU-Net v2 raw data, NIfTI or PNG."""
    from medcrowd.export import ExportOptions, export_dataset

    options = ExportOptions(
        fmt=format,
        method=method,
        synthetic=list(synthetic or []),
        invert_masks=invert_masks,
        dataset_id=dataset_id,
        name=name,
        label_names=list(label or []),
    )

    try:
        report = export_dataset(dataset, out, options, progress=progress("export"))
    except _USER_ERRORS as exc:
        error(exc)
        raise typer.Exit(1) from None
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(report.kinds.items()))
    console.print(f"{report.cases} cases ({kinds}) as {format} → {report.out}")
