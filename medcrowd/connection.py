"""How a command finds its Label Studio: ``--url``/``--token``, else what ``medcrowd up`` left.

Every ``medcrowd`` command that talks to Label Studio takes :data:`UrlOption`,
:data:`TokenOption` and :data:`DataDirOption` and calls :func:`open_studio`. The URL and the
token are resolved in this order:

1. ``--url`` / ``--token`` (or ``MEDCROWD_URL`` / ``MEDCROWD_TOKEN``);
2. the instance ``medcrowd up`` runs from the data directory (``--data-dir``, or
   ``MEDCROWD_HOME``, else ``~/.local/share/medcrowd``): it records its URL and API token
   in ``instance.json`` there (0600, beside ``credentials.json``). Its token is only used
   for its own URL;
3. a token given without a URL talks to ``http://127.0.0.1:8080`` (``medcrowd up``'s port).

Before returning, :func:`open_studio` checks that Label Studio answers and accepts the
token, so that every failure is one line (:class:`ConnectionProblem`, a ``RuntimeError``):
nothing configured (run ``medcrowd up`` or pass ``--url``/``--token``), nothing answering
at the URL, or "token rejected by <url>". :func:`cli_errors` turns those, and every other
error a command expects, into ``error: <one line>`` on stderr and exit code 1.

    @app.command()
    def status(url: UrlOption = None, token: TokenOption = None,
               data_dir: DataDirOption = None) -> None:
        with cli_errors():
            studio = open_studio(url, token, data_dir)
            ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from medcrowd.settings import default_data_dir, read_instance

if TYPE_CHECKING:  # the SDK takes a while to import: only commands that talk to LS pay it
    from medcrowd.studio import Studio

__all__ = [
    "DEFAULT_URL",
    "ConnectionProblem",
    "DataDirOption",
    "TokenOption",
    "UrlOption",
    "cli_errors",
    "open_studio",
    "resolve",
]

DEFAULT_URL = "http://127.0.0.1:8080"
"""Where ``medcrowd up`` serves Label Studio by default."""

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="MEDCROWD_URL",
        help="Label Studio base URL, e.g. http://127.0.0.1:8080. Default: the instance "
        "`medcrowd up` runs from --data-dir.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MEDCROWD_TOKEN",
        help="Label Studio API token (legacy token or personal access token; Account & "
        "Settings in Label Studio). Default: the token `medcrowd up` keeps in --data-dir.",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MEDCROWD_HOME",
        help="The data directory of `medcrowd up`: where the URL and token of its Label "
        "Studio are found when --url/--token are not given.",
        show_default="~/.local/share/medcrowd",
    ),
]


class ConnectionProblem(RuntimeError):
    """No Label Studio to talk to, none answering, or the token refused (one-line message)."""


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionProblem(
            f"--url must be an http:// or https:// URL such as {DEFAULT_URL}, got {url!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError:
        raise ConnectionProblem(f"--url has a bad port: {url!r}") from None
    return url.rstrip("/")


def resolve(
    url: str | None, token: str | None, data_dir: Path | None = None
) -> tuple[str, str, Path | None]:
    """(url, token, the data directory they came from or None) in the module's order.

    Raises:
        ConnectionProblem: no URL or no token found, or a malformed URL.
    """
    url = (url or "").strip() or None
    token = (token or "").strip() or None
    home = (data_dir or default_data_dir()).expanduser()
    instance = read_instance(home)
    source: Path | None = None
    if url is None:
        if instance is not None:
            url, source = instance.url, home
        elif token is not None:
            url = DEFAULT_URL
        else:
            raise ConnectionProblem(
                f"no Label Studio configured: run `medcrowd up` (it records its URL and token "
                f"in {home}) or pass --url and --token (MEDCROWD_URL, MEDCROWD_TOKEN)"
            )
    url = _check_url(url)
    if token is None:
        if instance is not None and instance.url.rstrip("/") == url:
            token, source = instance.token, home
        else:
            raise ConnectionProblem(
                f"no API token for {url}: pass --token (or MEDCROWD_TOKEN), or run "
                "`medcrowd up` for the local instance"
            )
    return url, token, source


def open_studio(url: str | None, token: str | None, data_dir: Path | None = None) -> Studio:
    """A :class:`Studio` for the resolved Label Studio, after checking that it answers and
    accepts the token.

    Args:
        url, token: the ``--url``/``--token`` options (None or "" when not given).
        data_dir: ``medcrowd up``'s data directory (None: ``settings.default_data_dir()``).

    Raises:
        ConnectionProblem: nothing configured, a bad URL, nothing answering at the URL, or
            the token rejected ("token rejected by <url>").
    """
    from medcrowd.studio import Studio, StudioError

    url, token, source = resolve(url, token, data_dir)
    studio = Studio(url, token)
    if not studio.healthy():
        hint = (
            f" (recorded by `medcrowd up` in {source}; is it still running?)"
            if source is not None
            else ""
        )
        raise ConnectionProblem(f"no Label Studio answers at {url}{hint}")
    try:
        studio.whoami()
    except StudioError as exc:  # TokenRejected: "token rejected by <url>"
        raise ConnectionProblem(str(exc)) from None
    return studio


@contextmanager
def cli_errors(code: int = 1) -> Iterator[None]:
    """Run a command body; an expected failure becomes ``error: <one line>`` and exit ``code``.

    Expected: :class:`ConnectionProblem`, Label Studio's refusals and outages
    (``RuntimeError``: :class:`~medcrowd.studio.StudioError`,
    :class:`~medcrowd.studio.LabelStudioUnavailable`), a timeout or dropped connection,
    bad input (``ValueError``, ``FileNotFoundError`` and other ``OSError``).
    """
    import httpx

    from medcrowd.console import error

    try:
        yield
    except (RuntimeError, ValueError, OSError, httpx.HTTPError) as exc:
        if isinstance(exc, (typer.Exit, typer.Abort)):
            raise  # typer's own exits are RuntimeErrors too: not failures to report
        error(exc)
        raise typer.Exit(code) from None
