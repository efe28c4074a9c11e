"""``medcrowd evaluate``, ``medcrowd train segmenter|sqa`` and ``medcrowd select``.

Registered in ``medcrowd/cli.py``. The engines live in :mod:`medcrowd.evaluate`,
:mod:`medcrowd.select` and the :mod:`segmenter` package (MONAI; imported only when a
command runs, ``import monai`` takes seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from medcrowd.console import bars, console, err, progress

__all__ = ["evaluate_command", "select_command", "train_app"]

train_app = typer.Typer(
    help="Train the downstream segmenter (prompt-free drafts) or the quality assessor (select).",
    no_args_is_help=True,
)

_USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError)
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{option} needs at least one value")
    return values


@contextmanager
def _stages() -> Iterator[Any]:
    """One rich progress bar per stage; yields a ``(stage, done, total)`` callback."""
    with bars() as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=min(done, max(total, 1)), total=max(total, 1))

        yield update


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
        typer.Option(help="A separate labelled test folder (default: hold out a fraction)."),
    ] = None,
    crowd: Annotated[
        Path | None,
        typer.Option(
            help="Crowd labels: a `medcrowd pull` + `fuse` folder or pairs (default: simulate)."
        ),
    ] = None,
    synthetic: Annotated[
        Path | None,
        typer.Option(help="Synthetic pairs (default: train pix2pix on (b) and generate)."),
    ] = None,
    expert_count: Annotated[int, typer.Option(help="Expert images in arm (a).")] = 10,
    test_fraction: Annotated[float, typer.Option(help="Held-out share without --test.")] = 0.3,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (mean ± std).")] = "0,1,2",
    size: Annotated[int, typer.Option(help="Image side the networks see.")] = 128,
    steps: Annotated[int, typer.Option(help="Training steps per network.")] = 600,
    channels: Annotated[str, typer.Option(help="U-Net channels per level.")] = "16,32,64,128",
    synth_steps: Annotated[int, typer.Option(help="pix2pix training steps.")] = 1500,
    synth_count: Annotated[int, typer.Option(help="Synthetic pairs; 0 = as many as (b).")] = 0,
    synth_ngf: Annotated[int, typer.Option(help="pix2pix generator/discriminator width.")] = 32,
    crowd_models: Annotated[
        str | None,
        typer.Option(help="Simulated annotator pool, comma-separated model names."),
    ] = None,
    raters_per_task: Annotated[int, typer.Option(help="Simulated raters per image.")] = 3,
    method: Annotated[str, typer.Option(help="Fusion method folder read from --crowd.")] = (
        "crowd-staple"
    ),
    invert_masks: Annotated[
        bool, typer.Option(help="Foreground is 0 in the masks (ISBI's label/).")
    ] = False,
    arms: Annotated[
        str, typer.Option(help="Arms to run: expert,crowd,synthetic,ceiling.")
    ] = "expert,crowd,synthetic,ceiling",
    quick: Annotated[
        bool, typer.Option(help="Minutes on a CPU: 64 px, 1 seed, short training (CI smoke).")
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train one segmenter on (a) expert subset, (b) + crowd, (c) + synthetic, (d) all expert;
    test on held-out expert masks; write a Markdown table and a bar chart."""
    from medcrowd.evaluate import DEFAULT_CROWD, EvaluateOptions, evaluate

    options = EvaluateOptions(
        expert_count=expert_count,
        test_fraction=test_fraction,
        seeds=_ints(seeds, "--seeds"),
        size=size,
        steps=steps,
        channels=_ints(channels, "--channels"),
        crowd_models=tuple(crowd_models.split(",")) if crowd_models else DEFAULT_CROWD,
        raters_per_task=raters_per_task,
        crowd_method=method,
        synth_steps=synth_steps,
        synth_count=synth_count,
        synth_ngf=synth_ngf,
        invert_masks=invert_masks,
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
        device=device,
    )
    if quick:
        options.size, options.steps, options.synth_steps = 64, 80, 80
        options.synth_ngf, options.channels = 16, (8, 16, 32, 64)
        options.seeds = options.seeds[:1]
    try:
        with _stages() as update:
            report = evaluate(data, out, options, test, crowd, synthetic, progress=update)
    except _USER_ERRORS as exc:
        raise _fail(exc) from None
    console.print(report.table)
    console.print(f"wrote {out / 'table.md'}, {out / 'chart.png'}, {out / 'results.csv'}")


def _read_labelled(data: Path, invert: bool, method: str) -> tuple[list[Any], list[Any]]:
    """Images and 0/1 masks from a pulled + fused dataset or a pairs folder."""
    if (data / "dataset.json").is_file():
        from medcrowd.synth import load_pairs as load_fused

        pairs = load_fused(data, method, invert)
        return [p.image for p in pairs], [(p.mask > 0).astype("uint8") for p in pairs]
    from segmenter.data import load_pairs

    _, images, masks = load_pairs(data, invert_masks=invert)
    return list(images), list(masks)


def _train(kind: str, data: Path, out: Path, size: int, steps: int, seed: int, device: str,
           invert: bool, method: str, folds: int = 3,
           channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:  # fmt: skip

    from segmenter.data import prepare
    from segmenter.trainer import SegmenterConfig

    if not data.is_dir():
        raise FileNotFoundError(f"{data} is not a folder")
    images, masks = _read_labelled(data, invert, method)
    if not images:
        raise ValueError(f"no labelled pairs in {data}")
    x, y = prepare(images, masks, size)
    config = SegmenterConfig(size=size, steps=steps, seed=seed, device=device, channels=channels)
    model: Any
    if kind == "segmenter":
        from segmenter.trainer import Segmenter

        model = Segmenter(config)
    else:
        from segmenter.sqa import QualityAssessor

        model = QualityAssessor(config, folds=folds)
    with _stages() as update:
        losses = model.fit(x, y, on_step=lambda d, t, _l: update(f"training {kind}", d, t))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    console.print(f"trained {kind} on {len(x)} pairs, final loss {losses[-1]:.4f} → {out}")


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
    try:
        _train("segmenter", data, out, size, steps, seed, device, invert_masks, method,
               channels=_ints(channels, "--channels"))  # fmt: skip
    except _USER_ERRORS as exc:
        raise _fail(exc) from None


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
    try:
        _train("sqa", data, out, size, steps, seed, device, invert_masks, method, folds,
               _ints(channels, "--channels"))  # fmt: skip
    except _USER_ERRORS as exc:
        raise _fail(exc) from None


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
    url: Annotated[str, typer.Option(envvar="MEDCROWD_LABEL_STUDIO_URL")] = (
        "http://127.0.0.1:8080"
    ),
    token: Annotated[
        str, typer.Option(envvar="MEDCROWD_LABEL_STUDIO_TOKEN", show_default=False)
    ] = "",
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
    try:
        if simulate is not None:
            _simulate(simulate, out, initial, per_round, rounds, size, steps, finetune_steps,
                      test_fraction, invert_masks, seed, device)  # fmt: skip
            return
        if project is None:
            raise ValueError("give --project (live mode) or --simulate DATA")
        _live(k, project, model, strategy, dry_run, ranking, url, token, seed, device)
    except _USER_ERRORS as exc:
        raise _fail(exc) from None


def _live(k: int, project: int, model: Path | None, strategy: str, dry_run: bool,
          ranking: Path | None, url: str, token: str, seed: int, device: str) -> None:  # fmt: skip
    from rich.table import Table

    from medcrowd.select import SelectOptions, select_tasks, write_ranking
    from medcrowd.studio import Studio

    if not token:
        raise ValueError("a Label Studio token is needed (--token or MEDCROWD_LABEL_STUDIO_TOKEN)")
    options = SelectOptions(k=k, strategy=strategy, dry_run=dry_run, seed=seed, device=device)
    studio = Studio(url, token)
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


def _simulate(data: Path, out: Path, initial: int, per_round: int, rounds: int, size: int,
              steps: int, finetune_steps: int, test_fraction: float, invert: bool, seed: int,
              device: str) -> None:  # fmt: skip
    import json

    import numpy as np

    from segmenter.active import plot_curves, simulate_active_learning
    from segmenter.data import load_pairs, prepare
    from segmenter.trainer import SegmenterConfig

    if not data.is_dir():
        raise FileNotFoundError(f"{data} is not a folder")
    _, images, masks = load_pairs(data, invert_masks=invert)
    if len(images) < initial + per_round + 2:
        raise ValueError(f"{len(images)} labelled images are too few for this simulation")
    x, y = prepare(images, masks, size)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(len(x) * test_fraction))
    test_idx, pool_idx = order[:n_test], order[n_test:]
    config = SegmenterConfig(size=size, steps=steps, seed=seed, device=device)
    with _stages() as update:
        results, full = simulate_active_learning(
            x[pool_idx], y[pool_idx], x[test_idx], y[test_idx],
            initial=initial, per_round=per_round, rounds=rounds, config=config,
            finetune_steps=finetune_steps, seed=seed, on_progress=update,
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(results, full, out / "curves.png")
    payload = {
        "data": str(data.resolve()),
        "pool": len(pool_idx),
        "test": int(n_test),
        "full_data_dice": full,
        "results": [r.to_dict() for r in results],
    }
    (out / "curves.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    for r in results:
        curve = zip(r.fractions, r.dice, strict=True)
        pts = ", ".join(f"{f * 100:.0f}%: {d:.3f}" for f, d in curve)
        console.print(f"{r.strategy:>10}  {pts}")
    console.print(f"full-data Dice {full:.3f}; wrote {out / 'curves.png'}")
