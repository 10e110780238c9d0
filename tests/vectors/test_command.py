"""`steerops vectors` on hand-made activations: every method end to end, MLflow, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from steerops.cli import main
from steerops.config import load_params
from steerops.config.vectors import VectorsConfig
from steerops.vectors import load_vectors, vectors_for
from steerops.vectors.store import vectors_dir
from vector_data import LAYERS, cosine, params_file, stacked, write_activations

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


def test_mean_diff_matches_numpy_reference_end_to_end(tmp_path):
    """`steerops vectors` writes the unit mean difference of the train rows, its raw norm,
    and separation metrics that match a numpy computation."""
    data, n_pos = stacked(n_pos=30, n_neg=24)
    write_activations(tmp_path / "outputs", data, n_pos, n_val=6)
    assert main(["vectors", "--params", str(params_file(tmp_path)), "--methods", "mean_diff"]) == 0
    vectors, meta = load_vectors(
        vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", "mean_diff")
    )
    assert sorted(vectors) == list(LAYERS)
    for layer, x in data.items():
        pos_train, pos_val = x[:24], x[24:30]
        neg_train, neg_val = x[30:48], x[48:]
        gap = pos_train.mean(0) - neg_train.mean(0)
        np.testing.assert_allclose(vectors[layer].numpy(), gap / np.linalg.norm(gap), atol=1e-6)
        unit = gap / np.linalg.norm(gap)
        mid = 0.5 * ((pos_train @ unit).mean() + (neg_train @ unit).mean())
        train_acc = ((pos_train @ unit > mid).sum() + (neg_train @ unit <= mid).sum()) / 42
        val_acc = ((pos_val @ unit > mid).sum() + (neg_val @ unit <= mid).sum()) / 12
        got = meta["layers"][str(layer)]
        assert got["raw_norm"] == pytest.approx(np.linalg.norm(gap), rel=1e-5)
        assert got["midpoint"] == pytest.approx(mid, rel=1e-5, abs=1e-5)
        assert got["train_acc"] == pytest.approx(train_acc)
        assert got["val_acc"] == pytest.approx(val_acc)
        assert got["mean_norm"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-6)
    assert meta["method"] == meta["base_method"] == "mean_diff"
    assert meta["calibration"] is None and meta["hidden_size"] == 12
    assert meta["n"] == {"train_pos": 24, "train_neg": 18, "val_pos": 6, "val_neg": 6}


def test_every_method_end_to_end_with_mlflow(tmp_path):
    """All default methods run through the CLI; MLflow gets one nested run per method with
    per-layer metrics (step = layer) and the vector files as artifacts."""
    import mlflow

    data, n_pos = stacked(n_pos=40, n_neg=40, d=16)
    write_activations(tmp_path / "outputs", data, n_pos, n_val=10)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = params_file(tmp_path, tracking={"enabled": True, "uri": uri})
    assert main(["vectors", "--params", str(path), "--seed", "3"]) == 0
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("toy-refusal").experiment_id])
    children = {r.data.params["method"]: r for r in runs if "method" in r.data.params}
    assert sorted(children) == sorted(map(str, VectorsConfig().methods))
    for method, run in children.items():
        _, meta = vectors_for(load_params(path).out, TRAIT, "base", POSITION, "residual", method)
        assert meta["seed"] == 3
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(LAYERS)
        assert {m.step: m.value for m in history} == {
            int(k): v["val_acc"] for k, v in meta["layers"].items()
        }
        files = {
            a.path for a in client.list_artifacts(run.info.run_id, f"vectors/prompt_m1/{method}")
        }
        assert files == {
            f"vectors/prompt_m1/{method}/vectors.safetensors",
            f"vectors/prompt_m1/{method}/metadata.json",
        }
        assert run.data.tags["dvc.hash.activations"]
        assert run.data.params["n_val_pos"] == run.data.params["n_val_neg"] == "10"
        assert run.data.params["n_train_pos"] == "30"
        if method == "random_baseline":  # each layer has its own seed
            vectors, _ = vectors_for(
                load_params(path).out, TRAIT, "base", POSITION, "residual", method
            )
            assert cosine(vectors[0], vectors[1]) < 0.9
        best = meta["best"]
        assert run.data.metrics["best_layer"] == best["layer"]
        assert run.data.metrics["best_heldout_n"] == best["heldout_n"] == 10
        if method != "random_baseline":
            assert run.data.metrics["best_heldout_acc"] >= 0.9, method


def test_a_rerun_that_writes_the_same_vectors_logs_no_run(tmp_path, capsys):
    """A rerun whose every folder is written again byte for byte, and which a FINISHED run
    holds, opens no MLflow run and says so; one that changes a folder (another seed) is
    logged, and so is one whose last run was not FINISHED (killed after its writes)."""
    import mlflow

    data, n_pos = stacked(n_pos=20, n_neg=20)
    write_activations(tmp_path / "outputs", data, n_pos, n_val=6)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = str(params_file(tmp_path, tracking={"enabled": True, "uri": uri}))
    argv = ["vectors", "--params", path, "--methods", "mean_diff,random_baseline"]
    client = mlflow.MlflowClient(uri)

    def runs() -> list:
        experiment = client.get_experiment_by_name("toy-refusal").experiment_id
        return client.search_runs([experiment], max_results=1000)

    assert main(argv) == 0
    first = len(runs())
    assert first == 3  # the invocation and one run per method
    capsys.readouterr()
    assert main(argv) == 0
    assert len(runs()) == first
    assert "written again byte for byte: no new MLflow run" in capsys.readouterr().err
    assert main([*argv, "--seed", "5"]) == 0  # random_baseline's draw changes
    assert len(runs()) == 2 * first
    assert "no new MLflow run" not in capsys.readouterr().err
    # the runs holding the latest bytes ended otherwise (a process killed after its writes)
    for run in runs()[:first]:
        client.set_terminated(run.info.run_id, status="KILLED")
    assert main([*argv, "--seed", "5"]) == 0
    assert len(runs()) == 3 * first


def test_cli_errors_are_one_line_and_keep_outputs(tmp_path, capsys):
    data, n_pos = stacked()
    write_activations(tmp_path / "outputs", data, n_pos)
    path = str(params_file(tmp_path))
    assert main(["vectors", "--params", path, "--methods", "mean_diff"]) == 0
    target = (
        vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", "mean_diff")
        / "vectors.safetensors"
    )
    before = target.read_bytes()
    capsys.readouterr()
    for argv, expected in [
        (["--methods", "mean_diff,nope"], "unknown method 'nope'"),
        (["--position", "response[:5]"], "activations not found: "),
        (["--position", "middle[0]"], "position 'middle[0]'"),
        (["--trait", "refusal"], "trait 'refusal': expected CATEGORY/NAME"),
        (["--methods", "mean_diff_top1"], "steerops calibrate --variant instruct"),
        # a run of its own reads its own activations: the extract it needs writes there
        (
            ["--out", str(tmp_path / "mine")],
            f"--position 'prompt[-1]' --params {path} --out {tmp_path}/mine`",
        ),
    ]:
        assert main(["vectors", "--params", path, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("steerops vectors: error: ") and expected in err
        assert err.count("\n") == 1
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    ("stage", "names", "expected"),
    [
        ("vectors", "mean_diff,mean_diff_top1", "steerops calibrate --variant instruct"),
        ("clean", "mean_diff_dims1,probe_dims1", "probe"),  # probe's vectors were never stored
    ],
)
def test_a_method_that_cannot_be_built_fails_before_any_write_or_run(
    tmp_path, capsys, stage, names, expected
):
    data, n_pos = stacked()
    write_activations(tmp_path / "outputs", data, n_pos)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = str(params_file(tmp_path, tracking={"enabled": True, "uri": uri}))
    assert main(["vectors", "--params", path, "--methods", "mean_diff"]) == 0
    folder = vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", "mean_diff")
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("toy-refusal").experiment_id
    runs = len(client.search_runs([experiment]))
    capsys.readouterr()
    flag = "--methods" if stage == "vectors" else "--variants"
    assert main([stage, "--params", path, flag, names]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps
    assert len(client.search_runs([experiment])) == runs


def test_a_damaged_calibration_is_refused_before_the_run_even_for_plain_methods(tmp_path, capsys):
    """Plain methods read the calibration too (massive_share): a hand-edited one is one line
    before any MLflow run opens or any vector is written, not a failed run."""
    from steerops.calibration.store import calibration_file

    data, n_pos = stacked()
    write_activations(tmp_path / "outputs", data, n_pos)
    file = calibration_file(tmp_path / "outputs", "instruct")
    file.parent.mkdir(parents=True)
    file.write_text('{"aggregate": {"massive_by_layer": {"0": "x"}}}')
    line = _refused_before_the_run(tmp_path, capsys, "mean_diff")
    assert "aggregate.massive_by_layer.0" in line


def _refused_before_the_run(tmp_path, capsys, methods: str) -> str:
    """`steerops vectors --methods METHODS` with MLflow tracking on, on the activations under
    tmp_path: refused with one line before any run opens or any vector is written."""
    from conftest import refused_up_front

    path = params_file(
        tmp_path, tracking={"enabled": True, "uri": f"sqlite:///{tmp_path}/mlflow.db"}
    )
    argv = ["vectors", "--params", str(path), "--methods", methods]
    return refused_up_front(argv, tmp_path, capsys, outputs="outputs/vectors")


def test_positive_and_negative_examples_with_the_same_activations_are_refused_up_front(
    tmp_path, capsys
):
    """The same prompts on both sides (read where no response differs) give a mean difference
    of rounding noise; every method would fit it. One line before any run or write."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 12)) * 40
    # the negatives are the positives in another order: their sums differ only by rounding
    data = {layer: np.concatenate([rows, rows[::-1]]) for layer in LAYERS}
    write_activations(tmp_path / "outputs", data, 30)
    line = _refused_before_the_run(tmp_path, capsys, "mean_diff,pca")
    assert "positive and negative examples' activations do not differ at any layer" in line
    assert TRAIT in line and POSITION in line


def test_a_layer_where_the_classes_do_not_differ_is_named_up_front(tmp_path, capsys):
    """One layer whose window sees only what both sides share (a sliding window shorter
    than the distance to where the prompts differ): mean_diff scaled its rounding noise to
    a unit vector and the probe failed after mean_diff was rewritten. One line naming the
    layer, before any run or write."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 12)) * 40
    data = {
        layer: np.concatenate([rows, rows[::-1] + (0 if layer == LAYERS[0] else 5)])
        for layer in LAYERS
    }
    write_activations(tmp_path / "outputs", data, 30)
    line = _refused_before_the_run(tmp_path, capsys, "mean_diff,probe")
    assert f"do not differ at layer(s) {LAYERS[0]} " in line
    assert "leave them out of extraction.layers" in line
