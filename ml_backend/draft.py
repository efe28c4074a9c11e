"""Prompt-free pre-annotation: a trained downstream segmenter drafts the whole mask.

When ``medcrowd backend serve --draft-model FILE`` is given (a file from
``medcrowd train segmenter``), a ``/predict`` call *without* a drawn rectangle — Label
Studio's batch pre-annotation, or a task opened with "use predictions to pre-label" — gets the
segmenter's mask for the whole image as a ``brushlabels`` prediction with model version
``draft-<file hash>``. Volunteers start from that draft and correct it, or draw a box for a
MedSAM answer as before. Without a draft model such a call keeps answering ``[]``.

The segmenter (MONAI U-Net) is loaded once at start; ``predict_image`` resizes or tiles as
the model was trained (see :class:`segmenter.trainer.Segmenter`).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.device import resolve_device
from ml_backend.errors import ModelUnavailable

__all__ = ["DraftModel"]


class DraftModel:
    """A trained :class:`segmenter.trainer.Segmenter` behind a lock.

    Args:
        path: a ``medcrowd train segmenter`` file.
        device: ``auto`` | ``cpu`` | ``cuda[:N]``, resolved by
            :func:`ml_backend.device.resolve_device` (the segmenter takes a resolved one).

    Raises:
        ModelUnavailable: no file, not a segmenter file, or the device is unusable (the
            message says which).
    """

    def __init__(self, path: Path, device: str = "auto") -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelUnavailable(f"draft model {path} does not exist")
        try:
            resolved = resolve_device(device)
        except ValueError as exc:
            raise ModelUnavailable(f"draft model {path}: {exc}") from None
        from segmenter.trainer import Segmenter

        try:
            self.segmenter = Segmenter.load(path, device=resolved)
        except (ValueError, OSError, RuntimeError) as exc:
            raise ModelUnavailable(f"draft model {path} cannot be loaded: {exc}") from exc
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        self.model_version = f"draft-{digest}"
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) bool mask for an (H, W) gray or (H, W, 3) RGB image."""
        with self._lock:
            return np.asarray(self.segmenter.predict_image(image)).astype(bool)

    def describe(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "size": self.segmenter.config.size}
