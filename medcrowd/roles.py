"""Staff and volunteers, through the Label Studio plugin's staff API (``/medcrowd/api/...``).

Label Studio Community has no roles; medcrowd's plugin (:mod:`medcrowd.lsplugin`) adds them:
staff (the admin and experts) keep every right, volunteers may only label the tasks the queue
serves them. This module is the client side, used by ``medcrowd volunteers`` /
``medcrowd experts``; every call needs a staff API token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from medcrowd.studio import StudioError

if TYPE_CHECKING:
    from medcrowd.studio import Studio

__all__ = [
    "VOLUNTEER_INSTRUCTIONS",
    "Account",
    "PluginMissing",
    "add_account",
    "list_accounts",
    "set_role",
    "signup_link",
]

Role = Literal["staff", "volunteer"]

#: The instructions a volunteer sees before their first task (``medcrowd up`` sets them on the
#: project it creates; Label Studio shows them in a dialog when the labelling stream opens,
#: and again from its "Instructions" button).
VOLUNTEER_INSTRUCTIONS = """\
<p><b>What to draw.</b> Pick the label under the image that names the structure
(<b>Organ</b>: a whole organ such as the liver; <b>Lesion</b>: a tumour, cyst or other
abnormal spot; <b>Vessel</b>: an artery or vein). Drag a box tightly around the structure
with the mouse.</p>
<p><b>What happens.</b> MedSAM answers within a few seconds with a coloured mask of what it
thinks is inside the box.</p>
<p><b>How to correct.</b> The brush (<kbd>B</kbd>, then the label in the brush's row: each
row of labels under the image belongs to one tool, and the number on a label is its key) adds
pixels the mask missed; the eraser (<kbd>E</kbd>) removes pixels it got wrong;
<kbd>[</kbd> / <kbd>]</kbd> change the brush size; <kbd>Ctrl+Z</kbd> undoes. Then
<b>Submit</b> (<kbd>Ctrl+Enter</kbd>). Skip an image you cannot judge.</p>
<p>Some images have an expert's answer: after you submit one, your page (<i>My
contributions</i>, <code>/medcrowd/me</code>) shows how close you were.</p>
"""
ROLES_PATH = "/medcrowd/api/roles/"
INVITE_PATH = "/medcrowd/api/invite/"


class PluginMissing(StudioError):
    """Label Studio runs without medcrowd's plugin: roles cannot be read or set."""


@dataclass(frozen=True)
class Account:
    """One account of the organisation: ``role`` is ``"staff"`` or ``"volunteer"``."""

    id: int
    email: str
    role: str


def _call(studio: Studio, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return studio.request(method, path, **kwargs).json()
    except StudioError as exc:
        if exc.status_code == 404 and path.startswith("/medcrowd/"):
            raise PluginMissing(
                f"Label Studio at {studio.url} runs without medcrowd's plugin (start it with "
                "`medcrowd up`, or with DJANGO_SETTINGS_MODULE=medcrowd.lsplugin.settings)",
                404,
            ) from None
        raise


def list_accounts(studio: Studio) -> list[Account]:
    """Every account of the organisation with its role, by id."""
    users = _call(studio, "GET", ROLES_PATH)["users"]
    return sorted((Account(int(u["id"]), str(u["email"]), str(u["role"])) for u in users),
                  key=lambda a: a.id)  # fmt: skip


def set_role(studio: Studio, email: str, role: Role) -> Account:
    """Give the account ``email`` the role ``role`` (a superuser stays staff).

    Raises:
        StudioError: no such account (404), a superuser demoted (400), not staff (403).
    """
    u = _call(studio, "POST", ROLES_PATH, json={"email": email, "role": role})
    return Account(int(u["id"]), str(u["email"]), str(u["role"]))


def signup_link(studio: Studio) -> str:
    """The live signup link (it expires; an expired one is replaced when asked again).

    Anyone signing up through it becomes a volunteer.
    """
    invite = _call(studio, "GET", INVITE_PATH)
    return f"{studio.url}{invite['url']}"


def add_account(studio: Studio, email: str, password: str, role: Role = "volunteer") -> Account:
    """Create an account through the signup link (a volunteer), then promote it if ``role``
    is ``"staff"``.

    Raises:
        ValueError: the signup was refused (the email taken, the password too weak).
    """
    user_id, _ = studio.create_volunteer(email, password)
    if role == "staff":
        return set_role(studio, email, "staff")
    return Account(user_id, email, "volunteer")
