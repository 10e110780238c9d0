"""OOD analysis: the permutation p against an independent computation (same seed, +1
correction), ranks / top-k / paired inversions on hand-made deltas, and the `probe ood`
stage end to end on hand-made activations (no model load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from steerops.cli import main
from steerops.errors import SteeropsError
from steerops.extract.conditions import OodCondition, read_conditions
from steerops.probes.ood import analyse, paired_inversions, per_target, permutation_p
from steerops.probes.store import load_probe
from test_probe_ridge import fake_activations, probe_world


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
    conds = [OodCondition("A1", "p", "a", "v1", "A"), OodCondition("C1", "p", "a", "v1", "C"),
             OodCondition("A2", "p", "a", "v2", "A"), OodCondition("C2", "p", "a", "v2", "C")]
    probe = {"A1": np.array([0.3, -0.1, 0.5, 0.0]), "C1": np.array([0.4, 0.0, 0.0, 0.1]),
             "A2": np.array([0.5, 0.1, 0.2, 0.0]), "C2": np.array([-0.2, 0.1, 0.0, 0.3])}
    behaviour = {"A1": np.array([0.2, 0.0, 0.1, np.nan]), "C1": np.array([-0.1, 0.0, 0.2, 0.1]),
                 "A2": np.array([0.3, 0.0, 0.0, 0.0]), "C2": np.array([-0.1, 0.2, 0.0, 0.0])}
    targets = {g["role"]: g for g in per_target(tasks, conds, probe, behaviour, top_k=1)}
    a1 = targets["A"]["conditions"][0]
    assert (a1["probe_rank_desc"], a1["probe_rank_asc"]) == (2, 3)
    assert (a1["behaviour_rank_desc"], a1["behaviour_rank_asc"]) == (1, 3)  # nan ignored
    assert targets["A"]["topk_rate"]["probe_up"] == 0.5  # rank 1 only under A2
    assert targets["C"]["topk_rate"]["probe_up"] == 0.5 and \
        targets["C"]["topk_rate"]["probe_down"] == 0.5
    assert targets["A"]["mean_delta_by_version"]["v2"] == {"probe": 0.5, "behaviour": 0.3}
    pairs = paired_inversions(list(targets.values()), ("A", "C"))
    by_version = {i["version"]: i for i in pairs["items"]}
    # v1: probe A-C = -0.1 but behaviour A-C = +0.3 -> inverted; v2: both positive
    assert by_version["v1"]["inverted"] and not by_version["v2"]["inverted"]
    assert (pairs["n"], pairs["inversions"], pairs["rate"]) == (2, 1, 0.5)


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
        reference_permutation_p(x, y, np.repeat([0, 1], 30), 50, 1))


def test_conditions_file_needs_an_explicit_baseline_policy(tmp_path):
    path = tmp_path / "conditions.json"
    path.write_text(json.dumps({"baseline": {"id": "base"},
                                "conditions": [{"id": "x", "system_prompt": "hi"}]}))
    with pytest.raises(SteeropsError, match="baseline.system_prompt: required"):
        read_conditions(path)
    path.write_text(json.dumps({"baseline": {"id": "base", "system_prompt": None},
                                "conditions": [{"id": "base", "system_prompt": "hi"}]}))
    with pytest.raises(SteeropsError, match=r"conditions\[0\].id: duplicate"):
        read_conditions(path)


def test_ood_stage_end_to_end_on_hand_made_activations(tmp_path):
    params_file, params, ids, mu, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}})
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    rng = np.random.default_rng(1)
    conditions = [{"id": f"{role}.{v}", "system_prompt": f"prompt {role} {v}",
                   "target": "task000", "version": v, "role": role}
                  for v in ("v1", "v2") for role in ("A", "C")]
    (tmp_path / "conditions.json").write_text(json.dumps(
        {"baseline": {"id": "baseline", "system_prompt": None}, "conditions": conditions}))
    base_rate = rng.uniform(0.2, 0.8, len(ids))
    rate_rows = [("baseline", t, r) for t, r in zip(ids, base_rate, strict=True)]
    shifts = {}
    for c in conditions:
        shift = {k: rng.normal(0, 0.3, v.shape) for k, v in layers.items()}
        fake_activations(params, c["id"], c["system_prompt"], ids,
                         {k: layers[k] + shift[k] for k in layers}, num_layers=2)
        shifts[c["id"]] = shift
        rates = base_rate + rng.normal(0, 0.05, len(ids))
        rate_rows += [(c["id"], t, r) for t, r in zip(ids, rates, strict=True)]
    (tmp_path / "rates.csv").write_text("condition_id,task_id,rate\n" + "".join(
        f"{c},{t},{r}\n" for c, t, r in rate_rows))
    assert main(["probe", "ood", "--params", str(params_file), "--permutations", "300",
                 "--conditions", str(tmp_path / "conditions.json"),
                 "--rates", str(tmp_path / "rates.csv")]) == 0

    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    out_dir = params.out / "ood" / "fake" / "instruct" / "prompt_m1" / "conditions"
    result = json.loads((out_dir / "ood.json").read_text())
    assert (out_dir / "ood.md").read_text().startswith("# OOD probe analysis")
    assert (out_dir / "ood_scatter.png").read_bytes()[:4] == b"\x89PNG"
    assert result["baseline"]["system_prompt_policy"] == "task"
    assert result["probe"]["layer"] == 1 and result["n_tasks"] == len(ids)

    run_dir = root / "runs" / json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    weight, bias, _, _ = load_probe(run_dir, 1)
    by_id = {r[0]: {} for r in rate_rows}
    for c, t, r in rate_rows:
        by_id[c][t] = r
    x = np.concatenate([(layers[1] + shifts[f"{role}.v1"][1]) @ weight - layers[1] @ weight
                        for role in ("A", "C")])
    y = np.concatenate([[by_id[f"{role}.v1"][t] - by_id["baseline"][t] for t in ids]
                        for role in ("A", "C")])
    v1 = result["per_version"]["v1"]
    assert v1["pearson"] == pytest.approx(pearsonr(x, y)[0], abs=1e-4)
    assert v1["p_perm"] == pytest.approx(
        reference_permutation_p(x, y, np.repeat([0, 1], len(ids)), 300, params.seed), abs=1e-9)
    target = next(g for g in result["targets"] if g["role"] == "A")
    assert target["conditions"][0]["probe_delta"] == pytest.approx(x[0], abs=1e-4)
    assert result["pairs"]["roles"] == ["A", "C"] and len(result["pairs"]["items"]) == 2
