"""``medcrowd status``: how far a project is, and who did what."""

from __future__ import annotations

from collections import Counter
from typing import Any

from medcrowd.studio import Studio

__all__ = ["project_status"]


def project_status(studio: Studio, project_id: int) -> dict[str, Any]:
    """Progress and per-volunteer effort of one project.

    Returns:
        ``{"project", "title", "overlap", "tasks", "by_annotations": {n: tasks with n
        submitted annotations}, "complete", "volunteers": [{"id", "email", "annotations",
        "gold", "skipped", "lead_time_s"}]}`` (cancelled/skipped annotations are counted
        apart and do not advance a task).
    """
    project = studio.project(project_id)
    overlap = project.overlap
    all_tasks = studio.tasks(project_id, full=False)
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
    }
