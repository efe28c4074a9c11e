"""CrowdStaple: planted reliabilities, gold clamping, inversion guard, validation."""

from __future__ import annotations

import numpy as np
import pytest

from fusion import CrowdStaple, MajorityVote, dice


def _disk(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    yy, xx = np.ogrid[:size, :size]
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    r = rng.integers(size // 8, size // 4)
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def _crowd(
    seed: int, n_tasks: int, flip: dict[str, float], per_task: int
) -> tuple[list[np.ndarray], list[list[str]], list[np.ndarray]]:
    """Sparse crowd: each task is labelled by ``per_task`` annotators chosen at random;
    annotator a flips each pixel with probability flip[a] (0.5 = spammer)."""
    rng = np.random.default_rng(seed)
    names = list(flip)
    tasks, anns, truths = [], [], []
    for _ in range(n_tasks):
        truth = _disk(rng)
        chosen = [names[i] for i in rng.choice(len(names), per_task, replace=False)]
        tasks.append(np.stack([truth ^ (rng.random(truth.shape) < flip[a]) for a in chosen]))
        anns.append(chosen)
        truths.append(truth)
    return tasks, anns, truths


@pytest.mark.parametrize(
    ("disagreement_only", "truncation"), [(True, True), (True, False), (False, True)]
)
def test_recovers_planted_reliabilities(disagreement_only: bool, truncation: bool) -> None:
    flip = {"g1": 0.02, "g2": 0.05, "g3": 0.08, "m1": 0.2, "s1": 0.5, "s2": 0.5}
    tasks, anns, truths = _crowd(0, 60, flip, per_task=4)
    algo = CrowdStaple(disagreement_only=disagreement_only, truncation=truncation)
    result = algo.fit_predict(tasks, anns)
    rel = result.reliability
    assert set(rel) == set(flip)
    assert all(0.0 <= v <= 1.0 for v in rel.values())
    assert min(rel["g1"], rel["g2"], rel["g3"]) > rel["m1"] > max(rel["s1"], rel["s2"])
    assert rel["g1"] > 0.8 and max(rel["s1"], rel["s2"]) < 0.15
    assert result.fallback is None
    crowd_dice = np.mean([dice(m, t) for m, t in zip(result.masks, truths, strict=True)])
    mv_dice = np.mean(
        [dice(MajorityVote().fit_predict(m).mask, t) for m, t in zip(tasks, truths, strict=True)]
    )
    assert crowd_dice > mv_dice


def test_rates_exposed_and_consistent() -> None:
    tasks, anns, _ = _crowd(1, 20, {"a": 0.05, "b": 0.05, "c": 0.5}, per_task=3)
    algo = CrowdStaple()
    result = algo.fit_predict(tasks, anns)
    for i, a in enumerate(algo.annotators_):
        assert result.sensitivity[a] == pytest.approx(algo.sensitivity_[i])
        expected = max(0.0, result.sensitivity[a] + result.specificity[a] - 1)
        assert result.reliability[a] == pytest.approx(expected)
    assert len(result.masks) == len(result.probabilities) == 20
    assert algo.task_prior_.shape == (20,)


def test_unanimous_voxels_are_decided_directly() -> None:
    tasks, anns, _ = _crowd(2, 10, {"a": 0.1, "b": 0.1, "c": 0.1}, per_task=3)
    result = CrowdStaple(disagreement_only=True).fit_predict(tasks, anns)
    for task, mask in zip(tasks, result.masks, strict=True):
        assert (mask[task.all(axis=0)]).all()
        assert not (mask[(~task).all(axis=0)]).any()


def _adversarial_crowd(seed: int) -> tuple[list[np.ndarray], list[list[str]], list[np.ndarray]]:
    """Two good annotators and three who submit the complement of the truth."""
    rng = np.random.default_rng(seed)
    tasks, anns, truths = [], [], []
    for _ in range(20):
        truth = _disk(rng)
        good = [truth ^ (rng.random(truth.shape) < 0.03) for _ in range(2)]
        bad = [~truth ^ (rng.random(truth.shape) < 0.03) for _ in range(3)]
        tasks.append(np.stack(good + bad))
        anns.append(["g1", "g2", "x1", "x2", "x3"])
        truths.append(truth)
    return tasks, anns, truths


def test_gold_clamps_truth_and_fixes_orientation() -> None:
    # Without gold the inverted majority wins; gold tasks pin the orientation, so EM
    # learns that x1..x3 flip their labels (guard off to see the EM solution itself).
    tasks, anns, truths = _adversarial_crowd(3)
    gold = {0: truths[0], 1: truths[1]}
    with_gold = CrowdStaple(guard=False).fit_predict(tasks, anns, gold=gold)
    without = CrowdStaple(guard=False).fit_predict(tasks, anns)
    for t in gold:
        np.testing.assert_array_equal(with_gold.masks[t], truths[t])
        assert (with_gold.probabilities[t] == truths[t]).all()
    d_gold = np.mean([dice(with_gold.masks[t], truths[t]) for t in range(2, 20)])
    d_none = np.mean([dice(without.masks[t], truths[t]) for t in range(2, 20)])
    assert d_gold > 0.9 > 0.5 > d_none
    assert with_gold.sensitivity["x1"] + with_gold.specificity["x1"] < 0.5


def test_inversion_guard_triggers_on_adversarial_crowd() -> None:
    tasks, anns, truths = _adversarial_crowd(4)
    gold = {0: truths[0], 1: truths[1]}
    result = CrowdStaple().fit_predict(tasks, anns, gold=gold)
    assert result.fallback is not None and "inversion" in result.fallback
    fused = np.mean([dice(m, t) for m, t in zip(result.masks[2:], truths[2:], strict=True)])
    mv = np.mean(
        [
            dice(MajorityVote().fit_predict(m).mask, t)
            for m, t in zip(tasks[2:], truths[2:], strict=True)
        ]
    )
    # weighted vote with gold-Dice weights follows the good raters; majority vote is inverted
    assert fused > 0.6 and mv < 0.2
    assert result.reliability["g1"] > result.reliability["x1"]
    unguarded = CrowdStaple(guard=False).fit_predict(tasks, anns, gold=gold)
    assert unguarded.fallback is None


@pytest.mark.parametrize("disagreement_only", [True, False])
def test_guard_does_not_fire_on_a_minority_of_full_painters(disagreement_only: bool) -> None:
    # Two annotators paint everything; the three careful ones agree with the truth.
    rng = np.random.default_rng(5)
    tasks, anns, truths = [], [], []
    for _ in range(10):
        truth = _disk(rng)
        full = np.ones_like(truth)
        tasks.append(np.stack([truth, full, full, truth, truth]))
        anns.append(["a", "f1", "f2", "b", "c"])
        truths.append(truth)
    result = CrowdStaple(disagreement_only=disagreement_only).fit_predict(tasks, anns)
    assert result.fallback is None
    for fused, truth in zip(result.masks, truths, strict=True):
        np.testing.assert_array_equal(fused, truth)
    assert result.reliability["a"] == pytest.approx(1.0, abs=1e-5)
    assert result.reliability["f1"] == pytest.approx(0.0, abs=1e-5)


def test_one_rater_tasks_and_3d() -> None:
    rng = np.random.default_rng(6)
    vol = rng.random((1, 3, 5, 5)) < 0.3
    tasks = [vol, np.concatenate([vol, vol])]
    result = CrowdStaple().fit_predict(tasks, [["a"], ["a", "b"]])
    np.testing.assert_array_equal(result.masks[0], vol[0])
    np.testing.assert_array_equal(result.masks[1], vol[0])


def test_validation_errors() -> None:
    m = np.zeros((2, 4, 4), bool)
    with pytest.raises(ValueError):
        CrowdStaple().fit_predict([], [])
    with pytest.raises(ValueError):
        CrowdStaple().fit_predict([m], [["a"]])
    with pytest.raises(ValueError):
        CrowdStaple().fit_predict([m], [["a", "a"]])
    with pytest.raises(ValueError):
        CrowdStaple().fit_predict([m], [["a", "b"]], gold={1: m[0]})
    with pytest.raises(ValueError):
        CrowdStaple().fit_predict([m], [["a", "b"]], gold={0: np.zeros((3, 3), bool)})
    with pytest.raises(ValueError):
        CrowdStaple().fit_predict([np.zeros((4, 4), bool)], [["a"]])
    with pytest.raises(ValueError):
        CrowdStaple(init_sensitivity=1.0)


def _wobbly(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``truth`` with ~1 px smooth boundary noise (a careful human outline)."""
    from scipy import ndimage

    sd = ndimage.distance_transform_edt(~truth) - ndimage.distance_transform_edt(truth)
    noise = ndimage.gaussian_filter(rng.standard_normal(truth.shape), 3)
    return np.asarray(sd < 0.5 + (noise - noise.mean()) / noise.std())


def test_one_systematically_larger_rater_does_not_inflate_the_area() -> None:
    """3 raters per task, one always draws 3 px too large (as real experts do): the fused
    area stays at the majority vote's. The old disagreement-only estimate (``anchor=0``)
    split the mixture along that rater's votes here: area +4 % over the majority vote."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    tasks, truths = [], []
    yy, xx = np.ogrid[:96, :96]
    for _ in range(8):
        cy, cx = rng.integers(35, 61, 2)
        truth = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(14, 24) ** 2
        big = ndimage.binary_dilation(_wobbly(truth, rng), iterations=3)
        tasks.append(np.stack([_wobbly(truth, rng), _wobbly(truth, rng), big]))
        truths.append(truth)
    anns = [["a", "b", "big"]] * len(tasks)
    mv = [MajorityVote().fit_predict(m).mask for m in tasks]
    fused = CrowdStaple().fit_predict(tasks, anns).masks
    area_ratio = sum(int(f.sum()) for f in fused) / sum(int(m.sum()) for m in mv)
    assert abs(area_ratio - 1.0) < 0.02
    crowd_dice = np.mean([dice(f, t) for f, t in zip(fused, truths, strict=True)])
    mv_dice = np.mean([dice(m, t) for m, t in zip(mv, truths, strict=True)])
    assert crowd_dice >= mv_dice - 0.005
    assert crowd_dice > 0.95


def test_anchor_is_validated() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="anchor"):
            CrowdStaple(anchor=bad)


def test_anchor_share_is_each_annotators_small_task_share() -> None:
    """The anchor weight of an annotator = its share of disagreement voxels on tasks with
    <= 3 raters: 1 for annotators seen only there, 0 for those seen only on larger tasks."""
    tasks, anns, _ = _crowd(1, 6, {"a": 0.1, "b": 0.2, "c": 0.3}, per_task=3)
    big, big_anns, _ = _crowd(2, 6, {k: 0.15 for k in "cdefgh"}, per_task=5)
    model = CrowdStaple()
    model.fit_predict(tasks + big, anns + big_anns)
    share = dict(zip(model.annotators_, model.anchor_share_, strict=True))
    assert share["a"] == share["b"] == 1.0
    assert all(share[k] == 0.0 for k in "defgh" if k in share)

    def dis_votes(ts: list[np.ndarray], ids: list[list[str]]) -> float:
        out = 0.0
        for m, who in zip(ts, ids, strict=True):
            if "c" in who:
                n_fg = m.sum(axis=0)
                out += float(((n_fg > 0) & (n_fg < m.shape[0])).sum())
        return out

    small, large = dis_votes(tasks, anns), dis_votes(big, big_anns)
    assert 0 < share["c"] < 1
    assert share["c"] == pytest.approx(small / (small + large))


def test_task_prior_is_the_posterior_mean_over_disagreement_voxels() -> None:
    """With the anchor, the prior of a 3-rater task is still estimated on its disagreement
    voxels only (what the truncated E-step assumes): the unanimous voxels do not pull it."""
    tasks, anns, _ = _crowd(3, 5, {"a": 0.05, "b": 0.1, "c": 0.3}, per_task=3)
    model = CrowdStaple(tol=1e-12, max_iter=500)
    res = model.fit_predict(tasks, anns)
    for t, m in enumerate(tasks):
        n_fg = m.sum(axis=0)
        dis = (n_fg > 0) & (n_fg < 3)
        # the prior the last E-step used, against the posterior it produced: equal at the
        # fixed point
        assert model.task_prior_[t] == pytest.approx(res.probabilities[t][dis].mean(), abs=1e-5)


@pytest.mark.parametrize(("spam_pct", "seed"), [(20, 2024), (40, 4044)])
def test_anchor_costs_nothing_on_real_masks_with_spammer_crowds(
    shared_data_isbi: list[np.ndarray], spam_pct: int, seed: int
) -> None:
    """The ISBI spammer crowds of ``benchmarks/fusion_accuracy.py`` (30 membrane masks,
    20 annotators, 3-15 per task): the anchor must not cost Dice against the pure
    disagreement-only estimate (``anchor=0``). Before its anchor share and the
    disagreement-only task prior it cost 0.0016 (20 %) and 0.0098 (40 %)."""
    from fusion.crowd_models import simulate_crowd

    honest = ["good", "sloppy", "dilate", "erode", "miss_small"]
    n_spam = round(20 * spam_pct / 100)
    kinds = [("spammer_blobs", "spammer_random")[i % 2] for i in range(n_spam)]
    kinds += [honest[i % 5] for i in range(20 - n_spam)]
    rng = np.random.default_rng(seed)
    tasks, anns = [], []
    for t, expert in enumerate(shared_data_isbi):
        k = int(rng.integers(3, 16))
        chosen = sorted(int(a) for a in rng.choice(20, k, replace=False))
        tasks.append(simulate_crowd(expert, [kinds[a] for a in chosen], seed=seed * 1000 + t))
        anns.append(chosen)
    new = CrowdStaple().fit_predict(tasks, anns).masks
    old = CrowdStaple(anchor=0).fit_predict(tasks, anns).masks
    d_new = np.mean([dice(f, e) for f, e in zip(new[2:], shared_data_isbi[2:], strict=True)])
    d_old = np.mean([dice(f, e) for f, e in zip(old[2:], shared_data_isbi[2:], strict=True)])
    assert d_new >= d_old - 0.0005
