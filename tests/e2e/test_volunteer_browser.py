"""A brand-new volunteer in a real browser, under medcrowd's roles plugin.

Label Studio runs with the plugin (``LabelStudioProcess(roles=True)``, as ``medcrowd up``
starts it) and onboarding on (``MEDCROWD_ONBOARDING_GOLD=1``); the real LiteMedSAM backend
answers over HTTP. The project has two slices; the second has a hidden gold mask (the expert's
liver mask, as ``medcrowd gold add`` stores it) and short instructions.

Headless Chromium (Debian's ``/usr/bin/chromium``, Python Playwright):

1. signs up through the invite link (no account made beforehand) and lands on ``/medcrowd/me``,
   which shows no gold feedback yet; the gold annotation and its overlay are refused;
2. follows the page's project link to the stock labelling stream, sees the instructions,
   closes them;
3. picks the "Organ" label and drags a box around the liver — no Auto-Annotation toggle, no
   smart-tool group clicked: the plugin's defaults make the box ask the backend; the mask
   arrives accepted;
4. corrects it with the brush (a stroke inside the organ), submits;
5. opens the contributions page: the Dice against the expert mask and the overlay image.

Stored data are checked with the admin token: the annotation is the volunteer's, its mask is
the backend's plus the stroke, and the page's Dice is the Dice of that stored mask against the
gold mask. Screenshots go to ``$MEDCROWD_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcrowd.roles import VOLUNTEER_INSTRUCTIONS
from medcrowd.settings import config_path
from medcrowd.studio import Studio
from ml_backend.labeling import brush_result
from tests.helpers import (
    box_for_mask,
    browser_marks,
    brush_union,
    dice,
    drag,
    label_rows,
    label_studio_process,
    open_page,
    pick_label,
    screenshot,
    serve_backend,
    submit,
    tight_box,
    wait_for_slice,
)

GOLD_SLICE = "amos_0004_75"
GOLD_MASK = f"{GOLD_SLICE}_liver_000"
OTHER_SLICE = "amos_0006_90"
TIMEOUT_MS = 90_000
PASSWORD = "Crowd-pass-2026!"

pytestmark = browser_marks()


@dataclass
class Campaign:
    url: str
    admin: Studio
    project: int
    title: str
    gold_task: int
    gold_annotation: int
    gt: np.ndarray


@pytest.fixture(scope="module")
def campaign(
    tmp_path_factory: pytest.TempPathFactory, litemedsam: Any, shared_data: Path
) -> Iterator[Campaign]:
    with (
        label_studio_process(
            tmp_path_factory.mktemp("ls-volunteer"),
            roles=True,
            env={"MEDCROWD_ONBOARDING_GOLD": "1"},
        ) as proc,
        serve_backend(proc.url, proc.token, litemedsam) as backend,
    ):
        admin = Studio(proc.url, proc.token)
        title = f"Liver campaign {uuid.uuid4().hex[:6]}"
        project = admin.ensure_project(title, config_path("labeling_box_brush.xml").read_text(), 1)
        admin.set_instructions(project, VOLUNTEER_INSTRUCTIONS)
        images = shared_data / "sammed2d_demo" / "images"
        # the gold slice is imported last: only onboarding serves it first
        for stem in (OTHER_SLICE, GOLD_SLICE):
            data = (images / f"{stem}.png").read_bytes()
            assert admin.import_images(project, [(f"{stem}.png", data)]).created == 1
        admin.connect_backend(project, backend.url, backend.auth)
        tasks = sorted(admin.tasks(project), key=lambda t: t.id)
        gold_task = tasks[-1].id
        gt_png = shared_data / "sammed2d_demo" / "masks" / f"{GOLD_MASK}.png"
        gt = np.asarray(Image.open(gt_png)) > 0
        gold_annotation = admin.create_annotation(
            gold_task, [brush_result(gt, "Organ", "mask", "image")], ground_truth=True
        )
        yield Campaign(proc.url, admin, project, title, gold_task, gold_annotation, gt)


def _longest_run(line: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest run of True in a 1-D bool array (one True at least)."""
    runs: list[tuple[int, int]] = []
    begin: int | None = None
    for i, value in enumerate([*line.tolist(), False]):
        if value and begin is None:
            begin = i
        elif not value and begin is not None:
            runs.append((begin, i - 1))
            begin = None
    return max(runs, key=lambda r: r[1] - r[0])


def _csrf_fetch(page: Any, method: str, path: str, body: str) -> int:
    return int(
        page.evaluate(
            """async ([method, path, body]) => {
                const csrf = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
                const r = await fetch(path, {method, body, headers: {
                    "Content-Type": "application/json", "X-CSRFToken": csrf}});
                return r.status;
            }""",
            [method, path, body],
        )
    )


def test_new_volunteer_labels_gold_and_gets_feedback(browser: Any, campaign: Campaign) -> None:
    url, gt = campaign.url.rstrip("/"), campaign.gt
    shape = (int(gt.shape[0]), int(gt.shape[1]))
    email = f"new-volunteer-{uuid.uuid4().hex[:6]}@example.com"
    refused: list[str] = []  # what the pages asked for and were refused (not the probes)
    watching = [True]
    with open_page(browser, TIMEOUT_MS, "volunteer_failure.png") as page:
        page.on(
            "response",
            lambda r: (
                refused.append(f"{r.request.method} {r.url}")
                if r.status == 403 and watching[0]
                else None
            ),
        )
        # 1. sign up through the invite link; the volunteer lands on their own page
        page.goto(campaign.admin.signup_link())
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/medcrowd/me$"))
        assert page.locator("#no-gold").is_visible()
        assert page.locator("#shortcuts").is_visible()
        # the gold answer is not theirs to see, before or after
        watching[0] = False
        gold_api = page.request.get(f"{url}/api/annotations/{campaign.gold_annotation}/")
        assert gold_api.status == 403
        overlay = page.request.get(f"{url}/medcrowd/me/overlay/{campaign.gold_annotation}.png")
        assert overlay.status == 404
        watching[0] = True

        # 2. the project link opens the labelling stream; the instructions come first
        page.click(f"a:has-text('{campaign.title}')")
        dialog = page.get_by_text("Labeling Instructions")
        dialog.wait_for()
        assert page.get_by_text("Drag a box tightly around the structure").first.is_visible()
        screenshot(page, "volunteer_1_instructions.png")
        assert page.get_by_text("Runtime error").count() == 0
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
        wait_for_slice(page)

        # 3. label, box -> MedSAM mask (no toggle touched, no tool group opened)
        rows = label_rows(campaign.admin.project(campaign.project).label_config)
        pick_label(page, rows, "RectangleLabels", "Organ")
        answer = box_for_mask(page, tight_box(gt), shape)
        backend_mask = brush_union(answer["data"]["result"], shape)
        page.locator(".lsf-region-item, .lsf-outliner-item").first.wait_for()
        page.wait_for_timeout(500)  # the canvas repaints the accepted mask
        screenshot(page, "volunteer_2_mask.png")

        # 4. correct with the brush, as a volunteer would: paint over the part of the organ
        # the mask missed (the longest missed run of the row that misses most)
        page.locator("[aria-label=brush-tool]").first.click()
        pick_label(page, rows, "BrushLabels", "Organ")
        missed = gt & ~backend_mask
        assert missed.sum() > 0, "the backend's mask is perfect: nothing to correct"
        row = int(missed.sum(axis=1).argmax())
        start, stop = _longest_run(missed[row])
        drag(page, [(float(start), row), (float(stop), row)], shape)
        page.wait_for_timeout(1500)
        screenshot(page, "volunteer_3_brush.png")
        annotation_id = int(submit(page, campaign.gold_task)["id"])

        # 5. the contributions page: Dice and overlay for the gold task
        watching[0] = False  # the refusals below are the test's own probes
        page.goto(f"{url}/medcrowd/me")
        figure = page.locator(f"figure.gold[data-task='{campaign.gold_task}']")
        figure.wait_for()
        page_dice = float(figure.locator(".dice").inner_text())
        page.wait_for_function(
            "() => { const i = document.querySelector('figure.gold img');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        screenshot(page, "volunteer_4_feedback.png", full_page=True)
        assert page.locator("#gold-count").inner_text().strip() == "1"
        # feedback seen: the gold annotation is frozen
        frozen = _csrf_fetch(page, "PATCH", f"/api/annotations/{annotation_id}/", '{"result": []}')
        assert frozen == 403
    # the labelling stream never hit a refused route
    assert refused == []

    # what Label Studio stored, read with the admin token
    stored = campaign.admin.request("GET", f"/api/annotations/{annotation_id}/").json()
    assert stored["task"] == campaign.gold_task  # onboarding served the gold task first
    assert not stored["ground_truth"]
    assert campaign.admin.users()[stored["completed_by"]] == email
    mask = brush_union(stored["result"], shape)
    added = mask & ~backend_mask
    assert added.sum() > 50, "the brush stroke is not in the stored mask"
    assert (added & gt).sum() > (added & ~gt).sum()  # the stroke mostly fixed missed pixels
    score = dice(mask, gt)
    print(
        f"\nbackend mask Dice {dice(backend_mask, gt):.3f}, after the brush {score:.3f} "
        f"({int(added.sum())} pixels added, {int((added & gt).sum())} of them in the organ), "
        f"page shows {page_dice:.3f}"
    )
    assert abs(page_dice - score) < 1e-3  # the page's Dice is the stored mask's
    assert score >= 0.85
