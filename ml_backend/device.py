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

import os
import re
from dataclasses import dataclass

__all__ = [
    "DEVICE_NAMES",
    "ThreadSettings",
    "check_device_name",
    "configure_threads",
    "resolve_device",
    "thread_settings",
]

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


@dataclass(frozen=True)
class ThreadSettings:
    """CPU threads one backend process uses for model work.

    Attributes:
        intra_op: threads of one ONNX Runtime / PyTorch operator (``--threads``).
        spinning: ONNX Runtime's worker threads busy-wait for the next operator (its default)
            instead of sleeping. On a machine whose cores are shared with Label Studio, other
            workers or other people, spinning burns whole cores between requests and slows
            everyone else down, so the backend turns it off.
    """

    intra_op: int
    spinning: bool = False


_settings: ThreadSettings | None = None


def thread_settings() -> ThreadSettings:
    """The process's setting (:func:`configure_threads`); default all cores, no spinning."""
    return _settings or ThreadSettings(intra_op=os.cpu_count() or 1)


def configure_threads(threads: int, workers: int = 1, spinning: bool = False) -> ThreadSettings:
    """Fix this process's CPU thread pools before a model is built; call once at start.

    ``threads`` 0 means the cores divided by ``workers`` (at least 1), so N worker processes
    do not each run a pool as wide as the machine. PyTorch gets the same number of intra-op
    threads and one inter-op thread (the backend runs one operator graph at a time per model
    call); ONNX Runtime sessions built afterwards (:class:`ml_backend.onnx_export.OnnxRunner`)
    take ``intra_op`` and ``spinning`` from here.

    Raises:
        ValueError: ``threads`` < 0 or ``workers`` < 1.
    """
    global _settings
    if threads < 0 or workers < 1:
        raise ValueError(f"threads must be >= 0 and workers >= 1, got {threads}, {workers}")
    n = threads or max(1, (os.cpu_count() or 1) // workers)
    _settings = ThreadSettings(intra_op=n, spinning=spinning)
    import torch  # the backend process has it anyway; here the first time, before any model

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass
    return _settings
