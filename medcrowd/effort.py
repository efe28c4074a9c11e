"""Interaction-cost model for simulated annotators, priced in seconds.

Used by :mod:`medcrowd.assisted` (the assisted crowd of ``medcrowd evaluate``) and by
``benchmarks/annotation_effort.py`` (``benchmarks/_effort_model.py`` re-exports this module).

Two primitives, both priced in seconds and counted in actions (clicks + strokes):

* **Polygon** (manual outlining): every closed contour of the target mask (outer boundaries
  and holes, ``skimage.measure.find_contours`` at level 0.5) is simplified with
  Douglas–Peucker (``skimage.measure.approximate_polygon``) at a tolerance ``t`` pixels, its
  vertices jittered by Gaussian noise (``vertex_jitter_px``, the annotator's click error) and
  rasterised with the even-odd rule (holes toggle pixels off). Contours are drawn largest
  first until Dice ≥ ``target``; the tolerance ladder is searched for the cheapest ``t`` that
  gets there. Cost: ``polygon_s + vertex_s * vertices`` per contour; actions: vertices + 1
  (closing click). Counting vertices as clicks follows Polygon-RNN (Castrejón et al.,
  CVPR 2017, https://arxiv.org/abs/1704.05548).
* **Brush correction** (assisted corrections, or manual painting from an empty mask): the
  annotator repeatedly fixes the largest connected error component (8-connected; a
  false-negative region is painted in, a false-positive region erased), largest first, until
  Dice ≥ ``target`` or ``max_strokes``; each pass re-labels the errors left by the previous
  one. A component of area ``A`` whose edge that must be steered precisely has length ``P``
  pixels (its pixels 4-adjacent to pixels that must keep their current value: background
  that must stay background for a fill, correct foreground for an erase; edges shared with
  other errors can be overshot freely) costs
  ``ceil(P / stroke_len_px) * stroke_s + P / trace_px_per_s + A / fill_px2_per_s`` seconds
  and ``ceil(P / stroke_len_px)`` strokes. The ``P / speed`` term is the steering law
  (Accot & Zhai, "Beyond Fitts' law: models for trajectory-based HCI tasks", CHI 1997,
  https://doi.org/10.1145/258549.258760): time grows with path length over tunnel width;
  the width (the tolerated deviation, about a pixel at the zoom the annotator picks) is
  folded into ``trace_px_per_s``, which is zoom-invariant in image pixels because zooming
  scales length and width alike. ``A / fill_px2_per_s`` is the coarse interior fill with a
  large brush. A stroke is not perfect: the painted region is the component passed through
  a crowd model of :mod:`fusion.crowd_models` (default ``good``: ~0.6 px smooth boundary noise),
  so it can spill into correct pixels and leave slivers that later passes must fix.

Counting corrections until a quality threshold is the NoC@90 protocol of interactive
segmentation ("number of clicks to reach IoU 90 %", Xu et al., "Deep interactive object
selection", CVPR 2016, https://arxiv.org/abs/1603.04042); here the unit is seconds and the
threshold Dice ≥ 0.90.

Defaults (all assumptions, all flags): a box 3 s, which favours assistance: a tight box
took 35 s on ILSVRC and extreme clicking 7 s on PASCAL (Papadopoulos et al., "Extreme
clicking for efficient object annotation", ICCV 2017, https://arxiv.org/abs/1708.02750);
1 s per polygon vertex and per polygon; 1 s per brush stroke plus 20 px/s along precise
edges and 2000 px²/s of coarse fill (a 20 px brush at 100 px/s).

Limits of the model: the simulated annotator is an oracle that knows the expert mask, so
only motor effort is counted, not the time spent deciding where a boundary is (which a
model's mask may also save); both modes use the same oracle, so the ratio isolates the
interaction saved. A strip wider than one pixel is charged for both of its edges although
one brush pass of matching width traces both, so painting vessels and membranes is
overpriced by up to 2×, equally in both modes.

Refinement clicks (:func:`assisted_correct` with ``refine``): before the brush, the annotator
may click up to ``clicks`` times, each at the deepest point of the largest error of the
current mask (:func:`ml_backend.click_training.next_click`, the CVPR 2025 interactive
protocol's click), ``click_s`` + ``model_wait_s`` seconds each; a click that does not raise
Dice is undone (its time is still spent), and clicking stops at the target. As with the
reject, the oracle takes clicks only where clicking + brushing is cheaper than brushing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import draw, measure

from fusion.crowd_models import ANNOTATOR_MODELS
from fusion.metrics import dice_from_counts

BoolArray = npt.NDArray[np.bool_]

_EIGHT = np.ones((3, 3), dtype=bool)
_PAD = 4  # pixels of context around a stroke's crop, room for the boundary noise


@dataclass(frozen=True)
class CostModel:
    """Seconds per action and the stopping rule; every field is a CLI flag of the benchmark.

    Attributes:
        target: Dice to reach against the expert mask.
        box_s: drawing one box (2 clicks).
        model_wait_s: waiting for the backend's mask after the box.
        reject_s: discarding the model's mask (one click) to start over manually.
        click_s: one refinement click (positive or negative), before the model's answer.
        vertex_s: one polygon vertex click.
        polygon_s: per polygon: pick the tool, close, confirm.
        stroke_s: per brush stroke: aim, press, switch brush/eraser.
        trace_px_per_s: precise steering along an edge, image pixels per second.
        fill_px2_per_s: coarse interior painting with a large brush, pixels² per second.
        stroke_len_px: precise edge length one stroke covers before the annotator lifts.
        max_strokes: cap on brush strokes per structure (then "not reached").
        stroke_model: crowd model applied to each stroke (``"none"`` = perfect strokes).
        vertex_jitter_px: standard deviation of a polygon vertex's click error, pixels.
        tolerances: Douglas–Peucker tolerances (pixels) tried for the polygon.
    """

    target: float = 0.90
    box_s: float = 3.0
    model_wait_s: float = 0.5
    reject_s: float = 1.0
    click_s: float = 1.0
    vertex_s: float = 1.0
    polygon_s: float = 1.0
    stroke_s: float = 1.0
    trace_px_per_s: float = 20.0
    fill_px2_per_s: float = 2000.0
    stroke_len_px: float = 200.0
    max_strokes: int = 300
    stroke_model: str = "good"
    vertex_jitter_px: float = 0.5
    tolerances: tuple[float, ...] = field(default=(8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5))

    def __post_init__(self) -> None:
        if self.stroke_model != "none" and self.stroke_model not in ANNOTATOR_MODELS:
            raise ValueError(
                f"unknown stroke model {self.stroke_model!r}; "
                f"valid: none, {', '.join(ANNOTATOR_MODELS)}"
            )
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"target must be in (0, 1], got {self.target}")
        positive = ("trace_px_per_s", "fill_px2_per_s", "stroke_len_px")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(frozen=True)
class Effort:
    """What one simulated annotation cost.

    Attributes:
        seconds: total simulated time.
        actions: clicks + brush strokes.
        dice: Dice of the final mask vs the expert.
        reached: ``dice >= target`` within the caps.
        tool: ``"none"`` (model mask accepted), ``"brush"``, ``"polygon"``, or with a
            ``"reject+"`` prefix when the model's mask was discarded.
    """

    seconds: float
    actions: int
    dice: float
    reached: bool
    tool: str


def _dice(inter: int, a: int, b: int) -> float:
    """Dice of masks of ``a`` and ``b`` pixels sharing ``inter`` (kept as counts while the
    simulated annotator edits, so a stroke costs no full-image pass)."""
    return float(dice_from_counts(inter, a + b))


def _better(a: Effort, b: Effort) -> Effort:
    """The cheaper of two efforts that reach the target, else the one with higher Dice."""
    if a.reached != b.reached:
        return a if a.reached else b
    if a.reached:
        return a if a.seconds <= b.seconds else b
    return a if a.dice >= b.dice else b


def _padded(sl: tuple[slice, slice], shape: tuple[int, ...]) -> tuple[slice, slice]:
    return (
        slice(max(sl[0].start - _PAD, 0), min(sl[0].stop + _PAD, shape[0])),
        slice(max(sl[1].start - _PAD, 0), min(sl[1].stop + _PAD, shape[1])),
    )


def _components(err: BoolArray, keep: BoolArray) -> list[tuple[int, int, int, npt.NDArray]]:
    """(area, precise edge length, label, labels) per 8-connected component of ``err``.

    The precise edge is the part of a component 4-adjacent to ``keep`` (pixels a careless
    stroke would break).
    """
    labels, n = ndimage.label(err, structure=_EIGHT)
    if n == 0:
        return []
    area = np.bincount(labels.ravel(), minlength=n + 1)
    edge = err & ndimage.binary_dilation(keep)
    precise = np.bincount(labels[edge], minlength=n + 1)
    return [(int(area[i]), int(precise[i]), i, labels) for i in range(1, n + 1)]


def brush_effort(
    start: BoolArray,
    expert: BoolArray,
    model: CostModel,
    rng: np.random.Generator,
    budget_s: float = math.inf,
) -> Effort:
    """Correct ``start`` towards ``expert`` with brush strokes, largest error first.

    Args:
        start: (H, W) bool mask to correct (the model's mask, or all-False for painting
            from scratch).
        expert: (H, W) bool reference mask.
        model: the cost model.
        rng: randomness of the imperfect strokes.
        budget_s: the annotator stops before a stroke that would take the total past this
            many seconds (a volunteer's time budget); ``inf``: no budget.

    Returns:
        The strokes' cost only (no box); ``tool`` is ``"brush"``, or ``"none"`` when
        ``start`` already reaches the target (or the budget allows no stroke).
    """
    return brush_correct(start, expert, model, rng, budget_s)[1]


def brush_correct(
    start: BoolArray,
    expert: BoolArray,
    model: CostModel,
    rng: np.random.Generator,
    budget_s: float = math.inf,
) -> tuple[BoolArray, Effort]:
    """:func:`brush_effort` that also returns the corrected mask."""
    mask = start.copy()
    gt_sum = int(expert.sum())
    inter, msum = int((mask & expert).sum()), int(mask.sum())
    d = _dice(inter, msum, gt_sum)
    seconds, strokes = 0.0, 0
    noise = None if model.stroke_model == "none" else ANNOTATOR_MODELS[model.stroke_model]
    capped = False
    while d < model.target and not capped:
        fn = expert & ~mask
        fp = mask & ~expert
        comps = [(c, True) for c in _components(fn, ~expert)]
        comps += [(c, False) for c in _components(fp, expert & mask)]
        if not comps:
            break
        comps.sort(key=lambda item: -item[0][0])
        slices = {}
        for (area, precise, label, labels), is_fn in comps:
            n_strokes = max(1, math.ceil(precise / model.stroke_len_px))
            cost = (
                n_strokes * model.stroke_s
                + precise / model.trace_px_per_s
                + area / model.fill_px2_per_s
            )
            if strokes + n_strokes > model.max_strokes or seconds + cost > budget_s:
                capped = True
                break
            key = (id(labels), is_fn)
            if key not in slices:
                slices[key] = ndimage.find_objects(labels)
            crop = _padded(slices[key][label - 1], mask.shape)
            region = labels[crop] == label
            if noise is not None:
                region = noise(region, rng)
            before = mask[crop].copy()
            after = before | region if is_fn else before & ~region
            gt_crop = expert[crop]
            inter += int((after & gt_crop).sum()) - int((before & gt_crop).sum())
            msum += int(after.sum()) - int(before.sum())
            mask[crop] = after
            seconds += cost
            strokes += n_strokes
            d = _dice(inter, msum, gt_sum)
            if d >= model.target:
                break
    reached = d >= model.target
    return mask, Effort(seconds, strokes, d, reached, "brush" if strokes else "none")


def polygon_effort(
    expert: BoolArray,
    model: CostModel,
    rng: np.random.Generator,
    budget_s: float = math.inf,
) -> Effort:
    """Outline ``expert`` from scratch with polygons, cheapest tolerance reaching the target.

    Args:
        expert: (H, W) bool reference mask.
        model: the cost model.
        rng: randomness of the vertex clicks.
        budget_s: stop a tolerance once it costs more than this (a cheaper alternative is
            known); the result then has ``reached=False``.
    """
    shape = expert.shape
    gt_sum = int(expert.sum())
    contours = measure.find_contours(np.pad(expert, 1).astype(np.float32), 0.5)
    contours = [c - 1.0 for c in contours if len(c) >= 4]

    def area(c: npt.NDArray) -> float:
        y, x = c[:, 0], c[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    contours.sort(key=lambda c: -area(c))
    best: Effort | None = None
    for tol in model.tolerances:
        drawn = np.zeros(shape, dtype=bool)
        inter, msum = 0, 0
        seconds, actions = 0.0, 0
        d = _dice(inter, msum, gt_sum)
        for contour in contours:
            poly = measure.approximate_polygon(contour, tolerance=tol)
            n_vertices = max(3, len(poly) - 1)
            if model.vertex_jitter_px > 0:
                poly = poly + rng.normal(0.0, model.vertex_jitter_px, poly.shape)
            rr, cc = draw.polygon(poly[:, 0], poly[:, 1], shape)
            was = drawn[rr, cc]
            hit = expert[rr, cc]
            # even-odd rule: a polygon toggles its pixels (holes switch them off)
            inter += int((hit & ~was).sum()) - int((hit & was).sum())
            msum += int((~was).sum()) - int(was.sum())
            drawn[rr, cc] = ~was
            seconds += model.polygon_s + n_vertices * model.vertex_s
            actions += n_vertices + 1
            d = _dice(inter, msum, gt_sum)
            if d >= model.target:
                break
            bound = best.seconds if best is not None and best.reached else budget_s
            if seconds > bound:
                break  # already dearer than a known way to reach the target
        effort = Effort(seconds, actions, d, d >= model.target, "polygon")
        best = effort if best is None else _better(best, effort)
    if best is None:  # no contour at all: an empty expert mask
        return Effort(0.0, 0, 1.0, True, "none")
    return best


def manual_effort(expert: BoolArray, model: CostModel, rng: np.random.Generator) -> Effort:
    """Manual annotation: the cheaper of polygons and painting from an empty mask."""
    brush = brush_effort(np.zeros_like(expert), expert, model, rng)
    poly = polygon_effort(expert, model, rng, brush.seconds if brush.reached else math.inf)
    return _better(poly, brush)


Refine = Callable[
    [Sequence[Sequence[float]], Sequence[int], "npt.NDArray[np.float32] | None"],
    "tuple[BoolArray, npt.NDArray[np.float32] | None]",
]
"""``refine(points, labels, previous_logits) -> (mask, logits)``: the model's answer to the
box with these clicks (XY pixels; 1 positive, 0 negative) and the logits of the mask the
annotator currently keeps (None before the first answer's logits are known)."""


def predictor_refine(predictor: Any, box: Sequence[float]) -> Refine:
    """:data:`Refine` over a predictor with the prompt API (``predict(box, points, labels,
    mask_input)``, :mod:`ml_backend.predictors`) whose image is set: the box stays in every
    prompt, and the kept mask's logits are fed back only when the predictor
    ``refines_with_logits`` (as the backend does)."""
    feed = bool(getattr(predictor, "refines_with_logits", False))

    def refine(
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        logits: npt.NDArray[np.float32] | None,
    ) -> tuple[BoolArray, npt.NDArray[np.float32] | None]:
        answer = predictor.predict(
            box=box,
            points=[list(p) for p in points],
            labels=list(labels),
            mask_input=logits if feed else None,
        )
        return np.asarray(answer.mask, dtype=bool), answer.logits

    return refine


def click_correct(
    predicted: BoolArray,
    logits: npt.NDArray[np.float32] | None,
    expert: BoolArray,
    model: CostModel,
    refine: Refine,
    clicks: int,
) -> tuple[BoolArray, float, int]:
    """Up to ``clicks`` refinement clicks from the model's first mask: ``(mask, seconds,
    clicks made)``.

    Each click goes to the largest error of the mask kept so far
    (:func:`ml_backend.click_training.next_click`); a click whose answer does not raise Dice is
    undone and left out of the next prompts, its time still spent.
    """
    from ml_backend.click_training import next_click  # the same click the decoder trained on

    mask = np.asarray(predicted, dtype=bool)
    gt_sum = int(expert.sum())
    best = _dice(int((mask & expert).sum()), int(mask.sum()), gt_sum)
    points: list[list[float]] = []
    labels: list[int] = []
    seconds, made = 0.0, 0
    for _ in range(clicks):
        if best >= model.target:
            break
        click = next_click(mask, expert)
        if click is None:
            break
        seconds += model.click_s + model.model_wait_s
        made += 1
        points.append([click[0], click[1]])
        labels.append(click[2])
        answer, answer_logits = refine(points, labels, logits)
        answer = np.asarray(answer, dtype=bool)
        score = _dice(int((answer & expert).sum()), int(answer.sum()), gt_sum)
        if score > best:  # kept; otherwise the annotator undoes it (Ctrl+Z)
            mask, best, logits = answer, score, answer_logits
        else:
            points.pop()
            labels.pop()
    return mask, seconds, made


def assisted_correct(
    predicted: BoolArray,
    expert: BoolArray,
    model: CostModel,
    rng: np.random.Generator,
    manual: Effort,
    *,
    refine: Refine | None = None,
    logits: npt.NDArray[np.float32] | None = None,
    clicks: int = 0,
) -> tuple[BoolArray, Effort]:
    """Box + model mask (+ clicks) + brush fixes, or box + reject + ``manual`` if cheaper.

    The annotator is the same oracle as for the reject: with ``refine``, it takes the cheaper
    of brushing the model's mask and clicking first (:func:`click_correct`) then brushing, so
    clicks are used only where they save time.

    Args:
        predicted: (H, W) bool mask the model returned for the box.
        expert: (H, W) bool reference mask.
        model: the cost model.
        rng: randomness of the imperfect strokes.
        manual: the manual effort for the same structure (the fallback after a reject).
        refine: the model's answer to clicks (:data:`Refine`); None: no clicks.
        logits: the first answer's logits, fed to ``refine`` with the first click.
        clicks: refinement clicks at most before the brush (:func:`click_correct`).

    Returns:
        ``(final mask, effort)``; after a reject the final mask is ``expert`` itself (the
        manual outline reached the target by construction, or got as close as it could).
        ``tool`` is the brush's, prefixed ``"<k>click+"`` when ``k`` clicks were made.
    """
    prompt_s = model.box_s + model.model_wait_s
    mask, fix = brush_correct(np.asarray(predicted, dtype=bool), expert, model, rng)
    corrected = Effort(prompt_s + fix.seconds, 2 + fix.actions, fix.dice, fix.reached, fix.tool)
    if refine is not None and clicks > 0:
        start, click_s, made = click_correct(predicted, logits, expert, model, refine, clicks)
        # its own stream, drawn after the brush-only path's, which stays as without clicks
        clicked, cfix = brush_correct(
            start, expert, model, np.random.default_rng(rng.bit_generator.random_raw())
        )
        tool = f"{made}click+{cfix.tool}" if made else cfix.tool
        via_clicks = Effort(
            prompt_s + click_s + cfix.seconds, 2 + made + cfix.actions, cfix.dice, cfix.reached,
            tool,
        )  # fmt: skip
        if _better(via_clicks, corrected) is via_clicks:
            mask, corrected = clicked, via_clicks
    rejected = Effort(
        prompt_s + model.reject_s + manual.seconds,
        2 + 1 + manual.actions,
        manual.dice,
        manual.reached,
        f"reject+{manual.tool}",
    )
    chosen = _better(corrected, rejected)
    return (mask if chosen is corrected else expert.copy()), chosen


def assisted_effort(
    predicted: BoolArray,
    expert: BoolArray,
    model: CostModel,
    rng: np.random.Generator,
    manual: Effort,
) -> Effort:
    """:func:`assisted_correct` without clicks, its effort only (box + model mask + brush
    corrections, or box + reject + ``manual`` if that is cheaper)."""
    return assisted_correct(predicted, expert, model, rng, manual)[1]
