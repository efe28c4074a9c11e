"""Clicks the way Label Studio's labelling page sends them: alone, after the box.

Label Studio 1.23 sends with a smart-keypoint click only the keypoints of that label
(``getConnectedDynamicRegions`` keeps regions of the clicked region's own type), never the box
the mask came from, and after an accepted suggestion not even the earlier clicks. The engine
keeps each (task, annotator, label)'s last box and clicks (``ml_backend.clicks.Regions``), so
a click alone refines the box's mask; the answer's region id stays the same, so Label Studio's
accept replaces the earlier mask instead of adding a second one. Real backend over HTTP, real
LiteMedSAM, a real SAM-Med2D slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ml_backend.rle import rle_to_mask
from tests.helpers import XML, ImageHost, box_context, sammed2d_masks, serve_backend, tight_box

IMAGE = "/data/upload/1/liver.png"


@pytest.fixture(scope="module")
def click_backend(litemedsam: Any, shared_data: Path) -> Iterator[tuple[httpx.Client, Any, Any]]:
    """The backend (a fresh app over the session's model) and a host serving a liver slice."""
    organ = next(m for m in sammed2d_masks(shared_data) if m.mask_path.stem.endswith("liver_000"))
    with (
        ImageHost(files={"1/liver.png": organ.image_path.read_bytes()}) as host,
        serve_backend(host.url, "t", litemedsam, warm_on_import=False) as handle,
        httpx.Client(base_url=handle.url, auth=handle.auth, timeout=120) as client,
    ):
        yield client, handle.app.state.engine, organ


def _keypoint(x: float, y: float, shape: tuple[int, int], positive: bool) -> dict[str, Any]:
    """A smart keypoint as Label Studio serialises it (``is_positive`` on dynamic regions)."""
    height, width = shape
    return {
        "id": f"kp{x:.0f}_{y:.0f}", "from_name": "click", "to_name": "image",
        "type": "keypointlabels", "original_width": width, "original_height": height,
        "is_positive": positive,
        "value": {"x": 100.0 * x / width, "y": 100.0 * y / height, "width": 0.5,
                  "keypointlabels": ["Organ"]},
    }  # fmt: skip


def _ask(client: httpx.Client, context: dict[str, Any], task_id: int = 1) -> tuple[np.ndarray, str]:
    task = {"id": task_id, "data": {"image": IMAGE}}
    resp = client.post(
        "/predict", json={"tasks": [task], "label_config": XML, "params": {"context": context}}
    )
    assert resp.status_code == 200, resp.text
    region = resp.json()["results"][0]["result"][0]
    mask = rle_to_mask(region["value"]["rle"], region["original_height"], region["original_width"])
    return mask, str(region["id"])


def _deepest(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of ``mask`` farthest from its border (the centre of a pixel)."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return float(x) + 0.5, float(y) + 0.5


def test_a_click_alone_refines_the_last_box(
    click_backend: tuple[httpx.Client, Any, Any], litemedsam: Any
) -> None:
    client, engine, organ = click_backend
    image, truth = organ.load()
    shape = (int(truth.shape[0]), int(truth.shape[1]))
    box = tight_box(truth)
    first, first_id = _ask(client, box_context(box, shape[1], shape[0]))
    extra = first & ~truth
    assert extra.any(), "the box mask took nothing outside the organ: no negative click to make"
    negative = _deepest(extra)

    # the page sends the click alone; the engine answers it with the box it remembers
    second, second_id = _ask(client, {"result": [_keypoint(*negative, shape, False)]})
    litemedsam.set_image(image)
    expected = litemedsam.predict(box=box, points=[list(negative)], labels=[0])
    np.testing.assert_array_equal(second, expected.mask)
    assert not np.array_equal(second, first)
    assert second_id == first_id  # Label Studio's accept replaces the earlier mask

    # after an accept the page has deleted that keypoint: the next click arrives alone too,
    # and is answered with both clicks (the repeated one is not counted twice)
    missed = truth & ~second
    positive = _deepest(missed) if missed.any() else _deepest(truth)
    third, third_id = _ask(
        client,
        {"result": [_keypoint(*negative, shape, False), _keypoint(*positive, shape, True)]},
    )
    both = litemedsam.predict(box=box, points=[list(negative), list(positive)], labels=[0, 1])
    np.testing.assert_array_equal(third, both.mask)
    assert third_id == first_id

    # a new box starts a new region: a new id, and the clicks of the old one are gone
    moved = [box[0] + 3, box[1], box[2], box[3]]
    fresh, fresh_id = _ask(client, box_context(moved, shape[1], shape[0]))
    assert fresh_id != first_id
    np.testing.assert_array_equal(fresh, litemedsam.predict(box=moved).mask)
    after, _ = _ask(client, {"result": [_keypoint(*negative, shape, False)]})
    np.testing.assert_array_equal(
        after, litemedsam.predict(box=moved, points=[list(negative)], labels=[0]).mask
    )
    assert len(engine.regions) >= 1


def test_a_click_before_any_box_is_a_click_alone(
    click_backend: tuple[httpx.Client, Any, Any], litemedsam: Any
) -> None:
    client, _, organ = click_backend
    image, truth = organ.load()
    shape = (int(truth.shape[0]), int(truth.shape[1]))
    inside = _deepest(truth)
    mask, _ = _ask(client, {"result": [_keypoint(*inside, shape, True)]}, task_id=99)
    litemedsam.set_image(image)
    np.testing.assert_array_equal(mask, litemedsam.predict(points=[list(inside)], labels=[1]).mask)


def test_regions_merge_repeated_clicks_and_stay_bounded() -> None:
    from ml_backend.clicks import Regions

    regions = Regions(max_regions=2)
    assert regions.click(("1", "", "Organ"), [(5.0, 5.0)], [1]) is None  # no box yet
    regions.start(("1", "", "Organ"), (0.0, 0.0, 10.0, 10.0), "box:a")
    regions.click(("1", "", "Organ"), [(5.0, 5.0)], [1])
    state = regions.click(("1", "", "Organ"), [(5.2, 4.9), (2.0, 3.0)], [0, 0])
    assert state is not None
    assert state.points == ((5.0, 5.0), (2.0, 3.0))  # the repeated click is not added twice
    assert state.labels == (0, 0)  # ... and takes its latest label
    assert state.box_xyxy == (0.0, 0.0, 10.0, 10.0) and state.region == "box:a"
    regions.start(("2", "", "Organ"), (1.0, 1.0, 9.0, 9.0), "box:b")
    regions.start(("3", "", "Organ"), (1.0, 1.0, 9.0, 9.0), "box:c")
    assert len(regions) == 2
    assert regions.click(("1", "", "Organ"), [(5.0, 5.0)], [1]) is None  # the oldest went
    with pytest.raises(ValueError, match="max_regions"):
        Regions(max_regions=0)
