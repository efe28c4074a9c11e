"""What a volunteer does in a real browser, shared by the browser tests.

Headless Chromium (Debian's ``/usr/bin/chromium``, or ``MEDCROWD_CHROMIUM``) driven by Python
Playwright; the ``browser`` fixture (``tests/conftest.py``) launches it once per module with
:func:`launch_chromium`. The steps here drive Label Studio 1.23's labelling page the way a
person does: log in through the form, wait for the slice, drag on the image in image pixels,
wait for the backend's answer to a box, submit. Masks are read back from Label Studio's JSON
(``brushlabels`` RLE), never assumed. Screenshots go to ``$MEDCROWD_TEST_ARTIFACTS`` (default
``test-artifacts/``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_backend.rle import rle_to_mask

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
VIEWPORT = {"width": 1400, "height": 1400}

NEEDS_BROWSER = [
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
"""``pytestmark`` of a browser test module."""

_IMAGE = ".lsf-main-content img[alt=image]"


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def open_page(browser: Any, timeout_ms: int, failure_png: str) -> Iterator[Any]:
    """A page in a fresh browser context (1400 × 1400); on any failure inside, a screenshot
    ``ARTIFACTS/failure_png`` is taken before the error goes on. The context is closed on
    exit."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    try:
        yield page
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / failure_png))
        raise
    finally:
        context.close()


def screenshot(page: Any, name: str, **kwargs: Any) -> Path:
    """``page`` as ``ARTIFACTS/name``; returns the path."""
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kwargs)
    return path


def log_in(page: Any, url: str, email: str, password: str) -> None:
    """Log in through Label Studio's login form, as a volunteer would."""
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/user/login" not in u)


def wait_for_slice(page: Any) -> None:
    """Until the labelling page's image has loaded."""
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('{_IMAGE}');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )


def image_frame(page: Any) -> dict[str, float]:
    """Where the image lies on the page (CSS pixels: x, y, width, height).

    Taken from the (hidden) ``<img>`` Label Studio lays out under its canvas, not from the
    Konva stage: the image may be drawn larger than the stage and shifted (with this
    viewport, 811 px at -21 px inside a 769 px stage), and the stage's box would misplace a
    drag by several image pixels.
    """
    frame = page.locator(_IMAGE).first.bounding_box()
    assert frame is not None
    return dict(frame)


def to_page(page: Any, x: float, y: float, shape: tuple[int, int]) -> tuple[float, float]:
    """Image pixel (x, y) of an ``(H, W)`` image → page coordinates."""
    frame = image_frame(page)
    return (
        frame["x"] + x * frame["width"] / shape[1],
        frame["y"] + y * frame["height"] / shape[0],
    )


def drag(page: Any, points: list[tuple[float, float]], shape: tuple[int, int]) -> None:
    """Press, move through ``points`` (image pixels x, y of an ``(H, W)`` image), release."""
    (x0, y0), *rest = [to_page(page, x, y, shape) for x, y in points]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(x, y, steps=15)
    page.mouse.up()


def is_prediction(response: Any) -> bool:
    """Label Studio's interactive call to the backend (the browser's side of it)."""
    return "/interactive-annotating" in response.url and response.request.method == "POST"


def box_for_mask(page: Any, box: list[float], shape: tuple[int, int]) -> dict[str, Any]:
    """Drag ``box`` (XYXY image pixels) with the box tool picked and return Label Studio's
    answer to the interactive call it makes (asserted 200 without ``errors``)."""
    x0, y0, x1, y1 = box
    with page.expect_response(is_prediction) as predicted:
        drag(page, [(x0, y0), (x1, y1)], shape)
    assert predicted.value.status == 200, predicted.value.text()
    answer: dict[str, Any] = predicted.value.json()
    assert "errors" not in answer, answer
    return answer


def submit(page: Any, task_id: int) -> dict[str, Any]:
    """Click Submit; returns the created annotation (Label Studio answered 201)."""
    with page.expect_response(
        lambda r: f"/api/tasks/{task_id}/annotations" in r.url and r.request.method == "POST"
    ) as saved:
        page.locator("[data-testid=bottombar-submit-button]").click()
    assert saved.value.status == 201, saved.value.text()
    created: dict[str, Any] = saved.value.json()
    return created


def label_rows(label_config: str) -> list[str]:
    """The labelling page's rows of inline labels, in config order (one per *Labels tag)."""
    return re.findall(r"<(\w+Labels)\b", label_config)


def pick_label(page: Any, rows: list[str], control: str, label: str) -> None:
    """Click ``label`` in the row of the ``control`` tag (e.g. ``RectangleLabels``)."""
    page.locator(".lsf-labels").nth(rows.index(control)).locator(
        ".lsf-label", has_text=label
    ).click()


def brush_union(result: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the union of every ``brushlabels`` region of a Label Studio result."""
    mask = np.zeros(shape, bool)
    for r in result:
        if r.get("type") == "brushlabels":
            mask |= rle_to_mask(r["value"]["rle"], *shape)
    return mask
