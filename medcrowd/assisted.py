"""A virtual crowd that labels through the real assist: box → LiteMedSAM mask → brush fixes.

Each virtual volunteer (:class:`VolunteerModel`, the named pool :data:`VOLUNTEER_MODELS`)
labels an image the way a person in the Label Studio project does:

1. **Perception.** The volunteer sees the object as the expert mask passed through one of the
   annotator models of :mod:`fusion.crowd_models` (``good``: ~0.6 px boundary noise,
   ``sloppy``: ~2 px, ``dilate``: 2 px too large, ``erode``: 1 px too small; ``exact``: the
   expert mask). Everything the volunteer does aims at this perceived mask, never at the
   expert mask itself.
2. **Boxes.** One box per object of the perceived mask (8-connected components of at least
   1 % of the largest one, at most :data:`MAX_OBJECTS`; two lungs → two boxes), each the
   tight box of the object passed through the volunteer's box noise (:data:`BOX_NOISE`):
   ``jitter`` every edge moves by N(0, 3 % of the box side); ``loose`` every edge moves
   outwards by U(5 %, 20 %) of the side, plus jitter; ``clipped`` one or two random edges move
   inwards by U(10 %, 30 %), plus jitter; ``wrong_object`` on half of the images (drawn per
   image) every box is moved by one box width or height in a random direction onto whatever
   lies there and the volunteer accepts that mask as it is, on the other half it boxes with
   jitter; ``spam`` one box of random position and size anywhere, accepted as it is.
3. **The assist.** The real predictor (LiteMedSAM by default, :func:`ml_backend.predictors.
   get_predictor`, in process) answers each box with a mask; the label starts as the union
   of the masks. The image embedding is computed once per image (``set_image``) and reused
   for every box of every volunteer and every seed; only the decoder runs per box.
4. **Corrections.** The volunteer fixes the mask towards its perception with brush strokes,
   largest error first, until Dice ≥ its ``target`` against its perception or its
   ``budget_s`` seconds of corrections are spent (:func:`medcrowd.effort.brush_correct`, the
   steering-law stroke prices of :mod:`medcrowd.effort`). ``wrong_object`` (on its wrong
   half) and ``spam`` volunteers do not correct.

Each label carries a volunteer time in seconds: per box ``box_s`` + ``model_wait_s`` of the
:class:`~medcrowd.effort.CostModel` (3 s + 0.5 s by default), plus the priced strokes.

The **assist alone** (arm (e) of ``medcrowd evaluate``) is the same pipeline with the
``exact`` perception, ``jitter`` boxes and no correction: one box per object, the model's
mask as the label, ``box_s + model_wait_s`` per box.

Everything is seeded: a volunteer's randomness on image ``i`` under seed ``s`` comes from
``numpy.random.default_rng([s, i, slot])``, so labels do not depend on the order images are
processed in, and one pass over the images serves every seed.

Labels are made at the images' own resolution (a volunteer works on the image as uploaded);
``medcrowd evaluate`` resizes them to its ``--size`` afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medcrowd.effort import CostModel, brush_correct

__all__ = [
    "BOX_NOISE",
    "DEFAULT_ASSISTED_CROWD",
    "MAX_OBJECTS",
    "VOLUNTEER_MODELS",
    "AssistedLabels",
    "VolunteerModel",
    "label_pool",
    "noisy_boxes",
    "object_boxes",
]

BoolArray = npt.NDArray[np.bool_]
Box = list[float]

BOX_NOISE = ("jitter", "loose", "clipped", "wrong_object", "spam")
"""Box noise models (module doc, step 2)."""
MAX_OBJECTS = 8
"""At most this many objects (largest first) get a box per image."""
_MIN_OBJECT = 0.01  # an object smaller than this share of the largest one gets no box
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class VolunteerModel:
    """How one kind of virtual volunteer labels (module doc).

    Attributes:
        perception: a :data:`fusion.crowd_models.ANNOTATOR_MODELS` name, or ``"exact"``.
        box: a :data:`BOX_NOISE` name.
        budget_s: seconds of brush corrections the volunteer spends at most per image.
        target: the volunteer stops correcting at this Dice against its perception.
    """

    perception: str
    box: str
    budget_s: float
    target: float = 0.95

    def __post_init__(self) -> None:
        from fusion.crowd_models import ANNOTATOR_MODELS

        if self.perception != "exact" and self.perception not in ANNOTATOR_MODELS:
            raise ValueError(f"unknown perception {self.perception!r}")
        if self.box not in BOX_NOISE:
            raise ValueError(f"unknown box noise {self.box!r}; choose from {', '.join(BOX_NOISE)}")
        if self.budget_s < 0:
            raise ValueError("budget_s must be >= 0")


VOLUNTEER_MODELS: dict[str, VolunteerModel] = {
    "careful": VolunteerModel("good", "jitter", budget_s=120.0, target=0.97),
    "quick": VolunteerModel("good", "jitter", budget_s=15.0, target=0.95),
    "sloppy": VolunteerModel("sloppy", "loose", budget_s=20.0, target=0.92),
    "loose": VolunteerModel("dilate", "loose", budget_s=10.0, target=0.92),
    "clipped": VolunteerModel("erode", "clipped", budget_s=10.0, target=0.92),
    "wrong_object": VolunteerModel("good", "wrong_object", budget_s=10.0, target=0.92),
    "spam": VolunteerModel("good", "spam", budget_s=0.0),
}
"""The named volunteer kinds of ``medcrowd evaluate --crowd-models`` (assisted crowd)."""

DEFAULT_ASSISTED_CROWD = (
    "careful", "careful", "quick", "quick", "quick", "sloppy", "loose", "clipped",
    "wrong_object", "spam",
)  # fmt: skip
"""The default pool of 10 volunteers; ``raters_per_task`` of them are drawn per image."""

_ASSIST = VolunteerModel("exact", "jitter", budget_s=0.0)


@dataclass
class AssistedLabels:
    """The assisted crowd's labels of a pool under one seed (native resolution).

    Attributes:
        votes: per image, a (k, H, W) bool stack of the k volunteers' final labels.
        annotators: per image, the k volunteer ids (``v03-quick``: slot 3 of the crowd).
        seconds: per image, the k volunteers' times.
        raw_dice: per image, the k labels' Dice against the expert mask.
        assist: per image, the assist-alone mask (one jittered box per object, no fixes).
        assist_seconds: per image, the assist-alone time.
    """

    votes: list[BoolArray] = field(default_factory=list)
    annotators: list[list[str]] = field(default_factory=list)
    seconds: list[list[float]] = field(default_factory=list)
    raw_dice: list[list[float]] = field(default_factory=list)
    assist: list[BoolArray] = field(default_factory=list)
    assist_seconds: list[float] = field(default_factory=list)

    def extend(self, more: AssistedLabels) -> None:
        """Append the labels of the images that follow (a pool labelled in parts)."""
        self.votes += more.votes
        self.annotators += more.annotators
        self.seconds += more.seconds
        self.raw_dice += more.raw_dice
        self.assist += more.assist
        self.assist_seconds += more.assist_seconds


class _Predictor(Protocol):
    """The two calls of :class:`ml_backend.predictors.BoxPredictor` used here."""

    def set_image(self, image: np.ndarray) -> None: ...  # pragma: no cover

    def predict_box(self, box_xyxy: Sequence[float]) -> tuple[np.ndarray, float]: ...


def object_boxes(mask: BoolArray) -> list[Box]:
    """Tight XYXY boxes (x1/y1 one past the last pixel) of the objects of ``mask``: its
    8-connected components of at least 1 % of the largest, largest first, at most
    :data:`MAX_OBJECTS`; ``[]`` for an empty mask."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-areas, kind="stable")
    keep = [int(i) for i in order if areas[i] >= _MIN_OBJECT * areas[order[0]]][:MAX_OBJECTS]
    slices = ndimage.find_objects(labels)
    boxes = []
    for i in keep:
        rs, cs = slices[i]
        boxes.append([float(cs.start), float(rs.start), float(cs.stop), float(rs.stop)])
    return boxes


def _clip(box: Sequence[float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    x0, x1 = sorted((min(max(x0, 0.0), width - 1.0), min(max(x1, 1.0), float(width))))
    y0, y1 = sorted((min(max(y0, 0.0), height - 1.0), min(max(y1, 1.0), float(height))))
    return [x0, y0, max(x1, x0 + 2.0), max(y1, y0 + 2.0)]


def noisy_boxes(
    boxes: Sequence[Box], kind: str, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[list[Box], bool]:
    """The boxes a volunteer with box noise ``kind`` draws for the tight ``boxes``.

    Returns:
        ``(boxes, corrects)``: the drawn boxes (clipped to the image) and whether the volunteer
        will correct the resulting mask (False for ``spam`` and for ``wrong_object`` on the
        images it gets wrong).
    """
    height, width = shape
    if kind == "spam":
        w = rng.uniform(0.1, 0.6) * width
        h = rng.uniform(0.1, 0.6) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        return [_clip([x0, y0, x0 + w, y0 + h], width, height)], False
    wrong = kind == "wrong_object" and bool(rng.random() < 0.5)
    out = []
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        edges = np.array([x0, y0, x1, y1], dtype=float)
        sides = np.array([w, h, w, h])
        outward = np.array([-1.0, -1.0, 1.0, 1.0])
        edges += rng.normal(0.0, 0.03, 4) * sides
        if kind == "loose":
            edges += outward * rng.uniform(0.05, 0.20, 4) * sides
        elif kind == "clipped":
            chosen = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
            edges[chosen] -= outward[chosen] * rng.uniform(0.10, 0.30, len(chosen)) * sides[chosen]
        elif wrong:
            angle = rng.uniform(0, 2 * math.pi)
            edges += np.array([w, h, w, h]) * np.array(
                [math.cos(angle), math.sin(angle), math.cos(angle), math.sin(angle)]
            )
        out.append(_clip(edges.tolist(), width, height))
    return out, not wrong


def _perceive(expert: BoolArray, perception: str, rng: np.random.Generator) -> BoolArray:
    if perception == "exact":
        return expert.copy()
    from fusion.crowd_models import ANNOTATOR_MODELS

    return np.asarray(ANNOTATOR_MODELS[perception](expert, rng), dtype=bool)


def _assist_mask(predictor: _Predictor, boxes: Sequence[Box], shape: tuple[int, int]) -> BoolArray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        predicted, _score = predictor.predict_box(box)
        mask |= np.asarray(predicted, dtype=bool)
    return mask


def _dice(a: BoolArray, b: BoolArray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def label_one(
    predictor: _Predictor,
    expert: BoolArray,
    volunteer: VolunteerModel,
    cost: CostModel,
    rng: np.random.Generator,
) -> tuple[BoolArray, float]:
    """One volunteer's label of the image last given to ``predictor.set_image``: the final
    mask and the seconds it took (module doc, steps 1–4)."""
    perceived = _perceive(expert, volunteer.perception, rng)
    shape = (int(expert.shape[0]), int(expert.shape[1]))
    tight = object_boxes(perceived)
    if not tight and volunteer.box != "spam":
        return np.zeros(shape, dtype=bool), 0.0  # nothing seen: the volunteer submits empty
    boxes, corrects = noisy_boxes(tight, volunteer.box, shape, rng)
    mask = _assist_mask(predictor, boxes, shape)
    seconds = len(boxes) * (cost.box_s + cost.model_wait_s)
    if corrects and volunteer.budget_s > 0:
        model = CostModel(**{**cost.__dict__, "target": volunteer.target})
        mask, effort = brush_correct(mask, perceived, model, rng, budget_s=volunteer.budget_s)
        seconds += effort.seconds
    return mask, seconds


def label_pool(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    predictor: _Predictor,
    crowd: Sequence[str] = DEFAULT_ASSISTED_CROWD,
    raters_per_task: int = 3,
    seeds: Sequence[int] = (0,),
    cost: CostModel | None = None,
    progress: Callable[[int, int], None] | None = None,
    first_index: int = 0,
) -> dict[int, AssistedLabels]:
    """Label every image with ``raters_per_task`` volunteers of ``crowd`` (per seed) and with
    the assist alone, through ``predictor``.

    Args:
        images: (H, W) or (H, W, 3) uint8 images, any sizes.
        masks: the expert masks (nonzero = object), one per image, same H × W: what the
            volunteers' perceptions are made from (never shown to them as such).
        predictor: a box predictor (``set_image`` + ``predict_box``), e.g.
            ``get_predictor("litemedsam")``; ``set_image`` runs once per image.
        crowd: :data:`VOLUNTEER_MODELS` names, one per volunteer slot.
        raters_per_task: distinct volunteers drawn per image (and seed).
        seeds: one set of labels per seed.
        cost: the effort model's prices (default :class:`~medcrowd.effort.CostModel`).
        progress: ``progress(done, total)`` in images.
        first_index: the pool index of ``images[0]``. Randomness is seeded per (seed, pool
            index, volunteer slot), so a pool labelled in parts (``first_index`` = where each
            part starts) gets the labels it gets in one call.

    Returns:
        ``{seed: AssistedLabels}``, images in input order.
    """
    unknown = [name for name in crowd if name not in VOLUNTEER_MODELS]
    if unknown:
        raise ValueError(f"unknown volunteer models {unknown}; known: {sorted(VOLUNTEER_MODELS)}")
    if not 1 <= raters_per_task <= len(crowd):
        raise ValueError(f"raters_per_task must be in 1..{len(crowd)} (the crowd size)")
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    cost = cost or CostModel()
    out = {int(s): AssistedLabels() for s in seeds}
    for i, (image, mask) in enumerate(zip(images, masks, strict=True), start=first_index):
        expert = np.asarray(mask) != 0
        predictor.set_image(np.asarray(image))
        for seed, labels in out.items():
            pick = np.random.default_rng([seed, i, 0])
            chosen = sorted(pick.choice(len(crowd), size=raters_per_task, replace=False).tolist())
            votes, secs, dices = [], [], []
            for slot in chosen:
                rng = np.random.default_rng([seed, i, slot + 1])
                label, seconds = label_one(
                    predictor, expert, VOLUNTEER_MODELS[crowd[slot]], cost, rng
                )
                votes.append(label)
                secs.append(float(seconds))
                dices.append(_dice(label, expert))
            labels.votes.append(np.stack(votes))
            labels.annotators.append([f"v{slot:02d}-{crowd[slot]}" for slot in chosen])
            labels.seconds.append(secs)
            labels.raw_dice.append(dices)
            rng = np.random.default_rng([seed, i, len(crowd) + 1])
            alone, seconds = label_one(predictor, expert, _ASSIST, cost, rng)
            labels.assist.append(alone)
            labels.assist_seconds.append(float(seconds))
        if progress is not None:
            progress(i + 1 - first_index, len(images))
    return out


def summary(
    labels: AssistedLabels, expert_masks: Sequence[np.ndarray] | None = None
) -> dict[str, Any]:
    """Volunteer time and raw label quality of ``labels`` (for ``summary.json``)."""
    per_image = [sum(s) for s in labels.seconds]
    flat = [d for ds in labels.raw_dice for d in ds]
    out: dict[str, Any] = {
        "images": len(per_image),
        "volunteer_seconds_per_image": float(np.mean(per_image)) if per_image else 0.0,
        "volunteer_seconds_per_label": float(np.mean([s for ss in labels.seconds for s in ss]))
        if per_image
        else 0.0,
        "volunteer_hours": float(sum(per_image) / 3600.0),
        "label_dice_vs_expert_mean": float(np.mean(flat)) if flat else None,
        "assist_seconds_per_image": float(np.mean(labels.assist_seconds)) if per_image else 0.0,
    }
    if expert_masks is not None and labels.assist:
        out["assist_dice_vs_expert_mean"] = float(
            np.mean(
                [
                    _dice(a, np.asarray(m) != 0)
                    for a, m in zip(labels.assist, expert_masks, strict=True)
                ]
            )
        )
    return out
