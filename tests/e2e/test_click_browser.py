"""A volunteer corrects the MedSAM mask by clicking, in a real browser (issue 16).

Headless Chromium (Debian's ``/usr/bin/chromium``, Python Playwright) on the session's Label
Studio, with Auto-Annotation and auto-accept on (what ``medcrowd up``'s plugin turns on for a
volunteer): the volunteer draws a box around the liver and the backend's mask is accepted; then,
with the smart key-point tool of ``configs/labeling_box_brush.xml`` (``KeyPointLabels
name="click"``):

1. a **positive click** on the part of the liver the mask missed;
2. a **negative click** (Alt-click) on a pixel the mask took outside the liver — with the mask
   hidden first (the eye button of its row in the region list), because Label Studio 1.23 hands
   a click on a visible region to that region (``ImageView.handleOnClick``: a hovered region
   gets the click), and selecting the region deselects the key-point label, so the key-point
   tool ignores the click (``KeyPoint.clickEv``). After every accepted answer the key-point
   label is deselected too, so it is picked again before each click; the refined mask
   replaces the hidden one hidden, and is shown again with the same button.

Label Studio sends each click alone (``getConnectedDynamicRegions`` sends the regions of the
clicked region's type only; the accepted suggestion deleted the box and the earlier keypoint):
the backend answers it from the volunteer's last box and every click so far
(``ml_backend.clicks.Regions``), with the same region id, so the accept replaces the mask
instead of adding one. Each time the test checks the request Label Studio sent, that the mask
changed, and that the page's annotation holds one mask equal to the backend's answer (read
from the page's annotation store, not assumed); after submit, that the stored annotation holds
that updated mask. Screenshots go to ``test-artifacts/``. The stock LiteMedSAM is not trained
with clicks (docs/interactive.md): the Dice it reaches is printed, not required to rise.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from scipy import ndimage

from medcrowd.studio import Studio
from tests.helpers import (
    StudioHandle,
    box_for_mask,
    browser_marks,
    brush_union,
    dice,
    is_prediction,
    label_rows,
    open_page,
    open_task,
    pick_label,
    screenshot,
    submit,
    tight_box,
    to_page,
)

SLICE = "amos_0004_75"
ORGAN_MASK = f"{SLICE}_liver_000"
TIMEOUT_MS = 60_000
ANNOTATION = "() => window.Htx.annotationStore.selected"

pytestmark = browser_marks()


def _deepest(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) image pixels of the centre of the pixel of ``mask`` farthest from its border."""
    distance = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return float(x) + 0.5, float(y) + 0.5


def _smart_tool(page: Any, name: str) -> None:
    """Pick a tool of the Auto-Detect group (its list shows while the group is hovered)."""
    page.locator(".lsf-toolbar .lsf-tool_smart").first.hover()
    page.locator(f".lsf-toolbar__smart [aria-label={name}]").first.click()
    page.locator(f".lsf-tool_active[aria-label={name}]").first.wait_for()


def _page_masks(page: Any, shape: tuple[int, int]) -> list[np.ndarray]:
    """The brush masks of the annotation the page holds now (its own serialisation)."""
    result = page.evaluate(f"() => ({ANNOTATION})().serializeAnnotation()")
    return [brush_union([r], shape) for r in result if r.get("type") == "brushlabels"]


def _click(
    page: Any, point: tuple[float, float], shape: tuple[int, int], *, negative: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Click (Alt-click when ``negative``) at ``point`` (image pixels) with the key-point tool;
    returns the interactive request's context and Label Studio's answer (200, no errors)."""
    x, y = to_page(page, *point, shape)
    with page.expect_response(is_prediction) as predicted:
        if negative:
            page.keyboard.down("Alt")
        page.mouse.click(x, y)
        if negative:
            page.keyboard.up("Alt")
    response = predicted.value
    assert response.status == 200, response.text()
    answer: dict[str, Any] = response.json()
    assert "errors" not in answer, answer
    context: dict[str, Any] = json.loads(response.request.post_data)["context"]
    return context, answer


def _one_region(answer: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    (region,) = [r for r in answer["data"]["result"] if r["type"] == "brushlabels"]
    return brush_union([region], shape), str(region["id"])


def test_volunteer_corrects_the_mask_with_clicks_and_submits(
    browser: Any, label_studio: StudioHandle, liver_slice_task: dict[str, Any]
) -> None:
    url = label_studio.url.rstrip("/")
    gt: np.ndarray = liver_slice_task["gt"]
    shape = (int(gt.shape[0]), int(gt.shape[1]))
    rows = label_rows(liver_slice_task["label_config"])
    with open_page(browser, TIMEOUT_MS, "click_failure.png") as page:
        open_task(page, url, liver_slice_task)
        page.locator("[data-testid=bottombar-auto-accept-toggle]").check(force=True)

        # the box → the backend's mask, accepted at once
        _smart_tool(page, "rectangle-tool")
        pick_label(page, rows, "RectangleLabels", "Organ")
        box_mask, region_id = _one_region(box_for_mask(page, tight_box(gt), shape), shape)
        page.locator(".lsf-outliner-item").first.wait_for()
        page.wait_for_timeout(500)  # the canvas repaints the accepted mask
        screenshot(page, "click_1_box_mask.png")
        missed = gt & ~box_mask
        extra = box_mask & ~gt
        assert missed.any() and extra.any(), "the box mask is perfect: nothing to click on"

        # 1. a positive click where the mask missed the liver (outside the mask)
        _smart_tool(page, "key-point-tool")
        pick_label(page, rows, "KeyPointLabels", "Organ")
        positive = _deepest(missed)
        context, answer = _click(page, positive, shape, negative=False)
        assert [(r["type"], r.get("is_positive")) for r in context["result"]] == [
            ("keypointlabels", True)
        ]  # the click alone: no box, as Label Studio 1.23 sends it
        after_positive, same_id = _one_region(answer, shape)
        assert same_id == region_id
        assert not np.array_equal(after_positive, box_mask), "the positive click changed nothing"
        page.wait_for_timeout(500)
        (on_page,) = _page_masks(page, shape)  # replaced, not a second mask
        np.testing.assert_array_equal(on_page, after_positive)

        # 2. a negative click on what the mask took outside the liver: hide the mask (its
        # eye button), pick the click label again, Alt-click
        extra = after_positive & ~gt
        assert extra.any(), "the mask took nothing outside the liver: no negative click to make"
        negative = _deepest(extra)
        row = page.locator(".lsf-outliner-item").first
        row.hover()
        row.locator(".lsf-outliner-item__control_type_visibility button").click()
        page.wait_for_function(f"() => ({ANNOTATION})().regions.every(r => r.hidden)")
        pick_label(page, rows, "KeyPointLabels", "Organ")
        context, answer = _click(page, negative, shape, negative=True)
        assert [(r["type"], r.get("is_positive")) for r in context["result"]] == [
            ("keypointlabels", False)
        ]
        after_negative, same_id = _one_region(answer, shape)
        assert same_id == region_id
        assert not np.array_equal(after_negative, after_positive), (
            "the negative click changed nothing"
        )
        page.wait_for_timeout(500)
        (on_page,) = _page_masks(page, shape)
        np.testing.assert_array_equal(on_page, after_negative)
        # the refined mask replaced the hidden one and is hidden too: show it again
        row.hover()
        row.locator(".lsf-outliner-item__control_type_visibility button").click()
        page.wait_for_function(f"() => ({ANNOTATION})().regions.every(r => !r.hidden)")
        page.wait_for_timeout(500)
        screenshot(page, "click_2_after_negative_click.png")

        submit(page, liver_slice_task["task"])
        page.get_by_text("Annotation saved successfully", exact=True).wait_for()

    # what Label Studio stored, read with the admin token: the updated mask, once
    studio: Studio = liver_slice_task["studio"]
    (annotation,) = list(studio.client.annotations.list(id=liver_slice_task["task"]))
    assert annotation.completed_by == liver_slice_task["user_id"]
    brushes = [r for r in annotation.result if r["type"] == "brushlabels"]
    assert len(brushes) == 1, annotation.result
    stored = brush_union(brushes, shape)
    np.testing.assert_array_equal(stored, after_negative)
    assert not np.array_equal(stored, box_mask)
    nx, ny = int(negative[0]), int(negative[1])
    px, py = int(positive[0]), int(positive[1])
    print(
        f"\nDice vs {ORGAN_MASK}: box {dice(box_mask, gt):.3f}, after the positive click "
        f"{dice(after_positive, gt):.3f} (clicked pixel now in the mask: "
        f"{bool(after_positive[py, px])}), after the negative click {dice(after_negative, gt):.3f} "
        f"(clicked pixel left out: {not after_negative[ny, nx]}); "
        f"{int((after_negative != box_mask).sum())} pixels changed in all"
    )
