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

import importlib.util
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcrowd.settings import config_path
from medcrowd.studio import Studio
from ml_backend.rle import rle_to_mask
from tests.helpers import BackendHandle, StudioHandle, dice, tight_box

CHROMIUM = Path(os.environ.get("MEDCROWD_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("MEDCROWD_TEST_ARTIFACTS", "test-artifacts"))
# Flags that let Chromium run headless as root in a container without network access.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLICE = "amos_0004_75"
ORGAN_MASK = f"{SLICE}_liver_000"
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="Python Playwright is not installed (pip install playwright)",
    ),
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MEDCROWD_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def volunteer_task(
    label_studio: StudioHandle, backend: BackendHandle, shared_data: Path
) -> dict[str, Any]:
    """A project with one slice, our backend connected, and a volunteer who can log in."""
    studio = Studio(label_studio.url, label_studio.token)
    project_id = studio.ensure_project(
        f"e2e browser {uuid.uuid4().hex[:8]}", config_path("labeling_box_brush.xml").read_text()
    )
    image = shared_data / "sammed2d_demo" / "images" / f"{SLICE}.png"
    report = studio.import_images(project_id, [(image.name, image.read_bytes())])
    assert report.created == 1
    studio.connect_backend(project_id, backend.url, backend.auth)
    (task,) = list(studio.client.tasks.list(project=project_id))
    email = f"volunteer-{uuid.uuid4().hex[:8]}@example.com"
    password = secrets.token_urlsafe(12)
    user_id, _ = studio.create_volunteer(email, password)
    gt = np.asarray(Image.open(shared_data / "sammed2d_demo" / "masks" / f"{ORGAN_MASK}.png"))
    return {
        "studio": studio,
        "project": project_id,
        "task": int(task.id),
        "email": email,
        "password": password,
        "user_id": user_id,
        "gt": gt > 0,
    }


def _draw_box(page: Any, box: list[float], width: int, height: int) -> None:
    """Drag the mouse over the image from (x0, y0) to (x1, y1) in image pixels.

    The mapping comes from the (hidden) ``<img>`` Label Studio lays out under its canvas, not
    from the Konva stage: the image may be drawn larger than the stage and shifted (with this
    viewport, 811 px at -21 px inside a 769 px stage), and the stage's box would misplace the
    drag by several image pixels.
    """
    frame = page.locator(".lsf-main-content img[alt=image]").first.bounding_box()
    assert frame is not None
    sx, sy = frame["width"] / width, frame["height"] / height
    x0, y0, x1, y1 = box
    page.mouse.move(frame["x"] + x0 * sx, frame["y"] + y0 * sy)
    page.mouse.down()
    page.mouse.move(frame["x"] + x1 * sx, frame["y"] + y1 * sy, steps=15)
    page.mouse.up()


def test_volunteer_draws_box_and_submits_medsam_mask(
    browser: Any, label_studio: StudioHandle, volunteer_task: dict[str, Any]
) -> None:
    url = label_studio.url.rstrip("/")
    gt: np.ndarray = volunteer_task["gt"]
    height, width = gt.shape
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        # Log in through the form, as a volunteer would.
        page.goto(f"{url}/user/login/")
        page.fill("input[name=email]", volunteer_task["email"])
        page.fill("input[name=password]", volunteer_task["password"])
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/user/login" not in u)

        # Open the task in the labeling view and wait for the slice to load.
        page.goto(f"{url}/projects/{volunteer_task['project']}/data?task={volunteer_task['task']}")
        page.wait_for_function(
            "() => { const i = document.querySelector('.lsf-main-content img[alt=image]');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        page.locator("[data-testid=bottombar-auto-annotation-toggle]").check(force=True)
        # With Auto-Annotation on, the smart (ML) variant of the box tool (smart="true" in the
        # config) appears in its own toolbar group at the bottom; pick it.
        page.locator(".lsf-toolbar .lsf-tool_smart").first.click()
        page.locator(".lsf-tool_smart.lsf-tool_active").first.wait_for()
        # The first inline label row belongs to the RectangleLabels control ("box").
        page.locator(".lsf-labels").first.locator(".lsf-label", has_text="Organ").click()

        box = tight_box(gt)
        with page.expect_response(
            lambda r: "/interactive-annotating" in r.url and r.request.method == "POST"
        ) as predicted:
            _draw_box(page, box, width, height)
        assert predicted.value.status == 200, predicted.value.text()
        assert "errors" not in predicted.value.json(), predicted.value.json()

        # The mask arrives as a suggestion; accepting it makes it a region of the annotation.
        accept = page.locator("[data-testid=bottombar-accept-suggestions-button]")
        accept.click()
        accept.wait_for(state="detached")
        page.wait_for_timeout(500)  # let the canvas repaint the accepted mask
        page.screenshot(path=str(ARTIFACTS / "browser_mask_before_submit.png"))

        with page.expect_response(
            lambda r: (
                f"/api/tasks/{volunteer_task['task']}/annotations" in r.url
                and r.request.method == "POST"
            )
        ) as saved:
            page.locator("[data-testid=bottombar-submit-button]").click()
        assert saved.value.status == 201, saved.value.text()
        page.get_by_text("Annotation saved successfully", exact=True).wait_for()
        page.screenshot(path=str(ARTIFACTS / "browser_mask_after_submit.png"))
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "browser_failure.png"))
        raise
    finally:
        context.close()

    # What Label Studio stored, read with the admin token.
    studio: Studio = volunteer_task["studio"]
    annotations = list(studio.client.annotations.list(id=volunteer_task["task"]))
    assert len(annotations) == 1
    annotation = annotations[0]
    assert annotation.completed_by == volunteer_task["user_id"]
    # Label Studio keeps the smart tool's box only as the prompt: the accepted suggestion
    # replaces it, so the stored result is the brush mask alone.
    types = [r["type"] for r in annotation.result]
    assert types.count("brushlabels") == 1, annotation.result
    assert set(types) <= {"brushlabels", "rectanglelabels"}, annotation.result
    brush = next(r for r in annotation.result if r["type"] == "brushlabels")
    assert (brush["from_name"], brush["to_name"]) == ("mask", "image")
    assert brush["value"]["brushlabels"] == ["Organ"]
    mask = rle_to_mask(brush["value"]["rle"], height, width)
    score = dice(mask, gt)
    print(f"\nbrowser-drawn box {box} -> MedSAM mask, Dice vs {ORGAN_MASK}: {score:.3f}")
    assert score >= 0.85  # the bar for a GT-box mask, as in test_interactive
