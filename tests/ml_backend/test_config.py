"""Configuration for several workers: from the environment (secrets never on a command line),
the gunicorn settings derived from it, and the CLI options that reach it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml_backend.server import BackendConfig
from ml_backend.workers import config_from_env, gunicorn_options


def test_config_from_env_reads_every_setting() -> None:
    env = {
        "MEDCROWD_LABEL_STUDIO_URL": "http://label-studio:8080",
        "MEDCROWD_LABEL_STUDIO_TOKEN": "t0ken",
        "MEDCROWD_BACKEND_USER": "labelstudio",
        "MEDCROWD_BACKEND_PASSWORD": "s3cret",
        "MEDCROWD_BACKEND_PREDICTOR": "medsam",
        "MEDCROWD_BACKEND_DEVICE": "cpu",
        "MEDCROWD_BACKEND_CHECKPOINT": "/weights/medsam.pth",
        "MEDCROWD_BACKEND_CACHE_DIR": "/cache",
        "MEDCROWD_BACKEND_LOCAL_FILES_ROOT": "/data",
        "MEDCROWD_BACKEND_ALLOWED_ROOTS": os.pathsep.join(["/data/a", "/data/b"]),
        "MEDCROWD_BACKEND_MAX_INFLIGHT": "3",
        "MEDCROWD_BACKEND_MAX_QUEUE": "0",
        "MEDCROWD_BACKEND_REQUEST_TIMEOUT_S": "12.5",
        "MEDCROWD_BACKEND_WARM_ON_IMPORT": "false",
        "MEDCROWD_BACKEND_CACHE_BYTES": "1000",
    }
    config = config_from_env(env)
    assert config.basic_auth == ("labelstudio", "s3cret")
    assert config.label_studio_url == "http://label-studio:8080"
    assert config.label_studio_token == "t0ken"
    assert (config.predictor, config.device) == ("medsam", "cpu")
    assert config.checkpoint == Path("/weights/medsam.pth")
    assert config.cache_dir == Path("/cache")
    assert config.local_files_root == Path("/data")
    assert config.allowed_roots == [Path("/data/a"), Path("/data/b")]
    assert (config.max_inflight, config.max_queue, config.request_timeout_s) == (3, 0, 12.5)
    assert config.warm_on_import is False and config.cache_bytes == 1000


def test_config_from_env_defaults_and_refusals() -> None:
    defaults = BackendConfig()
    config = config_from_env({"MEDCROWD_BACKEND_HOST": "127.0.0.1"})
    assert config.basic_auth is None and config.max_queue == defaults.max_queue
    # Not loopback (the default for a container) → credentials are mandatory.
    with pytest.raises(ValueError, match="without authentication"):
        config_from_env({})
    with pytest.raises(ValueError, match="MEDCROWD_BACKEND_MAX_QUEUE must be an integer"):
        config_from_env({"MEDCROWD_BACKEND_HOST": "127.0.0.1", "MEDCROWD_BACKEND_MAX_QUEUE": "x"})
    with pytest.raises(ValueError, match="must be finite"):
        config_from_env(
            {"MEDCROWD_BACKEND_HOST": "::1", "MEDCROWD_BACKEND_REQUEST_TIMEOUT_S": "inf"}
        )
    with pytest.raises(ValueError, match="true or false"):
        config_from_env({"MEDCROWD_BACKEND_HOST": "::1", "MEDCROWD_BACKEND_WARM_ON_IMPORT": "x"})
    with pytest.raises(ValueError, match="max_inflight"):
        config_from_env({"MEDCROWD_BACKEND_HOST": "::1", "MEDCROWD_BACKEND_MAX_INFLIGHT": "0"})


def test_gunicorn_never_preloads_and_binds_ipv6() -> None:
    options = gunicorn_options(BackendConfig(host="::1", port=9999, workers=3), "warning")
    assert options["preload_app"] is False
    assert options["workers"] == 3
    assert options["bind"] == ["[::1]:9999"]
    assert options["worker_class"] == "ml_backend.workers.UvicornWorker"
    assert options["control_socket_disable"] is True  # nothing written under $HOME


def test_cli_passes_the_limits_and_refuses_bad_ones(tmp_path: Path) -> None:
    from medcrowd.cli import app

    runner = CliRunner()
    base = ["backend", "serve", "--cache-dir", str(tmp_path)]
    result = runner.invoke(app, [*base, "--max-queue", "-1"])
    assert result.exit_code == 2 and "max_queue" in result.output
    result = runner.invoke(app, [*base, "--workers", "0"])
    assert result.exit_code == 2 and "workers" in result.output
    result = runner.invoke(app, [*base, "--host", "0.0.0.0", "--workers", "2"])  # noqa: S104
    assert result.exit_code == 2 and "without authentication" in result.output
    result = runner.invoke(app, ["backend", "serve", "--help"])
    for option in ("--workers", "--max-inflight", "--max-queue", "--request-timeout"):
        assert option in result.output
