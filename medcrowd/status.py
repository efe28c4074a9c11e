"""``medcrowd status``: how far a project is, who did what, and which slice proposals the
volunteers kept or edited."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from medcrowd.studio import Studio, Task
from ml_backend.labeling import PROPAGATED_PREFIX

__all__ = ["project_status", "proposal_review"]


def project_status(studio: Studio, project_id: int) -> dict[str, Any]:
    """Progress and per-volunteer effort of one project.

    Returns:
        ``{"project", "title", "overlap", "tasks", "by_annotations": {n: tasks with n
        submitted annotations}, "complete", "volunteers": [{"id", "email", "annotations",
        "gold", "skipped", "lead_time_s"}], "proposals": proposal_review(...)}``
        (cancelled/skipped annotations are counted apart and do not advance a task).
    """
    project = studio.project(project_id)
    overlap = project.overlap
    all_tasks = studio.tasks(project_id)  # with data: proposal_review needs data.medcrowd
    exported = {int(t["id"]): t for t in studio.export_tasks(project_id)}
    emails = studio.users()
    per_task: Counter[int] = Counter()
    people: dict[int, dict[str, Any]] = {}
    for task in exported.values():
        for ann in task.get("annotations") or []:
            who = ann.get("completed_by")
            uid = int(who["id"] if isinstance(who, dict) else who)
            row = people.setdefault(
                uid,
                {"id": uid, "email": emails.get(uid, ""), "annotations": 0, "gold": 0,
                 "skipped": 0, "lead_time_s": 0.0},
            )  # fmt: skip
            if ann.get("was_cancelled"):
                row["skipped"] += 1
                continue
            if ann.get("ground_truth"):
                row["gold"] += 1
            else:
                per_task[int(task["id"])] += 1
            row["annotations"] += 1
            row["lead_time_s"] += float(ann.get("lead_time") or 0.0)
    histogram: Counter[int] = Counter(per_task.get(int(t.id), 0) for t in all_tasks)
    return {
        "project": project_id,
        "title": project.title,
        "overlap": overlap,
        "tasks": len(all_tasks),
        "by_annotations": {
            str(n): histogram.get(n, 0) for n in range(max(*histogram, overlap) + 1)
        },
        "complete": sum(v for n, v in histogram.items() if n >= overlap),
        "volunteers": sorted(people.values(), key=lambda r: r["id"]),
        "proposals": proposal_review(studio, all_tasks, exported),
    }


def proposal_review(
    studio: Studio, tasks: list[Task], exported: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Which slices of imported volumes carry a propagated proposal, and what volunteers did.

    A submitted annotation on such a slice is *accepted* when its brush mask is the
    proposal's pixel for pixel (the volunteer submitted it untouched) and *edited* otherwise;
    ``dice`` is the annotation's Dice against the proposal. The comparison is with the
    proposal the task carries now: a later submit on a neighbouring slice replaces it, so an
    annotation made before that counts as edited unless the new proposal is the same.

    Args:
        tasks: the project's tasks (:meth:`Studio.tasks`); only those imported from a volume
            (``data.medcrowd``) are asked for their predictions.
        exported: the annotated tasks by id (:meth:`Studio.export_tasks`).

    Returns:
        ``{"proposed": slices with a proposal, "reviewed": annotations on them, "accepted",
        "edited", "slices": [{"task", "source", "index", "model_version", "annotations":
        [{"id", "accepted", "dice"}]}]}`` (``dice`` None: the annotation's RLE is unreadable).
    """
    from fusion.metrics import dice
    from medcrowd.sync import brush_mask, result_size

    rows: list[dict[str, Any]] = []
    reviewed: list[dict[str, Any]] = []
    for task in tasks:
        meta = task.data.get("medcrowd")
        if not isinstance(meta, dict) or "index" not in meta:
            continue
        proposals = [
            p for p in studio.predictions(task.id) if p.model_version.startswith(PROPAGATED_PREFIX)
        ]
        if not proposals:
            continue
        latest = max(proposals, key=lambda p: p.id)
        size = result_size(latest.result)
        if size is None:
            continue
        height, width = size
        try:
            proposal = brush_mask(latest.result, height, width)
        except ValueError:  # malformed RLE: not ours to judge
            continue
        if proposal is None:
            continue
        reviews: list[dict[str, Any]] = []
        for ann in (exported.get(task.id) or {}).get("annotations") or []:
            if ann.get("was_cancelled") or ann.get("ground_truth"):
                continue
            try:
                mask = brush_mask(ann.get("result") or [], height, width)
            except ValueError:  # malformed RLE: counted as edited, no Dice
                reviews.append({"id": int(ann["id"]), "accepted": False, "dice": None})
                continue
            if mask is None:
                mask = np.zeros_like(proposal)
            reviews.append(
                {
                    "id": int(ann["id"]),
                    "accepted": bool(np.array_equal(mask, proposal)),
                    "dice": round(float(dice(mask, proposal)), 4),
                }
            )
        rows.append(
            {
                "task": task.id,
                "source": meta.get("source"),
                "index": int(meta["index"]),
                "model_version": latest.model_version,
                "annotations": reviews,
            }
        )
        reviewed += reviews
    accepted = sum(bool(r["accepted"]) for r in reviewed)
    return {
        "proposed": len(rows),
        "reviewed": len(reviewed),
        "accepted": accepted,
        "edited": len(reviewed) - accepted,
        "slices": sorted(rows, key=lambda r: (str(r["source"]), r["index"])),
    }
