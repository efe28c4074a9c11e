"""SSRF through task image URLs, against the real server over HTTP with the real predictor.

A task's image URL is client input: the backend may fetch only from the configured Label
Studio host (with its own token) or read local files inside the allowed roots. Two real HTTP
servers on loopback stand in for the hosts: ``ls_host`` plays Label Studio (serves an upload,
redirects on request) and ``evil`` is any other machine. Every trick must come back as a 422
JSON error, ``evil`` must never see a request, and the backend's token must only ever be sent
to ``ls_host``.
"""

from __future__ import annotations

import io
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from medcrowd.embedded import free_port
from ml_backend.config import BackendConfig
from ml_backend.server import create_app
from tests.helpers import XML, ImageHost, ThreadedServer, box_context


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def predict_body(url: Any, context: dict[str, Any] | None = None) -> dict[str, Any]:
    ctx = context if context is not None else box_context([20, 20, 120, 120], 225, 155)
    return {
        "tasks": [{"id": 1, "data": {"image": url}}],
        "project": "1.1",
        "label_config": XML,
        "params": {"login": None, "password": None, "context": ctx},
    }


@dataclass
class Setup:
    url: str
    auth: tuple[str, str]
    token: str
    ls_host: ImageHost
    evil: ImageHost
    served: Path


@pytest.fixture(scope="module")
def setup(
    litemedsam: Any, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    slice_png = (shared_data / "sammed2d_demo" / "images" / "s0619_32.png").read_bytes()
    ls_host = ImageHost(files={"1/slice.png": slice_png})
    evil = ImageHost(files={"1/slice.png": slice_png})
    root = tmp_path_factory.mktemp("ssrf")
    served = root / "served"
    (served / "project").mkdir(parents=True)
    (served / "project" / "ok.png").write_bytes(slice_png)
    (root / "secret.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    (served / "project" / "link.png").symlink_to(root / "secret.png")
    (served / "project" / "loop.png").symlink_to(served / "project" / "loop.png")
    port = free_port()
    auth = ("labelstudio", secrets.token_urlsafe(12))
    token = secrets.token_hex(20)
    config = BackendConfig(
        port=port,
        basic_auth=auth,
        label_studio_url=ls_host.url,
        label_studio_token=token,
        local_files_root=served,
        warm_on_import=False,
    )
    with ThreadedServer(create_app(config, predictor=litemedsam), port):
        yield Setup(f"http://127.0.0.1:{port}", auth, token, ls_host, evil, served)
    ls_host.close()
    evil.close()


def post(setup: Setup, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{setup.url}/predict", json=body, auth=setup.auth, timeout=60)


def other_host_urls(ls: int, evil: int) -> list[str]:
    path = "/data/upload/1/slice.png"
    return [
        f"http://127.0.0.1:{evil}{path}",  # another port on the same machine
        f"http://localhost:{ls}{path}",  # the same host spelled differently
        f"http://127.1:{ls}{path}",
        f"http://0x7f000001:{ls}{path}",
        f"http://2130706433:{ls}{path}",  # decimal IPv4
        f"http://0177.0.0.1:{ls}{path}",  # octal
        f"http://[::1]:{ls}{path}",
        f"http://[::ffff:127.0.0.1]:{ls}{path}",
        f"http://ls-host@127.0.0.1:{evil}{path}",  # userinfo that looks like the LS host
        f"http://127.0.0.1:{ls}@127.0.0.1:{evil}{path}",
        f"https://127.0.0.1:{ls}{path}",  # other scheme, same host and port
        f"http://169.254.169.254{path}",  # cloud metadata
    ]


def unsupported_urls(ls: int, evil: int) -> list[str]:
    return [
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        f"gopher://127.0.0.1:{ls}/_GET%20/",
        f"ftp://127.0.0.1:{evil}/slice.png",
        f"dict://127.0.0.1:{evil}/",
        "data:image/png;base64,iVBORw0KGgo=",
        f"//127.0.0.1:{evil}/data/upload/1/slice.png",  # scheme-relative
        "jar:http://127.0.0.1/x!/y",
        "C:\\Windows\\win.ini",
    ]


def test_a_real_upload_on_the_label_studio_host_is_served(setup: Setup) -> None:
    resp = post(setup, predict_body("/data/upload/1/slice.png"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["result"][0]["type"] == "brushlabels"
    resp = post(setup, predict_body(f"{setup.ls_host.url}/data/upload/1/slice.png"))
    assert resp.status_code == 200, resp.text
    tokens = {headers.get("Authorization") for _, headers in setup.ls_host.hits}
    assert tokens == {f"Token {setup.token}"}


def test_other_hosts_are_refused(setup: Setup) -> None:
    for url in other_host_urls(setup.ls_host.port, setup.evil.port):
        resp = post(setup, predict_body(url))
        assert resp.status_code == 422, (url, resp.text)
        assert "not the configured Label Studio host" in resp.json()["error"], url
    assert setup.evil.hits == []


def test_other_schemes_and_paths_are_refused(setup: Setup) -> None:
    before = len(setup.ls_host.hits)
    for url in unsupported_urls(setup.ls_host.port, setup.evil.port):
        resp = post(setup, predict_body(url))
        assert resp.status_code == 422, (url, resp.text)
        assert "unsupported image URL" in resp.json()["error"], (url, resp.text)
    assert setup.evil.hits == []
    assert len(setup.ls_host.hits) == before
    # An absolute path is a path on the Label Studio host, never a file of the backend's.
    resp = post(setup, predict_body("/etc/passwd"))
    assert resp.status_code == 422 and "HTTP 404" in resp.json()["error"], resp.text
    assert setup.ls_host.hits[-1][0] == "/etc/passwd"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://user:pw@127.0.0.1:{ls}/data/upload/1/slice.png", "credentials"),
        ("http://127.0.0.1:{evil}\\@127.0.0.1:{ls}/data/upload/1/slice.png", "credentials"),
        ("/data/upload/../../api/projects", "'..' segments"),
        ("/data/upload/%2e%2e/%2e%2e/api/projects", "'..' segments"),
        ("/data/upload/%252e%252e/%252e%252e/api/projects", "'..' segments"),
        ("/data/upload/..%2f..%2fapi/projects", "'..' segments"),
        ("http://127.0.0.1:{ls}/data/upload/./../api/users", "'..' segments"),
        ("/data/upload/1\\..\\..\\api", "backslashes"),
        ("http://127.0.0.1:99999/data/upload/1/slice.png", "invalid port"),
        ("http://127.0.0.1:abc/data/upload/1/slice.png", "invalid port"),
        ("http://[::1/data/upload/1/slice.png", "malformed"),
    ],
)
def test_url_tricks_are_refused_without_a_request(setup: Setup, url: str, fragment: str) -> None:
    before = len(setup.ls_host.hits)
    url = url.format(ls=setup.ls_host.port, evil=setup.evil.port)
    resp = post(setup, predict_body(url))
    assert resp.status_code == 422, (url, resp.text)
    assert fragment in resp.json()["error"], (url, resp.text)
    assert len(setup.ls_host.hits) == before
    assert setup.evil.hits == []


def test_redirects_off_the_label_studio_host_are_not_followed(setup: Setup) -> None:
    target = f"{setup.evil.url}/data/upload/1/slice.png"
    for url in (
        f"/redirect?to={urllib.parse.quote(target)}",
        f"{setup.ls_host.url}/redirect?to={urllib.parse.quote(target)}",
        f"/redirect?to={urllib.parse.quote('/data/upload/1/slice.png')}",  # even on-host
    ):
        before = len(setup.ls_host.hits)
        resp = post(setup, predict_body(url))
        assert resp.status_code == 422, (url, resp.text)
        assert "HTTP 302" in resp.json()["error"]
        assert len(setup.ls_host.hits) == before + 1  # Label Studio was asked once
    assert setup.evil.hits == []


@pytest.mark.parametrize(
    ("rel", "fragment"),
    [
        ("../secret.png", "outside the allowed roots"),
        ("project/../../secret.png", "outside the allowed roots"),
        ("project/%2e%2e/%2e%2e/secret.png", "outside the allowed roots"),
        ("%2Fetc%2Fpasswd", "outside the allowed roots"),
        ("/etc/passwd", "outside the allowed roots"),
        ("project/link.png", "outside the allowed roots"),  # a symlink leading out
        ("project/loop.png", "not usable"),  # a symlink loop
        ("project/a%00b.png", "not usable"),  # NUL byte
        ("project/" + "a" * 5000 + ".png", "could not be read"),  # name too long
        ("project", "not found"),  # a directory
        ("project/missing.png", "not found"),
    ],
)
def test_local_file_escapes_are_refused(setup: Setup, rel: str, fragment: str) -> None:
    resp = post(setup, predict_body(f"/data/local-files/?d={rel}"))
    assert resp.status_code == 422, (rel[:80], resp.text)
    assert fragment in resp.json()["error"], (rel[:80], resp.text)
    assert "Traceback" not in resp.text


def test_a_local_file_inside_the_root_is_served(setup: Setup) -> None:
    for url in ("/data/local-files/?d=project/ok.png", "/data/local-files/?d=project/./ok.png"):
        resp = post(setup, predict_body(url))
        assert resp.status_code == 200, resp.text
        assert resp.json()["results"][0]["result"][0]["type"] == "brushlabels"


@pytest.mark.parametrize("value", [123, None, ["/data/upload/1/slice.png"], {"url": "x"}, ""])
def test_non_string_image_urls_are_refused(setup: Setup, value: Any) -> None:
    resp = post(setup, predict_body(value))
    assert resp.status_code == 422, resp.text
    assert "image URL" in resp.json()["error"]
