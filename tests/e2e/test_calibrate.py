"""`steerops calibrate` on the toy world against a reference computation; bad prompts keep
outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import refused_up_front
from steerops.cli import main
from steerops.io import read_json


def test_calibrate_stage_on_toy_world(toy_params, toy_world, monkeypatch):
    from steerops.config import load_params
    from steerops.models.generation import generate_responses
    from steerops.models.loading import load_model

    # mlflow.set_tracking_uri exports this variable, which steerops honours: pin it to this
    # test's store (and restore it afterwards) so runs of other tests cannot leak in.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{toy_params.parent / 'mlflow.db'}")
    # The first 16 calibration prompts keep the stage and the reference below quick.
    lines = (toy_world / "calibration.jsonl").read_text().splitlines()[:16]
    prompts_file = toy_params.parent / "calibration.jsonl"
    prompts_file.write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                "calibrate",
                "--params",
                str(toy_params),
                "--variant",
                "instruct",
                "--prompts",
                str(prompts_file),
            ]
        )
        == 0
    )
    params = load_params(toy_params)
    folder = params.out / "calibration" / "instruct"
    record = read_json(folder / "calibration.json")
    assert record["variant"] == "instruct"
    assert sorted(record["layers"], key=int) == ["0", "1", "2", "3"]
    hidden = read_json(toy_world / "model" / "config.json")["hidden_size"]
    assert (record["hidden_size"], record["num_layers"]) == (hidden, 4)  # what clean checks
    for stats in record["layers"].values():
        assert set(stats) >= {
            "top_dims",
            "top_values",
            "relative",
            "max_median_ratio",
            "median_abs",
            "top_max",
            "massive_dims",
            "norm",
        }
        assert len(stats["top_dims"]) == params.calibration.top_k
        assert all(0 <= d < hidden for d in stats["top_dims"])
    agg = record["aggregate"]
    counts: dict[int, int] = {}
    for dims in agg["top_dims_by_layer"].values():
        for d in dims[:5]:
            counts[d] = counts.get(d, 0) + 1
    assert set(agg["global_dims"]) == {d for d, c in counts.items() if c >= 3}
    from matplotlib.image import imread

    image = imread(folder / "heatmap.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    # Independent reference: the same greedy responses, one unpadded forward each with
    # output_hidden_states (hidden_states[L + 1] is block L's output, except the last,
    # which HF returns after the final norm).
    loaded = load_model(params, "instruct")
    prompts = [json.loads(line)["prompt"] for line in lines]
    done = generate_responses(
        loaded.model,
        loaded.tokenizer,
        prompts,
        max_new_tokens=params.calibration.max_new_tokens,
        progress=False,
    )
    per_layer = {layer: [] for layer in range(3)}
    for c in done:
        ids = torch.tensor([c.prompt_ids + c.response_ids])
        with torch.no_grad():
            hidden = loaded.model(ids, output_hidden_states=True).hidden_states
        for layer in per_layer:
            per_layer[layer].append(hidden[layer + 1][0].double().numpy())  # every token
    assert record["n_tokens"] == sum(len(c.prompt_ids) + len(c.response_ids) for c in done)
    assert record["n_response_tokens"] == sum(len(c.response_ids) for c in done)
    for layer, chunks in per_layer.items():
        x = np.concatenate(chunks)
        stats = record["layers"][str(layer)]
        mean = x.mean(0)
        np.testing.assert_allclose(
            stats["top_values"], mean[stats["top_dims"]], rtol=1e-3, atol=1e-4
        )
        assert np.abs(mean[stats["top_dims"][-1]]) >= np.sort(np.abs(mean))[-5] - 1e-4
        assert stats["norm"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-4)
        assert stats["median_abs"] == pytest.approx(np.median(np.abs(x)), rel=5e-3)
        peak = np.abs(x).max(0)
        assert [e["dim"] for e in stats["top_max"]] == np.argsort(-peak)[
            : len(stats["top_max"])
        ].tolist()
        # The toy has no massive activations: nothing passes 100 and 1000x the median.
        assert stats["massive_dims"] == [] and peak.max() < 1000 * np.median(np.abs(x))

    import mlflow

    runs = mlflow.search_runs(experiment_names=[params.experiment], output_format="list")
    run = next(r for r in runs if r.data.tags.get("steerops.stage") == "calibrate")
    assert "dvc.hash.calibration_prompts" in run.data.tags
    from steerops.tracking.lineage import dvc_md5

    model = params.path(params.variant(params.calibration.variant).id)
    assert run.data.tags["dvc.hash.model"] == dvc_md5(model)  # joined to the weights it read
    assert run.data.params["massive_threshold"] == "100"  # one number format in every run
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"calibration.json", "heatmap.png"} <= artifacts
    assert run.data.metrics["seconds"] > 0  # the wall time is the run's, not the file's
    # the same inputs calibrated again give the same file: cleaned vectors, which record
    # its MD5, stay current (a wall time in it made every rerun "calibrated again since?")
    first = (folder / "calibration.json").read_bytes()
    argv = ["calibrate", "--params", str(toy_params), "--variant", "instruct"]
    assert main([*argv, "--prompts", str(prompts_file)]) == 0
    assert (folder / "calibration.json").read_bytes() == first


def test_bad_calibration_prompts_name_the_line_and_keep_outputs(tmp_path, toy_params, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "how do i bake a cake ?"}\n{"text": "no prompt key"}\n')
    assert main(["calibrate", "--params", str(toy_params), "--prompts", str(bad)]) == 2
    assert f"{bad}:2: each line needs a string 'prompt'" in capsys.readouterr().err
    assert main(["calibrate", "--params", str(toy_params), "--variant", "nope"]) == 2
    assert "models.nope: unknown model variant" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "calibration").exists()


def test_a_sequence_rule_no_dim_could_meet_is_refused_before_loading(
    tmp_path, toy_params, capsys, no_model_loads
):
    prompts = tmp_path / "two.jsonl"
    prompts.write_text('{"prompt": "hello ?"}\n{"prompt": "how do i bake a cake ?"}\n')
    argv = ["calibrate", "--params", str(toy_params), "--prompts", str(prompts)]
    line = refused_up_front([*argv, "--massive-min-sequences", "3"], tmp_path, capsys)
    assert line.endswith(
        f"--massive-min-sequences: 3 is more than the 2 calibration prompts in {prompts}, so "
        "no dim could be massive; lower it or add prompts (params: "
        "calibration.massive_min_sequences)"
    )


def test_a_global_rule_no_dim_could_meet_is_refused_before_loading(
    tmp_path, toy_params, capsys, no_model_loads
):
    argv = ["calibrate", "--params", str(toy_params), "--global-min-layers", "99"]
    line = refused_up_front(argv, tmp_path, capsys)  # read from the config: no run, no load
    assert line.endswith(
        "--global-min-layers: 99 is more than the model's 4 layers "
        "(params: calibration.global_min_layers)"
    )
