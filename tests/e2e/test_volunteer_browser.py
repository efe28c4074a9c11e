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

import importlib.util
import os
import re
import secrets
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
from ml_backend.rle import rle_to_mask
from tests.helpers import ThreadedServer, dice, tight_box

CHROMIUM = Path(os.environ.get("MEDCROWD_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("MEDCROWD_TEST_ARTIFACTS", "test-artifacts"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GOLD_SLICE = "amos_0004_75"
GOLD_MASK = f"{GOLD_SLICE}_liver_000"
OTHER_SLICE = "amos_0006_90"
TIMEOUT_MS = 90_000
PASSWORD = "Crowd-pass-2026!"

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
    from medcrowd.embedded import LabelStudioProcess, free_port
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app

    proc = LabelStudioProcess(
        data_dir=tmp_path_factory.mktemp("ls-volunteer"),
        email="admin@example.com",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        port=free_port(),
        roles=True,
    )
    with pytest.MonkeyPatch.context() as mp:  # the child's environment comes from ours
        mp.setenv("MEDCROWD_ONBOARDING_GOLD", "1")
        proc.start()
    port = free_port()
    auth = ("labelstudio", secrets.token_urlsafe(16))
    config = BackendConfig(
        host="127.0.0.1",
        port=port,
        basic_auth=auth,
        label_studio_url=proc.url,
        label_studio_token=proc.token,
    )
    try:
        with ThreadedServer(create_app(config, predictor=litemedsam), port):
            admin = Studio(proc.url, proc.token)
            title = f"Liver campaign {uuid.uuid4().hex[:6]}"
            project = admin.ensure_project(
                title, config_path("labeling_box_brush.xml").read_text(), 1
            )
            admin.set_instructions(project, VOLUNTEER_INSTRUCTIONS)
            images = shared_data / "sammed2d_demo" / "images"
            # the gold slice is imported last: only onboarding serves it first
            for stem in (OTHER_SLICE, GOLD_SLICE):
                data = (images / f"{stem}.png").read_bytes()
                assert admin.import_images(project, [(f"{stem}.png", data)]).created == 1
            admin.connect_backend(project, f"http://127.0.0.1:{port}", auth)
            tasks = sorted(admin.tasks(project), key=lambda t: t.id)
            gold_task = tasks[-1].id
            gt_png = shared_data / "sammed2d_demo" / "masks" / f"{GOLD_MASK}.png"
            gt = np.asarray(Image.open(gt_png)) > 0
            gold_annotation = admin.create_annotation(
                gold_task, [brush_result(gt, "Organ", "mask", "image")], ground_truth=True
            )
            yield Campaign(proc.url, admin, project, title, gold_task, gold_annotation, gt)
    finally:
        proc.stop()


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


def _image_frame(page: Any) -> dict[str, float]:
    frame = page.locator(".lsf-main-content img[alt=image]").first.bounding_box()
    assert frame is not None
    return dict(frame)


def _drag(page: Any, points: list[tuple[float, float]], shape: tuple[int, int]) -> None:
    """Press, move through ``points`` (image pixels x, y) and release."""
    frame = _image_frame(page)
    sx, sy = frame["width"] / shape[1], frame["height"] / shape[0]
    (x0, y0), *rest = points
    page.mouse.move(frame["x"] + x0 * sx, frame["y"] + y0 * sy)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(frame["x"] + x * sx, frame["y"] + y * sy, steps=15)
    page.mouse.up()


def _label_rows(label_config: str) -> list[str]:
    """The labelling page's rows of inline labels, in config order (one per *Labels tag)."""
    return re.findall(r"<(\w+Labels)\b", label_config)


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


def _union(result: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for r in result:
        if r.get("type") == "brushlabels":
            mask |= rle_to_mask(r["value"]["rle"], *shape)
    return mask


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
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    email = f"new-volunteer-{uuid.uuid4().hex[:6]}@example.com"
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    refused: list[str] = []  # what the pages asked for and were refused (not the probes)
    watching = [True]
    page.on(
        "response",
        lambda r: (
            refused.append(f"{r.request.method} {r.url}")
            if r.status == 403 and watching[0]
            else None
        ),
    )
    try:
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
        page.screenshot(path=str(ARTIFACTS / "volunteer_1_instructions.png"))
        assert page.get_by_text("Runtime error").count() == 0
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
        page.wait_for_function(
            "() => { const i = document.querySelector('.lsf-main-content img[alt=image]');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )

        # 3. label, box -> MedSAM mask (no toggle touched, no tool group opened)
        rows = _label_rows(campaign.admin.project(campaign.project).label_config)
        labels = page.locator(".lsf-labels")
        labels.nth(rows.index("RectangleLabels")).locator(".lsf-label", has_text="Organ").click()
        x0, y0, x1, y1 = tight_box(gt)
        with page.expect_response(
            lambda r: "/interactive-annotating" in r.url and r.request.method == "POST"
        ) as predicted:
            _drag(page, [(x0, y0), (x1, y1)], shape)
        assert predicted.value.status == 200, predicted.value.text()
        answer = predicted.value.json()
        assert "errors" not in answer, answer
        backend_mask = _union(answer["data"]["result"], shape)
        page.locator(".lsf-region-item, .lsf-outliner-item").first.wait_for()
        page.wait_for_timeout(500)  # the canvas repaints the accepted mask
        page.screenshot(path=str(ARTIFACTS / "volunteer_2_mask.png"))

        # 4. correct with the brush, as a volunteer would: paint over the part of the organ
        # the mask missed (the longest missed run of the row that misses most)
        page.locator("[aria-label=brush-tool]").first.click()
        labels.nth(rows.index("BrushLabels")).locator(".lsf-label", has_text="Organ").click()
        missed = gt & ~backend_mask
        assert missed.sum() > 0, "the backend's mask is perfect: nothing to correct"
        row = int(missed.sum(axis=1).argmax())
        start, stop = _longest_run(missed[row])
        _drag(page, [(float(start), row), (float(stop), row)], shape)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "volunteer_3_brush.png"))
        with page.expect_response(
            lambda r: (
                f"/api/tasks/{campaign.gold_task}/annotations" in r.url
                and r.request.method == "POST"
            )
        ) as saved:
            page.locator("[data-testid=bottombar-submit-button]").click()
        assert saved.value.status == 201, saved.value.text()
        annotation_id = int(saved.value.json()["id"])

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
        page.screenshot(path=str(ARTIFACTS / "volunteer_4_feedback.png"), full_page=True)
        assert page.locator("#gold-count").inner_text().strip() == "1"
        # feedback seen: the gold annotation is frozen
        frozen = _csrf_fetch(page, "PATCH", f"/api/annotations/{annotation_id}/", '{"result": []}')
        assert frozen == 403
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "volunteer_failure.png"))
        raise
    finally:
        context.close()
    # the labelling stream never hit a refused route
    assert refused == []

    # what Label Studio stored, read with the admin token
    stored = campaign.admin.request("GET", f"/api/annotations/{annotation_id}/").json()
    assert stored["task"] == campaign.gold_task  # onboarding served the gold task first
    assert not stored["ground_truth"]
    assert campaign.admin.users()[stored["completed_by"]] == email
    mask = _union(stored["result"], shape)
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
