"""The served ``/openapi.json`` is the contract of :mod:`ml_backend.contract`, and the limits it
states are the ones the server enforces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medcrowd.embedded import free_port
from ml_backend.config import BackendConfig
from ml_backend.contract import (
    MAX_LABEL_CONFIG_CHARS,
    PREDICT_ERRORS,
    PREDICT_SCHEMA,
    SETUP_SCHEMA,
    WEBHOOK_SCHEMA,
)
from ml_backend.server import create_app
from tests.helpers import XML, ThreadedServer

AUTH = ("labelstudio", "contract-secret")


@pytest.fixture(scope="module")
def client(litemedsam: Any) -> Iterator[httpx.Client]:
    port = free_port()
    config = BackendConfig(port=port, basic_auth=AUTH, warm_on_import=False)
    with ThreadedServer(create_app(config, predictor=litemedsam), port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=AUTH, timeout=60) as c:
            yield c


def test_the_document_carries_the_schemas(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "medcrowd ML backend"
    assert document["components"]["securitySchemes"] == {
        "basic": {"type": "http", "scheme": "basic"}
    }
    for path, schema in [
        ("/predict", PREDICT_SCHEMA),
        ("/setup", SETUP_SCHEMA),
        ("/webhook", WEBHOOK_SCHEMA),
    ]:
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == schema, path
        assert operation["security"] == [{"basic": []}]
    responses = document["paths"]["/predict"]["post"]["responses"]
    assert {str(code) for code in PREDICT_ERRORS} <= set(responses)
    assert "security" not in document["paths"]["/health"]["get"]


def test_the_stated_label_config_limit_is_enforced(client: httpx.Client) -> None:
    padded = XML + " " * (MAX_LABEL_CONFIG_CHARS - len(XML))
    assert client.post("/setup", json={"schema": padded}).status_code == 200
    resp = client.post("/setup", json={"schema": padded + " "})
    assert resp.status_code == 422
    assert f"longer than {MAX_LABEL_CONFIG_CHARS} characters" in resp.json()["error"]


# -- clicks over HTTP ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def click_backend(litemedsam: Any, shared_data: Any) -> Iterator[tuple[httpx.Client, Any, Any]]:
    """The backend (a fresh app over the session's model) and a host serving one demo slice."""
    from tests.helpers import ImageHost, sammed2d_masks

    organ = next(m for m in sammed2d_masks(shared_data) if m.mask_path.stem.endswith("liver_000"))
    host = ImageHost(files={"1/liver.png": organ.image_path.read_bytes()})
    port = free_port()
    config = BackendConfig(
        port=port, basic_auth=AUTH, warm_on_import=False, label_studio_url=host.url,
        label_studio_token="t",
    )  # fmt: skip
    app = create_app(config, predictor=litemedsam)
    with ThreadedServer(app, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=AUTH, timeout=120) as c:
            yield c, app, organ
    host.close()


def _keypoint(x: float, y: float, width: int, height: int, positive: bool) -> dict[str, Any]:
    return {
        "from_name": "click", "to_name": "image", "type": "keypointlabels",
        "original_width": width, "original_height": height, "is_positive": positive,
        "value": {"x": 100.0 * x / width, "y": 100.0 * y / height, "width": 0.5,
                  "keypointlabels": ["Organ"]},
    }  # fmt: skip


def _ask(client: httpx.Client, context: dict[str, Any], task_id: int = 1) -> Any:
    from ml_backend.rle import rle_to_mask

    task = {"id": task_id, "data": {"image": "/data/upload/1/liver.png"}}
    resp = client.post(
        "/predict", json={"tasks": [task], "label_config": XML, "params": {"context": context}}
    )
    assert resp.status_code == 200, resp.text
    region = resp.json()["results"][0]["result"][0]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Organ"]
    height, width = region["original_height"], region["original_width"]
    return rle_to_mask(region["value"]["rle"], height, width)


def test_a_negative_click_updates_the_mask_and_regions_are_remembered(
    click_backend: tuple[httpx.Client, Any, Any], litemedsam: Any
) -> None:
    import numpy as np

    from tests.helpers import box_context, tight_box

    client, app, organ = click_backend
    engine = app.state.engine
    image, truth = organ.load()
    height, width = truth.shape
    box = tight_box(truth)
    context = box_context(box, width, height)
    first = _ask(client, context)
    litemedsam.set_image(image)
    np.testing.assert_array_equal(first, litemedsam.predict_box(box)[0])  # box only: as before
    regions = len(engine.clicks)
    false = first & ~truth
    rows, cols = np.nonzero(false if false.any() else first)
    negative = _keypoint(float(cols[0]) + 0.5, float(rows[0]) + 0.5, width, height, False)
    clicked = {"result": [*context["result"], negative]}
    second = _ask(client, clicked)
    expected = litemedsam.predict(
        box=box, points=[[float(cols[0]) + 0.5, float(rows[0]) + 0.5]], labels=[0]
    )
    np.testing.assert_array_equal(second, expected.mask)  # the click reached the model
    assert not np.array_equal(second, first)
    assert len(engine.clicks) == regions  # the same region
    # with logits fed back (SAM-family behaviour), the remembered answer goes in as mask_input
    engine.feed_logits = True
    try:
        hits = engine.clicks.hits
        _ask(client, clicked)
        assert engine.clicks.hits == hits + 1
    finally:
        engine.feed_logits = False
    # a new box is a new region
    moved = box_context([box[0] + 2, box[1], box[2], box[3]], width, height)
    _ask(client, moved)
    assert len(engine.clicks) == regions + 1


def test_a_bad_click_is_422(click_backend: tuple[httpx.Client, Any, Any]) -> None:
    client, _, organ = click_backend
    _, truth = organ.load()
    height, width = truth.shape
    task = {"id": 1, "data": {"image": "/data/upload/1/liver.png"}}
    off = _keypoint(width * 1.2, 10.0, width, height, True)
    resp = client.post(
        "/predict",
        json={"tasks": [task], "label_config": XML, "params": {"context": {"result": [off]}}},
    )
    assert resp.status_code == 422
    assert "keypoint lies outside the image" in resp.json()["error"]
