"""Label Studio's labeling config and regions: percent rectangle → pixel box, and brush results.

Label Studio sends a rectangle as x, y, width, height in percent of the original image; the
expected pixel boxes below are worked out by hand on a 200 × 100 (width × height) image, where
1 % is 2 px across and 1 px down.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ml_backend.errors import InvalidInput
from ml_backend.labeling import (
    HINT_CONTROL,
    BoxPrompt,
    LabelingConfig,
    Prompt,
    box_prompt_from_context,
    brush_result,
    parse_label_config,
    prompt_from_context,
)
from ml_backend.rle import rle_to_mask
from tests.helpers import XML

W, H = 200, 100
CONFIG = LabelingConfig(
    image_name="image",
    image_key="image",
    brush_name="mask",
    brush_labels=("Organ", "Lesion", "Vessel"),
    box_name="box",
    keypoint_name="click",
)


def rect(x: Any, y: Any, w: Any, h: Any, label: str = "Organ", **value: Any) -> dict[str, Any]:
    """One ``rectanglelabels`` region as Label Studio sends it (percent of the image)."""
    return {
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                  "rectanglelabels": [label], **value},
    }  # fmt: skip


def box(*regions: dict[str, Any]) -> BoxPrompt | None:
    return box_prompt_from_context({"result": list(regions)}, CONFIG, W, H)


# -- the config ---------------------------------------------------------------------------------
def test_parse_the_shipped_config() -> None:
    assert parse_label_config(XML) == CONFIG


def test_the_hint_layer_is_never_the_mask() -> None:
    xml = XML.replace(
        '<BrushLabels name="mask"',
        f'<BrushLabels name="{HINT_CONTROL}" toName="image"><Label value="error"/></BrushLabels>'
        '<BrushLabels name="mask"',
    )
    assert parse_label_config(xml).brush_name == "mask"


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        ("", "label_config is empty"),
        ("<View><Image", "not valid XML"),
        ("<View><BrushLabels name='m' toName='i'/></View>", "no <Image> tag"),
        ("<View><Image name='i' value='$image'/></View>", "no <BrushLabels>"),
        ("<View><Image name='i' value='$image'/><BrushLabels name='m' toName='x'/></View>",
         "names no <Image>"),
        ("<View><Image name='i' value='image'/><BrushLabels name='m' toName='i'/></View>",
         "must be '$key'"),
    ],
)  # fmt: skip
def test_bad_configs_say_what_is_missing(xml: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment.replace("$", r"\$")):
        parse_label_config(xml)


# -- percent → pixels ---------------------------------------------------------------------------
def test_percent_to_pixels() -> None:
    # x: 10 % of 200 = 20 px, to (10 + 50) % = 120 px; y: 20 % of 100 = 20 px, to 50 px
    assert box(rect(10, 20, 50, 30)) == BoxPrompt((20.0, 20.0, 120.0, 50.0), "Organ")
    # fractions stay fractions: 12.25 % of 200 = 24.5 px, (12.25 + 0.75) % = 26 px
    assert box(rect(12.25, 33.5, 0.75, 1.5)) == BoxPrompt((24.5, 33.5, 26.0, 35.0), "Organ")


def test_the_whole_image_and_boxes_on_the_border() -> None:
    assert box(rect(0, 0, 100, 100)) == BoxPrompt((0.0, 0.0, 200.0, 100.0), "Organ")
    # touching the right and bottom edges
    assert box(rect(90, 80, 10, 20)) == BoxPrompt((180.0, 80.0, 200.0, 100.0), "Organ")
    # the UI rounds a box drawn to the very edge slightly past it (≤ 0.5 %): clamped
    assert box(rect(-0.3, -0.5, 50.3, 100.5)) == BoxPrompt((0.0, 0.0, 100.0, 100.0), "Organ")


def test_the_last_rectangle_wins_and_its_label_is_kept() -> None:
    got = box(rect(0, 0, 10, 10), rect(50, 50, 25, 25, label="Lesion"))
    assert got == BoxPrompt((100.0, 50.0, 150.0, 75.0), "Lesion")


def test_no_rectangle_is_no_prompt() -> None:
    assert box_prompt_from_context(None, CONFIG, W, H) is None
    assert box_prompt_from_context({}, CONFIG, W, H) is None
    assert box() is None  # an empty result: a batch call


@pytest.mark.parametrize(
    ("region", "fragment"),
    [
        (rect(10, 10, 20, 20, rotation=15), "rotated rectangles are not supported"),
        (rect(10, 10, 20, 20, rotation=-0.01), "rotated rectangles are not supported"),
        (rect(10, 10, 0, 20), "zero or negative area (width=0.0%, height=20.0%)"),
        (rect(10, 10, 20, -5), "zero or negative area"),
        (rect(-0.6, 10, 20, 20), "outside the image: x=-0.6%"),
        (rect(10, -1, 20, 20), "outside the image"),
        (rect(90, 10, 10.6, 20), "outside the image"),  # right edge at 100.6 %
        (rect(10, 90, 20, 11), "outside the image"),  # bottom edge at 101 %
        (rect(150, 150, 10, 10), "outside the image"),
        (rect(10, 10, 0.4, 20), "smaller than one pixel of the 200x100 image"),  # 0.8 px wide
        (rect(10, 10, 20, 0.9), "smaller than one pixel"),  # 0.9 px high
        (rect(10, 10, 20, 20, label="Tumor"), "unknown label 'Tumor'"),
        (rect(10, 10, 20, 20, rectanglelabels=[]), "carries no label"),
        (rect("10", 10, 20, 20), "rectangle value 'x' must be a number, got '10'"),
        (rect(10, True, 20, 20), "rectangle value 'y' must be a number"),
    ],
)
def test_unusable_boxes_are_refused_with_a_reason(region: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        box(region)
    assert fragment in str(info.value)


def test_a_rotation_below_the_tolerance_is_axis_aligned() -> None:
    assert box(rect(10, 20, 50, 30, rotation=1e-9)) == BoxPrompt((20.0, 20.0, 120.0, 50.0), "Organ")


def test_malformed_contexts() -> None:
    with pytest.raises(InvalidInput, match=r"context\.result must be a list"):
        box_prompt_from_context({"result": "box"}, CONFIG, W, H)
    with pytest.raises(InvalidInput) as info:
        box({"type": "keypointlabels", "value": {"x": 1, "y": 2}})
    assert "only rectangle prompts are supported, got ['keypointlabels']" in str(info.value)


def test_a_config_without_labels_accepts_any_label() -> None:
    anything = LabelingConfig("image", "image", "mask", (), None)
    got = box_prompt_from_context({"result": [rect(0, 0, 50, 50, label="X")]}, anything, W, H)
    assert got == BoxPrompt((0.0, 0.0, 100.0, 50.0), "X")


# -- masks → brush regions ----------------------------------------------------------------------
def test_brush_result_round_trips_the_mask() -> None:
    mask = np.zeros((3, 5), dtype=bool)  # (H, W): 3 rows, 5 columns
    mask[1, 1:4] = True
    region = brush_result(mask, "Lesion", brush_name="m", image_name="img")
    assert {k: region[k] for k in ("from_name", "to_name", "type")} == {
        "from_name": "m",
        "to_name": "img",
        "type": "brushlabels",
    }
    assert (region["original_width"], region["original_height"]) == (5, 3)
    assert region["value"]["brushlabels"] == ["Lesion"] and region["value"]["format"] == "rle"
    np.testing.assert_array_equal(rle_to_mask(region["value"]["rle"], 3, 5), mask)


# -- clicks: keypoints beside the box ------------------------------------------------------------
def click(x: Any, y: Any, positive: Any = True, label: str = "Organ") -> dict[str, Any]:
    """One ``keypointlabels`` region as Label Studio's SAM example sends it."""
    region: dict[str, Any] = {
        "from_name": "click",
        "to_name": "image",
        "type": "keypointlabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
    }
    if positive is not None:
        region["is_positive"] = positive
    return region


def prompt(*regions: dict[str, Any]) -> Prompt | None:
    return prompt_from_context({"result": list(regions)}, CONFIG, W, H)


def test_the_shipped_config_has_the_click_control() -> None:
    from medcrowd.settings import config_path

    config = parse_label_config(config_path("labeling_box_brush.xml").read_text())
    assert config.keypoint_name == "click"
    assert config.box_name == "box"
    without = parse_label_config(XML.replace("KeyPointLabels", "KeyPointLabelz"))
    assert without.keypoint_name is None  # clicks stay optional


def test_box_and_every_click_in_pixels_with_their_sign() -> None:
    got = prompt(rect(10, 20, 50, 30), click(25, 50), click(40, 30, positive=False))
    assert got is not None
    assert got.box_xyxy == (20.0, 20.0, 120.0, 50.0)
    assert got.points == ((50.0, 50.0), (80.0, 30.0))  # 1 % = 2 px across, 1 px down
    assert got.labels == (1, 0)
    assert got.label == "Organ"
    assert got.region.startswith("box:")


def test_a_click_without_is_positive_is_positive_and_clicks_alone_are_a_prompt() -> None:
    got = prompt(click(50, 50, positive=None, label="Lesion"))
    assert got == Prompt(None, ((100.0, 50.0),), (1,), "Lesion", "clicks")


def test_a_new_box_is_a_new_region() -> None:
    first = prompt(rect(10, 20, 50, 30), click(25, 50))
    same = prompt(rect(10, 20, 50, 30), click(25, 50), click(30, 40))
    other = prompt(rect(12, 20, 50, 30), click(25, 50))
    assert first is not None and same is not None and other is not None
    assert first.region == same.region != other.region


def test_box_only_prompt_equals_the_box_prompt() -> None:
    got = prompt(rect(10, 20, 50, 30))
    assert got is not None and got.points == () and got.box_xyxy == (20.0, 20.0, 120.0, 50.0)


@pytest.mark.parametrize(
    ("region", "fragment"),
    [
        (click(101, 10), "keypoint lies outside the image"),
        (click(10, -2), "keypoint lies outside the image"),
        (click("10", 10), "keypoint value 'x' must be a finite number"),
        (click(10, float("nan")), "keypoint value 'y' must be a finite number"),
        (click(10, 10, label="Tumor"), "unknown label 'Tumor'"),
        ({"type": "polygonlabels", "value": {"points": []}}, "only rectangle and keypoint"),
    ],
)
def test_unusable_clicks_are_refused(region: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        prompt(region)
    assert fragment in str(info.value)
