"""Where medcrowd keeps its state, and the credentials of the embedded Label Studio.

Nothing here reads the environment at import time: the CLI resolves options (and their
``MEDCROWD_*`` environment variables) and passes the result in.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "Credentials",
    "Instance",
    "config_path",
    "default_data_dir",
    "load_or_create_credentials",
    "read_instance",
    "write_instance",
]

INSTANCE_FILE = "instance.json"
"""In the data directory: the URL and API token of the Label Studio ``medcrowd up`` runs."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/medcrowd`` or ``~/.local/share/medcrowd``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "medcrowd"


def config_path(name: str) -> Path:
    """A file under ``configs/``: the source tree's, or the copy installed in ``share/``."""
    candidates = [
        Path(__file__).resolve().parents[1] / "configs" / name,
        Path(sys.prefix) / "share" / "medcrowd" / "configs" / name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config {name!r} not found in {[str(c) for c in candidates]}")


@dataclass(frozen=True)
class Credentials:
    """Secrets of an embedded deployment, stored 0600 in the data directory.

    Attributes:
        email, password: the Label Studio admin login.
        token: the admin's legacy API token (40 hex), used by the CLI and the backend.
        backend_user, backend_password: HTTP Basic credentials Label Studio uses to call
            the ML backend.
    """

    email: str
    password: str
    token: str
    backend_user: str
    backend_password: str


def load_or_create_credentials(data_dir: Path) -> tuple[Credentials, bool]:
    """Read ``credentials.json`` or create it with fresh random secrets.

    Returns:
        (credentials, created) — ``created`` is True the first time, when the caller prints
        the password once.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / "credentials.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return Credentials(**raw), False
    creds = Credentials(
        email="admin@medcrowd.local",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        backend_user="labelstudio",
        backend_password=secrets.token_urlsafe(18),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(creds), fh, indent=2)
    return creds, True


@dataclass(frozen=True)
class Instance:
    """The Label Studio that ``medcrowd up`` started from a data directory (``url``, and the
    API ``token`` the CLI uses there), recorded so that later commands find it."""

    url: str
    token: str


def _write_private(path: Path, payload: object) -> None:
    """Write JSON readable by the owner only (0600 from the first byte, replaced atomically)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def write_instance(data_dir: Path, instance: Instance) -> Path:
    """Record ``instance`` in ``data_dir/instance.json`` (0600, beside the credentials)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / INSTANCE_FILE
    _write_private(path, asdict(instance))
    return path


def read_instance(data_dir: Path) -> Instance | None:
    """What :func:`write_instance` recorded in ``data_dir``, or None (never started there, or
    the file is unreadable)."""
    try:
        raw = json.loads((data_dir / INSTANCE_FILE).read_text())
        return Instance(url=str(raw["url"]), token=str(raw["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
