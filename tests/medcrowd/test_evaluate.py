"""``medcrowd evaluate`` on tiny real data (ISBI 2012 at 64 px, a few dozen steps).

These prove the plumbing — splits, crowd simulation + fusion, pix2pix, four arms, table and
chart — not the accuracy claim, which needs the full run in the README.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medcrowd.cli import app
from medcrowd.evaluate import EvaluateOptions, evaluate, simulate_fused
from tests.helpers import shared_data_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def isbi() -> Path:
    root = shared_data_dir() / "isbi2012_em" / "train"
    if not (root / "image").is_dir():
        pytest.skip(f"ISBI 2012 not found under {root} (set MEDCROWD_SHARED_DATA)")
    return root


@pytest.fixture(scope="module")
def tiny(isbi: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 ISBI slices cropped to 128² (membranes = 1): a quick but real dataset."""
    out = tmp_path_factory.mktemp("isbi-tiny")
    (out / "images").mkdir()
    (out / "masks").mkdir()
    for path in sorted((isbi / "image").iterdir())[:12]:
        image = np.asarray(Image.open(path))[:128, :128]
        label = np.asarray(Image.open(isbi / "label" / path.name))[:128, :128]
        Image.fromarray(image).save(out / "images" / f"{path.stem}.png")
        membrane = ((label == 0) * 255).astype(np.uint8)
        Image.fromarray(membrane).save(out / "masks" / f"{path.stem}.png")
    return out


# the simulated crowd and arms (a)–(d): the plumbing; the assisted crowd and arm (e), the
# defaults, are tested on chest X-rays in test_assisted.py
FOUR = ("expert", "crowd", "synthetic", "ceiling")
OPTS = dict(size=64, steps=30, channels=(8, 16, 32), synth_steps=20, synth_ngf=8,
            batch_size=4, expert_count=3, test_fraction=0.25, device="cpu",
            steps_rule="fixed", crowd_source="simulated")  # fmt: skip


@pytest.fixture(scope="module")
def two_seeds(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    out = tmp_path_factory.mktemp("evaluate")
    options = EvaluateOptions(seeds=(0, 1), arms=FOUR, **OPTS)  # type: ignore[arg-type]
    events: list[dict[str, Any]] = []
    ticks: list[tuple[int, int]] = []
    report = evaluate(
        tiny, out, options, progress=lambda d, t: ticks.append((d, t)), on_log=events.append
    )
    return out, report, (events, ticks)


def test_four_arms_two_seeds(two_seeds: tuple[Path, Any, Any]) -> None:
    tmp_path, report, (events, ticks) = two_seeds
    stages = [e["stage"] for e in events]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["arm"], r["seed"]) for r in rows] == [
        (arm, str(seed)) for seed in (0, 1) for arm in ("expert", "crowd", "synthetic", "ceiling")
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    n_test, pool = len(summary["test_images"]), summary["pool"]
    assert n_test == 3 and pool == 9
    pairs = {r["arm"]: int(r["train_pairs"]) for r in rows if r["seed"] == "0"}
    assert pairs == {"expert": 3, "crowd": 9, "synthetic": 18, "ceiling": 9}
    # --steps-rule fixed: every network trains --steps steps, whatever its size
    assert {int(r["steps"]) for r in rows} == {OPTS["steps"]}
    assert summary["steps_rule"]["rule"] == "fixed"
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0 and 0.0 <= float(row["accuracy"]) <= 1.0
    # the test images never reach any training set
    for arm in ("expert", "crowd", "ceiling"):
        names = {p.stem for p in (tmp_path / "seed-0" / arm / "images").iterdir()}
        assert not names & set(summary["test_images"])
        assert not {n.removeprefix("crowd-") for n in names} & set(summary["test_images"])
    # crowd quality is reported and the fused labels are close to the expert masks
    quality = summary["crowd_quality"]["0"]
    assert quality["fused_dice"] > 0.6, quality
    table = (tmp_path / "table.md").read_text()
    for title in ("(a) expert subset", "(b) + crowd-fused", "(c) + synthetic", "(d) all expert"):
        assert title in table
    assert report.table == table
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seed 0: training pix2pix" in stages and "seed 1: training pix2pix" in stages
    assert [e["row"] for e in events if "row" in e] == report.rows
    # one progress count over every optimiser step: per seed pix2pix + four networks
    total = 2 * (OPTS["synth_steps"] + 4 * OPTS["steps"])  # type: ignore[operator]
    assert ticks == [(d, total) for d in range(1, total + 1)]
    # the reported spread is the population std of the per-seed rows, and the seeds differ
    for arm in ("expert", "crowd", "synthetic", "ceiling"):
        per_seed = [float(r["dice"]) for r in rows if r["arm"] == arm]
        stat = summary["arms"][arm]["dice"]
        assert stat["mean"] == pytest.approx(np.mean(per_seed))
        assert stat["std"] == pytest.approx(np.std(per_seed))
    assert summary["arms"]["expert"]["dice"]["std"] > 0


def test_same_seed_same_numbers(tiny: Path, tmp_path: Path) -> None:
    options = EvaluateOptions(seeds=(3,), arms=("expert",), **OPTS)  # type: ignore[arg-type]
    a = evaluate(tiny, tmp_path / "a", options).rows
    b = evaluate(tiny, tmp_path / "b", options).rows
    assert a == b


@pytest.fixture
def torch_threads() -> Any:
    """Give the test process back its PyTorch intra-op threads after the test."""
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


@pytest.mark.parametrize(("threads", "expected"), [(1, 1), (0, 2)])
def test_threads_are_set_before_training(
    tiny: Path, tmp_path: Path, torch_threads: Any, threads: int, expected: int
) -> None:
    torch_threads.set_num_threads(2)  # as torch's default would be on a 2-core machine
    seen: list[int] = []
    events: list[dict[str, Any]] = []
    opts = {**OPTS, "steps": 3}
    options = EvaluateOptions(seeds=(0,), arms=("expert",), threads=threads, **opts)  # type: ignore[arg-type]

    def tick(_done: int, _total: int) -> None:
        seen.append(torch_threads.get_num_threads())

    report = evaluate(tiny, tmp_path, options, progress=tick, on_log=events.append)
    assert seen and set(seen) == {expected}  # every training step ran with that many threads
    assert report.summary["torch_threads"] == (threads or None)
    stages = [e["stage"] for e in events]
    if threads:
        assert stages[0] == f"{threads} PyTorch intra-op thread(s) on cpu"
    else:
        assert not any("intra-op" in s for s in stages)


@pytest.mark.parametrize(
    ("change", "message"), [({"threads": -1}, "--threads must be >= 0"), ({"lr": 0.0}, "--lr")]
)
def test_bad_threads_or_lr_are_refused(
    tiny: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    options = EvaluateOptions(**{**OPTS, **change})
    with pytest.raises(ValueError, match=message):
        evaluate(tiny, tmp_path, options)
    assert not (tmp_path / "results.csv").exists()


def test_crowd_folder_with_a_test_image_is_refused(
    tiny: Path, tmp_path: Path, two_seeds: tuple[Path, Any, Any]
) -> None:
    options = EvaluateOptions(seeds=(0,), **OPTS)  # type: ignore[arg-type]
    leaked = two_seeds[1].summary["test_images"][0]
    crowd = tmp_path / "crowd"
    (crowd / "images").mkdir(parents=True)
    (crowd / "masks").mkdir()
    shutil.copy(tiny / "images" / f"{leaked}.png", crowd / "images" / "x.png")
    shutil.copy(tiny / "masks" / f"{leaked}.png", crowd / "masks" / "x.png")
    with pytest.raises(ValueError, match="test images"):
        evaluate(tiny, tmp_path / "out", options, crowd=crowd)


def test_synthetic_folder_with_a_test_image_is_refused(
    tiny: Path, tmp_path: Path, two_seeds: tuple[Path, Any, Any]
) -> None:
    options = EvaluateOptions(seeds=(0,), **OPTS)  # type: ignore[arg-type]
    leaked = two_seeds[1].summary["test_images"][0]
    synthetic = tmp_path / "synthetic"
    (synthetic / "images").mkdir(parents=True)
    (synthetic / "masks").mkdir()
    shutil.copy(tiny / "images" / f"{leaked}.png", synthetic / "images" / "s.png")
    shutil.copy(tiny / "masks" / f"{leaked}.png", synthetic / "masks" / "s.png")
    with pytest.raises(ValueError, match="synthetic image"):
        evaluate(tiny, tmp_path / "out", options, synthetic=synthetic)
    assert not (tmp_path / "out" / "results.csv").exists()


def test_simulated_crowd_uses_gold_and_beats_noise() -> None:
    yy, xx = np.mgrid[:48, :48]
    masks = np.stack(
        [((yy - 24) ** 2 + (xx - 20 - k) ** 2 < (8 + k) ** 2).astype(np.uint8) for k in range(6)]
    )
    fused, report = simulate_fused(
        masks, gold=[0, 1], models=("good", "good", "sloppy", "spammer_random"),
        raters_per_task=3, seed=0,
    )  # fmt: skip
    assert fused.shape == masks.shape and set(np.unique(fused)) <= {0, 1}
    assert np.array_equal(fused[:2], masks[:2])  # gold tasks are clamped
    assert report["fused_dice"] > 0.85
    assert set(report["reliability"]) <= {
        "a00-good", "a01-good", "a02-sloppy", "a03-spammer_random"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expert-count", "0"], "--expert-count must be >= 1"),
        (["--seeds", "a,b"], "comma-separated integers"),
        (["--arms", "expert,bogus"], "unknown arms"),
        (["--crowd-models", "good,nobody"], "unknown crowd models"),
        (["--size", "50"], "multiple of 16"),
        (["--expert-count", "3,3"], "lists a count twice"),
        (["--expert-count", "3,x"], "comma-separated integers"),
        (["--steps-rule", "bogus"], "unknown --steps-rule"),
        (["--crowd-source", "mturk"], "unknown --crowd-source"),
        (["--crowd-source", "simulated", "--crowd-models", "careful"], "unknown crowd models"),
    ],
)
def test_cli_rejects_bad_options(tiny: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tiny), "--out", str(tmp_path), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nope"), "--quick"])
    assert result.exit_code == 1
    assert "no image" in result.output or "not" in result.output
    assert "Traceback" not in result.output


def test_cli_quick_writes_table(tiny: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["evaluate", str(tiny), "--out", str(tmp_path), "--quick", "--expert-count", "3",
         "--test-fraction", "0.25", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the defaults: the assisted crowd (LiteMedSAM on PyTorch under --quick) and arm (e); (c)
    # only when asked for (--arms)
    assert "| (e) + assist alone |" in result.output and "(c) + synthetic" not in result.output
    assert (tmp_path / "table.md").is_file() and (tmp_path / "chart.png").is_file()
    # the table is printed as table.md holds it: not wrapped at 80 columns in a log
    assert (tmp_path / "table.md").read_text().strip() in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["crowd"] == "assisted" and summary["options"]["assist_backend"] == "torch"
    assert summary["arms"]["crowd"]["volunteer_h"] > 0


# -- --test DIR, several expert counts, the step rule ---------------------------------------
@pytest.fixture(scope="module")
def held_out(isbi: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 ISBI slices that ``tiny`` does not hold, as a test folder of mixed formats and sizes:
    PNG 100×140, TIFF 512×512, JPEG 96×96, PNG 128×128 (masks PNG, membranes = 255)."""
    out = tmp_path_factory.mktemp("isbi-held-out")
    (out / "images").mkdir()
    (out / "masks").mkdir()
    crops = [((100, 140), ".png"), ((512, 512), ".tif"), ((96, 96), ".jpg"), ((128, 128), ".png")]
    for path, ((h, w), ext) in zip(sorted((isbi / "image").iterdir())[12:16], crops, strict=True):
        image = np.asarray(Image.open(path))[:h, :w]
        label = np.asarray(Image.open(isbi / "label" / path.name))[:h, :w]
        Image.fromarray(image).save(out / "images" / f"t{path.stem}{ext}")
        membrane = ((label == 0) * 255).astype(np.uint8)
        Image.fromarray(membrane).save(out / "masks" / f"t{path.stem}.png")
    return out


SCALED = {**OPTS, "steps": 10, "steps_rule": "scaled", "epochs_min": 5.0, "expert_count": (2, 3),
          "arms": FOUR}  # fmt: skip


@pytest.fixture(scope="module")
def with_test(
    tiny: Path, held_out: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any, list[tuple[int, int]]]:
    """One seed, ``--test held_out``, expert counts 2 and 3, ``--steps-rule scaled``."""
    out = tmp_path_factory.mktemp("evaluate-test")
    options = EvaluateOptions(seeds=(0,), **SCALED)  # type: ignore[arg-type]
    ticks: list[tuple[int, int]] = []
    report = evaluate(tiny, out, options, test=held_out, progress=lambda d, t: ticks.append((d, t)))
    return out, report, ticks


def _prepared(folder: Path, size: int) -> np.ndarray:
    from medcrowd.pairs import binary_arrays, load_pairs
    from segmenter.data import prepare

    _, images, masks = binary_arrays(load_pairs(folder))
    return prepare(images, masks, size)[0]


def test_test_folder_is_only_scored_on(
    tiny: Path, held_out: Path, with_test: tuple[Path, Any, Any]
) -> None:
    out, _report, _ = with_test
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"] == str(held_out.resolve())
    expected = sorted(p.stem for p in (held_out / "images").iterdir())
    assert sorted(summary["test_images"]) == expected and len(expected) == 4
    assert summary["pool"] == 12  # all of DATA is the pool: nothing of it is tested on
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    # no test image (at the network's size) is in any training set written for an arm …
    test_images = _prepared(held_out, 64)
    data_images = _prepared(tiny, 64)
    for arm_dir in (out / "seed-0").iterdir():
        train = [np.asarray(Image.open(p)) for p in (arm_dir / "images").iterdir()]
        assert train, arm_dir
        for image in train:
            assert not any(np.array_equal(image, t) for t in test_images), arm_dir
    # … while the same comparison finds every DATA image in the ceiling arm
    ceiling = [np.asarray(Image.open(p)) for p in (out / "seed-0" / "ceiling" / "images").iterdir()]
    assert all(any(np.array_equal(d, c) for c in ceiling) for d in data_images)


def test_several_expert_counts(with_test: tuple[Path, Any, Any]) -> None:
    out, _report, _ = with_test
    rows = list(csv.DictReader((out / "results.csv").open()))
    labels = ["expert-2", "crowd-2", "synthetic-2", "expert-3", "crowd-3", "synthetic-3"]
    assert [r["arm"] for r in rows] == [*labels, "ceiling"]
    pairs = {r["arm"]: int(r["train_pairs"]) for r in rows}
    assert pairs == {"expert-2": 2, "crowd-2": 12, "synthetic-2": 24, "expert-3": 3,
                     "crowd-3": 12, "synthetic-3": 24, "ceiling": 12}  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["arms"]) == [*labels, "ceiling"]
    assert set(summary["crowd_quality"]) == {"0-2", "0-3"}
    table = (out / "table.md").read_text()
    for title in ("(a) expert subset (n=2)", "(b) + crowd-fused (n=3)", "(c) + synthetic (n=2)",
                  "(d) all expert (ceiling) |"):  # fmt: skip
        assert title in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the subsets are nested: the 2 expert images are among the 3
    two = {p.name for p in (out / "seed-0" / "expert-2" / "images").iterdir()}
    three = {p.name for p in (out / "seed-0" / "expert-3" / "images").iterdir()}
    assert len(two) == 2 and len(three) == 3 and two < three


def test_scaled_steps_grow_with_the_arm(with_test: tuple[Path, Any, Any]) -> None:
    out, _report, ticks = with_test
    rows = list(csv.DictReader((out / "results.csv").open()))
    steps = {r["arm"]: int(r["steps"]) for r in rows}
    for row in rows:  # max(--steps, ceil(--epochs-min * pairs / batch size))
        pairs = int(row["train_pairs"])
        expected = max(10, int(np.ceil(5.0 * pairs / 4)))
        assert int(row["steps"]) == expected, row
    assert steps["expert-2"] == 10 < steps["crowd-2"] < steps["synthetic-2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_rule"]["rule"] == "scaled"
    assert summary["steps_rule"]["steps"] == steps
    total = sum(steps.values()) + 2 * OPTS["synth_steps"]  # type: ignore[operator]
    assert ticks[-1] == (total, total)


def _cli_evaluate(data: Path, test: Path, out: Path) -> Any:
    return CliRunner().invoke(
        app, ["evaluate", str(data), "--test", str(test), "--out", str(out), "--quick",
              "--expert-count", "3", "--device", "cpu"],
    )  # fmt: skip


def test_test_image_in_data_is_refused(tiny: Path, held_out: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    leaked = sorted((held_out / "images").glob("*.png"))[0]
    shutil.copy(leaked, data / "images" / "copy.png")
    shutil.copy(held_out / "masks" / leaked.name, data / "masks" / "copy.png")
    result = _cli_evaluate(data, held_out, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "1 image(s) of" in result.output and "test images" in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("layout", ["bare", "empty images/ + masks/", "missing"])
def test_test_folder_without_pairs_is_refused(tiny: Path, tmp_path: Path, layout: str) -> None:
    test = tmp_path / "test"
    if layout != "missing":
        test.mkdir()
    if layout.startswith("empty"):
        (test / "images").mkdir()
        (test / "masks").mkdir()
    result = _cli_evaluate(tiny, test, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"--test {test}" in " ".join(result.output.split())
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
