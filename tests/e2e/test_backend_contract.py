"""The backend over HTTP: Label Studio's request shapes, auth, and every kind of bad input.

Each bad request must come back as a 4xx JSON ``{"error": …}`` with a message (never a
traceback), and the server must keep answering afterwards.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from medcrowd.settings import config_path
from medcrowd.studio import Studio
from tests.helpers import BackendHandle, StudioHandle, box_context, sammed2d_masks, tight_box

pytestmark = pytest.mark.e2e

XML = config_path("labeling_box_brush.xml").read_text()


@pytest.fixture(scope="module")
def tasks(label_studio: StudioHandle, shared_data: Path) -> dict[str, Any]:
    """A project holding one real slice and one corrupt 'PNG', as Label Studio stores them."""
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.ensure_project(f"contract {uuid.uuid4().hex[:8]}", XML)
    slice_path = shared_data / "sammed2d_demo" / "images" / "amos_0004_75.png"
    studio.import_images(
        project_id,
        [(slice_path.name, slice_path.read_bytes()), ("broken.png", b"\x89PNG\r\n\x1a\nnot png")],
    )
    by_name = {}
    for task in studio.client.tasks.list(project=project_id, fields="all"):
        url = task.data["image"]
        by_name["broken" if url.endswith("broken.png") else "slice"] = {
            "id": task.id,
            "data": dict(task.data),
        }
    return by_name


@pytest.fixture()
def client(backend: BackendHandle) -> httpx.Client:
    return httpx.Client(base_url=backend.url, auth=backend.auth, timeout=120)


def predict_body(task: dict[str, Any], context: dict[str, Any] | None) -> dict[str, Any]:
    # The shape Label Studio 1.23.2 sends (ml/api_connector.py::_prep_prediction_req).
    return {
        "tasks": [task],
        "project": "1.1795445030",
        "label_config": XML,
        "params": {"login": None, "password": None, "context": context},
    }


def assert_4xx(resp: httpx.Response, status: int, fragment: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert fragment in body["error"], body
    assert "Traceback" not in resp.text


# -- the contract ----------------------------------------------------------------------------
def test_health_setup_predict_shapes(
    client: httpx.Client, backend: BackendHandle, tasks: dict[str, Any]
) -> None:
    health = httpx.get(f"{backend.url}/health")  # health is open (no auth)
    assert health.status_code == 200
    assert health.json()["status"] == "UP"
    setup = client.post(
        "/setup",
        json={
            "project": "1.1795445030",
            "schema": XML,
            "hostname": "http://localhost:8080",
            "access_token": "legacy",
            "extra_params": None,
        },
    )
    assert setup.status_code == 200
    assert setup.json()["model_version"].startswith("litemedsam")
    # A batch prediction (no box drawn) gets one entry per task, in order: an empty list,
    # which Label Studio reads as "no prediction for this task".
    batch = client.post("/predict", json=predict_body(tasks["slice"], None))
    assert batch.status_code == 200
    assert batch.json()["results"] == [[]]


def test_interactive_predict_directly(
    client: httpx.Client, tasks: dict[str, Any], shared_data: Path
) -> None:
    organ = next(o for o in sammed2d_masks(shared_data) if o.mask_path.stem.endswith("liver_000"))
    _, gt = organ.load()
    ctx = box_context(tight_box(gt), gt.shape[1], gt.shape[0])
    resp = client.post("/predict", json=predict_body(tasks["slice"], ctx))
    assert resp.status_code == 200, resp.text
    (entry,) = resp.json()["results"]
    assert entry["result"][0]["type"] == "brushlabels"
    assert 0.0 <= entry["score"] <= 1.0


# -- auth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("auth", [None, ("labelstudio", "wrong"), ("someone", "else")])
def test_auth_required(backend: BackendHandle, auth: tuple[str, str] | None) -> None:
    for path in ("/setup", "/predict", "/webhook"):
        resp = httpx.post(f"{backend.url}{path}", json={}, auth=auth)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"] == "authentication required"


def test_non_loopback_without_auth_refuses_to_start() -> None:
    from ml_backend.config import BackendConfig

    with pytest.raises(ValueError, match="without authentication"):
        BackendConfig(host="0.0.0.0", basic_auth=None).validate()  # noqa: S104


# -- bad input ----------------------------------------------------------------------------------
def test_not_json(client: httpx.Client) -> None:
    resp = client.post("/predict", content=b"{not json", headers={"content-type": "text/plain"})
    assert_4xx(resp, 422, "not valid JSON")


def test_empty_tasks(client: httpx.Client) -> None:
    assert_4xx(client.post("/predict", json={"tasks": []}), 422, "non-empty list")


def test_no_image_in_task(client: httpx.Client) -> None:
    ctx = box_context([10, 10, 50, 50], 512, 512)
    resp = client.post("/predict", json=predict_body({"id": 1, "data": {"text": "x"}}, ctx))
    assert_4xx(resp, 422, "no image")


def test_corrupt_image(client: httpx.Client, tasks: dict[str, Any]) -> None:
    ctx = box_context([10, 10, 50, 50], 512, 512)
    resp = client.post("/predict", json=predict_body(tasks["broken"], ctx))
    assert_4xx(resp, 422, "could not be decoded")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"x": 10, "y": 10, "width": 0, "height": 20}, "zero or negative area"),
        ({"x": 90, "y": 10, "width": 30, "height": 20}, "outside the image"),
        ({"x": -20, "y": 10, "width": 30, "height": 20}, "outside the image"),
        ({"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 30}, "rotated"),
        ({"x": "a", "y": 10, "width": 20, "height": 20}, "must be a number"),
    ],
)
def test_bad_boxes(
    client: httpx.Client, tasks: dict[str, Any], value: dict[str, Any], fragment: str
) -> None:
    ctx = box_context([10, 10, 50, 50], 512, 512)
    ctx["result"][0]["value"].update(value)
    assert_4xx(client.post("/predict", json=predict_body(tasks["slice"], ctx)), 422, fragment)


def test_unknown_label(client: httpx.Client, tasks: dict[str, Any]) -> None:
    ctx = box_context([10, 10, 50, 50], 512, 512, label="Spleen")
    resp = client.post("/predict", json=predict_body(tasks["slice"], ctx))
    assert_4xx(resp, 422, "unknown label 'Spleen'")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://example.invalid/evil.png", "not the configured Label Studio host"),
        ("file:///etc/passwd", "unsupported image URL"),
        ("s3://bucket/key.png", "unsupported image URL"),
    ],
)
def test_image_urls_off_the_label_studio_host(
    client: httpx.Client, url: str, fragment: str
) -> None:
    ctx = box_context([10, 10, 50, 50], 512, 512)
    resp = client.post("/predict", json=predict_body({"id": 9, "data": {"image": url}}, ctx))
    assert_4xx(resp, 422, fragment)


def test_bad_label_config(client: httpx.Client, tasks: dict[str, Any]) -> None:
    body = predict_body(tasks["slice"], box_context([10, 10, 50, 50], 512, 512))
    body["label_config"] = "<View><Image name='image' value='$image'/></View>"
    assert_4xx(client.post("/predict", json=body), 422, "no <BrushLabels>")
    body["label_config"] = "<View><Image"
    assert_4xx(client.post("/predict", json=body), 422, "not valid XML")


def test_oversized_body(client: httpx.Client) -> None:
    big = b'{"tasks": ["' + b"x" * (33 * 1024 * 1024) + b'"]}'
    resp = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert_4xx(resp, 413, "body larger than")


def test_server_still_answers_after_bad_requests(
    client: httpx.Client, tasks: dict[str, Any]
) -> None:
    client.post("/predict", content=b"\x00\xff garbage")
    ctx = box_context([100, 100, 300, 300], 512, 512)
    resp = client.post("/predict", json=predict_body(tasks["slice"], ctx))
    assert resp.status_code == 200
    assert resp.json()["results"][0]["result"][0]["type"] == "brushlabels"


# -- back-pressure as Label Studio sees it ----------------------------------------------------
def test_label_studio_reports_a_busy_backend(
    label_studio: StudioHandle, litemedsam: Any, shared_data: Path
) -> None:
    """A saturated backend answers Label Studio's interactive call 503; LS passes it on.

    The backend fetches images from a stand-in host that holds its answers, so one request
    fills its single slot for as long as the test wants.
    """
    import secrets
    import threading

    from medcrowd.embedded import free_port
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app
    from tests.helpers import ImageHost, ThreadedServer

    slice_png = (shared_data / "sammed2d_demo" / "images" / "amos_0004_75.png").read_bytes()
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.ensure_project(f"busy {uuid.uuid4().hex[:8]}", XML)
    studio.import_images(project_id, [("busy.png", slice_png)])
    (task,) = list(studio.client.tasks.list(project=project_id, fields="all"))
    host = ImageHost(files={task.data["image"].removeprefix("/data/upload/"): slice_png})
    port = free_port()
    auth = ("labelstudio", secrets.token_urlsafe(12))
    config = BackendConfig(
        port=port,
        basic_auth=auth,
        label_studio_url=host.url,  # the held stand-in, not Label Studio itself
        max_inflight=1,
        max_queue=0,
        warm_on_import=False,
    )
    url = f"http://127.0.0.1:{port}"
    with ThreadedServer(create_app(config, predictor=litemedsam), port):
        ml_id = studio.connect_backend(project_id, url, auth)
        context = box_context([100, 100, 300, 300], 512, 512)
        host.hold()
        blocker = threading.Thread(
            target=httpx.post,
            args=(f"{url}/predict",),
            kwargs={"json": predict_body({"id": task.id, "data": dict(task.data)}, context),
                    "auth": auth, "timeout": 120},
        )  # fmt: skip
        blocker.start()
        try:
            assert host.arrived.acquire(timeout=60)
            answer = studio.interactive_predict(ml_id, task.id, context)
            assert answer.get("errors"), answer
            assert "503" in str(answer["errors"]), answer
        finally:
            host.release()
            blocker.join(timeout=120)
        answer = studio.interactive_predict(ml_id, task.id, context)
        assert "errors" not in answer, answer
        assert answer["data"]["result"][0]["type"] == "brushlabels"
    host.close()
