"""``medcrowd up --database postgresql://…``: Label Studio on a real, throwaway PostgreSQL.

The fixture starts a private PostgreSQL cluster (``tests.helpers.postgres_cluster``: Debian's
``postgresql`` package, or any ``initdb``/``pg_ctl`` on PATH) in a temporary directory,
listening on a free loopback port with password (SCRAM) authentication for TCP clients, and
removes it afterwards. PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user; as any other user it runs as that user.

The URL-parsing tests at the top need no server.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from medcrowd.embedded import LabelStudioProcess, PostgresDatabase, free_port
from tests.helpers import PostgresMissing, PostgresServer, postgres_cluster


# -- the URL, no server needed ---------------------------------------------------------------
def test_url_is_parsed_and_the_password_decoded() -> None:
    db = PostgresDatabase.from_url("postgresql://ls:p%40ss%2Fw%3Ard@db.example:5433/labelstudio")
    assert (db.user, db.password, db.host, db.port, db.name) == (
        "ls", "p@ss/w:rd", "db.example", 5433, "labelstudio"
    )  # fmt: skip
    assert "p@ss" not in repr(db)
    assert db.redacted() == "postgresql://ls:***@db.example:5433/labelstudio"
    env = db.label_studio_environment()
    assert env == {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "labelstudio",
        "POSTGRE_USER": "ls",
        "POSTGRE_PASSWORD": "p@ss/w:rd",
        "POSTGRE_HOST": "db.example",
        "POSTGRE_PORT": "5433",
    }
    socket = PostgresDatabase.from_url("postgres://ls@/ls?host=/run/postgresql")
    assert (socket.host, socket.port, socket.password) == ("/run/postgresql", 5432, "")
    assert PostgresDatabase.from_url("postgresql://u:x@[::1]/d").redacted() == (
        "postgresql://u:***@[::1]:5432/d"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:S3cr3t@h/db", "scheme 'mysql'"),
        ("sqlite:///S3cr3t.db", "scheme 'sqlite'"),
        ("postgresql://u:S3cr3t@h:99999/db", "port"),
        ("postgresql://u:S3cr3t@h:0/db", "port"),
        ("postgresql://u:S3/cr3t@h/db", "port"),  # unescaped '/' in the password
        ("postgresql://u:S3?cr3t@h/db", "port"),  # unescaped '?'
        ("postgresql://u:S3#cr3t@h/db", "port"),  # unescaped '#'
        ("postgresql://u:S3cr3t@h/db#x", "fragment"),
        ("postgresql://h:5432/db", "no user"),
        ("postgresql://u:S3cr3t@h/", "no database"),
        ("postgresql://u:S3cr3t@h/db/x", "nested"),
        ("postgresql://u:S3cr3t@h/db?sslmode=require", "query parameter"),
        ("postgresql://u:S3cr3t@/db?host=run/pg", "absolute"),
    ],
)
def test_bad_urls_are_refused_without_leaking_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        PostgresDatabase.from_url(url)
    for piece in ("S3cr3t", "S3", "cr3t"):
        assert piece not in str(info.value)


def test_cli_refuses_a_bad_url_before_starting_anything(tmp_path: Path) -> None:
    from medcrowd.cli import app

    result = CliRunner().invoke(
        app,
        ["up", "--data-dir", str(tmp_path / "d"), "--no-wait"],
        env={"MEDCROWD_DATABASE_URL": "mysql://root:S3cr3t@localhost/ls", "COLUMNS": "200"},
    )
    assert result.exit_code == 2
    assert "postgresql://user:password@host:port/dbname" in result.output
    assert "S3cr3t" not in result.output
    assert not (tmp_path / "d").exists()  # nothing started, nothing written


def test_label_studio_gets_the_database_and_stray_overrides_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Label Studio reads LABEL_STUDIO_<KEY> before <KEY>: a leftover one must not win.
    monkeypatch.setenv("LABEL_STUDIO_POSTGRE_HOST", "elsewhere.example")
    monkeypatch.setenv("HEARTEX_DJANGO_DB", "sqlite")
    monkeypatch.setenv("LABEL_STUDIO_DATABASE_NAME", "/tmp/other.sqlite3")
    db = PostgresDatabase.from_url("postgresql://ls:pw@127.0.0.1:6543/labelstudio")
    proc = LabelStudioProcess(tmp_path, "a@example.com", "x", "0" * 40, database=db)
    env = proc.environment()
    assert env["DJANGO_DB"] == "default" and env["POSTGRE_HOST"] == "127.0.0.1"
    assert env["POSTGRE_PORT"] == "6543" and env["POSTGRE_PASSWORD"] == "pw"
    for key in ("LABEL_STUDIO_POSTGRE_HOST", "HEARTEX_DJANGO_DB", "LABEL_STUDIO_DATABASE_NAME"):
        assert key not in env
    sqlite_env = LabelStudioProcess(tmp_path, "a@example.com", "x", "0" * 40).environment()
    assert sqlite_env["DJANGO_DB"] == "sqlite" and "HEARTEX_DJANGO_DB" not in sqlite_env


# -- a throwaway PostgreSQL cluster (tests.helpers.postgres_cluster) ---------------------------
@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        with postgres_cluster() as server:
            yield server
    except PostgresMissing as exc:
        if os.environ.get("CI"):  # .ci/run installs PostgreSQL: never skip there
            pytest.fail(f"{exc} (CI installs Debian's postgresql: see .ci/run)")
        pytest.skip(str(exc))


# -- medcrowd up on it ------------------------------------------------------------------------
def _up(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medcrowd", "up", "--no-wait", *args],
        capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200", **env},
    )  # fmt: skip


@pytest.mark.e2e
@pytest.mark.slow
def test_up_runs_label_studio_on_postgresql_and_reruns_idempotently(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    # '@', '/' and ':' in the password prove the URL's percent-decoding end to end.
    password = secrets.token_urlsafe(12) + "@/:"
    url = postgres.create_database("medcrowd", password, "labelstudio")
    data_dir = tmp_path / "medcrowd"
    ports = ["--port", str(free_port()), "--backend-port", str(free_port())]
    # with medcrowd's roles plugin, as a hosted instance runs (its tables go to PostgreSQL too)
    base = ["--data-dir", str(data_dir), *ports, "--roles"]

    first = _up(base, {"MEDCROWD_DATABASE_URL": url})  # the env var, as the docs advise
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "3 tasks imported, 0 already there" in first.stdout
    assert f"postgresql://medcrowd:***@127.0.0.1:{postgres.port}/labelstudio" in first.stdout
    # Label Studio's tables are in PostgreSQL (read back as the medcrowd role over TCP) …
    import psycopg

    def rows(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            return list(conn.execute(query, params).fetchall())

    ((project_id, title),) = rows("SELECT id, title FROM project")
    assert title == "medcrowd demo"
    assert rows("SELECT count(*) FROM task WHERE project_id = %s", project_id) == [(3,)]
    assert ("admin@medcrowd.local",) in rows("SELECT email FROM htx_user")
    # … the plugin's migrations ran there, and it served the signup link from there …
    assert "Volunteers sign up at " in first.stdout
    applied = rows("SELECT name FROM django_migrations WHERE app = 'medcrowd_lsplugin'")
    assert ("0001_initial",) in applied
    assert rows("SELECT count(*) FROM medcrowd_lsplugin_invite")[0][0] >= 1
    # … and no SQLite database was created anywhere in the data directory.
    assert sorted(data_dir.rglob("*.sqlite3")) == []
    assert (data_dir / "label-studio").is_dir()  # media/exports still live there

    # Second run (the URL on the command line this time): same project, no new tasks.
    second = _up([*base, "--database", url], {})
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 tasks imported, 3 already there" in second.stdout
    assert rows("SELECT count(*) FROM project") == [(1,)]
    assert rows("SELECT count(*) FROM task") == [(3,)]

    # The database password is never printed, logged or stored by medcrowd.
    for text in (out, second.stdout + second.stderr):
        assert password not in text and quote(password, safe="") not in text
    for path in data_dir.rglob("*"):
        if path.is_file() and path.suffix in {".log", ".json", ".txt", ""}:
            assert password not in path.read_text(errors="replace"), path


@pytest.mark.e2e
def test_up_with_a_wrong_password_fails_clearly_without_leaking_it(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    postgres.create_database("intruder", secrets.token_urlsafe(12), "intruder")
    wrong = "Wr0ng-" + secrets.token_hex(6)
    url = f"postgresql://intruder:{wrong}@127.0.0.1:{postgres.port}/intruder"
    ports = ["--port", str(free_port()), "--backend-port", str(free_port())]
    result = _up(["--data-dir", str(tmp_path / "d"), *ports], {"MEDCROWD_DATABASE_URL": url})
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert re.search(r"password authentication failed for user \W?intruder", out), out
    assert wrong not in out
