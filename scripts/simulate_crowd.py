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
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.crowd_models import ANNOTATOR_MODELS  # noqa: E402
from medcrowd.gold import task_image_stem  # noqa: E402
from medcrowd.studio import Studio  # noqa: E402
from ml_backend.labeling import brush_result  # noqa: E402
from ml_backend.rle import rle_to_mask  # noqa: E402

SPAMMERS = {"spammer_blobs", "spammer_random"}


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    admin = Studio(args.url, args.token)
    project_id = int(args.project) if args.project.isdigit() else admin.find_project(args.project)
    if project_id is None:
        raise SystemExit(f"no project {args.project!r}")
    mls = list(admin.client.ml.list(project=project_id))
    if not mls:
        raise SystemExit("the project has no ML backend connected (medcrowd up connects one)")
    ml_id = int(mls[0].id)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(ANNOTATOR_MODELS))
    if unknown:
        raise SystemExit(f"unknown annotator models {unknown}; known: {sorted(ANNOTATOR_MODELS)}")
    truths = {p.stem.removesuffix("_mask"): p for p in Path(args.truth).glob("*.png")}
    accounts = load_accounts(Path(args.accounts))
    tag = uuid.uuid4().hex[:6]
    while len(accounts) < len(models):
        i = len(accounts)
        email, password = f"sim{i}-{tag}@example.com", f"Sim-{tag}-{i}-pass!"
        uid, token = admin.create_volunteer(email, password)
        accounts.append({"id": uid, "email": email, "token": token})
    save_accounts(Path(args.accounts), accounts)
    seeds = np.random.SeedSequence(args.seed).spawn(len(models))
    crowd = [
        (model, Studio(args.url, acc["token"]), np.random.default_rng(seed))
        for model, acc, seed in zip(models, accounts, seeds, strict=False)
    ]
    stats: dict[str, Any] = {"annotations": 0, "skipped": 0, "by_model": {}}
    active = list(crowd)
    deadline = time.monotonic() + args.max_seconds
    while active and time.monotonic() < deadline:
        for entry in list(active):
            model, vol, rng = entry
            resp = vol._http.get(f"/api/projects/{project_id}/next", headers=vol._headers())
            if resp.status_code != 200:
                active.remove(entry)
                continue
            task = resp.json()
            url = next((v for v in task["data"].values() if isinstance(v, str)), "")
            truth_path = truths.get(task_image_stem(url))
            if truth_path is None:  # nothing to perceive: skip the task, as a person would
                vol.client.annotations.create(task["id"], result=[], was_cancelled=True)
                stats["skipped"] += 1
                continue
            expert = np.asarray(Image.open(truth_path)) > 0
            h, w = expert.shape
            perceived = ANNOTATOR_MODELS[model](expert, rng)
            result: list[dict[str, Any]] = []
            started = time.monotonic()
            box = box_of(perceived, rng, args.box_jitter)
            final = perceived
            if model not in SPAMMERS and box is not None:
                answer = vol.interactive_predict(ml_id, task["id"], {
                    "result": [rectangle(box, w, h, args.label)]})  # fmt: skip
                regions = (answer.get("data") or {}).get("result") or []
                if regions:
                    proposal = rle_to_mask(regions[0]["value"]["rle"], h, w)
                    final = correct(proposal, perceived, args.min_fix)
                result.append(rectangle(box, w, h, args.label))
            result.append(brush_result(final, args.label))
            lead = (time.monotonic() - started) + float(rng.uniform(20, 90))
            vol.client.annotations.create(task["id"], result=result, lead_time=lead)
            stats["annotations"] += 1
            stats["by_model"][model] = stats["by_model"].get(model, 0) + 1
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
