"""The HTTP contract as data: JSON schemas of the requests and errors, and the OpenAPI document.

Served at ``/openapi.json`` (behind auth like every route but ``/health``). Parsing stays
hand-written in :mod:`ml_backend.server` and :mod:`ml_backend.engine` — these schemas describe
what they accept, for clients and for the schemathesis fuzz test, and are not used to
validate. The endpoints are described in DESIGN.md and :mod:`ml_backend.server`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERRORS",
    "MAX_LABEL_CONFIG_CHARS",
    "PREDICT_ERRORS",
    "PREDICT_SCHEMA",
    "SETUP_SCHEMA",
    "WEBHOOK_SCHEMA",
    "json_body",
    "openapi_document",
]

MAX_LABEL_CONFIG_CHARS = 256 * 1024
"""Largest ``label_config``/``schema`` accepted; real configs are a few KiB (parsed configs
are memoised, so the bound also caps that memory)."""

TITLE = "medcrowd ML backend"
VERSION = "1"
DESCRIPTION = (
    "Label Studio ML-backend contract (DESIGN.md); every route but /health needs HTTP Basic auth."
)

_STR: dict[str, Any] = {"type": "string"}
_NUM: dict[str, Any] = {"type": "number"}
_INT: dict[str, Any] = {"type": "integer"}

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": _INT,
        "data": {"type": "object", "properties": {"image": _STR}, "required": ["image"]},
    },
}
"""A Label Studio task: its image URL under ``data.image`` (the key the config names)."""

RECTANGLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "value"],
    "properties": {
        "original_width": _INT,
        "original_height": _INT,
        "image_rotation": _NUM,
        "from_name": _STR,
        "to_name": _STR,
        "type": {"type": "string", "enum": ["rectanglelabels"]},
        "value": {
            "type": "object",
            "required": ["x", "y", "width", "height", "rectanglelabels"],
            "properties": {
                "x": _NUM,
                "y": _NUM,
                "width": _NUM,
                "height": _NUM,
                "rotation": _NUM,
                "rectanglelabels": {"type": "array", "items": _STR, "minItems": 1},
            },
        },
    },
}
"""The volunteer's box: x, y, width, height in percent of the original image."""

KEYPOINT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "value"],
    "properties": {
        "original_width": _INT,
        "original_height": _INT,
        "from_name": _STR,
        "to_name": _STR,
        "is_positive": {"type": ["boolean", "integer"]},
        "type": {"type": "string", "enum": ["keypointlabels"]},
        "value": {
            "type": "object",
            "required": ["x", "y"],
            "properties": {
                "x": _NUM,
                "y": _NUM,
                "width": _NUM,
                "keypointlabels": {"type": "array", "items": _STR},
            },
        },
    },
}
"""A volunteer's click: x, y in percent of the original image; ``is_positive`` false (or 0)
for a negative click (Label Studio's SAM example sets it with the Alt key)."""

XML_SCHEMA: dict[str, Any] = {"type": "string", "maxLength": MAX_LABEL_CONFIG_CHARS}

PREDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tasks", "label_config"],
    "properties": {
        "tasks": {"type": "array", "minItems": 1, "items": TASK_SCHEMA},
        "project": _STR,
        "label_config": XML_SCHEMA,
        "params": {
            "type": "object",
            "properties": {
                "login": {"type": ["string", "null"]},
                "password": {"type": ["string", "null"]},
                "context": {
                    "type": ["object", "null"],
                    "properties": {
                        "result": {
                            "type": "array",
                            "items": {"anyOf": [RECTANGLE_SCHEMA, KEYPOINT_SCHEMA]},
                        }
                    },
                },
            },
        },
    },
}
"""``POST /predict``: the tasks, the project's labeling config and, for an interactive call,
the drawn rectangle and the clicks (keypoints) in ``params.context``."""

SETUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "project": _STR,
        "schema": XML_SCHEMA,
        "hostname": _STR,
        "access_token": {"type": ["string", "null"]},
        "extra_params": {"type": ["object", "null"]},
    },
}
"""``POST /setup``: the project's labeling config under ``schema``."""

WEBHOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": _STR,
        "tasks": {"type": "array", "items": TASK_SCHEMA},
        "project": {"type": "object", "properties": {"label_config": XML_SCHEMA}},
    },
}
"""``POST /webhook``: ``TASKS_CREATED`` with the new tasks warms their embeddings."""


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route taking a JSON body ``schema``, behind Basic auth."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        },
        "security": [{"basic": []}],
    }


def _error(description: str) -> dict[str, Any]:
    schema = {"type": "object", "required": ["error"], "properties": {"error": _STR}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("missing or wrong HTTP Basic credentials"),
    408: _error("the body did not arrive within request_timeout_s"),
    413: _error("body larger than max_body_bytes"),
    422: _error("the request is malformed or asks for something impossible"),
}
"""Error answers every authenticated route may give, each ``{"error": message}``."""

PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    502: _error("Label Studio failed to serve the task's image"),
    503: _error("too many predictions running and queued; retry after Retry-After seconds"),
    504: _error("the prediction took longer than request_timeout_s"),
}
"""Error answers of ``/predict``: those of :data:`ERRORS` plus upstream, busy and timeout."""


def openapi_document(routes: list[Any]) -> dict[str, Any]:
    """The OpenAPI document of the app's ``routes``, with HTTP Basic as security scheme."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=TITLE, version=VERSION, description=DESCRIPTION, routes=routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "basic": {"type": "http", "scheme": "basic"}
    }
    return schema
