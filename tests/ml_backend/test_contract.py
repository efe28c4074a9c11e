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
