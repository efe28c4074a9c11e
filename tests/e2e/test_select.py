"""``medcrowd train sqa`` + ``medcrowd select`` against a real Label Studio.

A quality assessor is trained on a handful of ISBI slices (64 px, a few hundred steps: a weak
but real model). ``select --k 2`` must rank the unlabelled tasks, push two ``sqa-*``
predictions with a draft mask and a ``sqa_error`` layer, add that control to the project's
config, switch the project to uncertainty sampling — and then Label Studio's own queue must
serve a volunteer the lowest-quality task first. Annotations are never touched; a re-run
changes nothing; the hint layer never reaches ``medcrowd pull``'s masks.
"""

from __future__ import annotations

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
from ml_backend.labeling import brush_result, parse_label_config
from tests.helpers import StudioHandle

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "medcrowd", *args], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def isbi_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import shared_data_dir

    src = shared_data_dir() / "isbi2012_em" / "train"
    if not (src / "image").is_dir():
        pytest.skip(f"ISBI 2012 not found under {src}")
    out = tmp_path_factory.mktemp("isbi-sqa")
    (out / "images").mkdir()
    (out / "masks").mkdir()
    for path in sorted((src / "image").iterdir())[:16]:
        image = Image.open(path).resize((128, 128), Image.BILINEAR)
        label = np.asarray(Image.open(src / "label" / path.name).resize((128, 128)))
        image.save(out / "images" / f"{path.stem}.png")
        membrane = ((label < 128) * 255).astype(np.uint8)
        Image.fromarray(membrane).save(out / "masks" / f"{path.stem}.png")
    return out


def test_select_prioritises_worst_tasks(
    label_studio: StudioHandle, isbi_pairs: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token,
           "MEDCROWD_LABEL_STUDIO_URL": label_studio.url,
           "MEDCROWD_LABEL_STUDIO_TOKEN": label_studio.token, "COLUMNS": "200"}  # fmt: skip
    train = tmp_path / "train"
    (train / "images").mkdir(parents=True)
    (train / "masks").mkdir()
    names = sorted(p.stem for p in (isbi_pairs / "images").iterdir())
    for name in names[:10]:
        for sub in ("images", "masks"):
            src = isbi_pairs / sub / f"{name}.png"
            (train / sub / f"{name}.png").write_bytes(src.read_bytes())
    model = tmp_path / "sqa.pt"
    cli("train", "sqa", str(train), "--out", str(model), "--size", "64", "--steps", "60",
        "--folds", "2", "--channels", "8,16,32", "--device", "cpu", env=env)  # fmt: skip
    assert model.is_file()

    admin = Studio(label_studio.url, label_studio.token)
    pid = admin.ensure_project(f"select {uuid.uuid4().hex[:8]}",
                               config_path("labeling_box_brush.xml").read_text())  # fmt: skip
    held_out = names[10:]
    admin.import_images(pid, [(f"{n}.png", (isbi_pairs / "images" / f"{n}.png").read_bytes())
                              for n in held_out])  # fmt: skip
    tasks = sorted(admin.client.tasks.list(project=pid), key=lambda t: t.id)
    # one task already labelled by a person: it must be left out and left alone
    labelled = tasks[0]
    ann = admin.client.annotations.create(
        labelled.id, result=[brush_result(np.eye(128, dtype=bool), "Organ")]
    )
    before = admin.client.annotations.get(ann.id).result

    dry = cli("select", "--project", str(pid), "--k", "2", "--model", str(model), "--dry-run",
              "--device", "cpu", env=env)  # fmt: skip
    assert "dry run" in dry.stdout
    assert not list(admin.client.predictions.list(task=tasks[1].id))

    ranking = tmp_path / "ranking.csv"
    out = cli("select", "--project", str(pid), "--k", "2", "--model", str(model),
              "--ranking", str(ranking), "--device", "cpu", env=env)  # fmt: skip
    assert "2 predictions sqa-" in out.stdout
    rows = [line.split(",") for line in ranking.read_text().splitlines()[1:]]
    assert len(rows) == len(held_out) - 1  # the labelled task is not ranked
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores)
    chosen = [int(r[0]) for r in rows if r[4] == "True"]
    assert len(chosen) == 2 and labelled.id not in chosen

    project = admin.client.projects.get(pid)
    assert project.sampling == "Uncertainty sampling"
    assert str(project.model_version).startswith("sqa-")
    assert 'name="sqa_error"' in project.label_config
    assert parse_label_config(project.label_config).brush_name == "mask"
    for task in tasks[1:]:
        preds = list(admin.client.predictions.list(task=task.id))
        if task.id in chosen:
            assert len(preds) == 1 and preds[0].model_version == project.model_version
            names_ = {r["from_name"] for r in preds[0].result}
            assert "sqa_error" in names_ or "mask" in names_
        else:
            assert preds == []
    assert admin.client.annotations.get(ann.id).result == before

    # re-running with nothing new ranks the same way and changes nothing
    ranking2 = tmp_path / "ranking2.csv"
    again = cli("select", "--project", str(pid), "--k", "2", "--model", str(model),
                "--ranking", str(ranking2), "--device", "cpu", env=env)  # fmt: skip
    assert ranking2.read_text() == ranking.read_text()
    assert "0 predictions" in again.stdout and "2 unchanged" in again.stdout

    # Label Studio's own queue now serves the worst-predicted task first
    tag = uuid.uuid4().hex[:6]
    _, vol_token = admin.create_volunteer(f"sel-{tag}@example.com", f"Sel-{tag}-pass!")
    vol = Studio(label_studio.url, vol_token)
    queued = vol.next_task(pid)
    assert queued is not None and queued["id"] in chosen

    # a volunteer accepts the draft with its hint layer: pull keeps only the mask control
    from medcrowd.sync import pull

    draft = np.zeros((128, 128), bool)
    draft[10:30, 10:30] = True
    hint = np.zeros((128, 128), bool)
    hint[60:90, 60:90] = True
    vol.create_annotation(
        chosen[0], [brush_result(draft, "Organ"), brush_result(hint, "Likely error", "sqa_error")]
    )
    dataset = tmp_path / "pulled"
    pull(admin, pid, dataset)
    records = [r for r in (dataset / "manifest.jsonl").read_text().splitlines() if r]
    import json

    mine = [json.loads(r) for r in records if json.loads(r)["task"] == chosen[0]]
    assert len(mine) == 1 and mine[0]["labels"] == ["Organ"]
    pulled = np.asarray(Image.open(dataset / mine[0]["mask"])) > 0
    assert np.array_equal(pulled, draft)

    # after that task got its label, a re-run ranks it no more and promotes the next one
    third = cli("select", "--project", str(pid), "--k", "2", "--model", str(model),
                "--device", "cpu", env=env)  # fmt: skip
    assert "1 predictions" in third.stdout and "1 unchanged" in third.stdout


def test_select_errors_are_clear(label_studio: StudioHandle, tmp_path: Path) -> None:
    env = {**os.environ, "MEDCROWD_URL": label_studio.url, "MEDCROWD_TOKEN": label_studio.token,
           "MEDCROWD_LABEL_STUDIO_URL": label_studio.url,
           "MEDCROWD_LABEL_STUDIO_TOKEN": label_studio.token}  # fmt: skip
    missing = cli("select", "--project", "1", "--model", str(tmp_path / "no.pt"), env=env, ok=False)
    assert missing.returncode == 1 and "no model file" in missing.stderr
    assert "Traceback" not in missing.stderr
    neither = cli("select", env=env, ok=False)
    assert neither.returncode == 1 and "--project" in neither.stderr
    bad_k = cli("select", "--project", "1", "--k", "0", "--strategy", "random", env=env, ok=False)
    assert bad_k.returncode == 1 and "--k must be >= 1" in bad_k.stderr
