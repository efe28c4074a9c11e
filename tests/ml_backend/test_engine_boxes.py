"""Issue 15's 422 under load: a box exactly one pixel wide, refused by a rounding error.

Found with ``benchmarks/load_volunteers.py``'s own images and annotator models, offline: in
3,381 simulated boxes (400 task images, one box per non-spammer model each) one was refused,
a "sloppy" volunteer's box on an organ at the right edge of a 155 × 225 slice,
``[154.0, 201.02, 155.0, 219.31]``: ``medcrowd.volunteer_sim.box_of`` clips it to the image and
keeps it at least one pixel wide, Label Studio carries it in percent of the image, and the
backend's way back to pixels, ``(x + width) / 100 * W - x / 100 * W``, gives 0.9999999999999999,
which ``ml_backend.labeling.box_prompt_from_context`` refused as "smaller than one pixel" (422)
until its check got a 1e-6 px tolerance. A box of one pixel is what the rule allows, so the
refusal was ours. Real backend over HTTP, real LiteMedSAM, the real 225 × 155 SAM-Med2D slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from medcrowd.volunteer_sim import rectangle
from tests.helpers import XML, ImageHost, sammed2d_masks, serve_backend

# the same rounding on the 225-wide slice: x0 = 2/3 px, x1 = x0 + 1 px
ONE_PIXEL_WIDE = [2 / 3, 10.0, 2 / 3 + 1, 60.0]


def test_a_one_pixel_wide_box_is_answered(litemedsam: Any, shared_data: Path) -> None:
    organ = next(m for m in sammed2d_masks(shared_data) if m.image_path.stem == "s0619_32")
    image, _ = organ.load()
    height, width = image.shape[:2]
    assert (width, height) == (225, 155)
    x0, _, x1, _ = ONE_PIXEL_WIDE
    x, w = 100 * x0 / width, 100 * (x1 - x0) / width
    assert (x + w) / 100 * width - x / 100 * width < 1.0  # the rounding, as the backend does it
    body = {
        "tasks": [{"id": 1, "data": {"image": "/data/upload/1/slice.png"}}],
        "label_config": XML,
        "params": {"context": {"result": [rectangle(ONE_PIXEL_WIDE, width, height, "Organ")]}},
    }
    with (
        ImageHost(files={"1/slice.png": organ.image_path.read_bytes()}) as host,
        serve_backend(host.url, "t", litemedsam, warm_on_import=False) as backend,
        httpx.Client(base_url=backend.url, auth=backend.auth, timeout=120) as client,
    ):
        resp = client.post("/predict", json=body)
    assert resp.status_code == 200, resp.text
    (region,) = resp.json()["results"][0]["result"]
    assert region["type"] == "brushlabels"
