"""`steerops probe train` on hand-made activations: immutable runs, bad input, CV and confounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr

from conftest import refused_up_front
from probe_data import fake_activations, probe_world
from steerops.cli import main
from steerops.probes import ridge
from steerops.probes.store import load_probe
from steerops.stats.correlation import pearson_interval

ALPHAS = [10.0**k for k in range(-3, 7)]


def test_train_stage_writes_runs_and_never_overwrites(tmp_path, capsys):
    params_file, params, ids, mu, layers = probe_world(tmp_path)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    printed = capsys.readouterr().out
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
    assert pearsonr(pred, mu[split.final])[0] == pytest.approx(manifest["best_final_r"], abs=1e-4)
    # final r carries n and a 95% interval (Fisher z by hand as the reference)
    n, r = len(split.final), manifest["best_final_r"]
    half = 1.959964 / np.sqrt(n - 3)
    interval = [np.tanh(np.arctanh(r) - half), np.tanh(np.arctanh(r) + half)]
    best = manifest["layers"]["1"]
    assert best["final_n"] == n == metrics["best_final_n"]
    assert best["final_r_ci"] == pytest.approx(interval, abs=1e-6) == metrics["best_final_r_ci"]
    low, high = interval
    # and the out-of-sample R2, in the scores' units (sklearn's as the reference)
    from sklearn.metrics import r2_score

    r2 = r2_score(mu[split.final], pred)
    assert best["final_r2"] == pytest.approx(r2, abs=1e-4) == metrics["best_final_r2"]
    assert f"final r {r:.3f} [{low:.3f}, {high:.3f}] (n {n}), R2 {r2:.3f}" in printed
    # every layer's predictions on the final part, task by task: the stored probe's, with
    # the task's score, from which the r is recomputed
    import pandas as pd

    table = pd.read_csv(root / "runs" / first / "predictions.csv")
    assert list(table.columns) == ["layer", "task_id", "part", "score", "target", "prediction"]
    assert sorted(table["layer"].unique()) == sorted(int(k) for k in manifest["layers"])
    at_best = table[table["layer"] == 1]
    assert ids == sorted(ids)  # the order the tasks are split in
    assert list(at_best["task_id"]) == [ids[i] for i in split.final]
    assert set(at_best["part"]) == {"final"}
    by_id = dict(zip(ids, mu, strict=True))
    assert at_best["score"].to_numpy() == pytest.approx([by_id[t] for t in at_best["task_id"]])
    assert (at_best["target"] == at_best["score"]).all()  # no confounds: the score itself
    rows = {t: i for i, t in enumerate(ids)}
    mine = layers[1][[rows[t] for t in at_best["task_id"]]] @ weight + bias
    assert at_best["prediction"].to_numpy() == pytest.approx(mine, abs=1e-4)
    assert pearsonr(at_best["prediction"], at_best["target"])[0] == pytest.approx(r, abs=1e-9)

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
    found = mlflow.search_runs(
        experiment_names=[params.experiment], filter_string="tags.`steerops.stage` = 'probe'"
    )
    assert len(found) == 2  # the reused invocation logs no new run
    assert set(found["tags.steerops.probe_run"]) == {first, second}


def test_train_stage_bad_input_keeps_outputs(tmp_path, capsys):
    params_file, params, *_ = probe_world(tmp_path)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    latest = (root / "runs" / "latest.json").read_bytes()
    (tmp_path / "bad.csv").write_text("task_id,mu\ntask000,oops\n")
    assert (
        main(
            ["probe", "train", "--params", str(params_file), "--scores", str(tmp_path / "bad.csv")]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "bad.csv:2: column 'mu'" in err and "\n" not in err
    assert (
        main(
            [
                "probe",
                "train",
                "--params",
                str(params_file),
                "--confounds",
                str(tmp_path / "moved" / "topics.csv"),
            ]
        )
        == 2
    )
    assert "--confounds: file not found" in capsys.readouterr().err
    argv = ["probe", "train", "--params", str(params_file), "--cv-folds", "4"]
    assert main([*argv, "--heldout-fraction", "0.3"]) == 2
    assert "--heldout-fraction: not used with --cv-folds" in capsys.readouterr().err
    # nor with CV set in the params file: it used to be ignored without a word
    import yaml

    raw = yaml.safe_load(params_file.read_text())
    raw["probes"]["cv_folds"] = 4
    cv_file = tmp_path / "cv.yaml"
    cv_file.write_text(yaml.safe_dump(raw))
    argv = ["probe", "train", "--params", str(cv_file), "--heldout-fraction", "0.3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--heldout-fraction: not used with probes.cv_folds: 4" in err and "\n" not in err.strip()
    # a condition the conditions file does not name has no prompt to extract it with
    argv = ["probe", "train", "--params", str(params_file), "--condition", "nope"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--condition 'nope': not a condition in no conditions file" in err
    assert not (
        params.out / "tasks" / "fake" / "instruct" / "prompt_m1" / "residual" / "nope"
    ).exists()
    assert (root / "runs" / "latest.json").read_bytes() == latest
    assert len((root / "runs" / "runs.jsonl").read_text().splitlines()) == 1
    # a conditions file that is not there: `probe ood` would read the baseline's prompt
    # from it, so training under each task's own prompt instead is refused
    missing = tmp_path / "conditons.json"
    text = params_file.read_text().replace("conditions: null", f"conditions: {missing}")
    (tmp_path / "typo.yaml").write_text(text)
    assert main(["probe", "train", "--params", str(tmp_path / "typo.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "probes.ood.conditions: file not found" in err and "conditons.json" in err
    assert err.count("\n") == 0
    assert (root / "runs" / "latest.json").read_bytes() == latest


def test_train_stage_cv_and_confounds(tmp_path, capsys):
    params_file, params, ids, mu, _ = probe_world(tmp_path)
    (tmp_path / "conf.csv").write_text(
        "task_id,group\n" + "".join(f"{t},{'g' + str(i % 3)}\n" for i, t in enumerate(ids[4:]))
    )
    assert (
        main(
            [
                "probe",
                "train",
                "--params",
                str(params_file),
                "--cv-folds",
                "4",
                "--confounds",
                str(tmp_path / "conf.csv"),
            ]
        )
        == 0
    )
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_id = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    manifest = json.loads((root / "runs" / run_id / "manifest.json").read_text())
    assert manifest["config"]["protocol"] == "cv" and manifest["config"]["cv_folds"] == 4
    assert manifest["confounds"]["n_dropped"] == 4 and 0 <= manifest["confounds"]["r2"] < 0.2
    assert manifest["counts"]["used"] == 156 and manifest["best_final_r"] > 0.9
    # the 4 tasks without confounds are counted as dropped by them, not as unscored
    assert manifest["counts"]["dropped_by_confounds"] == 4
    assert manifest["counts"]["activations_without_score"] == 0
    # out-of-fold r chose alpha and layer: n, but no interval that would claim otherwise
    best = manifest["layers"][str(manifest["best_layer"])]
    assert best["final_n"] == 156 and best["final_r_ci"] == [None, None]
    # ... and it is not printed or noted as a held-out r
    out = capsys.readouterr()
    printed = out.out
    assert "final r" not in printed and "out-of-fold r (optimistic" in printed
    # a confounds file covering part of the tasks narrows the training set: said, with ids
    (warned,) = [line for line in out.err.splitlines() if "probes.confounds" in line]
    assert f"4 of the 160 scored tasks have no row in {tmp_path / 'conf.csv'}" in warned
    assert f"e.g. {ids[0]!r}, {ids[1]!r}, {ids[2]!r} without a row" in warned
    # and the r is said to be of what the confounds leave
    r2 = manifest["confounds"]["r2"]
    assert f"targets: the scores less what probes.confounds (group) explain (R2 {r2:.2f}" in printed
    assert "tasks that chose nothing" not in manifest["note"]
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["protocol"] == "cv"  # the metric
    # its out-of-fold figures are not written under the held-out names, nor with intervals
    assert metrics["best_oof_r"] == manifest["best_final_r"] and metrics["best_oof_n"] == 156
    held_out_names = {"best_final_r", "best_final_r_ci", "final_r", "pairwise_ci"}
    assert not held_out_names & set(metrics) and "oof_r" in metrics
    from steerops.probes.summary import write_train_summary

    write_train_summary(params)
    from steerops.summary import summary_dir

    (cell,) = json.loads((summary_dir(params) / "probe_train.json").read_text()).values()
    assert cell["best_oof_r"] == metrics["best_oof_r"] and "best_final_r" not in cell
    # and the MLflow run names them the same way
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (logged,) = mlflow.search_runs(
        experiment_names=[params.experiment], filter_string="tags.`steerops.stage` = 'probe'"
    ).to_dict("records")
    assert logged["metrics.best_oof_r"] == pytest.approx(metrics["best_oof_r"])
    assert "metrics.best_final_r" not in logged and "metrics.final_r" not in logged
    assert "metrics.oof_r" in logged
    # predictions.csv: every task out of fold, against its confound-residualised target
    import pandas as pd

    table = pd.read_csv(root / "runs" / run_id / "predictions.csv")
    at_best = table[table["layer"] == manifest["best_layer"]]
    assert len(at_best) == 156 and set(at_best["part"]) == {"out_of_fold"}
    assert not np.allclose(at_best["target"], at_best["score"])  # the confounds came out
    r = pearsonr(at_best["prediction"], at_best["target"])[0]
    assert r == pytest.approx(manifest["best_final_r"], abs=1e-9)


def test_train_on_a_named_condition_reads_its_activations(tmp_path, capsys):
    """A condition's activations (extracted with its system prompt) are trained on as they
    are: the prompt comes from the conditions file, so they are not extracted again."""
    conditions = tmp_path / "conditions.json"
    conditions.write_text(
        json.dumps(
            {
                "baseline": {"id": "baseline", "system_prompt": None},
                "conditions": [{"id": "terse", "system_prompt": "be terse"}],
            }
        )
    )
    params_file, params, ids, mu, layers = probe_world(
        tmp_path, condition="terse", ood={"conditions": str(conditions)}
    )
    flipped = {k: -v for k, v in layers.items()}  # another condition, other activations
    fake_activations(params, "terse", "be terse", ids, flipped, num_layers=2)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_id = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    manifest = json.loads((root / "runs" / run_id / "manifest.json").read_text())
    assert manifest["config"]["condition"] == "terse" and manifest["best_layer"] == 1
    assert manifest["inputs"]["activations"]["path"].endswith("terse")
    argv = ["probe", "train", "--params", str(params_file), "--condition", "loud"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--condition 'loud': not a condition in" in err and "(it has baseline, terse)" in err


def test_scores_of_another_task_set_are_refused_before_extraction(tmp_path, capsys, no_model_loads):
    """Scores whose task ids are not the task set's (or too few of them for the split) are
    refused up front: the activations are missing, so only a model load would have found
    it, after extracting every task."""
    import shutil

    params_file, params, ids, mu, _ = probe_world(tmp_path)
    shutil.rmtree(params.out)  # no activations: the extraction would need a model load
    (tmp_path / "other.csv").write_text(
        "task_id,mu\n" + "".join(f"other{i:03d},{m}\n" for i, m in enumerate(mu))
    )
    argv = ["probe", "train", "--params", str(params_file), "--scores", str(tmp_path / "other.csv")]
    line = refused_up_front(argv, tmp_path, capsys)
    assert "other.csv: none of its 160 task ids is a task" in line and "'other000'" in line
    # 10 matching tasks cannot be split 0.4 into parts of at least 3 tasks each
    (tmp_path / "few.csv").write_text(
        "task_id,mu\n" + "".join(f"{t},{m}\n" for t, m in zip(ids[:10], mu, strict=False))
    )
    argv = ["probe", "train", "--params", str(params_file), "--scores", str(tmp_path / "few.csv")]
    line = refused_up_front(argv, tmp_path, capsys)
    assert "heldout_fraction: 0.4 of 10 tasks" in line
    line = refused_up_front([*argv, "--cv-folds", "4"], tmp_path, capsys)
    assert "--cv-folds: 4 folds of 10 tasks" in line


def test_scores_fitted_from_other_comparisons_than_params_name_are_said(tmp_path, capsys):
    """The .fit.json beside the scores records the MD5 of the comparisons they were fitted
    from: comparisons edited (or another file) since train on stale targets, said once on
    stderr with the fit that writes them again; the same comparisons say nothing."""
    import hashlib

    params_file, params, ids, _, _ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    comparisons = tmp_path / "comparisons.jsonl"
    rows = [{"task_a": ids[i], "task_b": ids[i + 1], "winner": ids[i]} for i in range(0, 40, 2)]
    comparisons.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fitted = {"comparisons_md5": hashlib.md5(comparisons.read_bytes()).hexdigest()}
    (tmp_path / "scores.fit.json").write_text(json.dumps(fitted))
    argv = ["probe", "train", "--params", str(params_file), "--comparisons", str(comparisons)]
    assert main(argv) == 0
    assert "fitted from other comparisons" not in capsys.readouterr().err
    comparisons.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))  # one fewer
    assert main(argv) == 0
    warned = [x for x in capsys.readouterr().err.splitlines() if "other comparisons" in x]
    assert warned == [
        f"warning: {tmp_path / 'scores.csv'} were fitted from other comparisons than "
        f"{comparisons} holds now (edited, or another file): run `steerops probe thurstonian "
        f"--params {params_file} --comparisons {comparisons} --out-csv "
        f"{tmp_path / 'scores.csv'}` again to train on scores of them"
    ]


def test_a_run_of_its_own_says_which_scores_it_trains_on(tmp_path, capsys):
    """`probe train --out DIR` reads DIR's fitted scores when `probe thurstonian --out DIR`
    wrote them, else the params' scores: said, since nothing in DIR shows it."""
    from steerops.cli import build_parser, load_params_for
    from steerops.probes.command import _scores_in_run

    params_file, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    run = tmp_path / "run"
    argv = ["probe", "train", "--params", str(params_file), "--out", str(run)]
    args = build_parser(argv).parse_args(argv)
    params = _scores_in_run(load_params_for(args), args, fitting=False)
    assert params.path(params.probes.scores) == tmp_path / "scores.csv"
    line = (
        f"probe train: no scores fitted in this run ({run / 'probe_scores' / 'scores.csv'}): "
        f"training on probes.scores, {tmp_path / 'scores.csv'}"
    )
    assert capsys.readouterr().err.splitlines() == [line]
    # fitted there: read from there, and nothing said
    (run / "probe_scores").mkdir(parents=True)
    (run / "probe_scores" / "scores.csv").write_text("task_id,mu\n")
    params = _scores_in_run(load_params_for(args), args, fitting=False)
    assert params.path(params.probes.scores) == run / "probe_scores" / "scores.csv"
    assert capsys.readouterr().err == ""


def test_pairwise_accuracy_comes_with_its_n_and_interval(tmp_path, capsys):
    """metrics.json (what `dvc metrics show` prints) gives each layer's pairwise accuracy with
    the number of comparisons it was scored on (those between final-split tasks only) and
    its 95% interval, a bootstrap over those tasks."""
    rng = np.random.default_rng(2)
    n = 160
    pairs = [tuple(rng.choice(n, 2, replace=False)) for _ in range(600)]
    comparisons = tmp_path / "comparisons.jsonl"
    comparisons.write_text(
        "".join(
            json.dumps({"task_a": f"task{a:03d}", "task_b": f"task{b:03d}", "winner": w}) + "\n"
            for a, b in pairs
            for w in [f"task{a:03d}"]
        )
        # two comparisons of a task the task set lacks: never scored, and said
        + "".join(
            json.dumps({"task_a": "task000", "task_b": "tsak001", "winner": "task000"}) + "\n"
            for _ in range(2)
        )
    )
    params_file, params, _, _, layers = probe_world(tmp_path, comparisons=str(comparisons))
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    said = capsys.readouterr()
    assert (
        f"warning: probes.comparisons: 2 of the 602 comparisons in {comparisons} name 1 tasks "
        "not in probes.tasks and are not scored; e.g. 'tsak001' unknown"
    ) in said.err
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    metrics = json.loads((root / "metrics.json").read_text())
    final = set(ridge.split_tasks(n, 0.4, params.seed).final.tolist())
    expected = sum(a in final and b in final for a, b in pairs)
    assert metrics["pairwise_n"] == {"0": expected, "1": expected} and expected > 0
    assert set(metrics["pairwise_accuracy"]) == {"0", "1"}
    # the interval an independent task bootstrap of the final split's predictions gives
    from steerops import stats

    manifest = json.loads((root / "runs" / metrics["run_id"] / "manifest.json").read_text())
    weight, bias, _, _ = load_probe(root / "runs" / metrics["run_id"])
    scored = [(a, b) for a, b in pairs if a in final and b in final]
    pred = layers[1] @ weight + bias
    hits = [float(pred[a] > pred[b]) + 0.5 * float(pred[a] == pred[b]) for a, b in scored]
    first, second = ([f"task{t:03d}" for t in side] for side in zip(*scored, strict=True))
    want = stats.pairwise_share(hits, first, second, seed=params.seed)
    assert metrics["pairwise_accuracy"]["1"] == pytest.approx(want.mean)
    assert metrics["pairwise_ci"]["1"] == pytest.approx([want.lo, want.hi])
    assert manifest["layers"]["1"]["pairwise_ci"] == metrics["pairwise_ci"]["1"]
    assert want.lo < want.mean < want.hi
    printed = said.out
    assert (
        f"pairwise accuracy {want.mean:.3f} [{want.lo:.3f}, {want.hi:.3f}] (n {expected}" in printed
    )
    assert metrics["protocol"] == "holdout"
    # under CV the same out-of-fold predictions chose alpha and layer: no held-out interval
    assert main(["probe", "train", "--params", str(params_file), "--cv-folds", "4"]) == 0
    (pairwise,) = [x for x in capsys.readouterr().out.splitlines() if "pairwise accuracy" in x]
    assert "out-of-fold pairwise accuracy (optimistic" in pairwise and "[" not in pairwise


def test_a_constant_layer_is_reported_and_the_others_train(tmp_path, capsys):
    """Activations that are the same for every task (e.g. at prompt[0], a BOS token) give no
    r on that layer: it is skipped and named, and the other layers still train."""
    params_file, params, ids, mu, layers = probe_world(tmp_path)
    fake_activations(
        params, "baseline", None, ids, {0: np.full((160, 24), 2.5), 1: layers[1]}, num_layers=2
    )
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    printed = capsys.readouterr().out
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    metrics = json.loads((root / "metrics.json").read_text())
    manifest = json.loads((root / "runs" / metrics["run_id"] / "manifest.json").read_text())
    assert manifest["best_layer"] == 1 and manifest["best_final_r"] > 0.9
    skipped = manifest["layers"]["0"]
    assert skipped["sweep_r"] is None and skipped["final_r"] is None
    assert "activations are constant across the 160 tasks" in skipped["skipped"]
    assert metrics["skipped_layers"] == {"0": skipped["skipped"]}
    assert metrics["final_r"]["0"] is None
    assert "layer 0 skipped (r undefined" in printed and "activations are constant" in printed
    assert "scores constant" not in printed
    with pytest.raises(Exception, match="no probe for layer 0"):
        load_probe(root / "runs" / metrics["run_id"], 0)


def test_activations_constant_at_every_layer_blame_the_position(tmp_path, capsys):
    """Every layer constant is the position's doing (one token all tasks share), not the
    layers': the error names the position's key and flag."""
    params_file, params, ids, mu, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}}
    )
    flat = {layer: np.full((160, 24), 2.5) for layer in (0, 1)}
    fake_activations(params, "baseline", None, ids, flat, num_layers=2)
    assert main(["probe", "train", "--params", str(params_file)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "probes.position" in line and "no layer gives a probe with a defined r" in line


def test_constant_scores_are_refused_before_extraction(tmp_path, capsys, no_model_loads):
    import shutil

    params_file, params, ids, *_ = probe_world(tmp_path)
    shutil.rmtree(params.out)  # no activations: the extraction would need a model load
    flat = tmp_path / "flat.csv"
    flat.write_text("task_id,mu\n" + "".join(f"{t},0.25\n" for t in ids))
    argv = ["probe", "train", "--params", str(params_file), "--scores", str(flat)]
    line = refused_up_front(argv, tmp_path, capsys)
    assert "flat.csv: the 160 scores of the tasks used are all 0.25" in line
    assert "a probe needs scores that vary" in line


def test_best_layer_counts_r_zero_and_skips_undefined():
    from steerops.probes.train import best_layer

    # `sweep_r or -inf` read 0.0 as missing and picked the layer with r -0.2
    rows = {"0": {"sweep_r": -0.2}, "1": {"sweep_r": 0.0}, "2": {"sweep_r": None}}
    assert best_layer(rows) == 1
    assert best_layer({"3": {"sweep_r": 0.5}, "4": {"sweep_r": 0.5}}) == 3  # first on ties
    assert best_layer({"0": {"sweep_r": None}}) is None


def test_best_alpha_at_the_grid_edge_is_flagged(tmp_path, capsys):
    params_file, params, *_ = probe_world(tmp_path)
    # layer 1 is near noise-free: strong penalties only shrink it, so the lowest one wins
    argv = ["probe", "train", "--params", str(params_file), "--alphas", "1e4,1e5,1e6"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["best_alpha"] == 1e4 and metrics["best_alpha_at_edge"] == "lowest"
    assert "best alpha 10000 is the lowest in probes.alphas" in printed
    assert "may lie below the grid" in printed
    # an interior optimum is not flagged
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["best_alpha_at_edge"] is None and metrics["best_alpha"] not in (1e-3, 1e6)
    assert "may lie" not in capsys.readouterr().out


def test_an_undefined_final_r_is_printed_as_such(tmp_path, capsys, monkeypatch):
    """A best layer whose predictions on the final split do not vary has no final r (None
    in the manifest): the printout says so instead of failing to format it."""
    from steerops.probes import train as train_module

    params_file, *_ = probe_world(tmp_path)
    real = train_module.train

    def constant_on_final(params):
        run_dir, manifest, reused = real(params)
        manifest["best_final_r"] = None
        manifest["layers"][str(manifest["best_layer"])]["final_r_ci"] = [None, None]
        return run_dir, manifest, reused

    monkeypatch.setattr(train_module, "train", constant_on_final)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert "final r undefined (constant predictions) (n " in capsys.readouterr().out


def _renames_of_a_training(tmp_path):
    """(argv, the probes root, the renames a whole `probe train` makes, in order), its
    outputs removed again: where to kill the next one."""
    import shutil

    import killer

    params_file, params, *_ = probe_world(tmp_path)
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    argv = ["probe", "train", "--params", str(params_file)]
    counted = killer.run(argv, tmp_path, root, "count")
    assert counted.returncode == 0, counted.stderr[-2000:]
    renamed = json.loads((tmp_path / "kill_counts.json").read_text())["renamed"]
    shutil.rmtree(root)
    return argv, root, renamed


def test_train_killed_after_its_run_is_in_place_reuses_it(tmp_path):
    """SIGKILLed after its run folder is renamed into place, before runs.jsonl indexes it:
    the rerun reuses that finished run (indexing it) instead of training it again."""
    import killer

    argv, root, renamed = _renames_of_a_training(tmp_path)
    at = renamed.index("runs/runs.jsonl")  # the run folder is the rename just before
    assert killer.killed(killer.run(argv, tmp_path, root, f"before:{at + 1}"))
    [run] = [p.name for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    assert not (root / "runs" / "runs.jsonl").exists()
    result = killer.run(argv, tmp_path, root, "count")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reusing" in result.stdout
    listed = sorted(p.name for p in (root / "runs").iterdir() if not p.name.startswith("."))
    assert listed == sorted([run, "latest.json", "runs.jsonl"])  # no second run trained
    runs = [json.loads(line) for line in (root / "runs" / "runs.jsonl").read_text().splitlines()]
    assert [(r["run_id"], r["reused"]) for r in runs] == [(run, True)]
    assert json.loads((root / "runs" / "latest.json").read_text())["run_id"] == run


def test_a_run_killed_while_written_leaves_no_staging_folder_behind(tmp_path):
    """SIGKILLed before its run folder is renamed into place: the half-written folder (a
    dead writer's) is removed by the next run, which trains under another run id; a folder
    a live writer is staging is left alone."""
    import os

    import killer
    from steerops.io import _HOST

    argv, root, renamed = _renames_of_a_training(tmp_path)
    at = renamed.index("runs/runs.jsonl") - 1  # the run folder's rename
    assert killer.killed(killer.run(argv, tmp_path, root, f"before:{at + 1}"))
    [staged] = [p for p in (root / "runs").iterdir() if p.name.startswith(".")]
    assert staged.name.endswith(".building") and (staged / "probes.safetensors").exists()
    live = root / "runs" / f".20260101T000000Z-live.{_HOST}.{os.getpid()}.abc.building"
    live.mkdir()
    result = killer.run(argv, tmp_path, root, "count")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (root / "runs").iterdir() if p.name.startswith(".")) == [
        live.name
    ]


def test_a_run_of_an_older_format_is_trained_again_not_reused(tmp_path, capsys, monkeypatch):
    """A finished run whose files predate what train writes now (another `RUN_FORMAT`) has a
    run key of its own: the same config and inputs train a new run with the current fields."""
    from steerops.probes import store

    params_file, params, *_ = probe_world(tmp_path)
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    monkeypatch.setattr(store, "RUN_FORMAT", store.RUN_FORMAT - 1)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    old = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    monkeypatch.setattr(store, "RUN_FORMAT", store.RUN_FORMAT + 1)
    capsys.readouterr()
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert "reusing" not in capsys.readouterr().out
    runs = [json.loads(line) for line in (root / "runs" / "runs.jsonl").read_text().splitlines()]
    assert [r["reused"] for r in runs] == [False, False] and runs[-1]["run_id"] != old
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert "reusing" in capsys.readouterr().out


def test_scores_of_part_of_the_tasks_train_on_the_overlap_and_say_so(tmp_path, capsys):
    """A scores file covering 50 of the 160 extracted tasks (plus 3 unknown ids) trains on
    the 50, with one warning line giving both counts; the manifest keeps them."""
    params_file, params, ids, mu, _ = probe_world(tmp_path)
    rows = [f"{t},{m},1\n" for t, m in zip(ids[:50], mu[:50], strict=True)]
    rows += [f"elsewhere{i},0.5,1\n" for i in range(3)]
    (tmp_path / "scores.csv").write_text("task_id,mu,sigma\n" + "".join(rows))
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "probes.scores" in line]
    assert len(warned) == 1, warned
    assert "50 tasks both scored and extracted" in warned[0]
    assert "110 of the 160 extracted tasks have no score" in warned[0]
    assert "3 of the 53 scored tasks no activations" in warned[0]
    # the ids scored but not extracted are named: a typo shows
    assert "e.g. 'elsewhere0', 'elsewhere1', 'elsewhere2' scored only)" in warned[0]
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_id = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    counts = json.loads((root / "runs" / run_id / "manifest.json").read_text())["counts"]
    assert (counts["used"], counts["activations_without_score"]) == (50, 110)
    assert counts["scored_without_activations"] == 3
    assert main(["probe", "train", "--params", str(probe_world(tmp_path / "all")[0])]) == 0
    assert "probes.scores" not in capsys.readouterr().err


def _latest_manifest(params) -> dict:
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_id = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    return json.loads((root / "runs" / run_id / "manifest.json").read_text())


def test_the_manifest_records_the_tasks_that_shaped_the_probe(tmp_path, capsys):
    """Hold-out: the train and sweep tasks (they fitted the weights and chose alpha and
    layer), not the final split nor the unscored tasks; CV: every scored task (the saved
    probe is refitted on all). The record is not part of the run key: a run written before
    it (the same key) is still reused."""
    from steerops.io import write_json
    from steerops.probes.store import run_key

    params_file, params, ids, mu, _ = probe_world(tmp_path)
    scored = ids[:150]  # the last 10 tasks have no score: never seen by the probe
    (tmp_path / "scores.csv").write_text(
        "task_id,mu\n" + "".join(f"{t},{m}\n" for t, m in zip(scored, mu, strict=False))
    )
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    manifest = _latest_manifest(params)
    split = ridge.split_tasks(150, 0.4, params.seed)
    expected = sorted(scored[i] for i in np.concatenate([split.train, split.sweep]))
    assert manifest["fitted_tasks"] == expected and len(expected) == 120
    assert not set(expected) & ({scored[i] for i in split.final} | set(ids[150:]))
    inputs = {
        k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in manifest["inputs"].items()
    }
    assert manifest["key"] == run_key(manifest["config"], inputs)  # the record is not keyed

    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_dir = root / "runs" / manifest["run_id"]
    # a run written before either was kept
    older = {k: v for k, v in manifest.items() if k not in ("fitted_tasks", "manifest_md5")}
    write_json(run_dir / "manifest.json", older)
    capsys.readouterr()
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert "reusing" in capsys.readouterr().out
    assert _latest_manifest(params)["run_id"] == manifest["run_id"]

    assert main(["probe", "train", "--params", str(params_file), "--cv-folds", "4"]) == 0
    assert _latest_manifest(params)["fitted_tasks"] == scored


def test_tasks_a_short_window_dropped_are_told_apart_from_unknown_ids(tmp_path, capsys):
    """Scored tasks whose prompts the position's window does not reach have no activations:
    the warning names that cause, not "task ids must match", which it keeps for ids the
    task set lacks."""
    from probe_data import fake_activations

    params_file, params, ids, mu, layers = probe_world(tmp_path)
    folder = fake_activations(
        params, "baseline", None, ids[:120], {k: v[:120] for k, v in layers.items()}, 2
    )
    meta = json.loads((folder / "metadata.json").read_text())
    meta["counts"] = {"tasks": 120, "dropped_empty": 40}  # as extraction records a short window
    (folder / "metadata.json").write_text(json.dumps(meta))
    with (tmp_path / "scores.csv").open("a") as f:
        f.write("".join(f"elsewhere{i},0.5,1\n" for i in range(3)))
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    (warned,) = [line for line in capsys.readouterr().err.splitlines() if "probes.scores" in line]
    assert "120 tasks both scored and extracted" in warned
    assert "43 of the 163 scored tasks no activations: 40 have no token at prompt[-1]" in warned
    assert "prompts too short for the window; extraction dropped 40 tasks" in warned
    assert "3 are not in probes.tasks (task ids must match; e.g. 'elsewhere0'" in warned


def test_a_grouped_split_keeps_every_group_on_one_side(tmp_path, capsys):
    """probes.group_by: tasks sharing a topic are never split between the fitted tasks and
    the final ones (nor between CV folds), the parts stay near their fractions, and the run
    is another run than the split by task."""
    params_file, params, ids, mu, layers = probe_world(tmp_path, topics=40)  # 4 tasks a topic
    topic = {t: f"t{i % 40}" for i, t in enumerate(ids)}
    argv = ["probe", "train", "--params", str(params_file)]
    assert main([*argv, "--group-by", "topic"]) == 0
    manifest = _latest_manifest(params)
    fitted = set(manifest["fitted_tasks"])
    final = set(ids) - fitted
    assert not {topic[t] for t in fitted} & {topic[t] for t in final}
    groups = manifest["groups"]
    assert groups["field"] == "topic" and groups["total"] == 40
    assert groups["train"] + groups["sweep"] + groups["final"] == 40
    assert groups["final"] == len({topic[t] for t in final}) and 28 <= len(final) <= 36
    best = manifest["layers"][str(manifest["best_layer"])]
    assert best["final_n"] == len(final)
    # its interval is a bootstrap over the final groups, not Fisher z over tasks
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    weight, bias, layer, _ = load_probe(root / "runs" / manifest["run_id"])
    rows = np.array(sorted(ids.index(t) for t in final))
    pred, true = layers[layer][rows] @ weight + bias, mu[rows]
    assert best["final_r"] == pytest.approx(pearsonr(pred, true)[0], abs=1e-9)
    labels = np.array([topic[ids[i]] for i in rows])
    expected = ridge.clustered_r_interval(pred, true, labels, params.seed)
    np.testing.assert_allclose(best["final_r_ci"], expected, atol=1e-9)
    assert best["final_r_ci"] != pytest.approx(list(pearson_interval(pred, true)))
    assert manifest["config"]["group_by"] == "topic" and "tasks" in manifest["inputs"]
    printed = capsys.readouterr().out
    said = f"split by probes.group_by 'topic': 40 groups, {groups['final']} groups in the final"
    assert said in printed
    # the same split again from the ridge functions, group by group
    labels = np.array([topic[t] for t in sorted(ids)])
    split = ridge.split_tasks(160, 0.4, params.seed, labels)
    for a, b in [("train", "sweep"), ("train", "final"), ("sweep", "final")]:
        assert not set(labels[getattr(split, a)]) & set(labels[getattr(split, b)])
    # split by task: another run, whose final tasks share topics with its fitted ones
    assert main(argv) == 0
    by_task = _latest_manifest(params)
    assert by_task["run_id"] != manifest["run_id"] and "groups" not in by_task["config"]
    plain_final = set(ids) - set(by_task["fitted_tasks"])
    assert {topic[t] for t in plain_final} & {topic[t] for t in by_task["fitted_tasks"]}
    # k-fold CV: each topic in one fold
    assert main([*argv, "--group-by", "topic", "--cv-folds", "4"]) == 0
    cv = _latest_manifest(params)["groups"]
    assert sum(cv["folds"]) == 40 and min(cv["folds"]) == max(cv["folds"]) == 10
    for fold in ridge.fold_parts(160, 4, params.seed, labels):
        assert len(fold) == 40 and not set(labels[fold]) & set(np.delete(labels, fold))


def test_a_group_by_field_the_tasks_lack_is_refused_before_anything_runs(
    tmp_path, capsys, no_model_loads
):
    import shutil

    params_file, params, ids, _, _ = probe_world(tmp_path, topics=40)
    shutil.rmtree(params.out)  # no activations: the extraction would need a model load
    argv = ["probe", "train", "--params", str(params_file)]
    err = refused_up_front([*argv, "--group-by", "topc"], tmp_path, capsys)
    assert "error: --group-by 'topc': 160 of the 160 scored tasks" in err
    assert "have no 'topc' (e.g. 'task000')" in err and err.endswith("(params: probes.group_by)")
    # too few groups for the three parts
    err = refused_up_front(
        [*argv, "--group-by", "topic", "--heldout-fraction", "0.02"], tmp_path, capsys
    )
    assert "in 40 groups (probes.group_by) gives parts" in err
    err = refused_up_front([*argv, "--group-by", "topic", "--cv-folds", "41"], tmp_path, capsys)
    assert "41 folds of 160 tasks in 40 groups (probes.group_by)" in err
