"""medcrowd.assisted: virtual volunteers label real chest X-rays through the real LiteMedSAM,
and ``medcrowd evaluate`` with that crowd (the default) and arm (e), the assist alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcrowd.assisted import (
    DEFAULT_ASSISTED_CROWD,
    VOLUNTEER_MODELS,
    VolunteerModel,
    label_pool,
    noisy_boxes,
    object_boxes,
)
from medcrowd.evaluate import EvaluateOptions, evaluate
from tests.helpers import shared_data_dir

pytestmark = pytest.mark.slow


def _shenzhen() -> Path:
    root = shared_data_dir() / "shenzhen_cxr"
    if not (root / "images").is_dir():
        pytest.skip(f"shenzhen_cxr not found under {root} (set MEDCROWD_SHARED_DATA)")
    return root


def _read(root: Path, names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images = [np.asarray(Image.open(root / "images" / n).convert("L")) for n in names]
    masks = [np.asarray(Image.open(root / "masks" / n).convert("L")) >= 128 for n in names]
    return images, masks


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


class _Counting:
    """The real predictor, counting encoder and decoder calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.encodes, self.decodes = inner, 0, 0

    def set_image(self, image: np.ndarray) -> None:
        self.encodes += 1
        self.inner.set_image(image)

    def predict_box(self, box: Any) -> tuple[np.ndarray, float]:
        self.decodes += 1
        return self.inner.predict_box(box)


def test_object_boxes_one_per_lung() -> None:
    _, masks = _read(_shenzhen(), ["CHNCXR_0001_0.png"])
    boxes = object_boxes(masks[0])
    assert len(boxes) == 2  # two lungs, two boxes
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
    assert object_boxes(np.zeros((8, 8), bool)) == []


def test_box_noise_models() -> None:
    tight = [[40.0, 30.0, 120.0, 200.0]]
    shape = (256, 256)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        (loose,), corrects = noisy_boxes(tight, "loose", shape, rng)
        assert corrects and (loose[2] - loose[0]) * (loose[3] - loose[1]) > 80 * 170
        (clipped,), _ = noisy_boxes(tight, "clipped", shape, np.random.default_rng(seed))
        assert (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) < 80 * 170 * 1.1
        spam, corrects = noisy_boxes(tight, "spam", shape, np.random.default_rng(seed))
        assert len(spam) == 1 and not corrects
        for box in (loose, clipped, spam[0]):
            assert 0 <= box[0] < box[2] <= 256 and 0 <= box[1] < box[3] <= 256
    wrong = [
        noisy_boxes(tight, "wrong_object", shape, np.random.default_rng(s))[1] for s in range(40)
    ]
    assert 5 < sum(wrong) < 35  # about half of the images are boxed on the wrong object
    with pytest.raises(ValueError, match="unknown box noise"):
        VolunteerModel("good", "lasso", 1.0)


@pytest.fixture(scope="module")
def labelled(litemedsam: Any) -> tuple[dict[int, Any], list[np.ndarray], _Counting]:
    root = _shenzhen()
    names = sorted(p.name for p in (root / "images").iterdir())[:5]
    images, masks = _read(root, names)
    counting = _Counting(litemedsam)
    crowd = ("careful", "quick", "spam", "wrong_object", "clipped")
    ticks: list[tuple[int, int]] = []
    out = label_pool(
        images, masks, counting, crowd=crowd, raters_per_task=5, seeds=(0, 1),
        progress=lambda d, t: ticks.append((d, t)),
    )  # fmt: skip
    assert ticks == [(i, 5) for i in range(1, 6)]
    return out, masks, counting


def test_one_encoder_pass_per_image(labelled: tuple[dict[int, Any], Any, _Counting]) -> None:
    _out, masks, counting = labelled
    assert counting.encodes == len(masks)  # every box of every volunteer and seed reuses it
    assert counting.decodes > 2 * 5 * len(masks)  # >= one box per label, two lungs mostly


def test_labels_carry_the_assist_and_the_corrections(
    labelled: tuple[dict[int, Any], list[np.ndarray], _Counting],
) -> None:
    out, masks, _ = labelled
    for seed, lab in out.items():
        assert len(lab.votes) == len(masks) == len(lab.assist)
        for votes, who, secs, dices, mask in zip(
            lab.votes, lab.annotators, lab.seconds, lab.raw_dice, masks, strict=True
        ):
            assert votes.shape == (5, *mask.shape) and votes.dtype == bool
            kinds = [w.split("-", 1)[1] for w in who]
            assert sorted(kinds) == sorted(("careful", "quick", "spam", "wrong_object", "clipped"))
            by = dict(zip(kinds, range(5), strict=True))
            assert all(s > 0 for s in secs)
            assert secs[by["spam"]] == pytest.approx(3.5)  # one box, accepted as it is
            assert secs[by["careful"]] > 7.0  # two boxes, then brush strokes
            assert dices[by["careful"]] > 0.9, (seed, dices)
            assert dices[by["careful"]] == pytest.approx(_dice(votes[by["careful"]], mask))
            assert dices[by["spam"]] < 0.7
        # the assist alone: one box per lung, no correction
        assert all(s == pytest.approx(2 * 3.5) for s in lab.assist_seconds)
        assist = np.mean([_dice(a, m) for a, m in zip(lab.assist, masks, strict=True)])
        careful = np.mean(
            [d[[w.split("-", 1)[1] for w in who].index("careful")]
             for d, who in zip(lab.raw_dice, lab.annotators, strict=True)]
        )  # fmt: skip
        assert 0.8 < assist < careful  # corrections add to what the model gives
    # seeded: the two seeds differ
    assert not all(np.array_equal(a, b) for a, b in zip(out[0].votes, out[1].votes, strict=True))


def test_same_seed_same_labels(
    litemedsam: Any, labelled: tuple[dict[int, Any], list[np.ndarray], _Counting]
) -> None:
    out, _, _ = labelled
    root = _shenzhen()
    names = sorted(p.name for p in (root / "images").iterdir())[:5]
    images, masks = _read(root, names)
    # streams are keyed by (seed, image index, slot): the same call reproduces exactly
    repeat = label_pool(
        images, masks, litemedsam, crowd=("careful", "quick", "spam", "wrong_object", "clipped"),
        raters_per_task=5, seeds=(0,),
    )  # fmt: skip
    assert repeat[0].seconds == out[0].seconds
    assert all(np.array_equal(a, b) for a, b in zip(repeat[0].votes, out[0].votes, strict=True))


def test_pool_and_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown volunteer models"):
        label_pool([], [], object(), crowd=("careful", "nobody"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="raters_per_task"):
        label_pool([], [], object(), crowd=("careful",), raters_per_task=2)  # type: ignore[arg-type]
    assert set(DEFAULT_ASSISTED_CROWD) <= set(VOLUNTEER_MODELS)
    with pytest.raises(ValueError, match="unknown crowd models"):
        EvaluateOptions(crowd_models=("good",)).check()  # an annotator model, not a volunteer
    EvaluateOptions(crowd_source="simulated", crowd_models=("good",), raters_per_task=1).check()
    with pytest.raises(ValueError, match="unknown --crowd-source"):
        EvaluateOptions(crowd_source="mturk").check()


# -- medcrowd evaluate with the assisted crowd ----------------------------------------------
@pytest.fixture(scope="module")
def cxr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """10 Shenzhen pairs as DATA and 4 others as a --test folder (masks binarised at 128)."""
    root = _shenzhen()
    names = sorted(p.name for p in (root / "images").iterdir())
    base = tmp_path_factory.mktemp("cxr")
    folders = []
    for part, chosen in (("pool", names[10:20]), ("test", names[30:34])):
        folder = base / part
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        images, masks = _read(root, chosen)
        for name, image, mask in zip(chosen, images, masks, strict=True):
            Image.fromarray(image).save(folder / "images" / name)
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / name)
        folders.append(folder)
    return folders[0], folders[1]


def test_evaluate_with_the_assisted_crowd(
    cxr: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    data, test = cxr
    out = tmp_path_factory.mktemp("evaluate-assisted")
    options = EvaluateOptions(
        expert_count=(2, 3), seeds=(0,), size=64, steps=8, steps_rule="fixed",
        channels=(8, 16, 32), batch_size=4, device="cpu", assist_backend="torch",
        arms=("expert", "crowd", "ceiling", "assist"),
    )  # fmt: skip
    assert options.crowd_source == "assisted"  # the default
    ticks: list[tuple[int, int]] = []
    report = evaluate(data, out, options, test=test, progress=lambda d, t: ticks.append((d, t)))
    rows = list(csv.DictReader((out / "results.csv").open()))
    arms = [r["arm"] for r in rows]
    assert arms == ["expert-2", "crowd-2", "assist-2", "expert-3", "crowd-3", "assist-3", "ceiling"]
    hours = {r["arm"]: r["volunteer_h"] for r in rows}
    assert float(hours["expert-2"]) == 0 == float(hours["ceiling"])
    # (b): every pool image labelled by 3 volunteers (gold images too); (e): 7 s per image
    summary = json.loads((out / "summary.json").read_text())
    labels = summary["assisted_labels"]["0"]
    assert labels["images"] == 10
    assert float(hours["crowd-2"]) == pytest.approx(labels["volunteer_hours"], abs=1e-4)
    per_image = labels["assist_seconds_per_image"]  # 3.5 s per box, one box per lung
    assert 3.5 <= per_image <= 8 * 3.5
    assert 8 * 3.5 / 3600 <= float(hours["assist-2"]) <= 8 * 8 * 3.5 / 3600
    assert float(hours["assist-3"]) < float(hours["assist-2"]) < float(hours["crowd-2"])
    assert labels["volunteer_seconds_per_image"] > 3 * 3.5
    quality = summary["crowd_quality"]["0-2"]
    # on 8 free tasks and 2 gold CrowdStaple trails majority vote (0.79 vs 0.95 measured):
    # a known gap on small assisted pools, reported in docs/evaluation.md
    assert quality["majority_dice"] > 0.9 and quality["fused_dice"] > 0.6, quality
    assert summary["crowd"] == "assisted"
    table = (out / "table.md").read_text()
    assert "(e) + assist alone (n=2)" in table and "volunteer-h" in table
    assert report.table == table
    assert (out / "expert_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one progress count: the labelling (10 units per pool image), then every network
    assert ticks[-1][0] == ticks[-1][1] == 10 * 10 + 7 * 8
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)


def test_jobs_give_the_same_numbers(
    cxr: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--jobs 2: the pool labelled in two parts by two workers' LiteMedSAMs, pix2pix and the
    networks trained side by side; every number equals the one-process run's."""
    data, test = cxr
    options = dict(
        expert_count=(2, 3), seeds=(0, 1), size=64, steps=6, steps_rule="fixed",
        channels=(8, 16, 32), batch_size=4, device="cpu", assist_backend="torch",
        arms=("expert", "crowd", "synthetic", "assist"), synth_steps=4, synth_ngf=8,
    )  # fmt: skip
    runs = {}
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"evaluate-jobs{jobs}")
        ticks: list[int] = []
        report = evaluate(
            data, out, EvaluateOptions(jobs=jobs, **options),  # type: ignore[arg-type]
            test=test, progress=lambda d, _t, ticks=ticks: ticks.append(d),
        )  # fmt: skip
        # one count over both workers' labelling, pix2pix and networks, never backwards
        per_seed = 2 * 4 + 8 * 6  # two pix2pix, eight networks
        assert ticks == sorted(ticks) and ticks[-1] == 10 * 10 + 2 * per_seed
        summary = json.loads((out / "summary.json").read_text())
        runs[jobs] = (report.rows, (out / "results.csv").read_text(), summary)
    (rows1, csv1, summary1), (rows2, csv2, summary2) = runs[1], runs[2]
    assert [r["arm"] for r in rows2] == [r["arm"] for r in rows1]  # the plan's order
    assert rows2 == rows1 and csv2 == csv1
    assert summary2["assisted_labels"] == summary1["assisted_labels"]
    assert summary2["crowd_quality"] == summary1["crowd_quality"]
    assert summary2["options"]["jobs"] == 2
