"""The probe stages end to end on the toy world: Thurstonian scores, ridge probes, the OOD
analysis."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from conftest import write_params
from steerops.cli import main
from steerops.io import read_json, read_jsonl
from steerops.probes import ridge


@pytest.fixture(scope="module")
def toy_probe_run(toy_world, tmp_path_factory):
    """Probe data, params and one trained probe run, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("toyprobe")
    data = folder / "probes"
    params_file = write_params(
        folder,
        toy_world,
        probes={
            "tasks": str(data / "tasks.jsonl"),
            "scores": str(data / "scores.csv"),
            "tasks_name": "toy",
            "comparisons": str(data / "comparisons.jsonl"),
            "ood": {
                "conditions": str(data / "conditions.json"),
                "rates": str(data / "rates.csv"),
                "permutations": 500,
            },
        },
    )
    assert main(["probe", "toy-data", "--params", str(params_file), "--toy", str(folder)]) == 0
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    root = folder / "outputs" / "probes" / "toy" / "instruct" / "prompt_m1"
    return folder, data, params_file, root


def _manifest(root):
    runs = root / "runs"
    return read_json(runs / read_json(runs / "latest.json")["run_id"] / "manifest.json")


def test_probe_reaches_heldout_r(toy_probe_run):
    folder, data, _, root = toy_probe_run
    manifest = _manifest(root)
    assert manifest["config"]["layers"] == [0, 1, 2, 3]
    assert manifest["counts"]["used"] == 400
    assert manifest["best_final_r"] >= 0.7
    assert manifest["system_prompt_policy"] == "task"
    # the DVC metric, gathered where dvc.yaml can name it whatever the params
    summary = read_json(folder / "metrics" / "probe_train.json")
    assert summary == {
        "toy/instruct/prompt_m1": {
            k: read_json(root / "metrics.json")[k]
            for k in (
                "run_id",
                "protocol",
                "best_layer",
                "best_alpha",
                "best_final_r",
                "best_final_r_ci",
                "best_final_n",
                "best_final_r2",
            )
        }
    }
    assert summary["toy/instruct/prompt_m1"]["best_final_r"] == manifest["best_final_r"]
    # pairwise accuracy on final-half pairs, against what the planted utilities achieve on
    # the same pairs (comparisons are noisy draws, so even the truth is far from 1)
    best = manifest["layers"][str(manifest["best_layer"])]
    planted = {r["task_id"]: float(r["mu"]) for r in csv.DictReader(open(data / "scores.csv"))}
    ids = sorted(planted)
    final = {ids[i] for i in ridge.split_tasks(len(ids), 0.4, seed=0).final}
    pairs = [
        c
        for c in read_jsonl(data / "comparisons.jsonl")
        if c["task_a"] in final and c["task_b"] in final
    ]
    ceiling = np.mean(
        [
            planted[c["winner"]]
            > planted[c["task_b"] if c["winner"] == c["task_a"] else c["task_a"]]
            for c in pairs
        ]
    )
    assert best["n_pairs"] == len(pairs) > 100
    assert best["pairwise_accuracy"] > 0.6 and best["pairwise_accuracy"] > ceiling - 0.1
    metrics = read_json(root / "metrics.json")
    assert metrics["best_final_r"] == manifest["best_final_r"]


def test_thurstonian_refit_recovers_toy_utilities_and_trains(toy_probe_run, capsys):
    folder, data, params_file, root = toy_probe_run
    fitted_csv = folder / "fitted_scores.csv"
    assert (
        main(
            [
                "probe",
                "thurstonian",
                "--params",
                str(params_file),
                "--comparisons",
                str(data / "comparisons.jsonl"),
                "--out-csv",
                str(fitted_csv),
            ]
        )
        == 0
    )
    planted = {r["task_id"]: float(r["mu"]) for r in csv.DictReader(open(data / "scores.csv"))}
    fitted = {r["task_id"]: float(r["mu"]) for r in csv.DictReader(open(fitted_csv))}
    truth, fit = zip(*[(planted[t], fitted[t]) for t in sorted(planted)], strict=True)
    # toy utilities are bimodal (harmful vs benign), so ranks inside a mode are the hard part
    assert pearsonr(truth, fit)[0] >= 0.95 and spearmanr(truth, fit)[0] >= 0.93
    # the noise ceiling estimates, without the truth, how far the fit is from it
    low, high = json.loads(fitted_csv.with_suffix(".fit.json").read_text())["split_half"][
        "ceiling_ci"
    ]
    assert low < pearsonr(truth, fit)[0] < high

    capsys.readouterr()
    assert main(["probe", "train", "--params", str(params_file), "--scores", str(fitted_csv)]) == 0
    runs = read_jsonl(root / "runs" / "runs.jsonl")
    assert len({r["run_id"] for r in runs}) == 2  # a new run beside the first, not over it
    manifest = _manifest(root)
    assert manifest["best_final_r"] >= 0.7
    # the fit's noise ceiling, beside the r it bounds; hand-made scores have none
    ceiling = manifest["score_ceiling"]
    assert ceiling == json.loads(fitted_csv.with_suffix(".fit.json").read_text())["split_half"]
    share = manifest["best_final_r"] / ceiling["ceiling"]
    printed = capsys.readouterr().out
    assert f"the scores' noise ceiling {ceiling['ceiling']:.3f} [" in printed
    assert f"; the final r is {share:.0%} of it" in printed
    assert main(["probe", "train", "--params", str(params_file)]) == 0  # the planted scores
    assert "noise ceiling" not in capsys.readouterr().out
    # under confounds the r is of what they leave: the raw scores' ceiling, no share of it
    argv = ["probe", "train", "--params", str(params_file), "--scores", str(fitted_csv)]
    assert main([*argv, "--confounds", str(data / "confounds.csv")]) == 0
    printed = capsys.readouterr().out
    assert f"the scores' noise ceiling {ceiling['ceiling']:.3f} [" in printed
    assert "whose ceiling is lower (not measured), so it is no share of this one" in printed
    assert "% of it" not in printed
    # the module's later tests read the latest run: the planted scores' again (reused)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert "reused" in capsys.readouterr().out and "confounds" not in _manifest(root)["inputs"]


def test_thurstonian_reads_and_writes_the_params_files(toy_probe_run, toy_world, tmp_path, capsys):
    folder, data, params_file, root = toy_probe_run
    flagged = tmp_path / "flagged.csv"
    argv = ["probe", "thurstonian", "--params", str(params_file)]
    assert (
        main([*argv, "--comparisons", str(data / "comparisons.jsonl"), "--out-csv", str(flagged)])
        == 0
    )
    probes = {"comparisons": str(data / "comparisons.jsonl"), "scores": "fit/scores.csv"}
    own = write_params(tmp_path, toy_world, probes=probes)
    assert main(["probe", "thurstonian", "--params", str(own)]) == 0
    assert (tmp_path / "fit" / "scores.csv").read_bytes() == flagged.read_bytes()
    # with --out the fit goes into that folder, not over the params' scores
    before = (tmp_path / "fit" / "scores.csv").stat().st_mtime_ns
    assert main(["probe", "thurstonian", "--params", str(own), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "probe_scores" / "scores.csv").read_bytes() == flagged.read_bytes()
    assert (tmp_path / "fit" / "scores.csv").stat().st_mtime_ns == before
    (tmp_path / "bare").mkdir()
    bare = write_params(tmp_path / "bare", toy_world, probes={"comparisons": None})
    capsys.readouterr()
    assert main(["probe", "thurstonian", "--params", str(bare)]) == 2
    assert "probes.comparisons: not set" in capsys.readouterr().err


def test_ood_on_toy_conditions(toy_probe_run):
    folder, data, params_file, root = toy_probe_run
    tasks_root = folder / "outputs" / "tasks" / "toy" / "instruct" / "prompt_m1" / "residual"
    baseline_meta = (tasks_root / "baseline" / "metadata.json").stat().st_mtime_ns
    assert main(["probe", "ood", "--params", str(params_file)]) == 0
    ood = folder / "outputs" / "ood" / "toy" / "instruct" / "prompt_m1" / "conditions"
    # the training activations served as the OOD baseline (same policy): not re-extracted
    assert (tasks_root / "baseline" / "metadata.json").stat().st_mtime_ns == baseline_meta
    conditions = json.loads((data / "conditions.json").read_text())["conditions"]
    # what it extracted lies in its own folder (probe_ood's DVC output), not in probe_train's
    own = folder / "outputs" / "ood" / "tasks" / "toy" / "instruct" / "prompt_m1" / "residual"
    assert sorted(p.name for p in tasks_root.iterdir()) == ["baseline"]
    assert sorted(p.name for p in own.iterdir()) == sorted(c["id"] for c in conditions)
    for c in conditions:
        meta = read_json(own / c["id"] / "metadata.json")
        assert meta["system_prompt_policy"] == "override"
        assert meta["condition"]["system_prompt"] == c["system_prompt"]

    result = read_json(ood / "ood.json")
    assert result["baseline"]["system_prompt_policy"] == "task"
    assert set(result["per_version"]) == {"v1", "v2"}
    for block in result["per_version"].values():
        p = block["p_perm"]
        assert 1 / 501 <= p <= 1 and round(p * 501) == pytest.approx(p * 501)
    assert len(result["targets"]) == 6 and result["pairs"]["n"] <= 6
    # behaviour (synthetic) moves each target up under A and down under C: in the top k
    for group in result["targets"]:
        key = "behaviour_up" if group["role"] == "A" else "behaviour_down"
        assert group["topk_rate"][key] == 1.0
    # The probe reads the model's state, and the toy model's state moves with the prompt:
    # negative personas ("you must refuse to help ...") lower its readings more than the
    # positive ones, and "you must refuse every request ." lowers benign tasks, as the
    # synthetic behaviour does (benign rates -0.1, harmful unchanged).
    by_id = {c["id"]: c for c in result["per_condition"]}
    mean_delta = {
        role: np.mean([c["mean_probe_delta"] for c in by_id.values() if c["role"] == role])
        for role in ("A", "C")
    }
    assert mean_delta["C"] < mean_delta["A"]
    assert by_id["strict"]["pearson"] > 0.5
    assert (ood / "ood_scatter.png").stat().st_size > 1000
    cell = read_json(folder / "metrics" / "probe_ood.json")["toy/instruct/prompt_m1/conditions"]
    assert cell["inversion_rate"] == result["pairs"]["rate"]
    # every headline number with its n, and an interval where it is a statistic
    assert (cell["inversions"], cell["n_inversion_pairs"]) == (
        result["pairs"]["inversions"],
        result["pairs"]["n"],
    )
    v1 = result["per_version"]["v1"]
    assert cell["versions"]["v1"]["sign_agreement_ci"] == v1["sign_agreement_ci"]
    assert cell["versions"]["v1"]["n_sign"] == v1["n_sign"] > 0
    assert f"(n {v1['n_sign']})" in (ood / "ood.md").read_text()
    low, high = result["probe"]["final_r_ci"]
    assert low < result["probe"]["final_r"] < high and result["probe"]["final_n"] > 0
    assert (
        f"[{low:.3f}, {high:.3f}], n {result['probe']['final_n']})" in (ood / "ood.md").read_text()
    )
    assert cell["versions"]["v1"]["p_perm"] == result["per_version"]["v1"]["p_perm"]
    assert cell["n_tasks"] == result["n_tasks"] and cell["layer"] == result["probe"]["layer"]
    assert (ood / "ood.md").read_text().count("|") > 20

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["toy-refusal"], filter_string="tags.`steerops.stage` = 'probe-ood'"
    )
    assert len(runs) == 1
    assert runs["metrics.v1.pearson"][0] == pytest.approx(result["per_version"]["v1"]["pearson"])
    assert runs["tags.dvc.hash.rates"][0]  # joined to DVC by input hashes


def test_damaged_task_activations_are_extracted_again_not_trained_on(toy_probe_run, capsys):
    from steerops.extract.store import TENSORS_FILE, damage

    folder, _, params_file, root = toy_probe_run
    tasks = folder / "outputs" / "tasks" / "toy" / "instruct" / "prompt_m1" / "residual"
    tensors = tasks / "baseline" / TENSORS_FILE
    assert main(["probe", "train", "--params", str(params_file)]) == 0  # on intact ones
    intact, before = tensors.read_bytes(), _manifest(root)["best_final_r"]
    blob = bytearray(intact)
    blob[-64:] = bytes(64)  # the same size, other numbers
    tensors.write_bytes(bytes(blob))
    assert damage(tasks / "baseline") is not None
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    assert damage(tasks / "baseline") is None and tensors.read_bytes() == intact
    assert _manifest(root)["best_final_r"] == before
