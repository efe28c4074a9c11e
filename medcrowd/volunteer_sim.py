"""Virtual volunteers that label a real Label Studio project the way people do in the UI.

Each volunteer is a real account (created through the organisation's signup link, or reused
from an accounts file) that works the project's queue with its own API token, every request
through :class:`~medcrowd.studio.Studio`:

1. take the next task from the queue (:meth:`Studio.next_task`; blind k-way overlap applies);
2. look at the structure as its annotator model perceives it: the model
   (:data:`fusion.crowd_models.ANNOTATOR_MODELS`: good, sloppy, dilate, erode, miss_small,
   spammer_blobs, spammer_random, partial) turns the expert mask ``TRUTH/<image stem>.png``
   into that volunteer's idea of the structure;
3. draw a box around it and ask the ML backend through Label Studio
   (:meth:`Studio.interactive_predict` — exactly the UI's call) for a MedSAM mask;
4. correct the MedSAM mask toward its perception with the brush: every disagreeing region
   of at least ``min_fix`` pixels is fixed, smaller ones are left (people don't fix
   specks); spammers skip the box and submit their perception as is;
5. submit the rectangle and the brush, with a simulated lead time.

A box answered "busy" — the backend's 503, which Label Studio 1.23.2 hands to the browser as
``{"errors": ["503 Server Error: ..."]}`` without the backend's ``Retry-After`` header — is
asked again after a pause, as the UI's user would redraw it: the ``Retry-After`` seconds when
the answer carries them, else 1, 2, 4… s (at most 8 s), up to ``busy_retries`` times.

Everything is seeded (each volunteer draws from its own stream), so a crowd is reproducible.
The accounts file (0600) keeps the volunteers' tokens for re-runs.

One volunteer is a :class:`Volunteer`; :func:`run_crowd` works a queue with a crowd until it
is empty (``scripts/simulate_crowd.py`` is its command line); ``benchmarks/load_volunteers.py``
runs 30 of them in threads with think times and times every request through their ``timed``
hook.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image
from scipy import ndimage

from fusion.crowd_models import ANNOTATOR_MODELS
from medcrowd.gold import task_image_stem
from medcrowd.studio import Studio, StudioError, task_image_url
from ml_backend.labeling import brush_result
from ml_backend.rle import rle_to_mask

__all__ = [
    "SPAMMERS",
    "CrowdOptions",
    "Timed",
    "Volunteer",
    "box_of",
    "busy_delay",
    "correct",
    "load_accounts",
    "load_truths",
    "make_volunteers",
    "rectangle",
    "run_crowd",
    "save_accounts",
    "untimed",
]

SPAMMERS = {"spammer_blobs", "spammer_random"}
R = TypeVar("R")


class Timed(Protocol):
    """Wraps each request a volunteer makes: ``timed(kind, call, **info)`` returns ``call()``.

    ``kind`` is ``next`` (the queue), ``box`` (box → MedSAM mask through Label Studio; info
    ``image`` = the task's image URL), ``submit`` or ``skip``. A benchmark measures here.
    """

    def __call__(self, kind: str, call: Callable[[], R], **info: Any) -> R: ...


def untimed(kind: str, call: Callable[[], R], **info: Any) -> R:
    """The default :class:`Timed`: just make the request."""
    return call()


def box_of(mask: np.ndarray, rng: np.random.Generator, jitter: float) -> list[float] | None:
    """Tight XYXY box of a mask, each edge moved by up to ``jitter`` px (clipped to image)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    noise = rng.uniform(-jitter, jitter, 4)
    x0 = float(np.clip(cols[0] + noise[0], 0, w - 1))
    y0 = float(np.clip(rows[0] + noise[1], 0, h - 1))
    x1 = float(np.clip(cols[-1] + 1 + noise[2], x0 + 1, w))
    y1 = float(np.clip(rows[-1] + 1 + noise[3], y0 + 1, h))
    return [x0, y0, x1, y1]


def correct(proposal: np.ndarray, target: np.ndarray, min_fix: int) -> np.ndarray:
    """Fix every connected disagreement of at least ``min_fix`` pixels, keep the rest."""
    out = proposal.copy()
    labels, n = ndimage.label(proposal ^ target)
    if n:
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        big = np.flatnonzero(sizes >= min_fix) + 1
        fix = np.isin(labels, big)
        out[fix] = target[fix]
    return out


def rectangle(box: list[float], w: int, h: int, label: str) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    return {"from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w,
                      "height": 100 * (y1 - y0) / h, "rotation": 0,
                      "rectanglelabels": [label]}}  # fmt: skip


def load_accounts(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())) if path.exists() else []


def save_accounts(path: Path, accounts: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(accounts, fh, indent=2)


@dataclass
class Volunteer:
    """One virtual volunteer working a project's queue with its own account.

    Args:
        studio: a client with the volunteer's own token.
        model: annotator model name in ``ANNOTATOR_MODELS``.
        rng: the volunteer's own random stream.
        project_id, ml_id: the project and its ML backend's id in Label Studio.
        truths: {image stem: expert mask PNG} — what there is to perceive.
        label: the brush/rectangle label.
        box_jitter: px each box edge may move.
        min_fix: smallest disagreeing region (px) the volunteer fixes with the brush.
        boxes: boxes drawn per task (a redraw asks the backend again, on a warm embedding).
        think_s: mean pause (uniform in 0.5-1.5x) before each box and before submitting;
            0 for none.
        timed: wraps each request (:class:`Timed`).
        sleep: how to pause (a benchmark passes one that stops early at its deadline).
        busy_retries: how often a box answered 503 ("backend busy") is asked again.
    """

    studio: Studio
    model: str
    rng: np.random.Generator
    project_id: int
    ml_id: int
    truths: dict[str, Path]
    label: str = "Organ"
    box_jitter: float = 3.0
    min_fix: int = 20
    boxes: int = 1
    think_s: float = 0.0
    timed: Timed = untimed
    sleep: Callable[[float], None] = time.sleep
    busy_retries: int = 4
    busy_answers: int = 0
    """503 answers this volunteer waited out (and asked again, or gave up on)."""
    _experts: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)

    def next_task(self) -> dict[str, Any] | None:
        """The next task from the queue, or None when it has none for this volunteer.

        Raises:
            StudioError: the queue answered anything but 200 or 404 ("no more tasks").
        """
        return self.timed("next", lambda: self.studio.next_task(self.project_id))

    def work(self, task: dict[str, Any]) -> str:
        """Label one task as the model perceives it; ``"annotated"`` or ``"skipped"``."""
        url = task_image_url(task["data"]) or ""
        truth_path = self.truths.get(task_image_stem(url))
        if truth_path is None:  # nothing to perceive: skip the task, as a person would
            self.timed("skip", lambda: self.studio.create_annotation(
                task["id"], [], was_cancelled=True))  # fmt: skip
            return "skipped"
        if truth_path not in self._experts:
            self._experts[truth_path] = np.asarray(Image.open(truth_path)) > 0
        expert = self._experts[truth_path]
        h, w = expert.shape
        perceived = ANNOTATOR_MODELS[self.model](expert, self.rng)
        result: list[dict[str, Any]] = []
        started = time.monotonic()
        final = perceived
        box = box_of(perceived, self.rng, self.box_jitter)
        if self.model not in SPAMMERS and box is not None:
            for attempt in range(max(1, self.boxes)):
                if attempt:
                    box = box_of(perceived, self.rng, self.box_jitter) or box
                self.think()
                context = {"result": [rectangle(box, w, h, self.label)]}

                def ask(c: dict[str, Any] = context) -> Any:
                    return self.ask_backend(task["id"], c)

                answer = self.timed("box", ask, image=url)
                regions = (answer.get("data") or {}).get("result") or []
                if regions:
                    proposal = rle_to_mask(regions[0]["value"]["rle"], h, w)
                    final = correct(proposal, perceived, self.min_fix)
            result.append(rectangle(box, w, h, self.label))
        result.append(brush_result(final, self.label))
        self.think()
        lead = (time.monotonic() - started) + float(self.rng.uniform(20, 90))
        self.timed("submit", lambda: self.studio.create_annotation(
            task["id"], result, lead_time=lead))  # fmt: skip
        return "annotated"

    def ask_backend(self, task_id: int, context: dict[str, Any]) -> Any:
        """:meth:`Studio.interactive_predict`, waiting out "busy" (503) answers.

        Returns Label Studio's last answer (with its ``errors`` when every try was busy).

        Raises:
            StudioError: Label Studio refused the call (a 503 of its own only after
                ``busy_retries`` waits).
        """
        fallback = 1.0
        for attempt in range(self.busy_retries + 1):
            last = attempt == self.busy_retries
            try:
                answer = self.studio.interactive_predict(self.ml_id, task_id, context)
            except StudioError as exc:
                if exc.status_code != 503 or last:
                    raise
                delay = busy_delay(str(exc))
            else:
                errors = answer.get("errors") if isinstance(answer, dict) else None
                if not errors or last or not any(_BUSY.search(str(e)) for e in errors):
                    return answer
                delay = busy_delay(" ".join(str(e) for e in errors))
            self.busy_answers += 1
            self.sleep(delay if delay is not None else fallback)
            fallback = min(fallback * 2.0, 8.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def think(self) -> None:
        if self.think_s > 0:
            self.sleep(self.think_s * float(self.rng.uniform(0.5, 1.5)))


_BUSY = re.compile(r"\b503\b|Service Unavailable|backend busy", re.IGNORECASE)
_RETRY_AFTER = re.compile(r"retry[- ]after[:= ]+(\d+(?:\.\d+)?)", re.IGNORECASE)


def busy_delay(message: str) -> float | None:
    """The ``Retry-After`` seconds a busy answer carries in its text (capped at 30), if any."""
    match = _RETRY_AFTER.search(message)
    return min(30.0, float(match.group(1))) if match else None


def make_volunteers(
    admin: Studio,
    project_id: int,
    ml_id: int,
    models: list[str],
    truths: dict[str, Path],
    accounts_path: Path,
    seed: int,
    studio_factory: Callable[[str], Studio] | None = None,
    **volunteer_options: Any,
) -> list[Volunteer]:
    """Sign up (or reuse from ``accounts_path``) one account per model; seeded volunteers.

    Args:
        studio_factory: makes a volunteer's client from their token (default: a ``Studio``
            at the admin's URL).
        volunteer_options: passed to every :class:`Volunteer` (label, boxes, think_s, …).
    """
    unknown = sorted(set(models) - set(ANNOTATOR_MODELS))
    if unknown:
        raise ValueError(f"unknown annotator models {unknown}; known: {sorted(ANNOTATOR_MODELS)}")
    accounts = load_accounts(accounts_path)
    tag = uuid.uuid4().hex[:6]
    while len(accounts) < len(models):
        i = len(accounts)
        email, password = f"sim{i}-{tag}@example.com", f"Sim-{tag}-{i}-pass!"
        uid, token = admin.create_volunteer(email, password)
        accounts.append({"id": uid, "email": email, "token": token})
    save_accounts(accounts_path, accounts)
    factory = studio_factory or (lambda token: Studio(admin.url, token))
    seeds = np.random.SeedSequence(seed).spawn(len(models))
    return [
        Volunteer(factory(acc["token"]), model, np.random.default_rng(s), project_id, ml_id,
                  truths, **volunteer_options)
        for model, acc, s in zip(models, accounts, seeds, strict=False)
    ]  # fmt: skip


def load_truths(folder: Path) -> dict[str, Path]:
    """{image stem: mask path} from a folder of ``<image stem>.png`` (or ``_mask.png``)."""
    return {p.stem.removesuffix("_mask"): p for p in Path(folder).glob("*.png")}


@dataclass
class CrowdOptions:
    """A crowd for :func:`run_crowd`.

    Attributes:
        models: annotator model names, one volunteer each.
        truth: folder of expert masks ``<image stem>.png``.
        accounts: where the volunteers' tokens are kept (0600) for re-runs.
        seed, label, box_jitter, min_fix: see :class:`Volunteer`.
        max_seconds: stop after this long even if the queue is not empty.
    """

    models: list[str]
    truth: Path
    accounts: Path
    seed: int = 0
    label: str = "Organ"
    box_jitter: float = 3.0
    min_fix: int = 20
    max_seconds: float = 3600.0


def run_crowd(admin: Studio, project: str, options: CrowdOptions) -> dict[str, Any]:
    """Sign up the crowd and let it work ``project`` (id or title) until the queue is empty.

    Returns:
        ``{"annotations": n, "skipped": n, "by_model": {model: annotations}}``.

    Raises:
        ValueError: no such project, no ML backend connected, unknown annotator models,
            no truth folder.
    """
    if not options.truth.is_dir():
        raise ValueError(f"--truth {options.truth} is not a folder of masks")
    project_id = int(project) if project.isdigit() else admin.find_project(project)
    if project_id is None:
        raise ValueError(f"no project {project!r} at {admin.url}")
    mls = admin.ml_backend_ids(project_id)
    if not mls:
        raise ValueError("the project has no ML backend connected (medcrowd up connects one)")
    crowd = make_volunteers(
        admin, project_id, mls[0], options.models, load_truths(options.truth),
        options.accounts, options.seed, label=options.label, box_jitter=options.box_jitter,
        min_fix=options.min_fix,
    )  # fmt: skip
    stats: dict[str, Any] = {"annotations": 0, "skipped": 0, "by_model": {}}
    active = list(crowd)
    deadline = time.monotonic() + options.max_seconds
    while active and time.monotonic() < deadline:
        for vol in list(active):
            try:
                task = vol.next_task()
            except StudioError:
                task = None
            if task is None:
                active.remove(vol)
                continue
            if vol.work(task) == "skipped":
                stats["skipped"] += 1
                continue
            stats["annotations"] += 1
            stats["by_model"][vol.model] = stats["by_model"].get(vol.model, 0) + 1
    return stats
