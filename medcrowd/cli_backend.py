"""``medcrowd backend serve``: the ML backend Label Studio calls, as a thin command.

Registered in ``medcrowd/cli.py`` with ``app.add_typer(backend_app, name="backend")``.

The options are not written here: they are generated from the fields of
:class:`ml_backend.config.BackendConfig` (:func:`ml_backend.config.cli_options` gives their
names, types, defaults, help texts and environment fallbacks), and the parsed values go back
through :meth:`~ml_backend.config.BackendConfig.from_cli`. Only what belongs to the app layer
is added: the default cache directory under medcrowd's data directory, and ``--log-level``.

Every failure a user can cause — a refused setting, an unknown predictor, a missing or corrupt
checkpoint or draft model, CUDA asked for but absent, a port in use, a missing optional
dependency — is one ``error:`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any, NoReturn

import typer

from medcrowd.console import error
from medcrowd.settings import default_data_dir
from ml_backend.config import BackendConfig, cli_options

__all__ = ["backend_app", "serve_command"]

backend_app = typer.Typer(help="The Label Studio ML backend (MedSAM box → mask).")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# what starting the backend raises for a user's mistake (ModelUnavailable is a RuntimeError;
# ImportError: an optional dependency such as gunicorn or the segmenter's is missing)
_USER_ERRORS = (ValueError, RuntimeError, OSError, ImportError)


def serve_command(**values: Any) -> None:
    """Serve the ML backend that Label Studio calls (/health /setup /predict /webhook)."""
    from ml_backend.serve import serve

    log_level = str(values.pop("log_level")).lower()
    if log_level not in LOG_LEVELS:
        _fail(f"unknown --log-level {log_level!r}; use {' | '.join(LOG_LEVELS)}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if values.get("cache_dir") is None:
        values["cache_dir"] = default_data_dir() / "cache"
    try:
        serve(BackendConfig.from_cli(values), log_level=log_level)
    except _USER_ERRORS as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    error(message)  # one line, never wrapped, brackets printed as they are
    raise typer.Exit(2)


def _signature() -> inspect.Signature:
    """``serve_command``'s parameters for typer: one option per :func:`cli_options` entry."""
    params = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=option.default,
            annotation=Annotated[
                option.annotation,
                typer.Option(
                    help=option.help, envvar=option.envvar, show_default=option.show_default
                ),
            ],
        )
        for option in cli_options()
    ]
    params.append(
        inspect.Parameter(
            "log_level",
            inspect.Parameter.KEYWORD_ONLY,
            default="info",
            annotation=Annotated[str, typer.Option(help="debug | info | warning.")],
        )
    )
    return inspect.Signature(params, return_annotation=None)


_SIGNATURE = _signature()
serve_command.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
serve_command.__annotations__ = {p.name: p.annotation for p in _SIGNATURE.parameters.values()}
backend_app.command("serve")(serve_command)
