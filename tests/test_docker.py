"""docker/: the compose file validated by Docker Compose itself, its secrets, its SSRF carve-out
checked with Label Studio's own code, and the Dockerfiles against the repository.

Validation runs ``docker compose config`` when the Compose v2 plugin is installed, else
Debian's ``docker-compose config`` (v1.29, which .ci/run installs): both parse the file,
check it against the Compose schema, resolve ``${…}`` from ``docker/.env`` and check the
cross-references (services in ``depends_on``, named volumes, networks). Neither needs a
Docker engine. The broken copies below prove the check fails when it should.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"


def _compose_command() -> list[str]:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    reason = "neither `docker compose` nor `docker-compose` is installed"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run installs Debian's docker-compose)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def compose() -> list[str]:
    return _compose_command()


def _env_example() -> dict[str, str]:
    out = {}
    for line in (DOCKER / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _project(tmp_path: Path, env: dict[str, str], compose_text: str | None = None) -> Path:
    """A copy of docker/ in tmp_path with the given .env (and optionally another compose.yaml)."""
    folder = tmp_path / "repo" / "docker"
    shutil.copytree(DOCKER, folder)
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    if compose_text is not None:
        (folder / "compose.yaml").write_text(compose_text, encoding="utf-8")
    return folder


def _config(
    compose: list[str], folder: Path, *files: str, profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    args = [a for f in files or ("compose.yaml",) for a in ("-f", f)]
    args += [a for prof in profiles for a in ("--profile", prof)]
    clean_env = {k: v for k, v in os.environ.items() if k not in _env_example()}
    return subprocess.run(
        [*compose, *args, "config"], cwd=folder, capture_output=True, text=True,
        encoding="utf-8", timeout=120, env=clean_env,
    )  # fmt: skip


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """{volume: (target, read-only)} from v1's "src:dst:mode" or v2's long form."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["source"]] = (v["target"], bool(v.get("read_only", False)))
        else:
            src, dst, *mode = str(v).split(":")
            out[src] = (dst, mode == ["ro"])
    return out


def _host_ips(service: dict[str, Any]) -> list[str]:
    """Host addresses the published ports bind to (v1 "ip:host:container", v2 long form)."""
    return [
        str(p.get("host_ip", "0.0.0.0")) if isinstance(p, dict) else str(p).split(":")[0]  # noqa: S104
        for p in service.get("ports", [])
    ]


def _as_env(value: Any) -> dict[str, str]:
    if isinstance(value, list):  # KEY=VALUE list form
        return dict(item.split("=", 1) for item in value)
    return {k: "" if v is None else str(v) for k, v in (value or {}).items()}


# -- the stack as Compose resolves it --------------------------------------------------------
def test_compose_config_resolves_the_whole_stack(compose: list[str], tmp_path: Path) -> None:
    env = {**_env_example(), "BACKEND_WORKERS": "3", "POSTGRES_PASSWORD": "pg-" + "x" * 20}
    result = _config(compose, _project(tmp_path, env), profiles=("redis",))
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    services = cfg["services"]
    assert set(services) == {"postgres", "redis", "label-studio", "backend"}

    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert _as_env(pg["environment"])["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]

    ls = services["label-studio"]
    # Label Studio with medcrowd's roles plugin, built from docker/Dockerfile.label-studio
    assert ls["image"] == "medcrowd-label-studio:1.23.2"
    assert ls["build"]["dockerfile"] == "docker/Dockerfile.label-studio"
    assert _as_env(ls["environment"])["DJANGO_SETTINGS_MODULE"] == "medcrowd.lsplugin.settings"
    assert ls["depends_on"]["postgres"]["condition"] == "service_healthy"
    ls_env = _as_env(ls["environment"])
    assert ls_env["DJANGO_DB"] == "default" and ls_env["POSTGRE_HOST"] == "postgres"
    assert ls_env["POSTGRE_PASSWORD"] == env["POSTGRES_PASSWORD"]
    assert ls_env["POSTGRE_NAME"] == env["POSTGRES_DB"]
    assert ls_env["ML_BLOCK_LOCAL_IP"] == "true" and ls_env["SSRF_PROTECTION_ENABLED"] == "true"
    assert "/health" in " ".join(ls["healthcheck"]["test"])
    assert _host_ips(ls) == ["127.0.0.1"]  # loopback by default

    be = services["backend"]
    cmd = be["command"]
    assert cmd[:3] == ["medcrowd", "backend", "serve"]
    assert cmd[cmd.index("--workers") + 1] == "3"  # BACKEND_WORKERS from docker/.env
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104 (inside the container)
    assert "/health" in " ".join(be["healthcheck"]["test"])
    assert be["depends_on"]["label-studio"]["condition"] == "service_healthy"
    mounts = _mounts(be)
    assert mounts["embedding-cache"] == (cmd[cmd.index("--cache-dir") + 1], False)
    assert mounts["model-weights"] == ("/weights", True)
    assert "ports" not in be  # reached by Label Studio on the ml network only
    be_env = _as_env(be["environment"])
    assert be_env["MEDCROWD_LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert be_env["MEDCROWD_BACKEND_PASSWORD"] == env["MEDCROWD_BACKEND_PASSWORD"]
    # Least privilege: the database password reaches only PostgreSQL and Label Studio.
    for name, svc in services.items():
        has_pg_secret = env["POSTGRES_PASSWORD"] in yaml.safe_dump(svc)
        assert has_pg_secret == (name in {"postgres", "label-studio"}), name
    assert services["redis"]["profiles"] == ["redis"]
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])
    backend_ip = ipaddress.ip_address(be["networks"]["ml"]["ipv4_address"])
    (subnet,) = [c["subnet"] for c in cfg["networks"]["ml"]["ipam"]["config"]]
    assert backend_ip in ipaddress.ip_network(subnet)


def test_cuda_override_builds_the_cuda_image_and_reserves_gpus(
    compose: list[str], tmp_path: Path
) -> None:
    folder = _project(tmp_path, _env_example())
    result = _config(compose, folder, "compose.yaml", "compose.cuda.yaml")
    assert result.returncode == 0, result.stderr
    be = yaml.safe_load(result.stdout)["services"]["backend"]
    assert be["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    cmd = be["command"]
    assert cmd[cmd.index("--device") + 1] == "cuda"
    (device,) = be["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


@pytest.mark.parametrize("secret", ["POSTGRES_PASSWORD", "MEDCROWD_BACKEND_PASSWORD",
                                    "LABEL_STUDIO_USER_TOKEN"])  # fmt: skip
def test_compose_refuses_to_run_without_a_secret(
    compose: list[str], tmp_path: Path, secret: str
) -> None:
    env = {k: v for k, v in _env_example().items() if k != secret}
    result = _config(compose, _project(tmp_path, env))
    assert result.returncode != 0
    assert f"set {secret} in docker/.env" in result.stdout + result.stderr


def _break_unknown_key(text: str) -> str:
    return text.replace("    healthcheck:\n      test: [\"CMD-SHELL\"", "    healthchek:\n      "
                        "test: [\"CMD-SHELL\"", 1)  # fmt: skip


def _break_depends_on(text: str) -> str:
    return text.replace("      postgres:\n        condition: service_healthy",
                        "      postgress:\n        condition: service_healthy", 1)  # fmt: skip


def _break_volume(text: str) -> str:
    return text.replace("- embedding-cache:/var/cache/medcrowd", "- embedding-cach:/var/cache/x", 1)


def _break_yaml(text: str) -> str:
    return text.replace("  backend:\n", "  backend:\n   broken: [\n", 1)


def _break_type(text: str) -> str:
    return text.replace("retries: 5", "retries: five", 1)


@pytest.mark.parametrize(
    "breakage", [_break_unknown_key, _break_depends_on, _break_volume, _break_yaml, _break_type]
)
def test_a_broken_compose_file_fails_validation(
    compose: list[str], tmp_path: Path, breakage: Any
) -> None:
    original = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    broken = breakage(original)
    assert broken != original  # the breakage really applied
    result = _config(compose, _project(tmp_path, _env_example(), broken))
    assert result.returncode != 0, f"{breakage.__name__} passed validation:\n{result.stdout}"


# -- secrets are never committed -----------------------------------------------------------
def test_env_example_holds_placeholders_only_and_env_is_ignored() -> None:
    env = _env_example()
    secret = re.compile(r"^(?!.*_ENABLE_).*(PASSWORD|TOKEN|SECRET|_AUTH)$")  # not on/off flags
    secrets = [k for k in env if secret.search(k)]
    assert len(secrets) >= 5
    for key in secrets:
        assert env[key].startswith("change-me"), key
    raw = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    for name, svc in raw["services"].items():
        for key, value in _as_env(svc.get("environment")).items():
            if secret.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}.{key} = {value!r}"
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git whether docker/.env is ignored")
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO, timeout=30)
    assert ignored.returncode == 0, "docker/.env is not git-ignored"


# -- the SSRF carve-out, checked with Label Studio's own code ----------------------------------
def _label_studio_dir() -> Path:
    import label_studio

    return Path(label_studio.__file__).parent


def test_ssrf_defaults_copy_matches_the_installed_label_studio() -> None:
    sys.path.insert(0, str(DOCKER))
    try:
        from ssrf_subnets import LABEL_STUDIO_DEFAULT_BANNED
    finally:
        sys.path.remove(str(DOCKER))
    tree = ast.parse((_label_studio_dir() / "core" / "utils" / "io.py").read_text(encoding="utf-8"))
    lists = [
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "default_banned_subnets" for t in node.targets)
    ]
    assert lists, "default_banned_subnets not found in Label Studio: re-check docker/"
    assert tuple(lists[0]) == LABEL_STUDIO_DEFAULT_BANNED


def test_label_studio_reaches_the_backend_and_nothing_else_private(
    compose: list[str], tmp_path: Path
) -> None:
    result = _config(compose, _project(tmp_path, _env_example()))
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)["services"]
    ls_env = _as_env(cfg["label-studio"]["environment"])
    backend_ip = cfg["backend"]["networks"]["ml"]["ipv4_address"]
    probes = {
        backend_ip: True,
        "8.8.8.8": True,  # public addresses stay reachable (remote backends)
        str(ipaddress.ip_address(backend_ip) + 1): False,  # a neighbour on the ml network
        "169.254.169.254": False,  # cloud metadata
        "127.0.0.1": False,
        "10.1.2.3": False,
        "192.168.1.1": False,
        "::1": False,
    }
    script = (
        "import sys, json\n"
        "from core.utils.io import validate_ip\n"
        "out = {}\n"
        "for ip in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        validate_ip(ip); out[ip] = True\n"
        "    except Exception as exc:\n"
        "        out[ip] = type(exc).__name__\n"
        "print(json.dumps(out))\n"
    )
    import json

    keys = ("USE_DEFAULT_BANNED_SUBNETS", "USER_ADDITIONAL_BANNED_SUBNETS")
    env = {k: v for k, v in os.environ.items() if not k.endswith(keys)}
    env.update({k: ls_env[k] for k in keys})
    env.update({
        "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",
        "PYTHONPATH": str(_label_studio_dir()),
        "HOME": str(tmp_path), "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls"),
        "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
    })  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(probes))],
        capture_output=True, text=True, encoding="utf-8", timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    verdict = json.loads(run.stdout.strip().splitlines()[-1])
    for ip, allowed in probes.items():
        assert (verdict[ip] is True) == allowed, (ip, verdict[ip])
        if not allowed:
            assert verdict[ip] == "SsrfBlockedUrlError"

    sys.path.insert(0, str(DOCKER))
    try:
        from ssrf_subnets import banned_except
    finally:
        sys.path.remove(str(DOCKER))
    assert ls_env["USER_ADDITIONAL_BANNED_SUBNETS"] == ",".join(banned_except(backend_ip))


# -- the Dockerfiles ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dockerfile", "base"),
    [("Dockerfile", "python:3.11-slim"), ("Dockerfile.cuda", "nvidia/cuda:")],
)
def test_dockerfiles_pin_torch_copy_real_paths_and_drop_root(dockerfile: str, base: str) -> None:
    text = (DOCKER / dockerfile).read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), f) for f in froms]
    assert resolved and resolved[-1].startswith(base)
    if "cuda" in base:
        assert "runtime" in resolved[-1]
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    for pin in ("torch==2.14.1", "torchvision==0.29.1"):
        assert pin in pyproject and pin in text, pin
    for src in re.findall(r"^COPY\s+(?!--)(.+)\s+\S+$", text, re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"{dockerfile} copies missing {path}"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.M)
    ignore = (DOCKER / f"{dockerfile}.dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("**") + 1 :], "dockerignore must re-include the sources"


def test_label_studio_image_carries_the_plugin() -> None:
    """docker/Dockerfile.label-studio: Label Studio's own image, the plugin's packages on
    PYTHONPATH, medcrowd's settings module, back to the unprivileged user."""
    text = (DOCKER / "Dockerfile.label-studio").read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), base)
    assert base == "heartexlabs/label-studio:1.23.2"
    import label_studio

    assert base.endswith(":" + label_studio.__version__)  # the version the tests run
    copies = re.findall(r"^COPY\s+(?!--)(\S+)\s+(\S+)$", text, re.M)
    assert {src for src, _ in copies} == {"medcrowd/", "ml_backend/"}
    for src, dst in copies:
        assert (REPO / src).is_dir() and dst.startswith("/opt/medcrowd/")
    assert "PYTHONPATH=/opt/medcrowd" in text
    assert "DJANGO_SETTINGS_MODULE=medcrowd.lsplugin.settings" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users[-1] not in {"root", "0"}
    ignore = (DOCKER / "Dockerfile.label-studio.dockerignore").read_text().split()
    assert {"!medcrowd/", "!ml_backend/"} <= set(ignore)


def test_plugin_imports_nothing_heavy() -> None:
    """What the Label Studio image lacks: the plugin must not import torch, fusion, scipy,
    medcrowd's CLI or the SDK client (only medcrowd.lsplugin, ml_backend.rle, numpy, PIL)."""
    probe = (
        "import sys\n"
        "import medcrowd.lsplugin.policy, medcrowd.lsplugin.feedback\n"
        "heavy = [m for m in ('torch', 'fusion', 'scipy', 'medcrowd.studio', 'typer',"
        " 'label_studio_sdk') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_backend_command_uses_only_options_the_cli_has(compose: list[str], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medcrowd.cli import app

    help_text = CliRunner().invoke(app, ["backend", "serve", "--help"], env={"COLUMNS": "200"})
    assert help_text.exit_code == 0
    result = _config(compose, _project(tmp_path, _env_example()))
    cmd = yaml.safe_load(result.stdout)["services"]["backend"]["command"]
    docker_cmds = [
        re.findall(r'"(--[\w-]+)"', line)
        for line in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines()
        + (DOCKER / "Dockerfile.cuda").read_text(encoding="utf-8").splitlines()
    ]
    flags = {a for a in cmd if a.startswith("--")} | {f for fl in docker_cmds for f in fl}
    for flag in flags:
        assert flag in help_text.output, f"`medcrowd backend serve` has no {flag}"
