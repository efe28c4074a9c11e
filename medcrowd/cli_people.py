"""``medcrowd volunteers …`` and ``medcrowd experts …``: accounts and their roles.

Roles need medcrowd's Label Studio plugin (``medcrowd up`` starts Label Studio with it):
volunteers may only label the tasks the queue serves them; experts are staff, with every
right, like the admin. Without the plugin the commands that only make or list accounts still
work (with a warning: every account then has every right); ``promote``/``demote`` fail.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from medcrowd.connection import DataDirOption, TokenOption, UrlOption, cli_errors, open_studio
from medcrowd.console import console, err

__all__ = ["experts_app", "volunteers_app"]

volunteers_app = typer.Typer(help="Volunteer accounts and roles.", no_args_is_help=True)
experts_app = typer.Typer(help="Expert (staff) accounts.", no_args_is_help=True)


@experts_app.callback()
def _experts() -> None:
    """Expert (staff) accounts: every right, like the admin."""
    # A callback keeps `experts` a command group with one sub-command (`experts add EMAIL`),
    # mounted or not (typer collapses a one-command app otherwise).


class RoleChoice(str, Enum):
    volunteer = "volunteer"
    expert = "expert"


EmailArg = Annotated[str, typer.Argument(help="The person's email (their login).")]
PasswordOpt = Annotated[
    str,
    typer.Option(
        prompt=True,
        hide_input=True,
        envvar="MEDCROWD_VOLUNTEER_PASSWORD",
        help="Their initial password.",
    ),
]
_NO_PLUGIN = (
    "[yellow]warning:[/yellow] this Label Studio runs without medcrowd's plugin: every "
    "account has every right (start it with `medcrowd up`)"
)


def _add(
    email: str,
    password: str,
    role: RoleChoice,
    url: str | None,
    token: str | None,
    data_dir: Path | None,
) -> None:
    from medcrowd import roles

    with cli_errors():
        studio = open_studio(url, token, data_dir)
        try:
            roles.list_accounts(studio)
            plugged = True
        except roles.PluginMissing:
            plugged = False
            err.print(_NO_PLUGIN, highlight=False)
        if plugged:
            wanted: roles.Role = "staff" if role is RoleChoice.expert else "volunteer"
            account = roles.add_account(studio, email, password, wanted)
            user_id = account.id
        else:
            user_id, _ = studio.create_volunteer(email, password)
    console.print(f"{role.value} {email} created (user id {user_id})")


@volunteers_app.command("add")
def volunteers_add(
    email: EmailArg,
    password: PasswordOpt,
    role: Annotated[
        RoleChoice,
        typer.Option(help="volunteer: labels served tasks only; expert: staff, every right."),
    ] = RoleChoice.volunteer,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an account through the organisation's signup link (a volunteer, or an expert)."""
    _add(email, password, role, url, token, data_dir)


@volunteers_app.command("list")
def volunteers_list(
    url: UrlOption = None, token: TokenOption = None, data_dir: DataDirOption = None
) -> None:
    """List the organisation's accounts and their roles."""
    from rich.table import Table

    from medcrowd import roles

    with cli_errors():
        studio = open_studio(url, token, data_dir)
        try:
            rows = [(a.id, a.email, a.role) for a in roles.list_accounts(studio)]
        except roles.PluginMissing:
            err.print(_NO_PLUGIN, highlight=False)
            rows = [(uid, email, "staff") for uid, email in sorted(studio.users().items())]
    table = Table("id", "email", "role")
    for uid, email, role in rows:
        table.add_row(str(uid), email, role)
    console.print(table)


def _set(email: str, role: str, url: str | None, token: str | None, data_dir: Path | None) -> None:
    from medcrowd import roles

    with cli_errors():
        studio = open_studio(url, token, data_dir)
        account = roles.set_role(studio, email, "staff" if role == "staff" else "volunteer")
    what = "staff (expert)" if account.role == "staff" else "a volunteer"
    console.print(f"{account.email} (user id {account.id}) is now {what}")


@volunteers_app.command("promote")
def volunteers_promote(
    email: EmailArg,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make a volunteer staff (an expert: every right)."""
    _set(email, "staff", url, token, data_dir)


@volunteers_app.command("demote")
def volunteers_demote(
    email: EmailArg,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make a staff member a volunteer again (the admin always stays staff)."""
    _set(email, "volunteer", url, token, data_dir)


@volunteers_app.command("link")
def volunteers_link(
    url: UrlOption = None, token: TokenOption = None, data_dir: DataDirOption = None
) -> None:
    """Print the signup link to send volunteers (it expires; ask again for a fresh one)."""
    from medcrowd import roles

    with cli_errors():
        studio = open_studio(url, token, data_dir)
        try:
            link = roles.signup_link(studio)
        except roles.PluginMissing:
            err.print(_NO_PLUGIN, highlight=False)
            link = studio.signup_link()
    console.print(link, soft_wrap=True)  # never broken across lines: it is copied


@experts_app.command("add")
def experts_add(
    email: EmailArg,
    password: PasswordOpt,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an expert account: staff, with every right (gold masks, exports, settings)."""
    _add(email, password, RoleChoice.expert, url, token, data_dir)
