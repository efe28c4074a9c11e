"""pull → fuse → push against a real Label Studio with several volunteer accounts.

Three volunteers sign up through the invite link and submit brush masks with their own
tokens (a careful one, a dilating one, an eroding one); the admin adds one gold annotation.
The CLI is run as a user runs it (a subprocess), including a pull killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from medcrowd.dataset import Dataset
from medcrowd.settings import config_path
from medcrowd.studio import Studio
from ml_backend.labeling import brush_result
from ml_backend.rle import rle_to_mask
from tests.helpers import StudioHandle, dice, sammed2d_masks

pytestmark = pytest.mark.e2e

ORGANS = (
    "amos_0004_75_liver_000",
    "amos_0006_90_spleen_000",
    "s0114_111_heart_ventricle_left_000",
    "s0619_32_hip_right_000",
)
VOLUNTEERS = {  # email local part -> how they draw (seeded, documented annotator models)
    "careful": lambda m: m,
    "dilator": lambda m: ndimage.binary_dilation(m, iterations=4),
    "eroder": lambda m: ndimage.binary_erosion(m, iterations=3),
}


def brush(mask: np.ndarray) -> dict[str, Any]:
    return brush_result(mask, "Organ")


def run_cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "medcrowd", *args], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def snapshot_annotations(studio: Studio, project_id: int) -> dict[int, Any]:
    out = {}
    for task in studio.client.tasks.list(project=project_id, fields="all"):
        for ann in studio.client.annotations.list(task.id):
            out[ann.id] = (ann.updated_at, json.dumps(ann.result, sort_keys=True))
    return out


@pytest.fixture(scope="module")
def crowd(label_studio: StudioHandle, shared_data: Path) -> dict[str, Any]:
    admin = Studio(label_studio.url, label_studio.token)
    title = f"crowd {uuid.uuid4().hex[:8]}"
    project_id = admin.ensure_project(
        title, config_path("labeling_box_brush.xml").read_text(), maximum_annotations=3
    )
    organs = {o.mask_path.stem: o for o in sammed2d_masks(shared_data)}
    chosen = [organs[name] for name in ORGANS]
    admin.import_images(
        project_id, [(o.image_path.name, o.image_path.read_bytes()) for o in chosen]
    )
    task_of = {}
    for task in admin.client.tasks.list(project=project_id, fields="all"):
        stem = next(
            o.mask_path.stem for o in chosen if task.data["image"].endswith(o.image_path.name)
        )
        task_of[stem] = int(task.id)
    tag = uuid.uuid4().hex[:6]
    submitted: dict[tuple[str, int], np.ndarray] = {}
    for name, model in VOLUNTEERS.items():
        _, token = admin.create_volunteer(f"{name}-{tag}@example.com", f"Vol-{tag}-pass!9")
        vol = Studio(label_studio.url, token)
        for organ in chosen:
            _, gt = organ.load()
            mask = model(gt)
            vol.client.annotations.create(task_of[organ.mask_path.stem], result=[brush(mask)],
                                          lead_time=30.0)  # fmt: skip
            submitted[(name, task_of[organ.mask_path.stem])] = mask
    # A volunteer's box without a brush must be recorded, not dropped.
    box = {"from_name": "box", "to_name": "image", "type": "rectanglelabels",
           "original_width": 512, "original_height": 512, "image_rotation": 0,
           "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0,
                     "rectanglelabels": ["Organ"]}}  # fmt: skip
    admin.client.annotations.create(task_of[ORGANS[0]], result=[box])
    # Gold: the expert mask on the first task, flagged as ground truth.
    _, gold = chosen[0].load()
    admin.client.annotations.create(task_of[ORGANS[0]], result=[brush(gold)], ground_truth=True)
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token,
           "COLUMNS": "200"}  # fmt: skip
    return {"admin": admin, "id": project_id, "title": title, "tasks": task_of,
            "organs": chosen, "submitted": submitted, "env": env}  # fmt: skip


def test_pull_exports_every_annotation_exactly(crowd: dict[str, Any], tmp_path: Path) -> None:
    before = snapshot_annotations(crowd["admin"], crowd["id"])
    out = tmp_path / "ds"
    proc = run_cli("pull", str(out), "--project", crowd["title"], env=crowd["env"])
    assert "14 new annotations from 4 tasks" in proc.stdout, proc.stdout
    ds = Dataset(out)
    records = ds.records()
    assert len(records) == 14 == len({r.annotation for r in records})
    box_only = [r for r in records if r.mask is None]
    assert len(box_only) == 1 and box_only[0].boxes[0]["width"] == 20
    gold = [r for r in records if r.gold]
    assert len(gold) == 1 and gold[0].task == crowd["tasks"][ORGANS[0]]
    emails = {r.annotator_email.split("-")[0] for r in records if r.annotator_email}
    assert {"careful", "dilator", "eroder"} <= emails
    for r in records:
        if r.mask is None or r.gold or not r.annotator_email:
            continue
        name = r.annotator_email.split("-")[0]
        if name in VOLUNTEERS:
            np.testing.assert_array_equal(ds.load_mask(r.mask), crowd["submitted"][(name, r.task)])
            assert r.lead_time == pytest.approx(30.0)
    # Incremental: a second pull writes nothing; Label Studio was not altered.
    again = run_cli("pull", str(out), "--project", str(crowd["id"]), env=crowd["env"])
    assert "0 new annotations" in again.stdout
    assert len(Dataset(out).records()) == 14
    assert snapshot_annotations(crowd["admin"], crowd["id"]) == before


def test_pull_killed_midway_loses_and_duplicates_nothing(
    crowd: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medcrowd", "pull", str(out), "--project", str(crowd["id"])]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=crowd["env"])  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("pulled task"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    partial = Dataset(out).records()
    assert 1 <= len(partial) < 14, "the kill did not land mid-pull"
    run_cli("pull", str(out), "--project", str(crowd["id"]), env=crowd["env"])
    records = Dataset(out).records()
    assert len(records) == 14
    assert len({r.key for r in records}) == 14
    assert [r.key for r in records[: len(partial)]] == [r.key for r in partial]


@pytest.mark.parametrize("method", ["crowd-staple", "staple", "weighted", "majority"])
def test_fuse_and_push(crowd: dict[str, Any], tmp_path: Path, method: str) -> None:
    out = tmp_path / "ds"
    run_cli("pull", str(out), "--project", str(crowd["id"]), env=crowd["env"])
    fused = run_cli("fuse", str(out), "--method", method, env=crowd["env"])
    assert "4 tasks fused" in fused.stdout, fused.stdout
    folder = out / f"fused-{method}"
    for organ in crowd["organs"]:
        _, gt = organ.load()
        task = crowd["tasks"][organ.mask_path.stem]
        mask = Dataset(out).load_mask(f"fused-{method}/masks/task-{task}.png")
        worst = min(dice(crowd["submitted"][(n, task)], gt) for n in VOLUNTEERS)
        assert dice(mask, gt) >= worst, (method, organ.mask_path.stem)
        assert (folder / "masks" / f"task-{task}.nii.gz").is_file()
    assert (folder / "report.png").stat().st_size > 10_000
    rows = (folder / "reliability.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header + the three volunteers (gold is not a volunteer)
    before = snapshot_annotations(crowd["admin"], crowd["id"])
    pushed = run_cli("push", str(out), "--method", method, env=crowd["env"])
    assert "4 consensus predictions pushed" in pushed.stdout, pushed.stdout
    for task in crowd["tasks"].values():
        versions = [p.model_version for p in crowd["admin"].client.predictions.list(task=task)]
        assert versions.count(f"consensus-{method}") == 1
        preds = [p for p in crowd["admin"].client.predictions.list(task=task)
                 if p.model_version == f"consensus-{method}"]  # fmt: skip
        region = preds[0].result[0]
        decoded = rle_to_mask(region["value"]["rle"], region["original_height"],
                              region["original_width"])  # fmt: skip
        stored = Dataset(out).load_mask(f"fused-{method}/masks/task-{task}.png")
        np.testing.assert_array_equal(decoded, stored)
    again = run_cli("push", str(out), "--method", method, env=crowd["env"])
    assert "0 consensus predictions pushed, 4 unchanged" in again.stdout
    assert snapshot_annotations(crowd["admin"], crowd["id"]) == before


def test_cli_errors_are_messages_not_tracebacks(crowd: dict[str, Any], tmp_path: Path) -> None:
    env = crowd["env"]
    bad = run_cli("fuse", str(tmp_path / "nothing"), env=env, check=False)
    assert bad.returncode == 1 and "not a medcrowd dataset" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong = run_cli("fuse", str(tmp_path), "--method", "vote", env=env, check=False)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    missing = run_cli("pull", str(tmp_path / "x"), "--project", "no such project", env=env,
                      check=False)  # fmt: skip
    assert missing.returncode == 1 and "no project titled" in missing.stderr
