"""scripts/simulate_crowd.py against a real Label Studio and the real backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcrowd.settings import config_path
from medcrowd.studio import Studio
from ml_backend.rle import rle_to_mask
from tests.helpers import REPO, BackendHandle, StudioHandle, dice

pytestmark = pytest.mark.e2e


def test_virtual_volunteers_label_through_the_backend(
    label_studio: StudioHandle, backend: BackendHandle, shared_data: Path, tmp_path: Path
) -> None:
    admin = Studio(label_studio.url, label_studio.token)
    title = f"sim {uuid.uuid4().hex[:8]}"
    pid = admin.ensure_project(title, config_path("labeling_box_brush.xml").read_text(),
                               maximum_annotations=3)  # fmt: skip
    demo = shared_data / "sammed2d_demo"
    organs = {"amos_0004_75": "liver_000", "amos_0006_90": "spleen_000"}
    admin.import_images(pid, [(f"{s}.png", (demo / "images" / f"{s}.png").read_bytes())
                              for s in organs])  # fmt: skip
    admin.connect_backend(pid, backend.url, backend.auth)
    truth = tmp_path / "truth"
    truth.mkdir()
    for stem, organ in organs.items():
        Image.open(demo / "masks" / f"{stem}_{organ}.png").save(truth / f"{stem}.png")
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "simulate_crowd.py"), "--project", title,
         "--truth", str(truth), "--models", "good,dilate,spammer_blobs", "--seed", "3",
         "--accounts", str(tmp_path / "accounts.json")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["annotations"] == 6  # 2 tasks x 3 volunteers (overlap 3)
    assert oct((tmp_path / "accounts.json").stat().st_mode & 0o777) == "0o600"
    accounts = {a["id"]: a["email"] for a in json.loads((tmp_path / "accounts.json").read_text())}
    for task in admin.client.tasks.list(project=pid, fields="all"):
        stem = next(s for s in organs if task.data["image"].endswith(f"{s}.png"))
        gt_mask = np.asarray(Image.open(truth / f"{stem}.png")) > 0
        anns = admin.client.annotations.list(task.id)
        assert {a.completed_by for a in anns} == set(accounts)
        for ann in anns:
            kinds = [r["type"] for r in ann.result]
            region = next(r for r in ann.result if r["type"] == "brushlabels")
            mask = rle_to_mask(region["value"]["rle"], region["original_height"],
                               region["original_width"])  # fmt: skip
            email = accounts[ann.completed_by]
            if email.startswith("sim0"):  # the good volunteer: box + corrected MedSAM mask
                assert kinds == ["rectanglelabels", "brushlabels"]
                assert dice(mask, gt_mask) >= 0.9
            if email.startswith("sim2"):  # the spammer: no box, a mask unrelated to the organ
                assert kinds == ["brushlabels"]
                assert dice(mask, gt_mask) < 0.5
