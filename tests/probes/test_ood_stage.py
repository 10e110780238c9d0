"""`steerops probe ood` end to end on hand-made activations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from probe_data import fake_activations, probe_world
from steerops.cli import main
from steerops.probes import ridge
from steerops.probes.store import load_probe


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


def test_ood_stage_end_to_end_on_hand_made_activations(tmp_path, capsys, monkeypatch):
    params_file, params, ids, mu, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}}
    )
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    rng = np.random.default_rng(1)
    conditions = [
        {
            "id": f"{role}.{v}",
            "system_prompt": f"prompt {role} {v}",
            "target": "task000",
            "version": v,
            "role": role,
        }
        for v in ("v1", "v2")
        for role in ("A", "C")
    ]
    (tmp_path / "conditions.json").write_text(
        json.dumps(
            {"baseline": {"id": "baseline", "system_prompt": None}, "conditions": conditions}
        )
    )
    base_rate = rng.uniform(0.2, 0.8, len(ids))
    rate_rows = [("baseline", t, r) for t, r in zip(ids, base_rate, strict=True)]
    shifts = {}
    for c in conditions:
        shift = {k: rng.normal(0, 0.3, v.shape) for k, v in layers.items()}
        fake_activations(
            params,
            c["id"],
            c["system_prompt"],
            ids,
            {k: layers[k] + shift[k] for k in layers},
            num_layers=2,
        )
        shifts[c["id"]] = shift
        rates = base_rate + rng.normal(0, 0.05, len(ids))
        rate_rows += [(c["id"], t, r) for t, r in zip(ids, rates, strict=True)]
    (tmp_path / "rates.csv").write_text(
        "condition_id,task_id,rate\n" + "".join(f"{c},{t},{r}\n" for c, t, r in rate_rows)
    )
    assert (
        main(
            [
                "probe",
                "ood",
                "--params",
                str(params_file),
                "--permutations",
                "300",
                "--conditions",
                str(tmp_path / "conditions.json"),
                "--rates",
                str(tmp_path / "rates.csv"),
            ]
        )
        == 0
    )

    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    out_dir = params.out / "ood" / "fake" / "instruct" / "prompt_m1" / "conditions"
    result = json.loads((out_dir / "ood.json").read_text())
    assert (out_dir / "ood.md").read_text().startswith("# OOD probe analysis")
    assert (out_dir / "ood_scatter.png").read_bytes()[:4] == b"\x89PNG"
    assert result["baseline"]["system_prompt_policy"] == "task"
    assert result["baseline"]["probe_trained_under_it"] is True  # both: each task's own
    # the statistics use the hold-out's final split only: the 32 of 160 tasks (0.4 held out,
    # half of it final) that neither fitted the weights nor chose alpha and layer
    final = ridge.split_tasks(len(ids), 0.4, params.seed).final
    unseen = [ids[i] for i in final]
    assert result["probe"]["layer"] == 1 and result["n_tasks"] == len(unseen) == 32
    assert result["tasks"] == {
        "selection": "heldout",
        "n_used": 32,
        "n_with_activations": len(ids),
        "n_fitted_left_out": len(ids) - 32,
        "n_fitted_used": 0,
    }

    run_dir = root / "runs" / json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    weight, bias, _, _ = load_probe(run_dir, 1)
    by_id = {r[0]: {} for r in rate_rows}
    for c, t, r in rate_rows:
        by_id[c][t] = r
    x = np.concatenate(
        [
            ((layers[1] + shifts[f"{role}.v1"][1]) @ weight - layers[1] @ weight)[final]
            for role in ("A", "C")
        ]
    )
    y = np.concatenate(
        [[by_id[f"{role}.v1"][t] - by_id["baseline"][t] for t in unseen] for role in ("A", "C")]
    )
    v1 = result["per_version"]["v1"]
    assert v1["n_tasks"] == 32 and v1["n_pairs"] == 64
    assert v1["pearson"] == pytest.approx(pearsonr(x, y)[0], abs=1e-4)
    assert v1["spearman"] == pytest.approx(spearmanr(x, y)[0], abs=1e-4)
    assert v1["p_perm"] == pytest.approx(
        reference_permutation_p(x, y, np.repeat([0, 1], len(unseen)), 300, params.seed), abs=1e-9
    )
    # the within-condition r (what p tests) is printed with its interval and n first
    centred = [(m - m.mean(1, keepdims=True)).ravel() for m in (x.reshape(2, -1), y.reshape(2, -1))]
    assert v1["pearson_within"] == pytest.approx(pearsonr(*centred)[0], abs=1e-4)
    low, high = v1["pearson_within_ci"]
    printed = capsys.readouterr().out
    assert f"v1: within-condition r {v1['pearson_within']:.3g} [{low:.3g}, {high:.3g}]" in printed
    assert f"({len(unseen)} tasks x 2 conditions); pooled pearson" in printed
    assert "Statistics on the 32 tasks the probe was neither fitted nor selected on" in printed
    md = (out_dir / "ood.md").read_text()
    assert "Statistics on the 32 tasks the probe was neither fitted nor selected on (128" in md
    assert "| within-condition r [95%] | pooled pearson [95%] |" in (out_dir / "ood.md").read_text()
    # a probe fitted by k-fold CV has no held-out r: its out-of-fold r is named as such
    from steerops.probes.ood_report import markdown

    assert result["probe"]["protocol"] == "holdout" and "final r " in markdown(result)
    cv = markdown({**result, "probe": {**result["probe"], "protocol": "cv"}})
    assert "final r" not in cv and "out-of-fold r" in cv and "optimistic" in cv
    low, high = v1["pearson_ci"]
    assert f"pooled pearson {v1['pearson']:.3g} [{low:.3g}, {high:.3g}]" in printed
    # the target (task000) is ranked among all tasks and flagged if the probe was fitted on it
    target = next(g for g in result["targets"] if g["role"] == "A")
    delta = (layers[1] + shifts["A.v1"][1]) @ weight - layers[1] @ weight
    assert target["conditions"][0]["probe_delta"] == pytest.approx(delta[0], abs=1e-4)
    assert "task000" not in unseen and target["fitted"]  # in the probe's train or sweep part
    # held out: the fitted target's mean deltas are left out, and ood.md says so; its A/C
    # pair counts, flagged (A minus C reads no baseline, the one in-sample reading)
    pairs = result["pairs"]
    assert pairs["roles"] == ["A", "C"] and {i["target"] for i in pairs["items"]} == {"task000"}
    assert pairs["items"] and all(i["fitted"] for i in pairs["items"])
    assert result["n_fitted_targets_left_out"] == 1 and v1["mean_target_delta"] == {}
    assert "targets the probe was fitted on left out (1): held out." in md
    assert "1 target the probe was fitted on counted: A minus C reads two conditions" in md
    assert result["pairs"]["fitted_left_out"] == 0
    n, inverted = pairs["n"], pairs["inversions"]
    assert n == sum(i["comparable"] for i in pairs["items"]) > 0
    assert f"A/C inversions: {inverted} of {n}" in printed
    assert "; 1 fitted target among them" in printed
    assert "| role | target | fitted |" in md

    # a rerun that fails while writing (the plot) leaves the last run's three files as
    # they were: ood.json, ood.md and the plot are one set
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("steerops.probes.ood_stage.scatter", broken_plot)
    argv = ["probe", "ood", "--params", str(params_file), "--permutations", "301"]
    argv += ["--conditions", str(tmp_path / "conditions.json")]
    assert main([*argv, "--rates", str(tmp_path / "rates.csv")]) != 0
    assert "disk full" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_conditions_without_rates_or_with_unknown_targets_are_refused_before_extraction(
    tmp_path, capsys, no_model_loads
):
    """A condition the rates file has no rows for (a typo'd id), or a target that is not a
    task, is refused before the conditions' activations are extracted (a model load, then
    every task under every condition), and nothing is written."""
    params_file, params, ids, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    conditions = tmp_path / "conditions.json"

    def write(target: str) -> None:
        conditions.write_text(
            json.dumps(
                {
                    "baseline": {"id": "baseline", "system_prompt": None},
                    "conditions": [
                        {"id": "A1", "system_prompt": "be kind", "target": target, "role": "A"}
                    ],
                }
            )
        )

    rates = tmp_path / "rates.csv"
    rates.write_text(
        "condition_id,task_id,rate\n"
        + "".join(f"baseline,{t},0.5\n" for t in ids)
        + "".join(f"A_1,{t},0.6\n" for t in ids)  # the condition is A1
    )
    argv = ["probe", "ood", "--params", str(params_file)]
    argv += ["--conditions", str(conditions), "--rates", str(rates), "--permutations", "10"]
    write("task001")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rates.csv: no rates for condition 'A1'" in err[0]
    rates.write_text(rates.read_text().replace("A_1,", "A1,"))
    write("task999")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target 'task999' is not a task in" in err[0]
    tasks_root = params.out / "tasks" / "fake" / "instruct" / "prompt_m1" / "residual"
    assert not (tasks_root / "A1").exists() and not (params.out / "ood").exists()


def _one_condition_argv(tmp_path, params_file, ids) -> list[str]:
    """`probe ood` on one condition (A1) beside the baseline, every task rated 0.5."""
    (tmp_path / "conditions.json").write_text(
        json.dumps(
            {
                "baseline": {"id": "baseline", "system_prompt": None},
                "conditions": [{"id": "A1", "system_prompt": "be kind"}],
            }
        )
    )
    (tmp_path / "rates.csv").write_text(
        "condition_id,task_id,rate\n"
        + "".join(f"{c},{t},0.5\n" for c in ("baseline", "A1") for t in ids)
    )
    argv = ["probe", "ood", "--params", str(params_file), "--conditions"]
    return argv + [str(tmp_path / "conditions.json"), "--rates", str(tmp_path / "rates.csv")]


def test_a_probe_of_another_model_is_refused_before_extraction(tmp_path, capsys, no_model_loads):
    """The probe run under the variant's folder was trained on another model (the variant now
    points elsewhere): refused before extracting, not applied to the new model's activations."""
    import yaml

    params_file, params, ids, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    raw = yaml.safe_load(params_file.read_text())
    raw["models"]["instruct"]["id"] = str(tmp_path / "bigger_model")
    params_file.write_text(yaml.safe_dump(raw))
    argv = _one_condition_argv(tmp_path, params_file, ids)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models.instruct.id: " in err[0] and "bigger_model" in err[0]
    assert not (params.out / "ood").exists()


def test_a_probe_of_other_weights_under_the_same_id_is_refused_before_extraction(
    tmp_path, capsys, no_model_loads
):
    """New weights written over the model folder the probe was trained on: the same id,
    another model; refused before extracting, not applied to the new weights."""
    from steerops.io import read_json, write_json
    from steerops.models.fingerprint import model_fingerprint
    from steerops.probes.activations import condition_dir

    params_file, params, ids, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    model = tmp_path / "toy" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"trained on these")
    meta_file = condition_dir(params, "baseline") / "metadata.json"
    meta = read_json(meta_file)
    meta["model"]["weights"] = model_fingerprint(str(model))  # as extract records it
    write_json(meta_file, meta)
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    (model / "model.safetensors").write_bytes(b"fine-tuned since")
    argv = _one_condition_argv(tmp_path, params_file, ids)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not those probe run" in err[0] and "probe train" in err[0], err
    assert not (params.out / "ood").exists()


def test_an_ood_out_that_is_a_file_is_refused_before_extraction(tmp_path, capsys, no_model_loads):
    params_file, params, ids, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    argv = ["probe", "ood", "--params", str(params_file), "--ood-out", str(taken)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ood-out" in err[0] and "is a file, not a folder" in err[0], err
    assert taken.read_text() == "a file"


def test_an_ood_out_holding_other_files_is_refused_before_extraction(
    tmp_path, capsys, no_model_loads
):
    """`probe ood` replaces its folder whole: a folder with anything but its three files (the
    pipeline's outputs, a project) is refused with one line, its files kept."""
    params_file, params, ids, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "notes.md").write_text("keep me")
    (victim / "sub" / "data.txt").write_text("keep me too")
    argv = ["probe", "ood", "--params", str(params_file), "--ood-out", str(victim)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ood-out" in err[0] and "notes.md, sub" in err[0], err
    assert (victim / "notes.md").read_text() == "keep me"
    assert (victim / "sub" / "data.txt").read_text() == "keep me too"


def test_the_default_ood_folder_holding_other_files_is_refused_before_extraction(
    tmp_path, capsys, no_model_loads
):
    """Without --ood-out the stage's own folder is checked as early: before a condition is
    extracted (minutes on a real model) or a run opens, with an error naming that folder."""
    from steerops.probes.activations import tasks_name
    from steerops.probes.store import ood_dir

    params_file, params, ids, *_ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    argv = _one_condition_argv(tmp_path, params_file, ids)
    folder = ood_dir(
        params.out,
        tasks_name(params),
        params.probes.variant,
        params.probes.position.text,
        "conditions",
    )
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output folder" in err[0] and "notes.txt" in err[0], err
    assert "--ood-out" not in err[0]
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (params.out / "ood").iterdir()) == [tasks_name(params)]


def test_probe_run_takes_a_run_id_or_a_path_relative_to_the_params_file(
    tmp_path, capsys, monkeypatch, no_model_loads
):
    """--probe-run RUN_ID names a run under the cell's runs/ (it used to be taken for a
    folder of the working directory); a relative path in params is read from the params
    file's folder, wherever the command runs."""
    import yaml

    params_file, params, ids, mu, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}}
    )
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    run_id = json.loads((root / "runs" / "latest.json").read_text())["run_id"]
    argv = _one_condition_argv(tmp_path, params_file, ids)
    fake_activations(params, "A1", "be kind", ids, layers, num_layers=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = params.out / "ood" / "fake" / "instruct" / "prompt_m1" / "conditions"
    assert main([*argv, "--probe-run", run_id]) == 0, capsys.readouterr().err
    assert json.loads((out / "ood.json").read_text())["probe"]["run_id"] == run_id
    raw = yaml.safe_load(params_file.read_text())
    raw["probes"]["ood"]["probe_run"] = str((root / "runs" / run_id).relative_to(tmp_path))
    params_file.write_text(yaml.safe_dump(raw))
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "ood.json").read_text())["probe"]["run_id"] == run_id
    assert main([*argv, "--probe-run", "no-such-run"]) == 2
    assert "'no-such-run' is neither a run id under" in capsys.readouterr().err


def _trained_run(params) -> Path:
    root = params.out / "probes" / "fake" / "instruct" / "prompt_m1"
    return root / "runs" / json.loads((root / "runs" / "latest.json").read_text())["run_id"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_probe_fitted_on_every_rated_task_is_refused_before_extraction(
    tmp_path, capsys, no_model_loads
):
    """A k-fold CV probe is refitted on every scored task: with every task scored, no task
    is left that the probe did not see. `probe ood` says so in one line, naming the fix,
    before a condition is extracted; `--ood-tasks all` runs and calls its figures
    optimistic."""
    params_file, params, ids, _, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}}
    )
    assert main(["probe", "train", "--params", str(params_file), "--cv-folds", "4"]) == 0
    argv = _one_condition_argv(tmp_path, params_file, ids)
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "probes.ood.tasks: heldout, but only 0 rated tasks were not fitted" in line
    assert "(cv: 160 fitted tasks" in line and "probes.ood.tasks: all" in line
    tasks_root = params.out / "tasks" / "fake" / "instruct" / "prompt_m1" / "residual"
    assert not (tasks_root / "A1").exists() and not (params.out / "ood").exists()

    fake_activations(params, "A1", "be kind", ids, layers, num_layers=2)
    assert main([*argv, "--ood-tasks", "all"]) == 0, capsys.readouterr().err
    out = params.out / "ood" / "fake" / "instruct" / "prompt_m1" / "conditions"
    result = json.loads((out / "ood.json").read_text())
    assert result["tasks"] == {
        "selection": "all",
        "n_used": 160,
        "n_with_activations": 160,
        "n_fitted_left_out": 0,
        "n_fitted_used": 160,
    }
    assert (
        "Statistics on all 160 tasks, 160 of them fitted or selected on by the probe "
        "(`probes.ood.tasks: all`): optimistic, the figures include fitted tasks."
    ) in (out / "ood.md").read_text()


def test_a_probe_run_without_a_record_of_its_fitted_tasks(tmp_path, capsys, no_model_loads):
    """A run trained before `probe train` recorded its fitted tasks (the same run key: still
    reused) cannot tell which tasks are held out: refused in one line before extraction,
    naming both ways out; with `--ood-tasks all` its figures are called optimistic."""
    from steerops.io import read_json, write_json

    params_file, params, ids, _, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}}
    )
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    run_dir = _trained_run(params)
    manifest = read_json(run_dir / "manifest.json")
    del manifest["fitted_tasks"], manifest["manifest_md5"]  # a run written before either was kept
    write_json(run_dir / "manifest.json", manifest)
    argv = _one_condition_argv(tmp_path, params_file, ids)
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"probe run {run_dir.name} predates the record of the tasks it was fitted on" in line
    assert (
        "probes.ood.tasks: all" in line
        and f"`steerops probe train --params {params_file}` again" in line
    )
    assert not (params.out / "ood").exists()

    fake_activations(params, "A1", "be kind", ids, layers, num_layers=2)
    assert main([*argv, "--ood-tasks", "all"]) == 0, capsys.readouterr().err
    out = params.out / "ood" / "fake" / "instruct" / "prompt_m1" / "conditions"
    result = json.loads((out / "ood.json").read_text())
    assert result["tasks"]["n_fitted_used"] is None and result["n_tasks"] == 160
    assert "an unrecorded number of them fitted" in (out / "ood.md").read_text()


def test_a_targeted_condition_of_no_pair_role_is_said(tmp_path, capsys):
    """A role typo ("a" for "A") would drop its pairs from the A/C inversions unseen; a role
    of its own is no typo."""
    from types import SimpleNamespace

    from steerops.probes.ood_stage import _warn_unpaired_roles

    def condition(id_, target, role):
        return SimpleNamespace(id=id_, target=target, role=role)

    fine = [condition("A1", "t1", "A"), condition("C1", "t1", "C"), condition("s", None, None)]
    fine += [condition("B1", "t1", "B"), condition("n", "t1", None)]  # groups of their own
    _warn_unpaired_roles(["A", "C"], fine, tmp_path / "c.json")
    assert capsys.readouterr().err == ""
    _warn_unpaired_roles(["A", "C"], [*fine, condition("A2", "t2", "a")], tmp_path / "c.json")
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: {tmp_path / 'c.json'}: 1 targeted condition(s) (e.g. 'A2')")
    assert "role 'a', none of probes.ood.pair_roles (A, C)" in line


def test_the_train_an_error_suggests_selects_the_run_this_ood_selects(
    tmp_path, capsys, no_model_loads
):
    """`probe ood --position P --variant V` with no run trained there: the `probe train` the
    error suggests carries the same selection, or it would train a run ood never reads."""
    params_file, params, ids, _, _ = probe_world(tmp_path, blocks={"tracking": {"enabled": False}})
    argv = _one_condition_argv(tmp_path, params_file, ids)
    assert main([*argv, "--position", "prompt[-2]", "--variant", "base"]) == 2
    line = _one_error_line(capsys)
    assert "no probe run under" in line and "prompt_m2" in line
    assert f"`steerops probe train --params {params_file} --variant base --position" in line
    assert "'prompt[-2]'` first" in line


def test_a_baseline_under_another_prompt_than_the_probe_s_training_is_said(tmp_path, capsys):
    """The conditions file's baseline sets a system prompt while the probe trained on each
    task's own (`probes.condition: baseline` names no condition of that file): every delta
    is measured from readings unlike the probe's training, which stderr, ood.json and ood.md
    say; a baseline under the training prompt says nothing."""
    from steerops.extract.conditions import OodCondition
    from steerops.io import read_json
    from steerops.probes.ood_stage import _trained_under_baseline

    params_file, params, ids, _, layers = probe_world(
        tmp_path, blocks={"tracking": {"enabled": False}}
    )
    assert main(["probe", "train", "--params", str(params_file)]) == 0
    run_dir = _trained_run(params)
    assert read_json(run_dir / "manifest.json")["system_prompt"] is None
    (tmp_path / "conditions.json").write_text(
        json.dumps(
            {
                "baseline": {"id": "base", "system_prompt": "refuse"},
                "conditions": [{"id": "A1", "system_prompt": "be kind"}],
            }
        )
    )
    (tmp_path / "rates.csv").write_text(
        "condition_id,task_id,rate\n"
        + "".join(
            f"{c},{t},{0.3 + 0.4 * (i % 2)}\n" for c in ("base", "A1") for i, t in enumerate(ids)
        )
    )
    fake_activations(params, "base", "refuse", ids, layers, num_layers=2)
    fake_activations(params, "A1", "be kind", ids, layers, num_layers=2)
    argv = ["probe", "ood", "--params", str(params_file), "--conditions"]
    argv += [str(tmp_path / "conditions.json"), "--rates", str(tmp_path / "rates.csv")]
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"warning: probe run {run_dir.name} was trained on condition 'baseline' (each " in err
    assert "task's own system prompt), but the baseline 'base' of" in err
    assert 'has system prompt "refuse"' in err and "A/C inversions leave out the targets" in err
    assert "set probes.condition: base, a condition of probes.ood.conditions, and run " in err
    assert f"`steerops probe train --params {params_file}` again" in err
    out = params.out / "ood" / "fake" / "instruct" / "prompt_m1" / "conditions"
    result = json.loads((out / "ood.json").read_text())
    assert result["baseline"]["probe_trained_under_it"] is False
    assert "**not the prompt the probe was trained under**" in (out / "ood.md").read_text()
    # a run from before the prompt was recorded: its policy "task" says each task's own
    manifest = read_json(run_dir / "manifest.json")
    del manifest["system_prompt"]
    own = OodCondition("baseline", None)
    assert _trained_under_baseline(manifest, own, run_dir, tmp_path / "c.json") is True
    manifest["system_prompt_policy"] = "override"  # which prompt: unknown
    assert _trained_under_baseline(manifest, own, run_dir, tmp_path / "c.json") is None
    assert capsys.readouterr().err == ""
