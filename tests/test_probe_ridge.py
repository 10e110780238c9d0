"""Ridge probes: the alpha sweep and held-out r against scikit-learn, the folded scaler,
confound residuals, and the train stage's never-overwrite run records (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from conftest import write_params
from steerops.cli import main
from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.io import save_tensors, write_json, write_jsonl
from steerops.probes import ridge
from steerops.probes.activations import condition_dir, tasks_digest
from steerops.probes.confounds import residualize
from steerops.probes.data import read_comparisons, read_scores
from steerops.probes.store import load_probe

ALPHAS = [10.0**k for k in range(-3, 7)]


def _data(n: int, d: int, seed: int = 0, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d) + rng.normal(0, 5, d)
    w = rng.normal(size=d) * (rng.random(d) < 0.3)
    y = (x - x.mean(0)) / x.std(0) @ w + rng.normal(0, noise * max(1, np.abs(w).sum()), n)
    return x, y


def _sklearn_sweep(x, y, split, alphas, standardize):
    xt = x[split.train]
    scaler = StandardScaler(with_mean=standardize, with_std=standardize).fit(xt)
    sweep_r, models = [], []
    for alpha in alphas:
        model = Ridge(alpha=alpha, fit_intercept=True).fit(scaler.transform(xt), y[split.train])
        models.append(model)
        sweep_r.append(pearsonr(model.predict(scaler.transform(x[split.sweep])), y[split.sweep])[0])
    best = int(np.argmax(sweep_r))
    final = pearsonr(models[best].predict(scaler.transform(x[split.final])), y[split.final])[0]
    return sweep_r, best, final, scaler, models[best]


@pytest.mark.parametrize(("n", "d", "standardize"),
                         [(240, 30, True), (90, 150, True), (240, 30, False)])
def test_alpha_sweep_and_final_r_match_sklearn(n, d, standardize):
    x, y = _data(n, d)
    split = ridge.split_tasks(n, 0.4, seed=3)
    fit = ridge.fit_holdout(x, y, ALPHAS, split, standardize)
    sweep_r, best, final_r, scaler, model = _sklearn_sweep(x, y, split, ALPHAS, standardize)
    np.testing.assert_allclose(fit.alpha_r, sweep_r, atol=1e-7)
    assert fit.alpha == ALPHAS[best]
    assert fit.final_r == pytest.approx(final_r, abs=1e-7)
    assert fit.sweep_r == pytest.approx(max(sweep_r), abs=1e-7)
    # the folded probe on raw activations equals scaler + ridge
    raw_pred = x @ fit.weight + fit.bias
    np.testing.assert_allclose(raw_pred, model.predict(scaler.transform(x)), rtol=1e-6, atol=1e-6)


def test_fold_scaler_identity():
    rng = np.random.default_rng(1)
    x = rng.normal(3, 7, size=(50, 8))
    mean, std = x.mean(0), x.std(0)
    w, b = rng.normal(size=8), 0.7
    w2, b2 = ridge.fold_scaler(w, b, mean, std)
    np.testing.assert_allclose(x @ w2 + b2, ((x - mean) / std) @ w + b, rtol=1e-10)


def test_constant_feature_keeps_unit_scale():
    x, y = _data(120, 6)
    x[:, 2] = 4.0
    mean, std = ridge.fit_scaler(x, True)
    assert std[2] == 1.0
    fit = ridge.fit_holdout(x, y, ALPHAS, ridge.split_tasks(120, 0.5, 0), True)
    assert np.isfinite(fit.weight).all() and fit.weight[2] == pytest.approx(0, abs=1e-9)


def test_split_is_seeded_disjoint_and_complete():
    a, b = ridge.split_tasks(101, 0.4, seed=7), ridge.split_tasks(101, 0.4, seed=7)
    parts = np.concatenate([a.train, a.sweep, a.final])
    assert sorted(parts.tolist()) == list(range(101))
    assert (len(a.train), len(a.sweep), len(a.final)) == (61, 20, 20)
    assert all((getattr(a, k) == getattr(b, k)).all() for k in ("train", "sweep", "final"))
    assert not np.array_equal(ridge.split_tasks(101, 0.4, seed=8).final, a.final)
    with pytest.raises(SteeropsError, match="probes.heldout_fraction"):
        ridge.split_tasks(10, 0.2, seed=0)


def test_cv_matches_sklearn_folds():
    x, y = _data(150, 20, seed=2)
    fit = ridge.fit_cv(x, y, ALPHAS, folds=5, seed=4)
    parts = np.array_split(np.random.default_rng(4).permutation(150), 5)
    fold_r = np.zeros((5, len(ALPHAS)))
    oof = np.zeros((len(ALPHAS), 150))
    for k, test in enumerate(parts):
        train = np.setdiff1d(np.arange(150), test)
        scaler = StandardScaler().fit(x[train])
        for j, alpha in enumerate(ALPHAS):
            pred = Ridge(alpha=alpha).fit(scaler.transform(x[train]), y[train]).predict(
                scaler.transform(x[test]))
            oof[j, test] = pred
            fold_r[k, j] = pearsonr(pred, y[test])[0]
    np.testing.assert_allclose(fit.alpha_r, fold_r.mean(0), atol=1e-7)
    best = int(np.argmax(fold_r.mean(0)))
    assert fit.alpha == ALPHAS[best]
    assert fit.final_r == pytest.approx(pearsonr(oof[best], y)[0], abs=1e-7)
    scaler = StandardScaler().fit(x)
    full = Ridge(alpha=ALPHAS[best]).fit(scaler.transform(x), y)
    np.testing.assert_allclose(x @ fit.weight + fit.bias, full.predict(scaler.transform(x)),
                               rtol=1e-6, atol=1e-6)


def test_pairwise_accuracy_counts_only_scored_pairs_and_half_ties():
    pred = {"a": 1.0, "b": 0.0, "c": 0.0}
    comps = [("a", "b", "a"), ("b", "a", "b"), ("b", "c", "c"), ("a", "z", "a")]
    acc, n = ridge.pairwise_accuracy(pred, comps)
    assert n == 3 and acc == pytest.approx((1 + 0 + 0.5) / 3)
    assert ridge.pairwise_accuracy({}, comps) == (None, 0)


def test_confound_residuals_match_sklearn():
    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(80)]
    topic = rng.choice(["x", "y", "z"], 80)
    source = rng.choice(["p", "q"], 80)
    effect = {"x": 0.0, "y": 2.0, "z": -1.0}
    scores = {t: effect[tp] + (s == "q") * 0.5 + rng.normal(0, 0.3)
              for t, tp, s in zip(tasks, topic, source, strict=True)}
    confounds = {t: (tp, s) for t, tp, s in zip(tasks[5:], topic[5:], source[5:], strict=True)}
    resid, report = residualize(scores, confounds, ["topic", "source"])
    kept = tasks[5:]
    design = pd.get_dummies(pd.DataFrame({"topic": topic[5:], "source": source[5:]}),
                            drop_first=True).astype(float)
    y = np.array([scores[t] for t in kept])
    ref = LinearRegression().fit(design, y)
    np.testing.assert_allclose([resid[t] for t in kept], y - ref.predict(design), atol=1e-9)
    assert report["r2"] == pytest.approx(r2_score(y, ref.predict(design)), abs=1e-9)
    assert report["n_dropped"] == 5 and report["dropped"] == sorted(tasks[:5])
    assert set(resid) == set(kept)


def test_input_readers_name_the_bad_line(tmp_path):
    bad = tmp_path / "scores.csv"
    bad.write_text("task_id,mu\na,1\nb,nan\n")
    with pytest.raises(SteeropsError, match=r"scores.csv:3: column 'mu'"):
        read_scores(bad)
    bad.write_text("task_id,mu\na,1\na,2\n")
    with pytest.raises(SteeropsError, match="duplicate task_id 'a'"):
        read_scores(bad)
    bad.write_text("id,mu\n")
    with pytest.raises(SteeropsError, match="missing column 'task_id'"):
        read_scores(bad)
    comps = tmp_path / "c.jsonl"
    comps.write_text('{"task_a": "a", "task_b": "b", "winner": "a"}\n'
                     '{"task_a": "a", "task_b": "b", "winner": "c"}\n')
    with pytest.raises(SteeropsError, match=r"c.jsonl:2: winner 'c'"):
        read_comparisons(comps)


# --- the train stage on hand-made activations (no model load) ------------------------------

def fake_activations(params, condition: str, system_prompt, task_ids: list[str],
                     layers: dict[int, np.ndarray], num_layers: int) -> Path:
    """An activation dir as `steerops extract --tasks` writes it, fresh for these params."""
    from steerops.extract.tasks import load_tasks

    folder = condition_dir(params, condition)
    spec = params.variant(params.probes.variant)
    save_tensors(folder / "activations.safetensors",
                 {f"layer_{k}": torch.tensor(v, dtype=torch.float32) for k, v in layers.items()})
    write_json(folder / "metadata.json", {
        "task_ids": task_ids, "condition": {"id": condition, "system_prompt": system_prompt},
        "system_prompt_policy": "task" if system_prompt is None else "override",
        "source_hash": tasks_digest(load_tasks(params.path(params.probes.tasks))),
        "model": {"variant": params.probes.variant, "id": spec.id, "revision": spec.revision},
        "num_layers": num_layers, "layers": sorted(layers)})
    return folder


def probe_world(tmp_path: Path, n: int = 160, d: int = 24, blocks: dict | None = None,
                **probes):
    """Tasks, scores and activations where layer 1 encodes the score and layer 0 does not."""
    rng = np.random.default_rng(0)
    ids = [f"task{i:03d}" for i in range(n)]
    write_jsonl(tmp_path / "tasks.jsonl", [{"task_id": t, "prompt": f"do {t}"} for t in ids])
    mu = rng.normal(size=n)
    (tmp_path / "scores.csv").write_text(
        "task_id,mu,sigma\n" + "".join(f"{t},{m},1\n" for t, m in zip(ids, mu, strict=True)))
    direction = rng.normal(size=d)
    layers = {0: rng.normal(size=(n, d)),
              1: np.outer(mu, direction) + rng.normal(0, 0.5, (n, d)) + 3.0}
    params_file = write_params(tmp_path, tmp_path / "toy", probes={
        "tasks": str(tmp_path / "tasks.jsonl"), "scores": str(tmp_path / "scores.csv"),
        "tasks_name": "fake", "layers": "all", **probes}, **(blocks or {}))
    params = load_params(params_file)
    fake_activations(params, "baseline", None, ids, layers, num_layers=2)
    return params_file, params, ids, mu, layers


def test_train_stage_writes_runs_and_never_overwrites(tmp_path, capsys):
    params_file, params, ids, mu, layers = probe_world(tmp_path)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    first = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    manifest = json.loads((root / "runs" / first / "manifest.json").read_text())
    assert manifest["best_layer"] == 1 and manifest["best_final_r"] > 0.9
    assert manifest["layers"]["0"]["final_r"] < 0.5
    assert manifest["counts"]["used"] == 160
    assert [a["alpha"] for a in manifest["layers"]["1"]["alphas"]] == ALPHAS
    assert manifest["inputs"]["scores"]["md5"]
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["best_layer"] == 1 and metrics["run_id"] == first

    # the stored probe predicts from raw activations exactly as the manifest says it scored
    weight, bias, layer, _ = load_probe(root / "runs" / first)
    split = ridge.split_tasks(160, 0.4, params.seed)
    pred = layers[1][split.final] @ weight + bias
    assert pearsonr(pred, mu[split.final])[0] == pytest.approx(manifest["best_final_r"],
                                                                abs=1e-4)

    before = (root / "runs" / first / "manifest.json").read_bytes()
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert "reusing" in capsys.readouterr().out
    assert main(["probe", "train", "--params", str(params_file), "--alphas", "1,10"]) == 0
    runs = [json.loads(line) for line in (root / "runs" / "runs.jsonl").read_text().splitlines()]
    assert [r["reused"] for r in runs] == [False, True, False]
    second = runs[-1]["run_id"]
    assert second != first and (root / "runs" / first / "manifest.json").read_bytes() == before
    assert json.loads((root / "runs" / "latest.json").read_text())["run_id"] == second

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=[params.experiment],
                               filter_string="tags.`steerops.stage` = 'probe'")
    assert len(found) == 2  # the reused invocation logs no new run
    assert set(found["tags.steerops.probe_run"]) == {first, second}


def test_train_stage_bad_input_keeps_outputs(tmp_path, capsys):
    params_file, params, *_ = probe_world(tmp_path)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    latest = (root / "runs" / "latest.json").read_bytes()
    (tmp_path / "bad.csv").write_text("task_id,mu\ntask000,oops\n")
    assert main(["probe", "train", "--params", str(params_file),
                 "--scores", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.csv:2: column 'mu'" in err and "\n" not in err
    assert main(["probe", "train", "--params", str(params_file),
                 "--confounds", str(tmp_path / "moved" / "topics.csv")]) == 2
    assert "probes.confounds: file not found" in capsys.readouterr().err
    assert (root / "runs" / "latest.json").read_bytes() == latest
    assert len((root / "runs" / "runs.jsonl").read_text().splitlines()) == 1


def test_train_stage_cv_and_confounds(tmp_path):
    params_file, params, ids, mu, _ = probe_world(tmp_path)
    (tmp_path / "conf.csv").write_text("task_id,group\n" + "".join(
        f"{t},{'g' + str(i % 3)}\n" for i, t in enumerate(ids[4:])))
    assert main(["probe", "train", "--params", str(params_file), "--cv-folds", "4",
                 "--confounds", str(tmp_path / "conf.csv")]) == 0
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_id = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    manifest = json.loads((root / "runs" / run_id / "manifest.json").read_text())
    assert manifest["config"]["protocol"] == "cv" and manifest["config"]["cv_folds"] == 4
    assert manifest["confounds"]["n_dropped"] == 4 and 0 <= manifest["confounds"]["r2"] < 0.2
    assert manifest["counts"]["used"] == 156 and manifest["best_final_r"] > 0.9
