"""The one backend configuration: validation, the environment (secrets never on a command
line), the ``medcrowd backend serve`` options generated from it, and the gunicorn settings
derived from it."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from medcrowd.cli_backend import backend_app
from ml_backend.config import BackendConfig, cli_options
from ml_backend.workers import gunicorn_options


def test_from_env_reads_every_setting() -> None:
    env = {
        "MEDCROWD_LABEL_STUDIO_URL": "http://label-studio:8080",
        "MEDCROWD_LABEL_STUDIO_TOKEN": "t0ken",
        "MEDCROWD_BACKEND_USER": "labelstudio",
        "MEDCROWD_BACKEND_PASSWORD": "s3cret",
        "MEDCROWD_BACKEND_HOST": "10.0.0.5",
        "MEDCROWD_BACKEND_PREDICTOR": "medsam",
        "MEDCROWD_BACKEND_DEVICE": "cpu",
        "MEDCROWD_BACKEND_CHECKPOINT": "/weights/medsam.pth",
        "MEDCROWD_BACKEND_DRAFT_MODEL": "/models/draft.pt",
        "MEDCROWD_BACKEND_CACHE_DIR": "/cache",
        "MEDCROWD_BACKEND_LOCAL_FILES_ROOT": "/data",
        "MEDCROWD_BACKEND_ALLOWED_ROOTS": os.pathsep.join(["/data/a", "", "/data/b"]),
        "MEDCROWD_BACKEND_THREADS": "1",
        "MEDCROWD_BACKEND_MAX_INFLIGHT": "3",
        "MEDCROWD_BACKEND_MAX_QUEUE": "0",
        "MEDCROWD_BACKEND_REQUEST_TIMEOUT_S": "12.5",
        "MEDCROWD_BACKEND_WARM_ON_IMPORT": "false",
        "MEDCROWD_BACKEND_CACHE_BYTES": "1000",
        "MEDCROWD_BACKEND_MAX_BODY_BYTES": "2000",
        "MEDCROWD_BACKEND_MAX_IMAGE_PIXELS": "3000",
        "MEDCROWD_BACKEND_PROPAGATE_SLICES": "0",
        "MEDCROWD_BACKEND_CLICK_REGIONS": "17",
        "MEDCROWD_BACKEND_PROPAGATION_LOG": "9",
        # gunicorn's own --bind and --workers decide these; the variables are not read
        "MEDCROWD_BACKEND_PORT": "1234",
        "MEDCROWD_BACKEND_WORKERS": "7",
    }
    config = BackendConfig.from_env(env)
    assert config.basic_auth == ("labelstudio", "s3cret")
    assert config.host == "10.0.0.5"
    assert config.label_studio_url == "http://label-studio:8080"
    assert config.label_studio_token == "t0ken"
    assert (config.predictor, config.device) == ("medsam", "cpu")
    assert config.checkpoint == Path("/weights/medsam.pth")
    assert config.draft_model == Path("/models/draft.pt")
    assert config.cache_dir == Path("/cache")
    assert config.local_files_root == Path("/data")
    assert config.allowed_roots == [Path("/data/a"), Path("/data/b")]
    assert (config.max_inflight, config.max_queue, config.request_timeout_s) == (3, 0, 12.5)
    assert config.threads == 1
    assert config.warm_on_import is False
    assert (config.cache_bytes, config.max_body_bytes, config.max_image_pixels) == (
        1000,
        2000,
        3000,
    )
    assert (config.propagate_slices, config.click_regions, config.propagation_log) == (0, 17, 9)
    assert (config.port, config.workers) == (9090, 1)
    # secrets stay out of reprs (and so out of logs and tracebacks)
    assert "s3cret" not in repr(config) and "t0ken" not in repr(config)


def test_from_env_defaults_and_refusals() -> None:
    defaults = BackendConfig()
    config = BackendConfig.from_env({"MEDCROWD_BACKEND_HOST": "127.0.0.1"})
    assert config == defaults  # every unset variable leaves the field's default
    # empty values count as unset
    empty = {"MEDCROWD_BACKEND_HOST": "::1", "MEDCROWD_BACKEND_MAX_QUEUE": ""}
    assert BackendConfig.from_env(empty).max_queue == 32
    # Not loopback (the default for a container: 0.0.0.0) → credentials are mandatory.
    with pytest.raises(
        ValueError, match=r"refusing to listen on 0\.0\.0\.0 without authentication"
    ):
        BackendConfig.from_env({})
    with pytest.raises(ValueError, match="basic auth needs both"):
        BackendConfig.from_env({"MEDCROWD_BACKEND_USER": "labelstudio"})
    local = {"MEDCROWD_BACKEND_HOST": "::1"}
    refusals = {
        "MAX_QUEUE": ("x", "MEDCROWD_BACKEND_MAX_QUEUE must be an integer, got 'x'"),
        "REQUEST_TIMEOUT_S": ("inf", "MEDCROWD_BACKEND_REQUEST_TIMEOUT_S must be finite"),
        "CACHE_BYTES": ("1e3", "MEDCROWD_BACKEND_CACHE_BYTES must be an integer"),
        "WARM_ON_IMPORT": ("maybe", "MEDCROWD_BACKEND_WARM_ON_IMPORT must be true or false"),
        "MAX_INFLIGHT": ("0", "max_inflight must be in 1..256, got 0"),
        "THREADS": ("-1", "threads must be in 0..256, got -1"),
        "PROPAGATE_SLICES": ("x", "MEDCROWD_BACKEND_PROPAGATE_SLICES must be an integer"),
        "CLICK_REGIONS": ("0", "click_regions must be in 1..1000000, got 0"),
        "DEVICE": ("tpu", "unsupported device 'tpu'"),
    }
    for name, (raw, message) in refusals.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            BackendConfig.from_env({**local, f"MEDCROWD_BACKEND_{name}": raw})
    for raw, value in [("1", True), ("ON", True), ("no", False), ("0", False)]:
        env = {**local, "MEDCROWD_BACKEND_WARM_ON_IMPORT": raw}
        assert BackendConfig.from_env(env).warm_on_import is value


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"port": 0}, "port must be in 1..65535"),
        ({"port": 65536}, "port must be in 1..65535"),
        ({"workers": 65}, "workers must be in 1..64"),
        ({"max_inflight": 257}, "max_inflight must be in 1..256"),
        ({"threads": 257}, "threads must be in 0..256"),
        ({"max_queue": 100_001}, "max_queue must be in 0..100000"),
        ({"request_timeout_s": -1.0}, "request_timeout_s must be > 0"),
        ({"max_body_bytes": -1}, "max_body_bytes must be >= 0"),
        ({"propagate_slices": -1}, "propagate_slices must be in 0..4096"),
        ({"propagate_slices": 4097}, "propagate_slices must be in 0..4096"),
        ({"click_regions": 0}, "click_regions must be in 1..1000000"),
        ({"propagation_log": 1_000_001}, "propagation_log must be in 1..1000000"),
        ({"device": "cuda:x"}, "unsupported device 'cuda:x'"),
        ({"device": "gpu"}, "unsupported device 'gpu'"),
    ],
)
def test_a_config_is_validated_when_made(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        BackendConfig(**settings)  # type: ignore[arg-type]


def test_configs_are_frozen_and_keyword_only() -> None:
    config = BackendConfig(port=9999)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        BackendConfig("127.0.0.1")  # type: ignore[misc]


def test_cli_options_are_the_fields() -> None:
    """The command's options, in --help order, come from the dataclass (pinned here so a
    change to the CLI surface is a deliberate one)."""
    options = {o.name: o for o in cli_options()}
    assert list(options) == [
        "host", "port", "label_studio_url", "label_studio_token", "basic_auth_user",
        "basic_auth_pass", "predictor", "device", "checkpoint", "draft_model", "cache_dir",
        "local_files_root", "allowed_root", "workers", "threads", "max_inflight", "max_queue",
        "request_timeout", "propagate_slices", "click_regions", "propagation_log",
    ]  # fmt: skip
    assert options["threads"].default == BackendConfig().threads == 0
    assert options["threads"].envvar == "MEDCROWD_BACKEND_THREADS"
    defaults = BackendConfig()
    assert options["max_queue"].default == defaults.max_queue == 32
    assert options["request_timeout"].default == defaults.request_timeout_s == 90.0
    assert options["max_queue"].envvar == "MEDCROWD_BACKEND_MAX_QUEUE"
    assert options["basic_auth_pass"].envvar == "MEDCROWD_BACKEND_PASSWORD"
    assert options["label_studio_token"].show_default is False
    assert options["predictor"].envvar is None  # as before: no environment fallback
    assert options["propagate_slices"].default == defaults.propagate_slices == 8
    assert options["click_regions"].default == defaults.click_regions == 256
    assert options["propagation_log"].default == defaults.propagation_log == 256
    assert options["propagate_slices"].envvar == "MEDCROWD_BACKEND_PROPAGATE_SLICES"
    assert all(o.help for o in options.values())


def test_from_cli_maps_every_option() -> None:
    values = {
        "host": "::1", "port": 9191, "label_studio_url": "http://ls:8080",
        "label_studio_token": "tok", "basic_auth_user": "u", "basic_auth_pass": "p",
        "predictor": "medsam", "device": "cpu", "checkpoint": Path("/w.pth"),
        "draft_model": Path("/d.pt"), "cache_dir": Path("/c"), "local_files_root": Path("/l"),
        "allowed_root": [Path("/a"), Path("/b")], "workers": 3, "threads": 1,
        "max_inflight": 4, "max_queue": 5, "request_timeout": 6.5, "propagate_slices": 2,
        "click_regions": 7, "propagation_log": 8,
    }  # fmt: skip
    assert set(values) == {o.name for o in cli_options()}
    config = BackendConfig.from_cli(values)
    assert config == BackendConfig(
        host="::1", port=9191, label_studio_url="http://ls:8080", label_studio_token="tok",
        basic_auth=("u", "p"), predictor="medsam", device="cpu", checkpoint=Path("/w.pth"),
        draft_model=Path("/d.pt"), cache_dir=Path("/c"), local_files_root=Path("/l"),
        allowed_roots=[Path("/a"), Path("/b")], workers=3, threads=1, max_inflight=4,
        max_queue=5, request_timeout_s=6.5, propagate_slices=2, click_regions=7,
        propagation_log=8,
    )  # fmt: skip
    unset = {o.name: o.default for o in cli_options()}
    assert BackendConfig.from_cli(unset) == BackendConfig()
    with pytest.raises(ValueError, match="basic auth needs both"):
        BackendConfig.from_cli({**unset, "basic_auth_user": "u"})


def test_gunicorn_never_preloads_and_binds_ipv6() -> None:
    options = gunicorn_options(BackendConfig(host="::1", port=9999, workers=3), "warning")
    assert options["preload_app"] is False
    assert options["workers"] == 3
    assert options["bind"] == ["[::1]:9999"]
    assert options["worker_class"] == "ml_backend.workers.UvicornWorker"
    assert options["control_socket_disable"] is True  # nothing written under $HOME


# -- medcrowd backend serve: every mistake is one line and exit status 2, no traceback ------
def _cli() -> typer.Typer:
    """``backend_app`` registered as ``medcrowd/cli.py`` registers it."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.add_typer(backend_app, name="backend")

    @app.command()
    def other() -> None:  # a second command keeps `backend` a sub-command, as in medcrowd
        pass

    return app


def _refused(args: list[str], fragment: str, env: dict[str, str] | None = None) -> None:
    result = CliRunner().invoke(_cli(), ["backend", "serve", *args], env=env)
    output = result.output.strip()
    assert result.exit_code == 2, output
    assert output.startswith("error: ") and fragment in output, output
    assert "\n" not in output and "Traceback" not in output, output


def test_cli_refuses_bad_settings(tmp_path: Path) -> None:
    base = ["--cache-dir", str(tmp_path)]
    _refused([*base, "--max-queue", "-1"], "max_queue must be in 0..100000, got -1")
    _refused([*base, "--workers", "0"], "workers must be in 1..64")
    _refused([*base, "--host", "0.0.0.0", "--workers", "2"], "without authentication")  # noqa: S104
    _refused([*base, "--basic-auth-user", "u"], "basic auth needs both a user and a password")
    _refused([*base, "--device", "tpu"], "unsupported device 'tpu'")
    _refused([*base, "--log-level", "loud"], "unknown --log-level 'loud'")
    _refused(base, "max_inflight must be in 1..256", env={"MEDCROWD_BACKEND_MAX_INFLIGHT": "0"})
    _refused([*base, "--threads", "-1"], "threads must be in 0..256, got -1")
    _refused(base, "threads must be in 0..256", env={"MEDCROWD_BACKEND_THREADS": "300"})
    _refused([*base, "--propagate-slices", "-1"], "propagate_slices must be in 0..4096, got -1")
    _refused(
        base, "click_regions must be in 1..1000000", env={"MEDCROWD_BACKEND_CLICK_REGIONS": "0"}
    )


def test_cli_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        _refused(["--cache-dir", str(tmp_path), "--port", port], "already in use")


def test_cli_refuses_missing_models(tmp_path: Path) -> None:
    base = ["--cache-dir", str(tmp_path), "--device", "cpu"]
    _refused([*base, "--predictor", "nope"], "unknown predictor 'nope'; valid: litemedsam")
    _refused([*base, "--predictor", "medsam"], "needs its weights (no checkpoint given)")
    missing = str(tmp_path / "medsam.pth")
    _refused([*base, "--predictor", "medsam", "--checkpoint", missing], "not found")
    _refused([*base, "--draft-model", str(tmp_path / "d.pt")], "d.pt does not exist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_cuda_without_cuda(tmp_path: Path) -> None:
    _refused(["--cache-dir", str(tmp_path), "--device", "cuda"], "CUDA is not available")


def test_cli_help_lists_every_option() -> None:
    result = CliRunner().invoke(_cli(), ["backend", "serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in cli_options():
        assert "--" + option.name.replace("_", "-") in result.output
        assert option.help in result.output
    assert "--log-level" in result.output
