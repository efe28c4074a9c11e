"""What the backend needs from a Label Studio labeling config, and the regions it answers.

The config must have an ``<Image>``, a ``<RectangleLabels>`` (the volunteer's box prompt) and
a ``<BrushLabels>`` (where the mask goes), both pointing at the image; a ``<KeyPointLabels>``
(clicks: positive, or negative with Alt as in Label Studio's SAM example, read from the
region's ``is_positive``) is optional. Parsing is done with
``defusedxml`` because the XML arrives from the network.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from defusedxml import ElementTree

from ml_backend.errors import InvalidInput
from ml_backend.rle import mask_to_rle

__all__ = [
    "PROPAGATED_PREFIX",
    "BoxPrompt",
    "LabelingConfig",
    "Prompt",
    "box_prompt_from_context",
    "brush_result",
    "parse_label_config",
    "prompt_from_context",
]

PROPAGATED_PREFIX = "propagated-"
"""``model_version`` prefix of the proposals the backend stores on a volume's neighbouring
slices (``medcrowd status`` finds them by it)."""


@dataclass(frozen=True)
class LabelingConfig:
    """The names the backend reads from a labeling config.

    Attributes:
        image_name: ``name`` of the ``<Image>`` tag (the ``to_name`` of results).
        image_key: task data key the image URL lives under (``value="$image"`` → ``"image"``).
        brush_name: ``name`` of the ``<BrushLabels>`` control (``from_name`` of the mask).
        brush_labels: label values the brush control accepts.
        box_name: ``name`` of the ``<RectangleLabels>`` control, or None.
        keypoint_name: ``name`` of the ``<KeyPointLabels>`` control (clicks), or None.
    """

    image_name: str
    image_key: str
    brush_name: str
    brush_labels: tuple[str, ...]
    box_name: str | None
    keypoint_name: str | None = None


@dataclass(frozen=True)
class BoxPrompt:
    """A volunteer's rectangle, converted to pixels of the image as Label Studio shows it.

    Attributes:
        box_xyxy: (x0, y0, x1, y1) in pixels of the original image, floats.
        label: the label the volunteer chose for the box.
    """

    box_xyxy: tuple[float, float, float, float]
    label: str


def brush_result(
    mask: Any, label: str, brush_name: str = "mask", image_name: str = "image"
) -> dict[str, Any]:
    """A Label Studio ``brushlabels`` result region for an (H, W) mask (non-zero = inside)."""
    height, width = mask.shape
    return {
        "from_name": brush_name,
        "to_name": image_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]},
    }


HINT_CONTROL = "sqa_error"
"""Name of the brush control ``medcrowd select`` adds for the predicted-error layer."""


@functools.lru_cache(maxsize=64)
def parse_label_config(xml: str) -> LabelingConfig:
    """Find the image, brush and rectangle controls in a labeling config.

    Raises:
        InvalidInput: the XML is malformed or lacks an Image + BrushLabels pair.
    """
    if not xml or not xml.strip():
        raise InvalidInput("label_config is empty")
    try:
        root = ElementTree.fromstring(xml)
    except Exception as exc:  # defusedxml raises several types for hostile or broken XML
        raise InvalidInput(f"label_config is not valid XML: {exc}") from exc
    images = {el.get("name"): el.get("value", "") for el in root.iter("Image")}
    if not images:
        raise InvalidInput("label_config has no <Image> tag")
    # ``sqa_error`` is medcrowd's read-only hint layer (``medcrowd select``), never the mask
    brushes = [b for b in root.iter("BrushLabels") if b.get("name") != HINT_CONTROL]
    if not brushes:
        raise InvalidInput("label_config has no <BrushLabels> control for the mask")
    brush = brushes[0]
    to_name = brush.get("toName", "")
    if to_name not in images:
        raise InvalidInput(f"<BrushLabels toName={to_name!r}> names no <Image>")
    value = images[to_name] or ""
    if not value.startswith("$"):
        raise InvalidInput(f"<Image name={to_name!r}> value must be '$key', got {value!r}")
    labels = tuple(lab.get("value", "") for lab in brush.iter("Label"))
    rect = next(
        (el for el in root.iter("RectangleLabels") if el.get("toName") == to_name),
        None,
    )
    keypoints = next(
        (el for el in root.iter("KeyPointLabels") if el.get("toName") == to_name),
        None,
    )
    return LabelingConfig(
        image_name=to_name,
        image_key=value[1:],
        brush_name=brush.get("name", ""),
        brush_labels=labels,
        box_name=rect.get("name") if rect is not None else None,
        keypoint_name=keypoints.get("name") if keypoints is not None else None,
    )


def _number(value: dict[str, Any], key: str) -> float:
    raw = value.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidInput(f"rectangle value {key!r} must be a number, got {raw!r}")
    return float(raw)


def box_prompt_from_context(
    context: dict[str, Any] | None, config: LabelingConfig, width: int, height: int
) -> BoxPrompt | None:
    """Turn the interactive context Label Studio sends into a pixel box.

    Label Studio gives the rectangle in percent of the original image (x, y, width, height);
    the box becomes pixels of the ``width`` × ``height`` image we fetched. The last
    rectangle in the context wins (the one the volunteer just drew).

    Returns:
        None when the context carries no rectangle (a batch prediction request).

    Raises:
        InvalidInput: rotated, zero-area or out-of-image box; a label the brush lacks.
    """
    if not context:
        return None
    results = context.get("result")
    if not isinstance(results, list):
        raise InvalidInput("context.result must be a list of regions")
    rects = [
        r
        for r in results
        if isinstance(r, dict) and r.get("type") == "rectanglelabels" and r.get("value")
    ]
    if not rects:
        if results:
            kinds = sorted({str(r.get("type")) for r in results if isinstance(r, dict)})
            raise InvalidInput(f"only rectangle prompts are supported, got {kinds}")
        return None
    region = rects[-1]
    value = region["value"]
    if not isinstance(value, dict):
        raise InvalidInput("rectangle value must be an object")
    if abs(float(value.get("rotation") or 0.0)) > 1e-6:
        raise InvalidInput("rotated rectangles are not supported; draw an axis-aligned box")
    x, y = _number(value, "x"), _number(value, "y")
    w, h = _number(value, "width"), _number(value, "height")
    if w <= 0 or h <= 0:
        raise InvalidInput(f"box has zero or negative area (width={w}%, height={h}%)")
    tol = 0.5  # percent; the UI can round a box drawn to the very edge slightly past it
    if x < -tol or y < -tol or x + w > 100 + tol or y + h > 100 + tol:
        raise InvalidInput(f"box lies outside the image: x={x}%, y={y}%, width={w}%, height={h}%")
    labels = value.get("rectanglelabels") or []
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise InvalidInput("the rectangle carries no label; choose a label before drawing")
    label = labels[0]
    if config.brush_labels and label not in config.brush_labels:
        raise InvalidInput(
            f"unknown label {label!r}: the brush control offers {list(config.brush_labels)}"
        )
    x0 = max(0.0, x) / 100.0 * width
    y0 = max(0.0, y) / 100.0 * height
    x1 = min(100.0, x + w) / 100.0 * width
    y1 = min(100.0, y + h) / 100.0 * height
    eps = 1e-6  # percent → pixel round trips lose the last bit: 1 px can come back 0.9999…
    if x1 - x0 < 1.0 - eps or y1 - y0 < 1.0 - eps:
        raise InvalidInput(
            f"box is smaller than one pixel of the {width}x{height} image; draw a larger box"
        )
    return BoxPrompt(box_xyxy=(x0, y0, x1, y1), label=label)


@dataclass(frozen=True)
class Prompt:
    """A volunteer's box and clicks on one region, in pixels of the image.

    Attributes:
        box_xyxy: (x0, y0, x1, y1) pixels, or None (clicks only).
        points: (x, y) pixel clicks, in the order of the context.
        labels: 1 positive / 0 negative, one per point.
        label: the region's label (the box's, else the last click's).
        region: identifies the region for the previous-logits memory: the box, rounded to
            0.01 % of the image (a new box is a new region), or ``"clicks"``.
    """

    box_xyxy: tuple[float, float, float, float] | None
    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]
    label: str
    region: str


def prompt_from_context(
    context: dict[str, Any] | None, config: LabelingConfig, width: int, height: int
) -> Prompt | None:
    """The box (last rectangle) and every keypoint of an interactive context.

    Keypoints arrive like rectangles, in percent of the image (``value.x``, ``value.y``), with
    the label in ``value.keypointlabels`` and ``is_positive`` on the region (Label Studio's
    SAM example: a plain click is positive, an Alt-click negative; absent = positive).

    Returns:
        None when the context carries neither a rectangle nor a keypoint.

    Raises:
        InvalidInput: a bad rectangle (see :func:`box_prompt_from_context`), a keypoint off
            the image, without numbers or with a label the brush lacks; other region types.
    """
    if not context:
        return None
    results = context.get("result")
    if not isinstance(results, list):
        raise InvalidInput("context.result must be a list of regions")
    regions = [r for r in results if isinstance(r, dict)]
    rects = [r for r in regions if r.get("type") == "rectanglelabels" and r.get("value")]
    clicks = [r for r in regions if r.get("type") == "keypointlabels" and r.get("value")]
    if not rects and not clicks:
        if results:
            kinds = sorted({str(r.get("type")) for r in regions})
            raise InvalidInput(f"only rectangle and keypoint prompts are supported, got {kinds}")
        return None
    box = box_prompt_from_context({"result": rects}, config, width, height) if rects else None
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    label = box.label if box is not None else ""
    tol = 0.5
    for region in clicks:
        value = region["value"]
        if not isinstance(value, dict):
            raise InvalidInput("keypoint value must be an object")
        x, y = _keypoint_number(value, "x"), _keypoint_number(value, "y")
        if not (-tol <= x <= 100 + tol and -tol <= y <= 100 + tol):
            raise InvalidInput(f"keypoint lies outside the image: x={x}%, y={y}%")
        names = value.get("keypointlabels") or []
        name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
        if name and config.brush_labels and name not in config.brush_labels:
            raise InvalidInput(
                f"unknown label {name!r}: the brush control offers {list(config.brush_labels)}"
            )
        if box is None and name:
            label = name
        positive = region.get("is_positive", True)
        points.append((min(max(x, 0.0), 100.0) / 100.0 * width,
                       min(max(y, 0.0), 100.0) / 100.0 * height))  # fmt: skip
        labels.append(0 if positive is False or positive == 0 else 1)
    if not label:
        if not config.brush_labels:
            raise InvalidInput("the click carries no label; choose a label before clicking")
        label = config.brush_labels[0]
    if box is not None:
        x0, y0, x1, y1 = box.box_xyxy
        key = "box:" + ",".join(
            f"{100.0 * v / side:.2f}"
            for v, side in zip((x0, y0, x1, y1), (width, height) * 2, strict=True)
        )
    else:
        key = "clicks"
    return Prompt(
        box.box_xyxy if box is not None else None, tuple(points), tuple(labels), label, key
    )


def _keypoint_number(value: dict[str, Any], key: str) -> float:
    raw = value.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidInput(f"keypoint value {key!r} must be a finite number, got {raw!r}")
    return float(raw)
