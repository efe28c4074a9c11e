"""Virtual volunteers that label a real Label Studio project the way people do in the UI.

Each volunteer is a real account (created through the organisation's signup link, or reused
from ``--accounts``) that works the project's queue with its own API token:

1. take the next task from ``/api/projects/{id}/next`` (blind k-way overlap applies);
2. look at the structure as its annotator model perceives it: the model
   (``benchmarks/crowd_models.py``: good, sloppy, dilate, erode, miss_small, spammer_blobs,
   spammer_random, partial) turns the expert mask ``TRUTH/<image stem>.png`` into that
   volunteer's idea of the structure;
3. draw a box around it and ask the ML backend through Label Studio
   (``/api/ml/{ml}/interactive-annotating`` — exactly the UI's call) for a MedSAM mask;
4. correct the MedSAM mask toward its perception with the brush: every disagreeing region
   of at least ``--min-fix`` pixels is fixed, smaller ones are left (people don't fix
   specks); spammers skip the box and submit their perception as is;
5. submit the rectangle and the brush, with a simulated lead time.

Everything is seeded (``--seed``; each volunteer draws from its own stream), so a crowd is
reproducible. The accounts file (0600) keeps the volunteers' tokens for re-runs.

One volunteer is a :class:`Volunteer`; ``benchmarks/load_volunteers.py`` runs 30 of them in
threads with think times and times every request through its ``timed`` hook.

    python scripts/simulate_crowd.py --project "medcrowd demo" --truth masks/ \\
        --models good,good,sloppy,dilate,spammer_blobs --url http://127.0.0.1:8080 --token T
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusion.crowd_models import ANNOTATOR_MODELS  # noqa: E402
from medcrowd.gold import task_image_stem  # noqa: E402
from medcrowd.studio import Studio  # noqa: E402
from ml_backend.labeling import brush_result  # noqa: E402
from ml_backend.rle import rle_to_mask  # noqa: E402

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
    _experts: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)

    def next_task(self) -> dict[str, Any] | None:
        """The next task from the queue, or None when it has none for this volunteer.

        Raises:
            RuntimeError: the queue answered anything but 200 or 404 ("no more tasks").
        """
        resp = self.timed(
            "next",
            lambda: self.studio._http.get(
                f"/api/projects/{self.project_id}/next", headers=self.studio._headers()
            ),
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RuntimeError(f"queue answered {resp.status_code}: {resp.text[:200]}")
        task: dict[str, Any] = resp.json()
        return task

    def work(self, task: dict[str, Any]) -> str:
        """Label one task as the model perceives it; ``"annotated"`` or ``"skipped"``."""
        url = next((v for v in task["data"].values() if isinstance(v, str)), "")
        truth_path = self.truths.get(task_image_stem(url))
        if truth_path is None:  # nothing to perceive: skip the task, as a person would
            self.timed("skip", lambda: self.studio.client.annotations.create(
                task["id"], result=[], was_cancelled=True))  # fmt: skip
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
                answer = self.timed(
                    "box",
                    lambda c=context: self.studio.interactive_predict(self.ml_id, task["id"], c),
                    image=url,
                )
                regions = (answer.get("data") or {}).get("result") or []
                if regions:
                    proposal = rle_to_mask(regions[0]["value"]["rle"], h, w)
                    final = correct(proposal, perceived, self.min_fix)
            result.append(rectangle(box, w, h, self.label))
        result.append(brush_result(final, self.label))
        self.think()
        lead = (time.monotonic() - started) + float(self.rng.uniform(20, 90))
        self.timed("submit", lambda: self.studio.client.annotations.create(
            task["id"], result=result, lead_time=lead))  # fmt: skip
        return "annotated"

    def think(self) -> None:
        if self.think_s > 0:
            self.sleep(self.think_s * float(self.rng.uniform(0.5, 1.5)))


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    admin = Studio(args.url, args.token)
    project_id = int(args.project) if args.project.isdigit() else admin.find_project(args.project)
    if project_id is None:
        raise SystemExit(f"no project {args.project!r}")
    mls = list(admin.client.ml.list(project=project_id))
    if not mls:
        raise SystemExit("the project has no ML backend connected (medcrowd up connects one)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        crowd = make_volunteers(
            admin, project_id, int(mls[0].id), models, load_truths(Path(args.truth)),
            Path(args.accounts), args.seed, label=args.label, box_jitter=args.box_jitter,
            min_fix=args.min_fix,
        )  # fmt: skip
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    stats: dict[str, Any] = {"annotations": 0, "skipped": 0, "by_model": {}}
    active = list(crowd)
    deadline = time.monotonic() + args.max_seconds
    while active and time.monotonic() < deadline:
        for vol in list(active):
            try:
                task = vol.next_task()
            except RuntimeError:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("MEDCROWD_URL", "http://127.0.0.1:8080"))
    ap.add_argument("--token", default=os.environ.get("MEDCROWD_TOKEN"), help="admin token")
    ap.add_argument("--project", required=True, help="project id or title")
    ap.add_argument("--truth", required=True, help="folder of expert masks <image stem>.png")
    ap.add_argument("--models", default="good,good,sloppy,dilate,spammer_blobs",
                    help="comma-separated annotator models, one volunteer each")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="Organ")
    ap.add_argument("--box-jitter", type=float, default=3.0, help="px each box edge may move")
    ap.add_argument("--min-fix", type=int, default=20, help="smallest error region fixed (px)")
    ap.add_argument("--accounts", default="simulated-volunteers.json",
                    help="where volunteer tokens are kept (0600) for re-runs")  # fmt: skip
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    args = ap.parse_args()
    if not args.token:
        raise SystemExit("give --token or MEDCROWD_TOKEN (an admin token)")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
