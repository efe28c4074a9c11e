"""``medcrowd evaluate``, ``medcrowd train segmenter|sqa`` and ``medcrowd select``.

Registered in ``medcrowd/cli.py``. Each command parses its options, calls one function —
:func:`medcrowd.evaluate.evaluate`, :func:`medcrowd.train.train_model`,
:func:`medcrowd.simulate.simulate_selection` or :func:`medcrowd.select.select_tasks` — and
prints; every expected failure is one ``error:`` line (:func:`medcrowd.connection.cli_errors`).
The engines (:mod:`segmenter`, :mod:`gan`; MONAI takes seconds to import) are imported only
when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from medcrowd.connection import DataDirOption, TokenOption, UrlOption, cli_errors
from medcrowd.console import bars, console, err, progress

__all__ = ["evaluate_command", "select_command", "train_app"]

train_app = typer.Typer(
    help="Train the downstream segmenter (prompt-free drafts) or the quality assessor (select).",
    no_args_is_help=True,
)

DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{option} needs at least one value")
    return values


@contextmanager
def _bar(
    description: str,
) -> Iterator[tuple[Callable[[int, int], None], Callable[[dict[str, Any]], None]]]:
    """One rich progress bar; yields ``(progress(done, total), on_log(event))``: the bar
    follows ``progress`` and shows the ``"stage"`` of the latest event as its description."""
    with bars() as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=min(done, max(total, 1)), total=max(total, 1))

        def log(event: dict[str, Any]) -> None:
            stage = event.get("stage")
            if isinstance(stage, str):
                bar.update(task, description=stage)

        yield update, log


def evaluate_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="Labelled images: images/ + masks/, image/ + label/ (ISBI), or DRIVE's layout."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder (table.md, chart.png, …).")] = Path(
        "evaluate"
    ),
    test: Annotated[
        Path | None,
        typer.Option(
            help="A held-out labelled test folder (images/ + masks/ of PNG/TIFF/JPEG of any "
            "size, or any layout DATA may have; resized to --size). Then all of DATA is the "
            "pool and nothing of DATA is tested on; the folder is only scored on (never "
            "trained on, crowd-labelled, given to pix2pix or used for a choice). Refused "
            "(exit 2) when it has no pairs or shares an image with DATA (pixel hash). "
            "Default: hold out --test-fraction of DATA."
        ),
    ] = None,
    crowd: Annotated[
        Path | None,
        typer.Option(
            help="Crowd labels: a `medcrowd pull` + `fuse` folder or pairs "
            "(default: made by --crowd-source)."
        ),
    ] = None,
    synthetic: Annotated[
        Path | None,
        typer.Option(help="Synthetic pairs (default: train pix2pix on (b) and generate)."),
    ] = None,
    expert_count: Annotated[
        str,
        typer.Option(
            help="Expert images in arm (a); a comma-separated list (5,10) runs (a), (b), (c) "
            "once per count, rows labelled expert-5, crowd-5, … ((d) once)."
        ),
    ] = "10",
    test_fraction: Annotated[float, typer.Option(help="Held-out share without --test.")] = 0.3,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (mean ± std).")] = "0,1,2",
    size: Annotated[int, typer.Option(help="Image side the networks see.")] = 128,
    steps: Annotated[
        int, typer.Option(help="Training steps per network (the floor under --steps-rule scaled).")
    ] = 600,
    steps_rule: Annotated[
        str,
        typer.Option(
            help="fixed: every network trains --steps steps. scaled: steps = max(--steps, "
            "ceil(--epochs-min × training pairs / batch size 8)), so big arms are not "
            "under-trained. The steps of every network are in results.csv."
        ),
    ] = "scaled",
    epochs_min: Annotated[
        float, typer.Option(help="--steps-rule scaled: passes over the training pairs, at least.")
    ] = 20.0,
    channels: Annotated[
        str,
        typer.Option(
            help="U-Net channels per level (every measured table used the default; "
            "16,32,64,128 costs 2x per step)."
        ),
    ] = "8,16,32,64",
    lr: Annotated[
        float,
        typer.Option(
            help="Adam learning rate of every arm's U-Net. 1e-3 suits lungs; sparse, "
            "low-contrast structures (BU-BIL cells, 1-7 % foreground) needed 1e-2 to leave "
            "the all-background plateau in 600 steps (docs/evaluation.md)."
        ),
    ] = 1e-3,
    threads: Annotated[
        int,
        typer.Option(
            help="CPU only: PyTorch intra-op threads (and the assist's ONNX Runtime threads), "
            "set before any network is built; 0 = torch's default (all cores). On shared "
            "cores 2 threads made a U-Net step 8x slower than 1. A CUDA device is untouched."
        ),
    ] = 1,
    jobs: Annotated[
        int,
        typer.Option(
            help="Processes that label the pool and train the networks side by side, each "
            "with --threads threads (results do not depend on it). On 2 cores --jobs 2 "
            "--threads 1 does about twice the work of one process."
        ),
    ] = 1,
    synth_steps: Annotated[int, typer.Option(help="pix2pix training steps.")] = 1500,
    synth_count: Annotated[int, typer.Option(help="Synthetic pairs; 0 = as many as (b).")] = 0,
    synth_ngf: Annotated[int, typer.Option(help="pix2pix generator/discriminator width.")] = 32,
    crowd_source: Annotated[
        str,
        typer.Option(
            help="assisted: virtual volunteers label the pool through LiteMedSAM (a noisy box "
            "per object, the model's mask, brush fixes within a time budget; each label has a "
            "volunteer time). simulated: expert masks perturbed by annotator models (no assist)."
        ),
    ] = "assisted",
    crowd_models: Annotated[
        str | None,
        typer.Option(
            help="The crowd, comma-separated: volunteer kinds (assisted: careful, quick, sloppy, "
            "loose, clipped, wrong_object, spam) or annotator models (simulated). Default: the "
            "source's pool of 10."
        ),
    ] = None,
    raters_per_task: Annotated[int, typer.Option(help="Crowd labels per image.")] = 3,
    method: Annotated[str, typer.Option(help="Fusion method folder read from --crowd.")] = (
        "crowd-staple"
    ),
    invert_masks: Annotated[
        bool, typer.Option(help="Foreground is 0 in the masks (ISBI's label/).")
    ] = False,
    test_invert_masks: Annotated[
        bool | None,
        typer.Option(help="Foreground is 0 in the --test masks (default: as --invert-masks)."),
    ] = None,
    mask_threshold: Annotated[
        int | None,
        typer.Option(
            help="Mask values >= this are foreground, in DATA and --test (e.g. 128 for JPEG or "
            "soft-edged masks; default: any value > 0)."
        ),
    ] = None,
    arms: Annotated[
        str,
        typer.Option(
            help="Arms to run, of expert,crowd,synthetic,ceiling,assist (assist = (e): the "
            "pool labelled by LiteMedSAM alone, one box per object, no correction). synthetic "
            "= (c) is not run by default: it scored below (b) in every measured cell."
        ),
    ] = "expert,crowd,ceiling,assist",
    quick: Annotated[
        bool,
        typer.Option(
            help="Minutes on a CPU: 64 px, 1 seed, short training, LiteMedSAM on PyTorch "
            "(CI smoke)."
        ),
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train one segmenter on (a) expert subset, (b) + crowd, (c) + synthetic, (d) all expert,
    (e) + assist alone; test on held-out expert masks (a split of DATA, or --test DIR); write a
    Markdown table with volunteer-hours per arm, a bar chart, and with several --expert-count
    values a Dice-vs-expert-images figure (expert_curve.png)."""
    from medcrowd.console import error
    from medcrowd.evaluate import EvaluateOptions, TestFolderError, evaluate

    counts = _ints(expert_count, "--expert-count")
    options = EvaluateOptions(
        expert_count=counts[0] if len(counts) == 1 else counts,
        test_fraction=test_fraction,
        seeds=_ints(seeds, "--seeds"),
        size=size,
        steps=steps,
        steps_rule=steps_rule,
        epochs_min=epochs_min,
        channels=_ints(channels, "--channels"),
        lr=lr,
        threads=threads,
        jobs=jobs,
        crowd_source=crowd_source,
        crowd_models=tuple(m.strip() for m in crowd_models.split(",")) if crowd_models else None,
        raters_per_task=raters_per_task,
        crowd_method=method,
        synth_steps=synth_steps,
        synth_count=synth_count,
        synth_ngf=synth_ngf,
        invert_masks=invert_masks,
        test_invert_masks=test_invert_masks,
        mask_threshold=mask_threshold,
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
        device=device,
    )
    if quick:
        options.size, options.steps, options.synth_steps = 64, 80, 80
        options.assist_backend = "torch"  # no ONNX export: seconds, not a minute
        options.synth_ngf, options.channels = 16, (8, 16, 32, 64)
        options.seeds = options.seeds[:1]
    with cli_errors():
        try:
            with _bar("evaluate") as (update, log):
                report = evaluate(
                    data, out, options, test, crowd, synthetic, progress=update, on_log=log
                )
        except TestFolderError as exc:
            error(exc)
            raise typer.Exit(2) from None
    # the Markdown table as written to table.md, never read as rich markup (the console
    # soft-wraps, so a log or a pipe gets its rows whole)
    console.print(report.table, markup=False, highlight=False)
    console.print(f"wrote {out / 'table.md'}, {out / 'chart.png'}, {out / 'results.csv'}")


def _train(kind: str, data: Path, out: Path, options: Any) -> None:
    from medcrowd.train import train_model

    with cli_errors():
        with _bar(f"training {kind}") as (update, _log):
            report = train_model(kind, data, out, options, progress=update)
    console.print(
        f"trained {kind} on {report.pairs} pairs, final loss {report.final_loss:.4f} → {out}"
    )


_TrainData = Annotated[Path, typer.Argument(help="Labelled pairs or a pulled + fused dataset.")]
_TrainOut = Annotated[Path, typer.Option(help="Model file to write.")]
_Channels = Annotated[str, typer.Option(help="U-Net channels per level.")]
_Size = Annotated[int, typer.Option(help="Network input side.")]
_Steps = Annotated[int, typer.Option(help="Optimiser steps.")]
_Seed = Annotated[int, typer.Option(help="Seed.")]
_Invert = Annotated[bool, typer.Option(help="Foreground is 0 in the masks.")]
_Method = Annotated[str, typer.Option(help="Fused-label method of a dataset.")]


@train_app.command("segmenter")
def train_segmenter(
    data: _TrainData,
    out: _TrainOut = Path("segmenter.pt"),
    size: _Size = 128,
    steps: _Steps = 600,
    seed: _Seed = 0,
    invert_masks: _Invert = False,
    method: _Method = "crowd-staple",
    channels: _Channels = "16,32,64,128",
    device: DeviceOpt = "auto",
) -> None:
    """Train the downstream segmenter; `medcrowd backend serve --draft-model` serves it."""
    from medcrowd.train import TrainOptions

    options = TrainOptions(size=size, steps=steps, seed=seed, device=device,
                           invert_masks=invert_masks, method=method,
                           channels=_ints(channels, "--channels"))  # fmt: skip
    _train("segmenter", data, out, options)


@train_app.command("sqa")
def train_sqa(
    data: _TrainData,
    out: _TrainOut = Path("sqa.pt"),
    size: _Size = 128,
    steps: _Steps = 600,
    seed: _Seed = 0,
    invert_masks: _Invert = False,
    method: _Method = "crowd-staple",
    folds: Annotated[int, typer.Option(help="Folds for the out-of-fold error targets.")] = 3,
    channels: _Channels = "16,32,64,128",
    device: DeviceOpt = "auto",
) -> None:
    """Train the segmentation-quality assessor (segmentation + error-map branches).

    The error branch learns from out-of-fold segmentations (k fold networks), never from the
    network's errors on its own training images."""
    from medcrowd.train import TrainOptions

    options = TrainOptions(size=size, steps=steps, seed=seed, device=device,
                           invert_masks=invert_masks, method=method, folds=folds,
                           channels=_ints(channels, "--channels"))  # fmt: skip
    _train("sqa", data, out, options)


def select_command(
    k: Annotated[int, typer.Option(help="Tasks to prioritise.")] = 10,
    project: Annotated[
        int | None, typer.Option(help="Label Studio project id (live mode).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Quality assessor from `medcrowd train sqa`.")
    ] = None,
    strategy: Annotated[str, typer.Option(help="sqa | random.")] = "sqa",
    dry_run: Annotated[bool, typer.Option(help="Rank and print; change nothing.")] = False,
    ranking: Annotated[
        Path | None, typer.Option(help="Also write the ranking as CSV here.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    simulate: Annotated[
        Path | None,
        typer.Option(help="Simulation mode: labelled pairs to run select→label→fine-tune on."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Simulation output folder.")] = Path("select-sim"),
    initial: Annotated[int, typer.Option(help="Simulation: labelled at the start.")] = 4,
    per_round: Annotated[int, typer.Option(help="Simulation: labelled per round.")] = 4,
    rounds: Annotated[int, typer.Option(help="Simulation: rounds.")] = 4,
    size: Annotated[int, typer.Option(help="Simulation: image/tile side.")] = 64,
    steps: Annotated[int, typer.Option(help="Simulation: initial training steps.")] = 300,
    finetune_steps: Annotated[int, typer.Option(help="Simulation: steps per round.")] = 150,
    test_fraction: Annotated[float, typer.Option(help="Simulation: held-out share.")] = 0.3,
    invert_masks: Annotated[bool, typer.Option(help="Foreground is 0 in the masks.")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Prioritise the k unlabelled tasks the model is most likely wrong on, show volunteers
    the predicted error region; or (--simulate) compare SQA, random and MC-dropout
    selection over labelling rounds and plot Dice vs % labelled."""
    with cli_errors():
        if simulate is not None:
            from medcrowd.simulate import SimulateOptions

            _simulate(simulate, out, SimulateOptions(
                initial=initial, per_round=per_round, rounds=rounds, size=size, steps=steps,
                finetune_steps=finetune_steps, test_fraction=test_fraction,
                invert_masks=invert_masks, seed=seed, device=device,
            ))  # fmt: skip
            return
        if project is None:
            raise ValueError("give --project (live mode) or --simulate DATA")
        _live(k, project, model, strategy, dry_run, ranking, url, token, data_dir, seed, device)


def _live(k: int, project: int, model: Path | None, strategy: str, dry_run: bool,
          ranking: Path | None, url: str | None, token: str | None, data_dir: Path | None,
          seed: int, device: str) -> None:  # fmt: skip
    from rich.table import Table

    from medcrowd.connection import open_studio
    from medcrowd.select import SelectOptions, select_tasks, write_ranking
    from ml_backend.device import resolve_device

    options = SelectOptions(
        k=k, strategy=strategy, dry_run=dry_run, seed=seed, device=resolve_device(device)
    )
    studio = open_studio(url, token, data_dir)
    report = select_tasks(studio, project, model, options, progress=progress("assessing tasks"))
    table = Table("rank", "task", "predicted quality", "error area", "selected")
    for i, row in enumerate(report.ranked[: max(k, 10)]):
        err_area = row.get("error_fraction")
        table.add_row(
            str(i + 1), str(row["task"]), f"{row['score']:.3f}",
            "—" if err_area is None else f"{err_area * 100:.1f} %",
            "yes" if row["selected"] else "",
        )  # fmt: skip
    console.print(table)
    for task_id, why in report.skipped:
        err.print(f"[yellow]skipped task {task_id}:[/yellow] {why}")
    if ranking is not None:
        write_ranking(report, ranking)
    if dry_run:
        console.print("dry run: nothing changed in Label Studio")
    else:
        console.print(
            f"{report.pushed} predictions {report.model_version} pushed, {report.unchanged} "
            f"unchanged, {report.removed} stale removed; project {project} now serves them "
            "first (uncertainty sampling)"
        )


def _simulate(data: Path, out: Path, options: Any) -> None:
    from medcrowd.simulate import simulate_selection

    with _bar("simulating active learning") as (update, log):
        report = simulate_selection(data, out, options, progress=update, on_log=log)
    for r in report.results:
        curve = zip(r.fractions, r.dice, strict=True)
        pts = ", ".join(f"{f * 100:.0f}%: {d:.3f}" for f, d in curve)
        console.print(f"{r.strategy:>10}  {pts}")
    console.print(f"full-data Dice {report.full_dice:.3f}; wrote {out / 'curves.png'}")
