"""DaskCrowdStaple on a real local Dask cluster gives CrowdStaple's result bit for bit.

One LocalCluster (2 worker processes) serves the module. Equality is exact: np.array_equal
on masks and posterior maps, == on every rate, prior and iteration count — on ISBI 2012
membranes with a simulated sparse crowd (spammers, biased raters, gold tasks) and on
hypothesis-generated tiny crowds with random EM settings and chunk sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fusion import CrowdStaple
from fusion.crowd_models import simulate_crowd
from fusion.distributed import DaskCrowdStaple, map_tasks, parse_scheduler
from tests.helpers import shared_data_dir

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as c:
        yield c


def _assert_identical(a: CrowdStaple, ra: Any, b: CrowdStaple, rb: Any) -> None:
    assert len(ra.masks) == len(rb.masks)
    for x, y in zip(ra.masks, rb.masks, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    for x, y in zip(ra.probabilities, rb.probabilities, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert ra.sensitivity == rb.sensitivity and ra.specificity == rb.specificity
    assert ra.reliability == rb.reliability
    assert (ra.fallback, ra.n_iter, ra.converged) == (rb.fallback, rb.n_iter, rb.converged)
    assert a.annotators_ == b.annotators_
    for name in ("em_sensitivity_", "em_specificity_", "sensitivity_", "task_prior_"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _isbi_crowd(n_tasks: int) -> tuple[list[np.ndarray], list[list[str]], dict[int, np.ndarray]]:
    """ISBI membranes (label == 0) at 256², 3–4 raters per slice out of 9, 2 spammers."""
    labels = shared_data_dir() / "isbi2012_em" / "train" / "label"
    if not labels.is_dir():
        pytest.skip(f"ISBI 2012 data not found at {labels} (set MEDCROWD_SHARED_DATA)")
    pool = {
        "ann-good-1": "good", "ann-good-2": "good", "ann-sloppy": "sloppy",
        "ann-dilate": "dilate", "ann-erode": "erode", "ann-miss": "miss_small",
        "ann-partial": "partial", "spam-blobs": "spammer_blobs", "spam-rand": "spammer_random",
    }  # fmt: skip
    names = sorted(pool)
    rng = np.random.default_rng(0)
    tasks, annotators, gold = [], [], {}
    for t in range(n_tasks):
        label = np.asarray(Image.open(labels / f"{t}.png"))[::2, ::2]
        expert = label == 0
        chosen = sorted(rng.choice(names, size=int(rng.integers(3, 5)), replace=False))
        tasks.append(simulate_crowd(expert, [pool[a] for a in chosen], seed=t))
        annotators.append(chosen)
        if t % 10 == 3:
            gold[t] = expert
    return tasks, annotators, gold


def test_isbi_crowd_is_fused_identically_on_the_cluster(client: Any) -> None:
    tasks, annotators, gold = _isbi_crowd(30)
    local = CrowdStaple(chunk_size=7)  # 5 chunks over 2 workers
    local_res = local.fit_predict(tasks, annotators, gold=gold)
    remote = DaskCrowdStaple(chunk_size=7)
    remote_res = remote.fit_predict(tasks, annotators, gold=gold, client=client)
    _assert_identical(local, local_res, remote, remote_res)
    assert local_res.n_iter > 5 and local_res.fallback is None
    # It is a real fusion: spammers found, the gold tasks are the gold masks.
    assert max(local_res.reliability[a] for a in ("spam-blobs", "spam-rand")) < 0.3
    assert min(local_res.reliability[a] for a in ("ann-good-1", "ann-good-2")) > 0.6
    for t, g in gold.items():
        assert np.array_equal(remote_res.masks[t], g)
    # Chunking itself only moves rounding: one chunk gives the same rates to ~1e-12.
    whole = CrowdStaple(chunk_size=1024).fit_predict(tasks, annotators, gold=gold)
    for a, v in whole.sensitivity.items():
        assert v == pytest.approx(local_res.sensitivity[a], rel=1e-9, abs=1e-12)


def test_scheduler_address_connects_to_a_running_cluster(cluster: Any) -> None:
    tasks, annotators, gold = _isbi_crowd(6)
    local = CrowdStaple(chunk_size=2, max_iter=20)
    remote = DaskCrowdStaple(chunk_size=2, max_iter=20, scheduler_address=cluster.scheduler_address)
    _assert_identical(
        local, local.fit_predict(tasks, annotators, gold=gold),
        remote, remote.fit_predict(tasks, annotators, gold=gold),
    )  # fmt: skip


@st.composite
def _crowds(draw: st.DrawFn) -> tuple[list[np.ndarray], list[list[int]], dict[int, np.ndarray]]:
    n_tasks = draw(st.integers(1, 6))
    tasks, annotators, gold = [], [], {}
    for t in range(n_tasks):
        n_raters = draw(st.integers(1, 4))
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        flat = draw(st.lists(st.booleans(), min_size=n_raters * shape[0] * shape[1],
                             max_size=n_raters * shape[0] * shape[1]))  # fmt: skip
        tasks.append(np.array(flat, bool).reshape(n_raters, *shape))
        annotators.append(draw(st.lists(st.integers(0, 6), min_size=n_raters,
                                        max_size=n_raters, unique=True)))  # fmt: skip
        if draw(st.booleans()) and draw(st.booleans()):
            g = draw(st.lists(st.booleans(), min_size=shape[0] * shape[1],
                              max_size=shape[0] * shape[1]))  # fmt: skip
            gold[t] = np.array(g, bool).reshape(shape)
    return tasks, annotators, gold


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    crowd=_crowds(),
    chunk_size=st.integers(1, 4),
    max_iter=st.integers(1, 25),
    disagreement_only=st.booleans(),
    truncation=st.booleans(),
)
def test_tiny_crowds_are_fused_identically(
    client: Any,
    crowd: tuple[list[np.ndarray], list[list[int]], dict[int, np.ndarray]],
    chunk_size: int,
    max_iter: int,
    disagreement_only: bool,
    truncation: bool,
) -> None:
    tasks, annotators, gold = crowd
    params = dict(chunk_size=chunk_size, max_iter=max_iter, tol=1e-9,
                  disagreement_only=disagreement_only, truncation=truncation)  # fmt: skip
    local, remote = CrowdStaple(**params), DaskCrowdStaple(**params)  # type: ignore[arg-type]
    _assert_identical(
        local, local.fit_predict(tasks, annotators, gold=gold or None),
        remote, remote.fit_predict(tasks, annotators, gold=gold or None, client=client),
    )  # fmt: skip


def test_guard_fallback_is_identical_on_the_cluster(client: Any) -> None:
    # Two of three raters inverted, gold says so: the guard replaces EM by a weighted vote.
    truth = np.zeros((16, 16), bool)
    truth[4:12, 4:12] = True
    tasks = [np.stack([~truth, ~truth, truth]) for _ in range(5)]
    ids = [["a", "b", "c"]] * 5
    local, remote = CrowdStaple(chunk_size=2), DaskCrowdStaple(chunk_size=2)
    res = local.fit_predict(tasks, ids, gold={0: truth, 1: truth})
    assert res.fallback is not None and "inversion" in res.fallback
    _assert_identical(
        local, res, remote, remote.fit_predict(tasks, ids, gold={0: truth, 1: truth}, client=client)
    )


def test_bad_input_raises_the_same_error_from_the_workers(client: Any) -> None:
    tasks = [np.zeros((2, 4, 4), bool)] * 6
    ids = [["a", "b"]] * 5 + [["a"]]  # task 5: two masks, one id
    with pytest.raises(ValueError, match="task 5: 2 masks but 1 annotator ids"):
        DaskCrowdStaple(chunk_size=4).fit_predict(tasks, ids, client=client)
    with pytest.raises(ValueError, match="task 5: 2 masks but 1 annotator ids"):
        CrowdStaple(chunk_size=4).fit_predict(tasks, ids)


def test_map_tasks_keeps_the_order(client: Any) -> None:
    items = list(range(-50, 50))
    assert map_tasks(abs, items, client=client, batch_size=7) == [abs(i) for i in items]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(None, None), ("none", None), ("", None), ("local", "local"), ("AUTO", "auto"),
     ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"), ("tls://sched.example:8786",
                                                      "tls://sched.example:8786")],
)  # fmt: skip
def test_scheduler_values(value: str | None, parsed: str | None) -> None:
    assert parse_scheduler(value) == parsed


@pytest.mark.parametrize(
    "value", ["tcp://host", "tcp://host:0", "http://h:8786", "cluster", "tcp://:1"]
)
def test_bad_scheduler_values_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="--scheduler"):
        parse_scheduler(value)


def test_controls_are_validated() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        CrowdStaple(chunk_size=0)
    with pytest.raises(ValueError, match="scheduler_address"):
        DaskCrowdStaple(scheduler_address="local")
    with pytest.raises(ValueError, match="n_workers"):
        DaskCrowdStaple(n_workers=0)


# -- medcrowd fuse --scheduler ----------------------------------------------------------------
def _pulled_dataset(root: Any) -> None:
    """A pulled dataset (as ``medcrowd pull`` writes it) of 6 ISBI slices, one gold task."""
    from medcrowd.dataset import AnnotationRecord, Dataset

    tasks, annotators, gold = _isbi_crowd(6)
    ds = Dataset(root)
    ds.init({"project": 1, "url": "http://ls"})
    ids = {name: i for i, name in enumerate(sorted({a for ann in annotators for a in ann}))}
    n = 0
    for t, (masks, names) in enumerate(zip(tasks, annotators, strict=True)):
        votes = [(ids[a], m, False) for a, m in zip(names, masks[:, ::2, ::2], strict=True)]
        if t in gold:
            votes.append((99, gold[t][::2, ::2], True))
        for annotator, mask, is_gold in votes:
            n += 1
            rel = ds.write_mask(100 + t, n, "2026-01-01", mask)
            ds.append(AnnotationRecord(task=100 + t, annotation=n, annotator=annotator,
                                       annotator_email=None, gold=is_gold,
                                       updated_at="2026-01-01", created_at=None,
                                       lead_time=None, was_cancelled=False, mask=rel))  # fmt: skip


def _outputs(folder: Any) -> dict[str, bytes]:
    names = ["tasks.csv", "reliability.csv", "summary.json"]
    files = [*sorted(folder.glob("masks/*.png")), *(folder / n for n in names)]
    return {f.name: f.read_bytes() for f in files}


@pytest.mark.parametrize("method", ["crowd-staple", "staple"])
def test_medcrowd_fuse_on_a_scheduler_writes_the_same_files(
    cluster: Any, tmp_path: Any, method: str
) -> None:
    from typer.testing import CliRunner

    from medcrowd.cli import app
    from medcrowd.fuse import FuseOptions, fuse_dataset

    _pulled_dataset(tmp_path)
    here = fuse_dataset(tmp_path, FuseOptions(method=method))
    expected = _outputs(here.out)
    assert len(expected) == 6 + 3
    result = CliRunner().invoke(
        app, ["fuse", str(tmp_path), "--method", method, "--scheduler", cluster.scheduler_address]
    )
    assert result.exit_code == 0, result.output
    assert _outputs(here.out) == expected


def test_medcrowd_fuse_refuses_a_bad_scheduler(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from medcrowd.cli import app

    _pulled_dataset(tmp_path)
    result = CliRunner().invoke(app, ["fuse", str(tmp_path), "--scheduler", "http://x:1"])
    assert result.exit_code == 1 and "--scheduler must be" in result.output
