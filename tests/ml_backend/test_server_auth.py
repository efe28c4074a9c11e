"""HTTP Basic auth on every route but /health, for every method and every kind of bad header.

The real server (real predictor) over HTTP. A request without the right credentials must get
401 with ``WWW-Authenticate`` and a JSON error before routing, so unknown paths do not reveal
themselves either; with the right credentials, unknown paths and methods get JSON 404/405.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medcrowd.embedded import free_port
from ml_backend.config import BackendConfig
from ml_backend.server import create_app
from tests.helpers import ThreadedServer

USER = "labelstudio"
PASSWORD = secrets.token_urlsafe(12)
ROUTES = ["/setup", "/predict", "/webhook", "/openapi.json", "/docs", "/nope", "/", "/health/"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


BAD_HEADERS = {
    "missing": None,
    "wrong password": basic(f"{USER}:wrong".encode()),
    "wrong user": basic(f"someone:{PASSWORD}".encode()),
    "empty": "",
    "scheme only": "Basic",
    "bearer": f"Bearer {PASSWORD}",
    "token": f"Token {PASSWORD}",
    "not base64": "Basic !!!not-base64!!!",
    "no colon": basic(USER.encode()),
    "password only": basic(f":{PASSWORD}".encode()),
    "user only": basic(f"{USER}:".encode()),
    "not utf-8": basic(b"\xff\xfe:\xff"),
    "password prefix": basic(f"{USER}:{PASSWORD[:-1]}".encode()),
    "password suffix": basic(f"{USER}:{PASSWORD}x".encode()),
    "user with password appended": basic(f"{USER}{PASSWORD}:".encode()),
    "huge": "Basic " + "A" * 16000,
}


@pytest.fixture(scope="module")
def server(litemedsam: Any) -> Iterator[str]:
    port = free_port()
    config = BackendConfig(port=port, basic_auth=(USER, PASSWORD), warm_on_import=False)
    with ThreadedServer(create_app(config, predictor=litemedsam), port):
        yield f"http://127.0.0.1:{port}"


def request(url: str, method: str, path: str, header: str | bytes | None) -> httpx.Response:
    headers: dict[str, Any] = {"content-type": "application/json"}
    if header is not None:
        headers["authorization"] = header
    content = b"{}" if method in ("POST", "PUT", "PATCH") else None
    return httpx.request(method, url + path, headers=headers, content=content, timeout=30)


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_every_route_and_method_needs_auth(server: str, name: str) -> None:
    header = BAD_HEADERS[name]
    for path in ROUTES:
        for method in METHODS:
            resp = request(server, method, path, header)
            assert resp.status_code == 401, (name, method, path, resp.status_code, resp.text)
            assert resp.headers["www-authenticate"] == 'Basic realm="medcrowd"'
            if method != "HEAD":
                assert resp.json() == {"error": "authentication required"}


def raw_post(url: str, authorization: bytes) -> tuple[int, bytes]:
    """POST /predict with a header value no HTTP client library would send."""
    parsed = httpx.URL(url)
    with socket.create_connection((parsed.host, parsed.port), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
            b"\r\n{}"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def test_raw_header_bytes_are_refused(server: str) -> None:
    # Starlette decodes header bytes as latin-1; non-ASCII where base64 belongs used to make
    # base64 raise ValueError (not binascii.Error) → a 500.
    for raw in (b"Basic \xc3\xa9\xc3\xa9", b"Basic \xff", b"Basic ", b"Basic \t", b"\x00"):
        status, body = raw_post(server, raw)
        assert status in (400, 401), (raw, status, body)
        if status == 401:
            assert json.loads(body) == {"error": "authentication required"}


def test_health_is_open_for_label_studio(server: str) -> None:
    resp = httpx.get(f"{server}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "UP" and isinstance(body["worker_pid"], int)
    assert httpx.head(f"{server}/health").status_code == 200
    # Only the exact path is open: other methods are refused as methods, not let through.
    resp = httpx.post(f"{server}/health", json={})
    assert resp.status_code == 405 and "error" in resp.json()


def test_right_credentials(server: str) -> None:
    ok = basic(f"{USER}:{PASSWORD}".encode())
    lower = "basic " + ok.split(" ", 1)[1]  # the scheme is case-insensitive (RFC 7617)
    for header in (ok, lower):
        resp = request(server, "POST", "/setup", header)
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"].startswith("litemedsam")
    schema = request(server, "GET", "/openapi.json", ok)
    assert schema.status_code == 200
    assert set(schema.json()["paths"]) == {"/health", "/setup", "/predict", "/webhook"}
    unknown = request(server, "GET", "/nope", ok)
    assert unknown.status_code == 404 and unknown.json() == {"error": "Not Found"}
    wrong_method = request(server, "GET", "/predict", ok)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]
    assert request(server, "GET", "/docs", ok).status_code == 404  # no docs UI is served


def test_loopback_without_credentials_is_open_and_anything_else_refuses() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):  # noqa: S104
        with pytest.raises(ValueError, match="without authentication"):
            BackendConfig(host=host).validate()
    for host in ("127.0.0.1", "::1", "localhost"):
        BackendConfig(host=host).validate()
    with pytest.raises(ValueError, match="both a user and a password"):
        BackendConfig(host="0.0.0.0", basic_auth=("user", "")).validate()  # noqa: S104
