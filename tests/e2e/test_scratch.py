"""Scratch runs: `steerops steer` run by hand reads the pipeline's vectors and writes only in
its own run folder; the pipeline's outputs stay byte-identical. What it needs is checked
before the model loads, and a failing command leaves no run folder and no MLflow run."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from steer_world import SMALL, steer_params
from steerops.cli import main
from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.io import read_json
from steerops.steering.best import compact


def _snapshot(folder: Path) -> dict[str, str]:
    """md5 of every pipeline file: outputs/ and metrics/ next to the params file."""
    files = [p for d in ("outputs", "metrics") for p in (folder / d).rglob("*") if p.is_file()]
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files
    }


@pytest.fixture(scope="module")
def pipeline(toy_world, tmp_path_factory):
    """A project whose pipeline has steered once (outputs/ and metrics/ exist)."""
    folder = tmp_path_factory.mktemp("scratch")
    params = steer_params(folder, toy_world)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_STAGE", "steer")  # as `dvc repro` runs it
        assert main(["steer", "--params", str(params), *SMALL]) == 0
    assert (folder / "metrics" / "steer.json").is_file()
    assert not (folder / "runs").exists()
    return folder, params


def test_an_ad_hoc_steer_leaves_the_pipeline_outputs_byte_identical(pipeline, capsys):
    folder, params = pipeline
    before = _snapshot(folder)
    argv = ["steer", "--params", str(params), "--subset", "4", "--max-new-tokens", "6"]
    assert main([*argv, "--layers", "3", "--coefficients", "2,3"]) == 0
    assert _snapshot(folder) == before
    (run,) = (folder / "runs").iterdir()
    assert run.name.startswith("steer-")
    cell = run / "steering/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    metrics = read_json(cell / "metrics.json")
    assert read_json(run / "metrics" / "steer.json") == {
        "toy/refusal/instruct/prompt_m1/residual/mean_diff": compact(metrics)
    }
    out = capsys.readouterr()
    assert "scratch run in" in out.out and run.name in out.out
    # the terminal table: one row per layer, one column per coefficient, and the run link
    assert "c=2" in out.out and "c=3" in out.out and "\n  L3 " in out.out
    assert "MLflow run: http://127.0.0.1:5000/#/experiments/" in out.out


def test_out_puts_everything_of_the_run_in_its_folder(pipeline, tmp_path, monkeypatch):
    folder, params_file = pipeline
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = yaml.safe_load(params_file.read_text())
    del spec["tracking"]  # the default store: next to the params file, or in --out's folder
    own = folder / "own_store.yaml"
    own.write_text(yaml.safe_dump(spec))
    before = _snapshot(folder)
    run = tmp_path / "mine"
    assert main(["steer", "--params", str(own), "--out", str(run), *SMALL]) == 0
    assert _snapshot(folder) == before
    assert (run / "metrics" / "steer.json").is_file()
    assert (run / "steering" / "toy" / "refusal" / "instruct" / "baselines.jsonl").is_file()

    def tagged(db: Path) -> list:
        client = MlflowClient(f"sqlite:///{db}")
        experiment = client.get_experiment_by_name("toy-refusal").experiment_id
        query = f"tags.`steerops.run_folder` = '{run}'"
        return client.search_runs([experiment], filter_string=query)

    assert len(tagged(run / "mlflow.db")) == 1 + 1 + 4  # invocation, cell, 2 x 2 configs
    assert tagged(folder / "mlflow.db") == []  # the project's store saw nothing of it
    # the rest of what a run keeps goes there too
    from steerops.cli import build_parser, load_params_for

    args = build_parser(["steer"]).parse_args(["steer", "--params", str(own), "--out", str(run)])
    params = load_params_for(args)
    assert params.out == run and params.run_root == run and params.inputs == folder / "outputs"
    # the project's judge cache lies outside its outputs (tests' params): shared, not copied
    assert Path(params.judge.cache_dir) == folder / "judge_cache"
    from steerops.search.storage import default_storage_url
    from steerops.tracking import tracking_uri

    assert default_storage_url(params) == f"sqlite:///{run / 'optuna.db'}"
    assert tracking_uri(params) == f"sqlite:///{run / 'mlflow.db'}"


def test_failing_commands_fail_before_the_model_loads_and_leave_nothing(
    pipeline, capsys, monkeypatch
):
    from steerops.models import loading
    from steerops.steering import session

    folder, params = pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the inputs were checked")

    monkeypatch.setattr(loading, "load_model", no_model)
    monkeypatch.setattr(session, "load_model", no_model)  # the name the stage calls
    uri = load_params(params).tracking.uri
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("toy-refusal").experiment_id
    runs_before = len(client.search_runs([experiment], max_results=1000))
    scratch_before = set((folder / "runs").iterdir()) if (folder / "runs").exists() else set()
    argv = ["steer", "--params", str(params), "--coefficients", "1"]
    cases = [
        (
            ["--layers", "9"],
            "--layers: '9' is out of range (the model has layers 0-3) (params: steering.layers)",
        ),
        (["--method", "probe"], "vectors not found"),
        (["--trait", "toy/nope"], "toy/nope"),
        (["--subset", "-1"], "--subset: Input should be greater than or equal to 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens: Input should be greater than or equal"),
    ]
    for extra, message in cases:
        assert main([*argv, *extra]) == 2
        said = capsys.readouterr()
        err = said.err.strip().splitlines()
        assert len(err) == 1, err
        assert said.out == ""  # no "scratch run in" a folder the error then removes
        assert err[-1].startswith("steerops steer: error:") and message in err[-1], err
        assert "params.yaml" not in err[-1] or "--" not in message
    assert len(client.search_runs([experiment], max_results=1000)) == runs_before
    after = set((folder / "runs").iterdir()) if (folder / "runs").exists() else set()
    assert after == scratch_before  # no empty scratch folder left behind


def test_far_coefficients_warn_before_generating(pipeline, capsys, monkeypatch):
    from steerops.steering import session

    folder, params = pipeline

    def stop(*args, **kwargs):
        raise SteeropsError("stopped before loading the model")

    monkeypatch.setattr(session, "load_model", stop)
    assert main(["steer", "--params", str(params), "--layers", "1", "--coefficients", "1100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "coefficient 1100 is 1100x the layer's mean activation norm" in err[-2]
    assert "--coefficient-unit absolute" in err[-2] and "stopped before loading" in err[-1]
    absolute = ["--coefficient-unit", "absolute", "--coefficients", "1100"]
    assert main(["steer", "--params", str(params), "--layers", "1", *absolute]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "over 10x the largest steered layer's mean activation norm (20" in err[-2]
    assert main(["steer", "--params", str(params), "--layers", "1", "--coefficients", "2"]) == 2
    assert "warning" not in capsys.readouterr().err


def test_subset_zero_means_every_question(pipeline):
    from steerops.steering.session import SteeringSession

    folder, params = pipeline
    everything = SteeringSession(load_params(params), "toy/refusal", progress=False)
    zero = SteeringSession(
        load_params(params, {"steering.subset": 0}), "toy/refusal", progress=False
    )
    assert zero.questions == everything.questions and len(zero.questions) == 40


def test_a_rerun_served_entirely_from_the_logs_opens_no_mlflow_run(
    pipeline, tmp_path, capsys, monkeypatch
):
    """A sweep whose every config and baseline its logs hold under the same settings, and
    whose files it leaves byte-identical, records nothing new: no MLflow run (parent, cell or
    config) is opened again, and a line says why. One that changes a file (another coherence
    threshold picks its best anew) is logged as before."""
    folder, params = pipeline
    client = MlflowClient(load_params(params).tracking.uri)
    experiment = client.get_experiment_by_name("toy-refusal").experiment_id

    def runs() -> int:
        return len(client.search_runs([experiment], max_results=5000))

    before, files = runs(), _snapshot(folder)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_STAGE", "steer")  # `dvc repro` running the stage again
        assert main(["steer", "--params", str(params), *SMALL]) == 0
    assert runs() == before and _snapshot(folder) == files
    out = capsys.readouterr().out
    assert "c=0.5" in out and "MLflow run:" not in out  # the table, and no run to link
    assert "every config was served from the results logs" in out
    assert "steer: 4 of 4 configs served from results logs (scores as logged); 0 to generate" in (
        out
    )

    run = ["steer", "--params", str(params), "--out", str(tmp_path / "mine"), *SMALL]
    assert main(run) == 0
    assert runs() == before + 1 + 1 + 4  # invocation, cell, 2 x 2 configs
    # served from the pipeline's log, and it says so
    assert "steer: 4 of 4 configs served from results logs" in capsys.readouterr().out
    assert main(run) == 0
    assert runs() == before + 6
    assert main([*run, "--min-coherence", "99"]) == 0
    assert runs() == before + 12
    assert main([*run, "--min-coherence", "99"]) == 0  # served, and its FINISHED runs hold it
    assert runs() == before + 12

    # the process that logged those files killed before it ended its runs: reconciled as
    # KILLED, they miss what it had not logged yet; a rerun serves every config, changes no
    # file, and logs the sweep again
    from steerops.steering.runs import CELL_FILES, cell_files, folder_digests

    cell = next((tmp_path / "mine").rglob("results.jsonl")).parent
    query = f"tags.`{CELL_FILES}` = '{cell_files(cell, folder_digests([cell])[0])}'"
    holding = client.search_runs([experiment], query)
    assert len(holding) == 1
    client.set_terminated(holding[0].info.run_id, "KILLED")
    capsys.readouterr()
    assert main([*run, "--min-coherence", "99"]) == 0
    assert runs() == before + 18
    assert "no new MLflow run" not in capsys.readouterr().out


def test_a_scratch_search_is_served_the_pipelines_grid_scores(toy_world, tmp_path, capsys):
    """A search run by hand (`--out`) imports the pipeline grid's scores on its half as known
    trials; it is served them too: neither a baseline nor a grid config is generated again
    (choosing among the trials reads their scores), and it says what it generated."""
    from steerops.steering import session

    params = steer_params(tmp_path, toy_world, steering={"subset": 4, "max_new_tokens": 6})
    grid = ["--layers", "1,2", "--coefficients", "0.5,1"]
    assert main(["steer", "--pipeline", "--params", str(params), *grid]) == 0
    before = _snapshot(tmp_path)
    steered, unsteered = [], []
    real = session.SteeringSession.generate

    def recording(self, prompts, configs, desc, rows=None):
        if configs is None or None in configs:
            unsteered.append(desc)
        steered.extend((c.vectors[0].layer, c.coefficient) for c, _ in filter(None, configs or ()))
        return real(self, prompts, configs, desc, rows)

    out = tmp_path / "scratch"
    # every trial counts as coherent, so choosing among them reads every trial's scores
    argv = ["search", "--params", str(params), "--out", str(out), "--min-coherence", "0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session.SteeringSession, "generate", recording)
        assert main([*argv, "--layers", "1,2", "--trials", "5", "--study", "scratch"]) == 0
    assert _snapshot(tmp_path) == before  # the pipeline's files are left as they were
    assert unsteered == []  # both halves' baselines are the grid's
    grid_points = {(layer, c) for layer in (1, 2) for c in (0.5, 1.0)}
    assert not set(steered) & grid_points
    cell = out / "search/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    best = read_json(cell / "best.json")
    assert best["n_known"] == 4
    per_question = 2  # 4 questions: 2 on the search half, 2 held out
    assert f"({per_question * len(steered)} generated by this run)" in capsys.readouterr().out


def test_a_scratch_search_starts_from_the_grid_a_scratch_steer_wrote_in_its_folder(
    toy_world, tmp_path, capsys
):
    """`steer --out DIR` then `search --out DIR`: the study starts from DIR's grid (the
    researcher's own), not the pipeline's, and says which folder it read."""
    params = steer_params(tmp_path, toy_world, steering={"subset": 4, "max_new_tokens": 6})
    grid = ["--layers", "1,2", "--coefficients", "0.5,1"]
    assert main(["steer", "--pipeline", "--params", str(params), *grid]) == 0
    out = tmp_path / "scratch"
    mine = ["--layers", "1,2", "--coefficients", "1.5"]
    assert main(["steer", "--params", str(params), "--out", str(out), *mine]) == 0
    capsys.readouterr()
    argv = ["search", "--params", str(params), "--out", str(out), "--min-coherence", "0"]
    assert main([*argv, "--layers", "1,2", "--trials", "3", "--study", "scratch"]) == 0
    cell = "search/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    rows = list(csv.DictReader((out / cell / "trials.csv").open()))
    known = {(int(r["layer"]), float(r["coefficient"])) for r in rows if r["source"] == "known"}
    assert known == {(1, 1.5), (2, 1.5)}
    grid = out / "steering/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    said = f"starting from 2 known configs (the grid cell's latest sweep in {grid})"
    assert said in capsys.readouterr().err
    # a folder whose grid gives the search nothing (steered under other settings): the
    # pipeline's grid, not none
    other = tmp_path / "other"
    mine += ["--max-new-tokens", "5"]
    assert main(["steer", "--params", str(params), "--out", str(other), *mine]) == 0
    capsys.readouterr()
    argv = ["search", "--params", str(params), "--out", str(other), "--min-coherence", "0"]
    narrower = ["--layers", "1,2", "--coef-max", "0.75", "--trials", "3", "--study", "other"]
    assert main([*argv, *narrower]) == 0
    rows = list(csv.DictReader((other / cell / "trials.csv").open()))
    known = {(int(r["layer"]), float(r["coefficient"])) for r in rows if r["source"] == "known"}
    assert known == {(1, 0.5), (2, 0.5)}  # the grid's 1.0 lies outside the range searched
    pipeline = tmp_path / "outputs/steering/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    said = (
        f"starting from 2 known configs (the grid cell's latest sweep in {pipeline}); 2 more "
        "there lie outside its range or layers"
    )
    assert said in capsys.readouterr().err


def test_a_scratch_steer_is_served_the_pipelines_grid_scores(toy_world, tmp_path):
    """A steer run by hand (`--out`) generates only the configs the pipeline's grid has not
    logged under the same settings, and gives the served ones the grid's scores."""
    from steerops.steering import session

    params = steer_params(tmp_path, toy_world, steering={"subset": 4, "max_new_tokens": 6})
    grid = ["--layers", "1,2", "--coefficients", "0.5,1"]
    assert main(["steer", "--pipeline", "--params", str(params), *grid]) == 0
    before = _snapshot(tmp_path)
    steered: list[tuple[int, float]] = []
    real = session.SteeringSession.generate

    def recording(self, prompts, configs, desc, rows=None):
        steered.extend((c.vectors[0].layer, c.coefficient) for c, _ in filter(None, configs or ()))
        return real(self, prompts, configs, desc, rows)

    out = tmp_path / "scratch"
    argv = ["steer", "--params", str(params), "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session.SteeringSession, "generate", recording)
        assert main([*argv, "--layers", "1,2", "--coefficients", "0.5,1,1.5"]) == 0
    assert _snapshot(tmp_path) == before  # the pipeline's files are left as they were
    assert sorted(set(steered)) == [(1, 1.5), (2, 1.5)]

    def scores(folder: Path) -> dict[tuple, list]:
        log = folder / "steering/toy/refusal/instruct/prompt_m1/residual/mean_diff/results.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        return {
            (r["config"]["vectors"][0]["layer"], r["config"]["coefficient"]): r["scores"]
            for r in rows
            if r.get("type") != "baseline"
        }

    mine, grid_scores = scores(out), scores(tmp_path / "outputs")
    assert set(mine) == {(layer, c) for layer in (1, 2) for c in (0.5, 1.0, 1.5)}
    assert all(mine[key] == grid_scores[key] for key in grid_scores)


def test_a_served_baseline_is_generated_again_once_for_all_cells(toy_world, tmp_path):
    """A scratch sweep of several cells that is served the pipeline's baseline writes every
    cell's baseline.json from one regeneration of its responses, not one per cell."""
    from steerops.steering import session

    methods = ("mean_diff", "probe")
    params = steer_params(
        tmp_path, toy_world, methods=methods, steering={"subset": 4, "max_new_tokens": 6}
    )
    cells = ["--method", ",".join(methods), "--layers", "1"]
    grid = ["steer", "--pipeline", "--params", str(params), *cells]
    assert main([*grid, "--coefficients", "0.5"]) == 0
    descs: list[str] = []
    real = session.SteeringSession.generate

    def recording(self, prompts, configs, desc, rows=None):
        descs.append(desc)
        return real(self, prompts, configs, desc, rows)

    out = tmp_path / "scratch"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session.SteeringSession, "generate", recording)
        argv = ["steer", "--params", str(params), "--out", str(out), *cells]
        assert main([*argv, "--coefficients", "1"]) == 0
    assert descs.count("steer: baseline responses") == 1
    files = [
        out / f"steering/toy/refusal/instruct/prompt_m1/residual/{m}/responses/baseline.json"
        for m in methods
    ]
    assert read_json(files[0])["responses"] == read_json(files[1])["responses"]


def test_inputs_steers_the_vectors_of_another_runs_folder(toy_world, tmp_path, capsys):
    """`--inputs DIR` (vectors built with `steerops vectors --out DIR`) steers DIR's vectors,
    not the pipeline's, and writes into neither; its errors come before anything runs."""
    from steerops.vectors.store import load_vectors, save_vectors

    params = steer_params(tmp_path, toy_world, steering={"subset": 4, "max_new_tokens": 6})
    cell = "steering/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    vectors = "vectors/toy/refusal/base/prompt_m1/residual/mean_diff"
    mine = tmp_path / "mine"
    shutil.copytree(tmp_path / "outputs", mine)
    found, meta = load_vectors(mine / vectors)
    save_vectors(mine / vectors, {layer: -v for layer, v in found.items()}, meta)

    def everything(folder: Path) -> dict[str, str]:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files}

    before = {**_snapshot(tmp_path), **everything(mine)}
    assert any("vectors.safetensors" in name for name in before)
    argv = ["steer", "--params", str(params), "--layers", "1", "--coefficients", "1"]
    # refused: it records no inputs for the folder (a later report would read them)
    refused = ["--inputs", str(mine), "--out", str(tmp_path / "run"), "--layers", "99"]
    assert main([*argv, *refused]) == 2
    assert not (tmp_path / "run" / "inputs.json").exists()
    assert main([*argv, "--inputs", str(mine), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "inputs.json").is_file()
    assert {**_snapshot(tmp_path), **everything(mine)} == before

    def steered_with(folder: Path) -> set[str]:
        rows = [json.loads(line) for line in (folder / cell / "results.jsonl").open()]
        return {md5 for r in rows if "vector_files" in r for md5 in r["vector_files"].values()}

    def md5(folder: Path) -> str:
        return hashlib.md5((folder / vectors / "vectors.safetensors").read_bytes()).hexdigest()

    assert md5(mine) != md5(tmp_path / "outputs")
    assert steered_with(tmp_path / "run") == {md5(mine)}
    # the run's folder records the inputs, so its report reads them without --inputs: the
    # pipeline's vectors are not those its results were made with, and read, leave none
    report = ["report", "--params", str(params), "--out", str(tmp_path / "run")]
    assert main([*report, "--inputs", str(tmp_path / "outputs")]) == 2
    assert "measured with vectors changed since" in capsys.readouterr().err
    assert main(report) == 0
    err = capsys.readouterr().err
    assert f"reading the inputs in {mine}, which this run's steer and search read" in err
    moved = tmp_path / "moved"
    mine.rename(moved)
    assert main(report) == 2
    assert f"its results were made from the inputs in {mine} (--inputs), no longer a folder" in (
        capsys.readouterr().err
    )
    moved.rename(mine)
    # where they are, and their path from the run's folder: a run and its inputs moved
    # together still pair up, and a copy beside the originals reads the originals
    recorded = json.loads((tmp_path / "run" / "inputs.json").read_text())
    assert recorded == {"inputs": str(mine.resolve()), "relative": "../mine"}
    away = tmp_path / "away"
    shutil.copytree(tmp_path / "run", away / "run")
    shutil.copytree(mine, away / "mine")
    assert main(["report", "--params", str(params), "--out", str(away / "run")]) == 0
    assert f"reading the inputs in {mine}, which" in capsys.readouterr().err
    mine.rename(moved)
    assert main(["report", "--params", str(params), "--out", str(away / "run")]) == 0
    assert f"reading the inputs in {away / 'mine'}, which" in capsys.readouterr().err
    moved.rename(mine)
    # a scratch run says where it reads
    assert main([*argv, "--inputs", str(mine)]) == 0
    assert f"reads the outputs in {mine}/" in capsys.readouterr().out

    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--inputs", str(tmp_path / "nope")], f"--inputs {tmp_path / 'nope'}: no such folder"),
        (["--inputs", str(mine), "--pipeline"], "run it by hand for --inputs"),
        (["--inputs", str(empty)], "no activations there either: run `steerops extract --"),
    ]
    for extra, message in cases:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert err[0].endswith(f" --out {empty}`)"), err  # the hint writes where it reads
    assert main(["report", "--params", str(params), "--inputs", str(mine)]) == 2
    assert "--inputs DIR needs --out DIR" in capsys.readouterr().err
