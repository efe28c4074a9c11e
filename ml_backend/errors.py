"""Exceptions the ML backend raises; the HTTP server maps them to status codes.

``InvalidInput`` is the client's fault (bad image, box outside the image, unknown label) and
becomes a 4xx with its message. ``ModelUnavailable`` is the operator's (weights missing, a
checksum mismatch, CUDA asked for but absent) and is raised at start-up with a clear message.
"""

from __future__ import annotations

__all__ = ["InvalidInput", "ModelUnavailable", "UpstreamError"]


class InvalidInput(ValueError):
    """Bad image or box from a client (maps to HTTP 4xx)."""


class ModelUnavailable(RuntimeError):
    """Weights missing, checksum mismatch or an unusable device."""


class UpstreamError(RuntimeError):
    """Label Studio could not be reached or failed while serving an image (maps to 502)."""
