"""Blind k-way overlap on Label Studio Community's own queue, with gold tasks and status.

Three volunteers pull work from ``/api/projects/{id}/next`` (what the "Label All Tasks"
button does) until the queue is empty. With overlap k = 2 every task must end with exactly
two different volunteers, nobody labels a task twice, the queue never shows a volunteer
someone else's annotation, and the gold task still gets its k volunteer labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcrowd.settings import config_path
from medcrowd.studio import Studio
from ml_backend.labeling import brush_result
from tests.helpers import StudioHandle

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "medcrowd", *args], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_overlap_gold_and_status(
    label_studio: StudioHandle, shared_data: Path, tmp_path: Path
) -> None:
    admin = Studio(label_studio.url, label_studio.token)
    title = f"overlap {uuid.uuid4().hex[:8]}"
    pid = admin.ensure_project(title, config_path("labeling_box_brush.xml").read_text())
    images = sorted((shared_data / "sammed2d_demo" / "images").glob("*.png"))[:4]
    admin.import_images(pid, [(p.name, p.read_bytes()) for p in images])
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token,
           "COLUMNS": "200"}  # fmt: skip
    admin.set_overlap(pid, 2)
    # Gold: the liver mask for amos_0004_75, named after its image.
    gold_dir = tmp_path / "gold"
    gold_dir.mkdir()
    liver = shared_data / "sammed2d_demo" / "masks" / "amos_0004_75_liver_000.png"
    Image.open(liver).save(gold_dir / "amos_0004_75.png")
    out = cli("gold", "add", str(gold_dir), "--project", title, env=env)
    assert "1 gold tasks added" in out.stdout
    again = cli("gold", "add", str(gold_dir), "--project", title, env=env)
    assert "0 gold tasks added, 1 already gold" in again.stdout

    tag = uuid.uuid4().hex[:6]
    volunteers = []
    for i in range(3):
        uid, token = admin.create_volunteer(f"q{i}-{tag}@example.com", f"Q-{tag}-pass!{i}")
        volunteers.append((uid, Studio(label_studio.url, token)))
    done: dict[int, list[int]] = {}
    seen_foreign: list[Any] = []
    active = list(volunteers)
    for _ in range(20):  # bounded: 4 tasks x 2 = 8 annotations are all there is
        if not active:
            break
        for uid, vol in list(active):
            task = vol.next_task(pid)
            if task is None:  # 404: nothing more for this volunteer
                active.remove((uid, vol))
                continue
            seen_foreign += [a for a in task.get("annotations") or [] if a["completed_by"] != uid]
            result = [brush_result(np.eye(8, dtype=bool), "Organ")]
            vol.create_annotation(task["id"], result, lead_time=12.0)
            done.setdefault(task["id"], []).append(uid)
    assert not active, "the queue never ran dry"
    assert seen_foreign == []  # blind: the queue shows nobody else's annotation
    assert sorted(done) == sorted(t.id for t in admin.tasks(pid))
    for task_id, who in done.items():
        assert len(who) == 2 and len(set(who)) == 2, (task_id, who)

    info = json.loads(cli("status", "--project", title, "--json", env=env).stdout)
    assert info["tasks"] == 4 and info["complete"] == 4 and info["overlap"] == 2
    assert info["by_annotations"] == {"0": 0, "1": 0, "2": 4}
    rows = {r["id"]: r for r in info["volunteers"]}
    assert sum(rows[uid]["annotations"] for uid, _ in volunteers) == 8
    assert rows[next(iter(volunteers))[0]]["lead_time_s"] == pytest.approx(
        12.0 * rows[next(iter(volunteers))[0]]["annotations"]
    )
    assert sum(r["gold"] for r in rows.values()) == 1
    table = cli("status", "--project", str(pid), env=env).stdout
    assert "4/4 tasks have their 2 annotations" in table
