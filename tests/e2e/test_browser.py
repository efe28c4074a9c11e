"""A volunteer in a real browser: log in, draw a box, get the MedSAM mask, submit.

Headless Chromium (Debian's ``/usr/bin/chromium``, driven by Python Playwright) logs in to the
session's Label Studio as a freshly signed-up volunteer, opens a SAM-Med2D slice, turns on
Auto-Annotation, picks the smart rectangle tool and the "Organ" label, and drags a box around
the liver. Label Studio asks our backend over HTTP; the brush mask it answers with appears as
a suggestion, is accepted and submitted. The annotation is then read back with the admin
token: it must hold the volunteer's box and a ``brushlabels`` mask that matches the organ.

Screenshots of the labelled task (mask shown, before and after submit) are written to
``$MEDCROWD_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medcrowd.studio import Studio
from tests.helpers import (
    StudioHandle,
    box_for_mask,
    browser_marks,
    brush_union,
    dice,
    open_page,
    open_task,
    screenshot,
    submit,
    tight_box,
)

SLICE = "amos_0004_75"
ORGAN_MASK = f"{SLICE}_liver_000"
TIMEOUT_MS = 60_000

pytestmark = browser_marks()


def test_volunteer_draws_box_and_submits_medsam_mask(
    browser: Any, label_studio: StudioHandle, liver_slice_task: dict[str, Any]
) -> None:
    url = label_studio.url.rstrip("/")
    gt: np.ndarray = liver_slice_task["gt"]
    shape = (int(gt.shape[0]), int(gt.shape[1]))
    with open_page(browser, TIMEOUT_MS, "browser_failure.png") as page:
        # Log in, open the task in the labeling view, turn on Auto-Annotation.
        open_task(page, url, liver_slice_task)
        # With Auto-Annotation on, the smart (ML) variant of the box tool (smart="true" in the
        # config) appears in its own toolbar group at the bottom; pick it.
        page.locator(".lsf-toolbar .lsf-tool_smart").first.click()
        page.locator(".lsf-tool_smart.lsf-tool_active").first.wait_for()
        # The first inline label row belongs to the RectangleLabels control ("box").
        page.locator(".lsf-labels").first.locator(".lsf-label", has_text="Organ").click()

        box = tight_box(gt)
        box_for_mask(page, box, shape)

        # The mask arrives as a suggestion; accepting it makes it a region of the annotation.
        accept = page.locator("[data-testid=bottombar-accept-suggestions-button]")
        accept.click()
        accept.wait_for(state="detached")
        page.wait_for_timeout(500)  # let the canvas repaint the accepted mask
        screenshot(page, "browser_mask_before_submit.png")

        submit(page, liver_slice_task["task"])
        page.get_by_text("Annotation saved successfully", exact=True).wait_for()
        screenshot(page, "browser_mask_after_submit.png")

    # What Label Studio stored, read with the admin token.
    studio: Studio = liver_slice_task["studio"]
    annotations = list(studio.client.annotations.list(id=liver_slice_task["task"]))
    assert len(annotations) == 1
    annotation = annotations[0]
    assert annotation.completed_by == liver_slice_task["user_id"]
    # Label Studio keeps the smart tool's box only as the prompt: the accepted suggestion
    # replaces it, so the stored result is the brush mask alone.
    types = [r["type"] for r in annotation.result]
    assert types.count("brushlabels") == 1, annotation.result
    assert set(types) <= {"brushlabels", "rectanglelabels"}, annotation.result
    brush = next(r for r in annotation.result if r["type"] == "brushlabels")
    assert (brush["from_name"], brush["to_name"]) == ("mask", "image")
    assert brush["value"]["brushlabels"] == ["Organ"]
    mask = brush_union([brush], shape)
    score = dice(mask, gt)
    print(f"\nbrowser-drawn box {box} -> MedSAM mask, Dice vs {ORGAN_MASK}: {score:.3f}")
    assert score >= 0.85  # the bar for a GT-box mask, as in test_interactive
