"""medcrowd.studio and medcrowd.connection against the session's real Label Studio (no mocks).

Token refresh is counted on the wire: the client's transport is wrapped by a real HTTP
transport that records every request it sends.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from medcrowd.connection import ConnectionProblem, open_studio, resolve
from medcrowd.embedded import free_port
from medcrowd.settings import Instance, config_path, write_instance
from medcrowd.studio import (
    LabelStudioUnavailable,
    RetryPolicy,
    Studio,
    StudioError,
    TokenRejected,
    task_image_url,
)
from ml_backend.labeling import brush_result
from tests.helpers import StudioHandle

pytestmark = pytest.mark.e2e


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that also records the path of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def _record(studio: Studio) -> RecordingTransport:
    recorder = RecordingTransport()
    studio._transport._inner = recorder  # under the retrying transport every request uses
    return recorder


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def admin(label_studio: StudioHandle) -> Studio:
    return Studio(label_studio.url, label_studio.token)


@pytest.fixture(scope="module")
def personal_token(admin: Studio) -> str:
    """A personal access token (JWT refresh token) of a new account."""
    tag = uuid.uuid4().hex[:8]
    _, legacy = admin.create_volunteer(f"pat-{tag}@example.com", f"Pat-{tag}-pass!")
    resp = httpx.post(
        f"{admin.url}/api/token/", headers={"Authorization": f"Token {legacy}"}, timeout=30
    )
    assert resp.status_code == 201, resp.text
    token = str(resp.json()["token"])
    assert token.count(".") == 2
    return token


@pytest.fixture(scope="module")
def one_task(admin: Studio) -> tuple[int, int, bytes]:
    """(project id, task id, the image's bytes) of a fresh one-task project."""
    pid = admin.ensure_project(
        f"studio {uuid.uuid4().hex[:8]}", config_path("labeling_box_brush.xml").read_text()
    )
    image = _png(1)
    report = admin.import_images(pid, [("slice.png", image)])
    assert report.created == 1
    (task,) = admin.tasks(pid)
    return pid, task.id, image


# -- authentication -------------------------------------------------------------------
def test_legacy_token_never_refreshes(admin: Studio) -> None:
    recorder = _record(admin)
    assert admin.whoami()["email"]
    admin.users()  # an SDK call
    admin.signup_link()  # a raw call
    assert admin.token_refreshes == 0
    assert "/api/token/refresh" not in recorder.paths


def test_personal_access_token_is_refreshed_once_until_it_expires(
    label_studio: StudioHandle, personal_token: str
) -> None:
    studio = Studio(label_studio.url, personal_token)
    recorder = _record(studio)
    me = studio.whoami()  # raw
    studio.users()  # SDK
    studio.find_project("no such project")  # SDK
    studio.signup_link()  # raw
    assert me["email"].startswith("pat-")
    assert recorder.paths.count("/api/token/refresh") == 1
    assert studio.token_refreshes == 1
    # cached until shortly before the access token's own expiry (its exp claim)
    access = studio._auth.access_token()
    assert studio.token_refreshes == 1
    payload = access.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    left = studio._auth._valid_until - time.monotonic()
    assert claims["exp"] - time.time() - 60 < left < claims["exp"] - time.time()
    # once that time has come, the next request exchanges the token again, once
    studio._auth._valid_until = time.monotonic() - 1
    studio.users()
    studio.whoami()
    assert recorder.paths.count("/api/token/refresh") == 2
    assert studio.token_refreshes == 2


def test_rejected_tokens_are_one_clear_error(
    label_studio: StudioHandle, personal_token: str
) -> None:
    url = label_studio.url.rstrip("/")
    for bad in ("0" * 40, personal_token[:-4] + "abcd"):
        studio = Studio(label_studio.url, bad)
        with pytest.raises(TokenRejected, match=f"^token rejected by {re.escape(url)}$"):
            studio.whoami()
        with pytest.raises(TokenRejected, match=f"^token rejected by {re.escape(url)}$"):
            studio.users()  # the SDK's 401 too
        with pytest.raises(ConnectionProblem, match=f"^token rejected by {re.escape(url)}$"):
            open_studio(label_studio.url, bad, Path("/nonexistent-medcrowd-home"))


# -- images ---------------------------------------------------------------------------
def test_image_path_resolves_uploads_local_files_and_own_absolute_urls(admin: Studio) -> None:
    base = admin.url
    host = httpx.URL(base)
    assert (
        admin.image_path({"image": "/data/upload/3/ab-mc1_x.png"}) == "/data/upload/3/ab-mc1_x.png"
    )
    local = "/data/local-files/?d=scans/ct%201.png"
    assert admin.image_path({"image": local}) == local
    assert admin.image_path({"text": "hello", "image": f"{base}/data/upload/1/y.png?v=2"}) == (
        "/data/upload/1/y.png?v=2"
    )
    assert task_image_url({"medcrowd": {"axis": "axial"}, "image": "/data/upload/1/z.png"}) == (
        "/data/upload/1/z.png"
    )
    refused = [
        "https://elsewhere.example.org/data/upload/1/y.png",
        f"http://{host.host}:{(host.port or 80) + 1}/data/upload/1/y.png",  # another port
        f"http://user:pw@{host.host}:{host.port}/data/upload/1/y.png",  # userinfo
    ]
    for url in refused:
        with pytest.raises(ValueError, match="not on Label Studio's host"):
            admin.image_path({"image": url})
    for data in ({}, {"text": "no image"}, None):
        with pytest.raises(ValueError, match="no image URL"):
            admin.image_path(data)


def test_fetch_image_returns_the_uploaded_bytes(
    admin: Studio, one_task: tuple[int, int, bytes]
) -> None:
    pid, _, image = one_task
    (task,) = admin.tasks(pid)
    path, body = admin.fetch_image(task.data)
    assert path.startswith("/data/upload/") and body == image
    _, again = admin.fetch_image({"image": admin.url + path})  # the absolute form
    assert again == image


# -- predictions ----------------------------------------------------------------------
def test_replace_predictions_touches_only_its_prefix(
    admin: Studio, one_task: tuple[int, int, bytes]
) -> None:
    _, task_id, _ = one_task
    mask = np.zeros((24, 32), bool)
    mask[4:10, 5:20] = True
    ann_id = admin.create_annotation(task_id, [brush_result(mask, "Organ")], lead_time=3.0)
    before = admin.client.annotations.get(ann_id).result
    admin.client.predictions.create(
        task=task_id, result=[brush_result(~mask, "Organ")], model_version="someone-else"
    )
    first = [brush_result(mask, "Organ")]
    made = admin.replace_predictions(task_id, "consensus-staple", "consensus-staple", first, 0.5)
    assert (made.created, made.kept, made.removed) == (True, False, 0)

    def identical(p: object, rle: list[int] = first[0]["value"]["rle"]) -> bool:
        return any(r["value"].get("rle") == rle for r in p.result)  # type: ignore[attr-defined]

    same = admin.replace_predictions(
        task_id, "consensus-staple", "consensus-staple", first, 0.5, same=identical
    )
    assert (same.created, same.kept, same.removed) == (False, True, 0)
    other = mask.copy()
    other[12:20, 2:8] = True
    new = [brush_result(other, "Organ")]

    def identical_new(p: object, rle: list[int] = new[0]["value"]["rle"]) -> bool:
        return any(r["value"].get("rle") == rle for r in p.result)  # type: ignore[attr-defined]

    stale = admin.replace_predictions(
        task_id, "consensus-staple", "consensus-staple", new, 0.7, same=identical_new
    )
    assert (stale.created, stale.kept, stale.removed) == (True, False, 1)
    versions = sorted(p.model_version for p in admin.predictions(task_id))
    assert versions == ["consensus-staple", "someone-else"]
    (ours,) = [p for p in admin.predictions(task_id) if p.model_version == "consensus-staple"]
    assert ours.result[0]["value"]["rle"] == new[0]["value"]["rle"]
    assert ours.score == pytest.approx(0.7)
    gone = admin.replace_predictions(task_id, ("consensus-", "sqa-"))  # no version: remove ours
    assert gone.removed == 1 and not gone.created
    assert [p.model_version for p in admin.predictions(task_id)] == ["someone-else"]
    assert admin.client.annotations.get(ann_id).result == before  # annotations untouched


# -- clear errors ---------------------------------------------------------------------
def test_unreachable_and_missing_things_are_one_line_errors(admin: Studio, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(
        ConnectionProblem, match=re.escape(f"no Label Studio answers at http://127.0.0.1:{port}")
    ):
        open_studio(f"http://127.0.0.1:{port}", "0" * 40, tmp_path)
    down = Studio(f"http://127.0.0.1:{port}", "0" * 40, retry=RetryPolicy(budget_s=0))
    with pytest.raises(LabelStudioUnavailable, match="is it running"):
        down.whoami()
    with pytest.raises(StudioError, match=re.escape(f"no project 987654 at {admin.url}")):
        admin.project(987654)
    with pytest.raises(StudioError) as refused:
        admin.request("GET", "/api/tasks/987654321/")
    assert refused.value.status_code == 404 and "\n" not in str(refused.value)
    with pytest.raises(ConnectionProblem, match="run `medcrowd up`"):
        open_studio(None, None, tmp_path / "never-up")
    with pytest.raises(ConnectionProblem, match="--url must be an http"):
        open_studio("127.0.0.1:8080", "x", tmp_path)


def test_open_studio_finds_the_instance_medcrowd_up_recorded(
    label_studio: StudioHandle, tmp_path: Path
) -> None:
    url = label_studio.url.rstrip("/")
    assert (
        write_instance(tmp_path, Instance(url=url, token=label_studio.token)).stat().st_mode & 0o777
        == 0o600
    )
    studio = open_studio(None, None, tmp_path)
    assert studio.url == url and studio.whoami()["id"]
    assert resolve(None, None, tmp_path) == (url, label_studio.token, tmp_path)
    # an explicit token wins over the recorded one; the recorded token never goes elsewhere
    assert resolve(None, "abc", tmp_path)[1] == "abc"
    with pytest.raises(
        ConnectionProblem, match=re.escape("no API token for http://other.example:8080")
    ):
        resolve("http://other.example:8080", None, tmp_path)
    # a token alone talks to medcrowd up's default port
    assert resolve(None, "abc", tmp_path / "nothing")[0] == "http://127.0.0.1:8080"
