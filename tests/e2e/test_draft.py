"""Prompt-free pre-annotation: a trained segmenter drafts masks for tasks opened without a box.

A small MONAI segmenter is trained on ISBI slices (64 px, a few dozen steps — weak but
real), served by the real backend (``draft_model``) next to LiteMedSAM, and Label Studio's
own "Retrieve predictions" action asks the backend for every task: each task then holds a
``draft-<hash>`` brush prediction equal to the segmenter's mask for that image. A drawn box
still gets MedSAM's answer. A missing or corrupt draft file stops the backend at start with
a clear message.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcrowd.settings import config_path
from medcrowd.studio import Studio
from ml_backend.errors import ModelUnavailable
from ml_backend.rle import rle_to_mask
from tests.helpers import StudioHandle, ThreadedServer, shared_data_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def draft_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    from segmenter.data import resize_pair
    from segmenter.trainer import Segmenter, SegmenterConfig

    src = shared_data_dir() / "isbi2012_em" / "train"
    if not (src / "image").is_dir():
        pytest.skip(f"ISBI 2012 not found under {src}")
    paths = sorted((src / "image").iterdir())
    pairs = [
        resize_pair(np.asarray(Image.open(p)), (np.asarray(Image.open(src / "label" / p.name))
                    == 0).astype(np.uint8), 64)
        for p in paths[:8]
    ]  # fmt: skip
    net = Segmenter(SegmenterConfig(size=64, channels=(8, 16, 32), steps=40, device="cpu"))
    net.fit(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
    path = tmp_path_factory.mktemp("draft") / "segmenter.pt"
    net.save(path)
    return path, paths[8:11]


def test_retrieve_predictions_gives_drafts(
    label_studio: StudioHandle, litemedsam: Any, draft_file: tuple[Path, list[Path]]
) -> None:
    from medcrowd.embedded import free_port
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app
    from segmenter.trainer import Segmenter

    model, images = draft_file
    port = free_port()
    auth = ("labelstudio", secrets.token_urlsafe(16))
    config = BackendConfig(port=port, basic_auth=auth, label_studio_url=label_studio.url,
                           label_studio_token=label_studio.token, draft_model=model,
                           device="cpu")  # fmt: skip
    app = create_app(config, predictor=litemedsam)
    admin = Studio(label_studio.url, label_studio.token)
    pid = admin.ensure_project(f"draft {uuid.uuid4().hex[:8]}",
                               config_path("labeling_box_brush.xml").read_text())  # fmt: skip
    admin.import_images(pid, [(p.name.replace(".tif", ".png"), _png(p)) for p in images])
    tasks = sorted(admin.client.tasks.list(project=pid), key=lambda t: t.id)
    with ThreadedServer(app, port):
        ml_id = admin.connect_backend(pid, f"http://127.0.0.1:{port}", auth)
        admin.request(
            "POST",
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
            json={"selectedItems": {"all": True, "excluded": []}},
        )
        # a drawn box still goes to MedSAM, not to the draft
        h, w = 512, 512
        boxed = admin.interactive_predict(ml_id, tasks[0].id, {"result": [{
            "from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "original_width": w, "original_height": h,
            "value": {"x": 20, "y": 20, "width": 30, "height": 30, "rotation": 0,
                      "rectanglelabels": ["Organ"]}}]})  # fmt: skip
    reference = Segmenter.load(model, device="cpu")
    version = app.state.engine.draft.model_version
    assert version.startswith("draft-")
    drafted = 0
    for task, path in zip(tasks, images, strict=True):
        preds = [p for p in admin.client.predictions.list(task=task.id)
                 if p.model_version == version]  # fmt: skip
        expected = reference.predict_image(np.asarray(Image.open(path))).astype(bool)
        if not expected.any():
            assert preds == []
            continue
        assert len(preds) == 1, [
            p.model_version for p in admin.client.predictions.list(task=task.id)
        ]
        region = preds[0].result[0]
        assert region["from_name"] == "mask" and region["value"]["brushlabels"] == ["Organ"]
        got = rle_to_mask(region["value"]["rle"], h, w)
        assert np.array_equal(got, expected)
        drafted += 1
    assert drafted >= 1
    text = str(boxed)
    assert "draft-" not in text and "brushlabels" in text


def test_missing_or_corrupt_draft_model_is_a_clear_start_error(
    litemedsam: Any, tmp_path: Path
) -> None:
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app

    with pytest.raises(ModelUnavailable, match="does not exist"):
        create_app(BackendConfig(draft_model=tmp_path / "nope.pt"), predictor=litemedsam)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match="cannot be loaded"):
        create_app(BackendConfig(draft_model=bad), predictor=litemedsam)


def _png(path: Path) -> bytes:
    import io

    buf = io.BytesIO()
    Image.open(path).save(buf, format="PNG")
    return buf.getvalue()
