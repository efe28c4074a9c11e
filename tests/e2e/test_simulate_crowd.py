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


def test_volunteers_wait_out_a_busy_backend(
    label_studio: StudioHandle, litemedsam: object, shared_data: Path
) -> None:
    """A backend that takes one prediction at a time and lets none wait answers the second
    of two simultaneous boxes 503; Label Studio hands that to the volunteer as an error, the
    volunteer waits and asks again, and both get their mask."""
    import secrets
    import threading
    import time

    from medcrowd.embedded import free_port
    from medcrowd.volunteer_sim import Volunteer, rectangle
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app
    from tests.helpers import ThreadedServer

    admin = Studio(label_studio.url, label_studio.token)
    pid = admin.ensure_project(f"busy {uuid.uuid4().hex[:8]}",
                               config_path("labeling_box_brush.xml").read_text())  # fmt: skip
    demo = shared_data / "sammed2d_demo" / "images"
    stems = ["amos_0004_75", "amos_0006_90", "s0619_32"]  # cold: one encoder pass each
    admin.import_images(pid, [(f"{s}.png", (demo / f"{s}.png").read_bytes()) for s in stems])
    tasks = sorted(admin.tasks(pid), key=lambda t: t.id)
    port, auth = free_port(), ("labelstudio", secrets.token_urlsafe(16))
    config = BackendConfig(port=port, basic_auth=auth, label_studio_url=label_studio.url,
                           label_studio_token=label_studio.token, max_inflight=1, max_queue=0,
                           warm_on_import=False)  # fmt: skip
    litemedsam.cache.clear()  # type: ignore[attr-defined]
    with ThreadedServer(create_app(config, predictor=litemedsam), port):
        ml_id = admin.connect_backend(pid, f"http://127.0.0.1:{port}", auth)
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        crowd = [
            Volunteer(Studio(label_studio.url, label_studio.token), "good",
                      np.random.default_rng(i), pid, ml_id, {}, sleep=sleep, busy_retries=6)
            for i in range(len(tasks))
        ]  # fmt: skip
        sizes = {s: Image.open(demo / f"{s}.png").size for s in stems}
        contexts = [
            {"result": [rectangle([0.2 * w, 0.2 * h, 0.6 * w, 0.6 * h], w, h, "Organ")]}
            for w, h in (sizes[s] for s in stems)
        ]
        answers: list[object] = [None] * len(tasks)

        def ask(i: int) -> None:
            answers[i] = crowd[i].ask_backend(tasks[i].id, contexts[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(tasks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    busy = sum(v.busy_answers for v in crowd)
    assert busy >= 1, "three simultaneous cold boxes on a one-slot backend: some must be busy"
    assert len(slept) == busy and all(s >= 1.0 for s in slept)
    for answer in answers:
        assert isinstance(answer, dict) and (answer.get("data") or {}).get("result"), answer
