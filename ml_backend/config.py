"""The backend's configuration, written once: fields, defaults, validation, environment
variables and the ``medcrowd backend serve`` options.

:class:`BackendConfig` is loaded once and passed in (STYLE rule 9). It reaches the outside two
ways, both described by each field's :class:`Setting`:

* :meth:`BackendConfig.from_env` — for gunicorn's own command line and containers, where
  secrets must not appear on a command line (``ml_backend.workers:app_from_env()``);
* :func:`cli_options` / :meth:`BackendConfig.from_cli` — the option table the CLI builds its
  typer command from (names, defaults, help texts, environment fallbacks), and the mapping of
  the parsed values back onto the dataclass.

This module imports nothing heavy (no torch, no FastAPI): the gunicorn master validates its
configuration with it and never imports torch.

Example::

    config = BackendConfig.from_env({"MEDCROWD_BACKEND_HOST": "127.0.0.1"})
    config.port, config.max_queue      # (9090, 32)
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_backend.device import check_device_name

__all__ = ["ENV_PREFIX", "BackendConfig", "CliOption", "Setting", "cli_options"]

ENV_PREFIX = "MEDCROWD_BACKEND_"
"""Prefix of the backend's own variables (Label Studio's are ``MEDCROWD_LABEL_STUDIO_*``)."""

USER_ENV = ENV_PREFIX + "USER"
PASSWORD_ENV = ENV_PREFIX + "PASSWORD"


@dataclass(frozen=True)
class Setting:
    """How one :class:`BackendConfig` field is set from outside.

    Attributes:
        help: the ``--help`` text of its ``medcrowd backend serve`` option; None when the CLI
            does not offer the field.
        option: the CLI parameter name when it differs from the field's
            (``request_timeout_s`` → ``--request-timeout``).
        env: the variable :meth:`BackendConfig.from_env` reads; None when it reads none.
        env_default: the default :meth:`BackendConfig.from_env` uses instead of the field's.
        cli_env: the CLI option falls back to ``env`` when not given on the command line.
        cli_env_only: ``env`` is read by the CLI option only, not by ``from_env``.
        show_default: show the default in ``--help`` (off for secrets).
    """

    help: str | None = None
    option: str | None = None
    env: str | None = None
    env_default: Any = None
    cli_env: bool = False
    cli_env_only: bool = False
    show_default: bool = True


def _how(**how: Any) -> dict[str, Setting]:
    """A field's ``metadata``: how it is set from outside (see :class:`Setting`)."""
    return {"setting": Setting(**how)}


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """Everything the backend server needs, loaded once and passed in; validated on creation.

    Construct it with keywords (tests, benchmarks), from the environment
    (:meth:`from_env`) or from parsed CLI values (:meth:`from_cli`).

    Raises:
        ValueError: settings that would expose an unauthenticated backend or make no sense
            (see :meth:`validate`).
    """

    host: str = field(
        default="127.0.0.1",
        metadata=_how(
            help="Bind address; non-loopback needs basic auth.",
            env=ENV_PREFIX + "HOST",
            env_default="0.0.0.0",  # noqa: S104 - auth is then mandatory
        ),
    )
    """Where to listen. Anything but loopback requires ``basic_auth``. From the environment
    it defaults to ``0.0.0.0`` (a container) and is read only to decide whether auth is
    mandatory: gunicorn's ``--bind`` decides where it really listens."""

    port: int = field(default=9090, metadata=_how(help="Port."))
    """TCP port to listen on (1..65535)."""

    label_studio_url: str | None = field(
        default=None,
        metadata=_how(
            help="The Label Studio host images are fetched from (the only one).",
            env="MEDCROWD_LABEL_STUDIO_URL",
            cli_env=True,
        ),
    )
    """The one host images may be fetched from (SSRF guard)."""

    label_studio_token: str | None = field(
        default=None,
        repr=False,
        metadata=_how(
            help="The backend's own Label Studio API token.",
            env="MEDCROWD_LABEL_STUDIO_TOKEN",
            cli_env=True,
            show_default=False,
        ),
    )
    """The backend's own API token for ``label_studio_url``; sent to that host only."""

    basic_auth: tuple[str, str] | None = field(default=None, repr=False, metadata=_how())
    """``(user, password)`` Label Studio sends (``auth_method=BASIC``); None: no auth, which
    only a loopback ``host`` allows. CLI: ``--basic-auth-user``/``--basic-auth-pass``;
    environment: ``MEDCROWD_BACKEND_USER``/``MEDCROWD_BACKEND_PASSWORD`` (both read by the
    CLI too)."""

    predictor: str = field(
        default="litemedsam",
        metadata=_how(
            help="litemedsam | litemedsam-clicks | medsam | sam_vit_b|l|h.",
            env=ENV_PREFIX + "PREDICTOR",
        ),
    )
    """Predictor registry name (``litemedsam`` default, ``litemedsam-clicks``, ``medsam``,
    ``sam_vit_b|l|h``)."""

    device: str = field(
        default="auto", metadata=_how(help="auto | cpu | cuda.", env=ENV_PREFIX + "DEVICE")
    )
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, resolved by
    :func:`ml_backend.device.resolve_device` when the model loads."""

    checkpoint: Path | None = field(
        default=None,
        metadata=_how(
            help="Weights for medsam / sam_* (never downloaded); for litemedsam-clicks another "
            "`medcrowd train clicks` output.",
            env=ENV_PREFIX + "CHECKPOINT",
        ),
    )
    """Weights file for ``medsam``/``sam_*`` (never downloaded); optional for LiteMedSAM; for
    ``litemedsam-clicks`` a ``medcrowd train clicks`` output (default: the shipped one)."""

    draft_model: Path | None = field(
        default=None,
        metadata=_how(
            help="A `medcrowd train segmenter` file: tasks opened without a box get its mask "
            "as a draft.",
            env=ENV_PREFIX + "DRAFT_MODEL",
            cli_env=True,
        ),
    )
    """A ``medcrowd train segmenter`` file; a /predict without a drawn box then answers its
    whole-image mask as a draft (:mod:`ml_backend.draft`)."""

    cache_dir: Path | None = field(
        default=None,
        metadata=_how(
            help="On-disk embedding cache and exported ONNX models.", env=ENV_PREFIX + "CACHE_DIR"
        ),
    )
    """On-disk embedding cache and exported ONNX models (shared by workers); None: memory
    only and ONNX files in a temporary directory."""

    local_files_root: Path | None = field(
        default=None,
        metadata=_how(
            help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT, if shared on disk.",
            env=ENV_PREFIX + "LOCAL_FILES_ROOT",
        ),
    )
    """Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` when it is shared on disk."""

    allowed_roots: list[Path] = field(
        default_factory=list,
        metadata=_how(
            help="Directory local-file images must lie in (repeatable).",
            option="allowed_root",
            env=ENV_PREFIX + "ALLOWED_ROOTS",
        ),
    )
    """Directories local-file images must resolve inside (environment: ``os.pathsep``-
    separated)."""

    workers: int = field(
        default=1,
        metadata=_how(
            help="Server processes, one model each; more than 1 runs them under gunicorn.",
            env=ENV_PREFIX + "WORKERS",
            cli_env=True,
            cli_env_only=True,  # under gunicorn's own command line, --workers decides
        ),
    )
    """Server processes (1..64); 1 serves in this process with uvicorn, more run under
    gunicorn with one model per process (:mod:`ml_backend.workers`)."""

    threads: int = field(
        default=0,
        metadata=_how(
            help="CPU threads per worker for the model (0: the cores divided by --workers); "
            "ONNX Runtime's thread spinning is off.",
            env=ENV_PREFIX + "THREADS",
            cli_env=True,
        ),
    )
    """Intra-op CPU threads of each worker's model (0..256; 0: ``os.cpu_count() // workers``,
    at least 1), applied at process start by :func:`ml_backend.device.configure_threads`
    (PyTorch intra-op, one inter-op thread, ONNX Runtime without busy-waiting)."""

    max_inflight: int = field(
        default=2,
        metadata=_how(
            help="Predict requests each worker works on at once.",
            env=ENV_PREFIX + "MAX_INFLIGHT",
            cli_env=True,
        ),
    )
    """Predict requests one process works on at once (1..256; their image fetches overlap,
    the model runs one call at a time)."""

    max_queue: int = field(
        default=32,
        metadata=_how(
            help="Predict requests each worker lets wait; beyond that: 503 + Retry-After.",
            env=ENV_PREFIX + "MAX_QUEUE",
            cli_env=True,
        ),
    )
    """Predict requests one process lets wait beyond ``max_inflight`` (0..100000); the next
    one is answered 503 with ``Retry-After`` at once."""

    request_timeout_s: float = field(
        default=90.0,
        metadata=_how(
            help="Seconds before a predict request is answered 504.",
            option="request_timeout",
            env=ENV_PREFIX + "REQUEST_TIMEOUT_S",
            cli_env=True,
        ),
    )
    """A predict request not answered within this many seconds gets a 504 (below Label
    Studio's own 100 s ``ML_TIMEOUT_PREDICT``); also bounds how long a client may take to
    send its body (408)."""

    cache_bytes: int = field(
        default=512 * 1024 * 1024, metadata=_how(env=ENV_PREFIX + "CACHE_BYTES")
    )
    """In-memory embedding cache bound, per worker."""

    max_body_bytes: int = field(
        default=32 * 1024 * 1024, metadata=_how(env=ENV_PREFIX + "MAX_BODY_BYTES")
    )
    """Largest request body accepted (Label Studio's interactive calls embed the task with
    its annotations; 32 MiB is generous)."""

    max_image_pixels: int = field(
        default=8192 * 8192, metadata=_how(env=ENV_PREFIX + "MAX_IMAGE_PIXELS")
    )
    """Largest image decoded, in pixels."""

    warm_on_import: bool = field(default=True, metadata=_how(env=ENV_PREFIX + "WARM_ON_IMPORT"))
    """Precompute embeddings on ``TASKS_CREATED`` webhooks."""

    propagate_slices: int = field(
        default=8,
        metadata=_how(
            help="A submitted slice of a volume is propagated to at most this many slices on "
            "each side (0: off).",
            env=ENV_PREFIX + "PROPAGATE_SLICES",
            cli_env=True,
        ),
    )
    """Reach of the 3-D propagation of a submitted slice mask (0..4096 slices on each side;
    0 turns it off): :meth:`ml_backend.engine.Engine.propagate_annotation` proposes masks on
    at most this many neighbouring slices each way."""

    click_regions: int = field(
        default=256,
        metadata=_how(
            help="Regions (box, clicks, previous answer) each worker keeps for refinement "
            "clicks (LRU; 128 KiB each at most).",
            env=ENV_PREFIX + "CLICK_REGIONS",
            cli_env=True,
        ),
    )
    """Regions each worker remembers for refinement clicks (1..1000000): the size of its
    :class:`ml_backend.clicks.ClickMemory` (previous logits per ``(task, annotator, box)``;
    256 × 128 KiB of float16 = 32 MiB) and of its :class:`ml_backend.clicks.Regions` (the
    last box and clicks per ``(task, annotator, label)``, a few hundred bytes each)."""

    propagation_log: int = field(
        default=256,
        metadata=_how(
            help="Propagation records each worker keeps (Engine.propagations, newest last).",
            env=ENV_PREFIX + "PROPAGATION_LOG",
            cli_env=True,
        ),
    )
    """How many records of what each submitted slice proposed
    (:attr:`ml_backend.engine.Engine.propagations`) one worker keeps (1..1000000); older
    ones are dropped (they stay in the log)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse settings that would expose an unauthenticated backend, or make no sense.

        Raises:
            ValueError: the first problem found, naming the setting.
        """
        if self.basic_auth is None and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without authentication: set "
                "--basic-auth-user/--basic-auth-pass (or bind to 127.0.0.1)"
            )
        if self.basic_auth is not None and (not self.basic_auth[0] or not self.basic_auth[1]):
            raise ValueError("basic auth needs both a user and a password")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be in 1..64, got {self.workers}")
        if not 0 <= self.threads <= 256:
            raise ValueError(f"threads must be in 0..256, got {self.threads}")
        if not 1 <= self.max_inflight <= 256:
            raise ValueError(f"max_inflight must be in 1..256, got {self.max_inflight}")
        if not 0 <= self.max_queue <= 100_000:
            raise ValueError(f"max_queue must be in 0..100000, got {self.max_queue}")
        if not (math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0):
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if not 0 <= self.propagate_slices <= 4096:
            raise ValueError(f"propagate_slices must be in 0..4096, got {self.propagate_slices}")
        for name in ("click_regions", "propagation_log"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} must be in 1..1000000, got {getattr(self, name)}")
        for name in ("cache_bytes", "max_body_bytes", "max_image_pixels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_device_name(self.device)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackendConfig:
        """Build a config from environment variables (gunicorn's CLI, containers).

        Variables (all optional; an empty value counts as unset; defaults as in the fields):
        ``MEDCROWD_LABEL_STUDIO_URL``, ``MEDCROWD_LABEL_STUDIO_TOKEN``,
        ``MEDCROWD_BACKEND_USER``, ``MEDCROWD_BACKEND_PASSWORD`` (the same names
        ``medcrowd backend serve`` reads), and ``MEDCROWD_BACKEND_`` + ``HOST`` (default
        ``0.0.0.0``), ``PREDICTOR``, ``DEVICE``, ``CHECKPOINT``, ``DRAFT_MODEL``,
        ``CACHE_DIR``, ``LOCAL_FILES_ROOT``, ``ALLOWED_ROOTS`` (``os.pathsep``-separated),
        ``THREADS``, ``MAX_INFLIGHT``, ``MAX_QUEUE``, ``REQUEST_TIMEOUT_S``, ``CACHE_BYTES``,
        ``MAX_BODY_BYTES``, ``MAX_IMAGE_PIXELS``, ``WARM_ON_IMPORT``, ``PROPAGATE_SLICES``,
        ``CLICK_REGIONS``, ``PROPAGATION_LOG``.

        Args:
            env: the variables; None reads ``os.environ``.

        Raises:
            ValueError: a malformed value (naming the variable), or settings
                :meth:`validate` refuses.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        types = _field_types()
        for item in dataclasses.fields(cls):
            setting = item.metadata["setting"]
            if setting.env is None or setting.cli_env_only:
                continue
            raw = env.get(setting.env) or ""
            if raw:
                values[item.name] = _ENV_PARSERS[types[item.name]](setting.env, raw)
            elif setting.env_default is not None:
                values[item.name] = setting.env_default
        user = env.get(USER_ENV) or ""
        password = env.get(PASSWORD_ENV) or ""
        if user or password:
            values["basic_auth"] = (user, password)
        return cls(**values)

    @classmethod
    def from_cli(cls, values: Mapping[str, Any]) -> BackendConfig:
        """Build a config from the values of the options :func:`cli_options` describes.

        ``basic_auth_user``/``basic_auth_pass`` become ``basic_auth`` (when either is given),
        ``allowed_root`` becomes ``allowed_roots``, ``request_timeout`` ``request_timeout_s``;
        names :func:`cli_options` does not describe are ignored.

        Raises:
            ValueError: settings :meth:`validate` refuses.
        """
        config: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            option = _option_name(item)
            if option is not None and option in values:
                config[item.name] = values[option]
        config["allowed_roots"] = list(config.get("allowed_roots") or [])
        user, password = values.get("basic_auth_user"), values.get("basic_auth_pass")
        if user or password:
            config["basic_auth"] = (user or "", password or "")
        return cls(**config)


@dataclass(frozen=True)
class CliOption:
    """One ``medcrowd backend serve`` option, as a typer parameter.

    Attributes:
        name: the parameter name; the flag is ``--`` + ``name`` with ``-`` for ``_``.
        annotation: the type typer parses the value into.
        default: the value when the option is not given.
        help: the ``--help`` text.
        envvar: the variable the option falls back to, or None.
        show_default: whether ``--help`` shows the default.
    """

    name: str
    annotation: Any
    default: Any
    help: str
    envvar: str | None = None
    show_default: bool = True


def cli_options() -> list[CliOption]:
    """The options of ``medcrowd backend serve``, in ``--help`` order, from the fields.

    :meth:`BackendConfig.from_cli` maps their values back onto a :class:`BackendConfig`.
    """
    types = _field_types()
    defaults = {item.name: _default(item) for item in dataclasses.fields(BackendConfig)}
    out: list[CliOption] = []
    for item in dataclasses.fields(BackendConfig):
        setting: Setting = item.metadata["setting"]
        if item.name == "basic_auth":
            out += [
                CliOption("basic_auth_user", str | None, None,
                          "HTTP Basic user Label Studio must send.", USER_ENV),
                CliOption("basic_auth_pass", str | None, None, "HTTP Basic password.",
                          PASSWORD_ENV, show_default=False),
            ]  # fmt: skip
            continue
        name = _option_name(item)
        if name is None:
            continue
        annotation, default = types[item.name], defaults[item.name]
        if annotation == list[Path]:
            annotation, default = list[Path] | None, None  # typer: repeatable, unset = None
        envvar = setting.env if setting.cli_env else None
        out.append(CliOption(name, annotation, default, str(setting.help), envvar,
                             setting.show_default))  # fmt: skip
    return out


def _option_name(item: dataclasses.Field[Any]) -> str | None:
    setting: Setting = item.metadata["setting"]
    if setting.help is None:
        return None
    return setting.option or item.name


def _default(item: dataclasses.Field[Any]) -> Any:
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(BackendConfig)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- environment values → field values (keyed by the field's type) ---------------------------
def _env_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {raw!r}")
    return value


def _env_bool(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _env_paths(_: str, raw: str) -> list[Path]:
    return [Path(part) for part in raw.split(os.pathsep) if part]


_ENV_PARSERS: dict[Any, Callable[[str, str], Any]] = {
    str: lambda _, raw: raw,
    str | None: lambda _, raw: raw,
    int: _env_int,
    float: _env_float,
    bool: _env_bool,
    Path | None: lambda _, raw: Path(raw),
    list[Path]: _env_paths,
}
