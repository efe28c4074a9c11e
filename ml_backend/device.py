"""The one device resolver of the repository: ``"auto" | "cpu" | "cuda[:N]"`` → a device string.

Every layer that takes a device name from a user (the CLI, the backend config) resolves it
here once and passes the resolved string on; engines take it as given. torch is imported only
when the answer depends on it, so checking a name (:func:`check_device_name`) stays cheap —
the gunicorn master validates its configuration without ever importing torch.

Example::

    resolve_device("cpu")     # "cpu"
    resolve_device("auto")    # "cuda" when PyTorch sees a GPU, else "cpu"
    resolve_device("cuda:1")  # "cuda:1", or ValueError when there is no second GPU
"""

from __future__ import annotations

import re

__all__ = ["DEVICE_NAMES", "check_device_name", "resolve_device"]

DEVICE_NAMES = "'auto', 'cpu', 'cuda' or 'cuda:N'"
"""The accepted spellings, for help texts and error messages."""

_CUDA = re.compile(r"cuda(?::(\d+))?")


def check_device_name(name: str) -> None:
    """Refuse a device name that can never be valid, without importing torch.

    Raises:
        ValueError: ``name`` is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    if not isinstance(name, str) or (name not in ("auto", "cpu") and not _CUDA.fullmatch(name)):
        raise ValueError(f"unsupported device {name!r}; use {DEVICE_NAMES}")


def resolve_device(name: str) -> str:
    """``"auto"`` → ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``; ``"cpu"`` as is;
    ``"cuda"`` / ``"cuda:N"`` after checking that the GPU exists.

    Args:
        name: the device the user asked for.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: a string ``torch.device`` accepts.

    Raises:
        ValueError: an unknown name, CUDA asked for but not available to PyTorch, or a GPU
            index beyond the GPUs present (the message says which and what to use instead).
    """
    check_device_name(name)
    if name == "cpu":
        return name
    import torch  # only now: "cpu" must not pay for it

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available to PyTorch "
            f"(torch {torch.__version__}); use 'cpu' or 'auto'"
        )
    match = _CUDA.fullmatch(name)
    index = int(match.group(1)) if match and match.group(1) else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {name!r} requested but only {count} GPU(s) exist")
    return name
