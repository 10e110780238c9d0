"""The OOD statistics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, rankdata, spearmanr

from steerops.extract.conditions import OodCondition
from steerops.probes.ood import (
    _within_r,
    analyse,
    paired_inversions,
    per_target,
    permutation_p,
)


def reference_permutation_p(x, y, groups, n_perm, seed):
    """Shuffle y within each group (groups in first-seen order), one rng.permutation per
    group per round; one-sided with the +1 correction."""
    rng = np.random.default_rng(seed)
    observed = pearsonr(x, y)[0]
    hits = 0
    for _ in range(n_perm):
        shuffled = y.copy()
        for g in dict.fromkeys(groups.tolist()):
            idx = np.flatnonzero(groups == g)
            shuffled[idx] = rng.permutation(y[idx])
        hits += pearsonr(x, shuffled)[0] >= observed - 1e-12
    return (1 + hits) / (1 + n_perm)


@pytest.mark.parametrize("seed", [0, 5])
def test_permutation_p_matches_independent_computation(seed):
    rng = np.random.default_rng(10 + seed)
    x = rng.normal(size=60)
    y = 0.25 * x + rng.normal(size=60)
    groups = np.repeat([2, 0, 1], 20)
    p = permutation_p(x, y, groups, 700, seed)  # > one vectorised chunk
    assert p == pytest.approx(reference_permutation_p(x, y, groups, 700, seed), abs=1e-12)
    assert p != permutation_p(x, y, groups, 700, seed + 1)


def test_permutation_p_has_the_plus_one_correction():
    x = np.arange(40, dtype=float)
    p = permutation_p(x, x * 2 + 1, np.zeros(40, dtype=int), 200, seed=0)
    assert p == 1 / 201  # no shuffle reaches r = 1, yet p is never 0
    rng = np.random.default_rng(1)
    noisy = permutation_p(x, rng.normal(size=40), np.zeros(40, dtype=int), 99, seed=3)
    assert (noisy * 100) == pytest.approx(round(noisy * 100)) and noisy >= 1 / 100


def test_ranks_topk_and_inversions_on_hand_made_deltas():
    tasks = ["a", "b", "c", "d"]
    conds = [
        OodCondition("A1", "p", "a", "v1", "A"),
        OodCondition("C1", "p", "a", "v1", "C"),
        OodCondition("A2", "p", "a", "v2", "A"),
        OodCondition("C2", "p", "a", "v2", "C"),
    ]
    probe = {
        "A1": np.array([0.3, -0.1, 0.5, 0.0]),
        "C1": np.array([0.4, 0.0, 0.0, 0.1]),
        "A2": np.array([0.5, 0.1, 0.2, 0.0]),
        "C2": np.array([-0.2, 0.1, 0.0, 0.3]),
    }
    behaviour = {
        "A1": np.array([0.2, 0.0, 0.1, np.nan]),
        "C1": np.array([-0.1, 0.0, 0.2, 0.1]),
        "A2": np.array([0.3, 0.0, 0.0, 0.0]),
        "C2": np.array([-0.1, 0.2, 0.0, 0.0]),
    }
    targets = {g["role"]: g for g in per_target(tasks, conds, probe, behaviour, top_k=1)}
    a1 = targets["A"]["conditions"][0]
    assert (a1["probe_rank_desc"], a1["probe_rank_asc"]) == (2, 3)
    assert (a1["behaviour_rank_desc"], a1["behaviour_rank_asc"]) == (1, 3)  # nan ignored
    assert targets["A"]["topk_rate"]["probe_up"] == 0.5  # rank 1 only under A2
    assert (
        targets["C"]["topk_rate"]["probe_up"] == 0.5
        and targets["C"]["topk_rate"]["probe_down"] == 0.5
    )
    assert targets["A"]["mean_delta_by_version"]["v2"] == {"probe": 0.5, "behaviour": 0.3, "n": 1}
    pairs = paired_inversions(list(targets.values()), ("A", "C"))
    by_version = {i["version"]: i for i in pairs["items"]}
    # v1: probe A-C = -0.1 but behaviour A-C = +0.3 -> inverted; v2: both positive
    assert by_version["v1"]["inverted"] and not by_version["v2"]["inverted"]
    assert (pairs["n"], pairs["inversions"], pairs["rate"]) == (2, 1, 0.5)


def test_means_compared_across_roles_cover_the_same_conditions_and_tasks():
    """A condition without a behavioural rate for the target is left out of the probe's
    mean too: otherwise A - C compares means over different conditions and reads as an
    inversion that no matched condition shows."""
    tasks = ["t0", "t1", "t2", "t3"]
    conds = [
        OodCondition("A1", "p", "t0", "v1", "A"),
        OodCondition("A2", "p", "t0", "v1", "A"),
        OodCondition("C1", "p", "t0", "v1", "C"),
    ]
    probe = {
        "A1": np.array([1.0, 0.2, -0.1, 0.4]),
        "A2": np.array([-5.0, 0.3, 0.1, 0.0]),
        "C1": np.array([0.0, 0.1, 0.2, 0.3]),
    }
    behaviour = {
        "A1": np.array([0.5, 0.1, 0.0, 0.2]),
        "A2": np.array([np.nan, 0.2, 0.1, 0.0]),  # no rate for the target under A2
        "C1": np.array([0.0, 0.0, 0.1, 0.1]),
    }
    out = analyse(tasks, conds, probe, behaviour, n_perm=20, seed=0, top_k=1, roles=("A", "C"))
    (a,) = [g for g in out["targets"] if g["role"] == "A"]
    assert a["mean_delta_by_version"]["v1"] == {"probe": 1.0, "behaviour": 0.5, "n": 1}
    (item,) = out["pairs"]["items"]
    assert item["probe_diff"] == pytest.approx(1.0) and item["behaviour_diff"] == 0.5
    assert not item["inverted"] and out["pairs"]["inversions"] == 0
    means = out["per_version"]["v1"]["mean_target_delta"]["A"]
    # one row: no spread to give the means an interval
    assert means == {
        "probe": 1.0,
        "behaviour": 0.5,
        "n": 1,
        "probe_ci": [None, None],
        "behaviour_ci": [None, None],
    }
    # per condition: both means over the 3 tasks A2 has a rate for
    (a2,) = [c for c in out["per_condition"] if c["id"] == "A2"]
    assert a2["n"] == 3 and a2["mean_probe_delta"] == pytest.approx(np.mean([0.3, 0.1, 0.0]))
    assert a2["mean_behaviour_delta"] == pytest.approx(0.1)


def test_per_version_statistics_pool_conditions():
    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(30)]
    conds = [OodCondition(f"c{i}", "p", None, "v1" if i < 2 else "v2", None) for i in range(3)]
    probe = {c.id: rng.normal(size=30) for c in conds}
    behaviour = {c.id: probe[c.id] * 0.5 + rng.normal(0, 0.5, 30) for c in conds}
    out = analyse(tasks, conds, probe, behaviour, n_perm=50, seed=1, top_k=3, roles=("A", "C"))
    x = np.concatenate([probe["c0"], probe["c1"]])
    y = np.concatenate([behaviour["c0"], behaviour["c1"]])
    v1 = out["per_version"]["v1"]
    assert v1["n_pairs"] == 60 and v1["n_conditions"] == 2
    assert v1["pearson"] == pytest.approx(pearsonr(x, y)[0])
    assert v1["spearman"] == pytest.approx(spearmanr(x, y)[0])
    assert v1["sign_agreement"] == pytest.approx(np.mean(np.sign(x) == np.sign(y)))
    assert v1["p_perm"] == pytest.approx(
        reference_permutation_p(x, y, np.repeat([0, 1], 30), 50, 1)
    )


def test_two_condition_shifts_are_not_task_level_agreement():
    # Two conditions shift probe and behaviour the same way; within a condition the deltas
    # are unrelated. The pooled r is near 1 from those 2 points; the within-condition r (the
    # one the permutation p tests) is near 0 and its bootstrap interval over tasks holds 0.
    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(300)]
    conds = [OodCondition(c, "p", None, "v1", None) for c in ("A", "C")]
    probe = {"A": 1 + rng.normal(0, 0.3, 300), "C": -1 + rng.normal(0, 0.3, 300)}
    behaviour = {"A": 0.2 + rng.normal(0, 0.05, 300), "C": -0.2 + rng.normal(0, 0.05, 300)}
    v1 = analyse(tasks, conds, probe, behaviour, 50, 0, 3, ("A", "C"))["per_version"]["v1"]
    assert v1["pearson"] > 0.9 and v1["n_tasks"] == 300
    centred = [np.concatenate([d[c] - d[c].mean() for c in "AC"]) for d in (probe, behaviour)]
    assert v1["pearson_within"] == pytest.approx(pearsonr(*centred)[0], abs=1e-12)
    low, high = v1["pearson_within_ci"]
    assert low < 0 < high and high - low < 0.3


def test_within_r_weights_are_resampled_rows():
    # a bootstrap draw's weights (task counts) equal repeating each task's rows that often
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=40), rng.normal(size=40)
    groups, task = np.repeat([0, 1], 20), np.tile(np.arange(20), 2)
    counts = rng.multinomial(20, np.full(20, 0.05))
    rows = np.repeat(np.arange(40), counts[task])
    xs, ys, gs = x[rows], y[rows], groups[rows]
    centred = [np.concatenate([v[gs == g] - v[gs == g].mean() for g in (0, 1)]) for v in (xs, ys)]
    weighted = _within_r(x, y, groups, counts[task][None].astype(float))[0]
    assert weighted == pytest.approx(pearsonr(*centred)[0], abs=1e-12)


def _centre(v, groups):
    return np.concatenate([v[groups == g] - v[groups == g].mean() for g in np.unique(groups)])


def test_pooled_statistics_have_bootstrap_intervals_from_the_within_r_draws():
    """Pooled Pearson, Spearman and sign agreement get 95% intervals from the same task
    resamples as the within-condition r: checked draw by draw against scipy on the rows the
    draw repeats (ties and zero deltas included)."""
    from steerops.probes.ood import BOOTSTRAP, _weighted_ranks

    rng = np.random.default_rng(4)
    n = 25
    tasks = [f"t{i}" for i in range(n)]
    conds = [OodCondition(c, "p", None, "v1", None) for c in ("A", "C")]
    probe = {c: np.round(rng.normal(s, 1, n), 1) for c, s in (("A", 0.5), ("C", -0.5))}
    behaviour = {c: np.round(0.3 * probe[c] + rng.normal(0, 0.5, n), 1) for c in "AC"}
    behaviour["C"][3] = np.nan  # a missing rate drops that pair only
    v1 = analyse(tasks, conds, probe, behaviour, 20, 7, 3, ("A", "C"))["per_version"]["v1"]

    keep = {c: np.isfinite(behaviour[c]) for c in "AC"}
    x = np.concatenate([probe[c][keep[c]] for c in "AC"])
    y = np.concatenate([behaviour[c][keep[c]] for c in "AC"])
    groups = np.concatenate([np.full(keep[c].sum(), k) for k, c in enumerate("AC")])
    task = np.concatenate([np.flatnonzero(keep[c]) for c in "AC"])
    draws = np.random.default_rng(7).multinomial(n, np.full(n, 1 / n), size=BOOTSTRAP)
    ref = {k: [] for k in ("pearson_within", "pearson", "spearman", "sign_agreement")}
    for counts in draws:
        rows = np.repeat(np.arange(len(x)), counts[task])
        xs, ys, gs = x[rows], y[rows], groups[rows]
        centred = [
            np.concatenate([v[gs == g] - v[gs == g].mean() for g in (0, 1)]) for v in (xs, ys)
        ]
        ref["pearson_within"].append(pearsonr(*centred)[0])
        ref["pearson"].append(pearsonr(xs, ys)[0])
        ref["spearman"].append(spearmanr(xs, ys)[0])
        both = (xs != 0) & (ys != 0)
        ref["sign_agreement"].append(np.mean(np.sign(xs[both]) == np.sign(ys[both])))
    for key, values in ref.items():
        expected = np.quantile(values, [0.025, 0.975])
        assert v1[f"{key}_ci"] == pytest.approx(expected, abs=1e-9), key
        low, high = v1[f"{key}_ci"]
        assert low <= v1[key] <= high
    w = draws[:1, task].astype(float)
    rows = np.repeat(np.arange(len(x)), draws[0][task])
    ranks = _weighted_ranks(x, w)[0]
    np.testing.assert_allclose(ranks[rows], rankdata(x[rows]))


def test_tasks_tied_with_the_target_share_its_rank_by_their_average():
    """0/1 behaviour rates tie many tasks: the target among 5 equal top deltas ranks 3 (the
    average of places 1-5, scipy's), not 1, and is no top-1 hit; the ties are counted."""
    tasks = list("abcdefgh")
    conds = [OodCondition("A1", "p", "a", "v1", "A")]
    delta = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, np.nan])
    [target] = per_target(tasks, conds, {"A1": delta}, {"A1": delta}, top_k=1)
    row = target["conditions"][0]
    finite = delta[:7]
    assert row["behaviour_rank_desc"] == rankdata(-finite)[0] == 3.0
    assert row["behaviour_rank_asc"] == rankdata(finite)[0] == 5.0
    assert row["behaviour_tied"] == row["probe_tied"] == 4
    assert target["topk_rate"]["behaviour_up"] == 0.0


def test_statistics_use_only_the_evaluated_tasks_and_flag_fitted_targets():
    """With an `evaluated` mask (the tasks the probe was not fitted on), every per-version and
    per-condition statistic is the one computed on just those tasks (numpy/scipy reference);
    the fitted tasks, where probe and behaviour agree perfectly here, weigh in nowhere.
    Targets are still ranked among all tasks and flagged when fitted."""
    rng = np.random.default_rng(3)
    n, n_fitted = 40, 28
    tasks = [f"t{i:02d}" for i in range(n)]
    fitted = set(tasks[:n_fitted])
    evaluated = np.arange(n) >= n_fitted
    conds = [OodCondition(c, "p", "t00", "v1", c[0]) for c in ("A1", "C1")]
    probe = {c.id: rng.normal(size=n) for c in conds}
    behaviour = {c.id: 0.3 * probe[c.id] + rng.normal(0, 0.5, n) for c in conds}
    for c in conds:  # in-sample: the fitted tasks agree exactly
        behaviour[c.id][:n_fitted] = probe[c.id][:n_fitted]
    out = analyse(tasks, conds, probe, behaviour, 200, 4, 3, ("A", "C"), evaluated, fitted)

    x = np.concatenate([probe[c.id][evaluated] for c in conds])
    y = np.concatenate([behaviour[c.id][evaluated] for c in conds])
    groups = np.repeat([0, 1], n - n_fitted)
    v1 = out["per_version"]["v1"]
    assert (v1["n_tasks"], v1["n_pairs"]) == (n - n_fitted, 2 * (n - n_fitted))
    assert v1["pearson"] == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    assert v1["spearman"] == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
    centred = [_centre(v, groups) for v in (x, y)]
    assert v1["pearson_within"] == pytest.approx(pearsonr(*centred)[0], abs=1e-12)
    assert v1["sign_agreement"] == pytest.approx(np.mean(np.sign(x) == np.sign(y)))
    assert v1["p_perm"] == pytest.approx(reference_permutation_p(x, y, groups, 200, 4))
    assert v1["pearson"] < 0.9  # the all-task r would be near 1 from the fitted tasks
    # the intervals too: the same draws as an analysis handed only the evaluated tasks
    only = analyse(
        [t for t, keep in zip(tasks, evaluated, strict=True) if keep],
        conds,
        {k: v[evaluated] for k, v in probe.items()},
        {k: v[evaluated] for k, v in behaviour.items()},
        200,
        4,
        3,
        ("A", "C"),
    )
    for key in ("pearson_within_ci", "pearson_ci", "spearman_ci", "sign_agreement_ci"):
        assert v1[key] == only["per_version"]["v1"][key], key
    for row in out["per_condition"]:
        c = row["id"]
        assert row["n"] == n - n_fitted
        assert row["pearson"] == pytest.approx(
            pearsonr(probe[c][evaluated], behaviour[c][evaluated])[0], abs=1e-12
        )
    # t00 was fitted: flagged, and ranked among all 40 tasks
    for group in out["targets"]:
        assert group["fitted"] is True
        (row,) = group["conditions"]
        delta = probe[row["id"]]
        assert row["probe_rank_desc"] == 1 + (delta > delta[0]).sum()
    assert [i["fitted"] for i in out["pairs"]["items"]] == [True]
    # held out, the fitted target leaves the mean target deltas, which subtract its in-sample
    # baseline reading, but not the inversions: A minus C reads no baseline
    held = analyse(
        tasks, conds, probe, behaviour, 20, 4, 3, ("A", "C"), evaluated, fitted, exclude_fitted=True
    )
    assert held["pairs"] == out["pairs"] and held["pairs"]["items"][0]["fitted"] is True
    (item,) = held["pairs"]["items"]
    assert item["probe_diff"] == pytest.approx(probe["A1"][0] - probe["C1"][0], abs=1e-12)
    assert item["behaviour_diff"] == pytest.approx(behaviour["A1"][0] - behaviour["C1"][0])
    assert held["pairs"]["n"] == 1 and held["pairs"]["inversions"] == int(
        np.sign(item["probe_diff"]) != np.sign(item["behaviour_diff"])
    )
    # trained under another prompt than the baseline's (a condition's own, say A's): an A
    # reading of a fitted target may be in-sample, so the inversions leave it out
    other = analyse(
        tasks,
        conds,
        probe,
        behaviour,
        20,
        4,
        3,
        ("A", "C"),
        evaluated,
        fitted,
        exclude_fitted=True,
        fitted_in_pairs=False,
    )
    assert other["pairs"]["items"] == [] and other["pairs"]["fitted_left_out"] == 1
    from steerops.probes.ood_report import _inversions_counted

    said = _inversions_counted(other["pairs"])
    assert said.startswith("; 1 target the probe was fitted on left out: trained under another")
    assert held["n_fitted_targets_left_out"] == 1
    assert held["per_version"]["v1"]["mean_target_delta"] == {}
    assert out["n_fitted_targets_left_out"] == 0 and out["per_version"]["v1"]["mean_target_delta"]
    unrecorded = analyse(tasks, conds, probe, behaviour, 20, 4, 3, ("A", "C"), None, None)
    assert [g["fitted"] for g in unrecorded["targets"]] == [None, None]
    assert unrecorded["per_version"]["v1"]["n_tasks"] == n


T_975 = {1: 12.706204736174707, 2: 4.302652729749464, 3: 3.182446305284263}  # t tables


def test_mean_target_deltas_carry_a_95_t_interval():
    """Each role's mean target delta (probe and behaviour) over its n (condition, target)
    rows gets mean +- t(0.975, n - 1) * sd / sqrt(n); a role with one row gets none."""
    tasks = [f"t{i}" for i in range(6)]
    conds = [OodCondition(f"A{i}", "p", f"t{i}", "v1", "A") for i in range(4)]
    conds += [OodCondition("C0", "p", "t0", "v1", "C"), OodCondition("C1", "p", "t1", "v1", "C")]
    conds += [OodCondition("B0", "p", "t0", "v1", "B")]
    rng = np.random.default_rng(2)
    probe = {c.id: rng.normal(size=6) for c in conds}
    behaviour = {c.id: rng.normal(size=6) for c in conds}
    behaviour["A3"][3] = np.nan  # no rate for A3's target: its row leaves both means
    out = analyse(tasks, conds, probe, behaviour, 20, 0, 2, ("A", "C"))
    means = out["per_version"]["v1"]["mean_target_delta"]
    for role, ids in (("A", ["A0", "A1", "A2"]), ("C", ["C0", "C1"])):
        for side, deltas in (("probe", probe), ("behaviour", behaviour)):
            values = np.array([deltas[c][int(c[1])] for c in ids])
            k = len(values)
            sd = np.sqrt(((values - values.mean()) ** 2).sum() / (k - 1))
            half = T_975[k - 1] * sd / np.sqrt(k)
            assert means[role]["n"] == k
            assert means[role][side] == pytest.approx(values.mean(), abs=1e-12)
            expected = [values.mean() - half, values.mean() + half]
            assert means[role][f"{side}_ci"] == pytest.approx(expected, abs=1e-9), (role, side)
    assert means["B"]["n"] == 1 and means["B"]["probe_ci"] == means["B"]["behaviour_ci"]
    assert means["B"]["probe_ci"] == [None, None]


def _wilson(hits, n, z=1.959963984540054):
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [centre - half, centre + half]


def test_the_inversion_rate_carries_a_95_wilson_interval():
    """2 of 5 comparable A/C pairs invert: rate 0.4 with the Wilson interval by hand (0.118,
    0.769 in published tables); no comparable pair: no rate, no interval."""

    def group(role, target, probe, behaviour):
        means = {"v1": {"probe": probe, "behaviour": behaviour, "n": 1}}
        return {"role": role, "target": target, "mean_delta_by_version": means}

    targets = []
    for k, inverted in enumerate([True, True, False, False, False]):
        targets.append(group("A", f"t{k}", 0.5, -0.2 if inverted else 0.2))
        targets.append(group("C", f"t{k}", 0.1, 0.0))
    pairs = paired_inversions(targets, ("A", "C"))
    assert (pairs["n"], pairs["inversions"], pairs["rate"]) == (5, 2, 0.4)
    assert pairs["rate_ci"] == pytest.approx(_wilson(2, 5), abs=1e-12)
    assert pairs["rate_ci"] == pytest.approx([0.1176, 0.7693], abs=1e-4)
    # the same pairs in a second version: a target's versions move together, so 4 of 10
    # is no more precise than 2 of 5 (clustered by target), narrower than Wilson's 10 says
    for g in targets:
        g["mean_delta_by_version"]["v2"] = g["mean_delta_by_version"]["v1"]
    twice = paired_inversions(targets, ("A", "C"))
    assert (twice["n"], twice["rate"]) == (10, 0.4)
    lo, hi = twice["rate_ci"]
    naive = _wilson(4, 10)
    assert lo < naive[0] and hi > naive[1]
    none = paired_inversions([group("A", "t0", 0.5, 0.2)], ("A", "C"))
    assert (none["n"], none["rate"], none["rate_ci"]) == (0, None, [None, None])
