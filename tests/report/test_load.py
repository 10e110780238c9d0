"""The coefficient features the report fits predictors on, against numpy on the stored
activations and vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from report_data import SYNTHETIC, synthetic_grid, write_params
from steerops.calibration.store import write_calibration
from steerops.config import load_params
from steerops.report import calibrated, tables
from steerops.report.load import load_results, vector_features
from steerops.vectors.store import save_vectors, vectors_dir
from vector_data import write_activations

# the calibration's two sets differ: cleaning removes only the set `cleaning.dim_set` names
AGGREGATE = {"global_dims": [0, 1, 2], "massive_dims": [3]}


@pytest.mark.parametrize(
    "dim_set, scratch", [("massive", False), ("top_mean", False), ("massive", True)]
)
def test_the_clean_norm_leaves_out_the_dims_cleaning_removes(tmp_path, dim_set, scratch):
    """`scratch`: the results are a scratch run's (`--out`), whose steering read the
    pipeline's vectors: the features come from the pipeline's outputs too."""
    params = load_params(write_params(tmp_path, cleaning={"dim_set": dim_set}))
    if scratch:
        params.set_run_folder(tmp_path / "runs" / "steer-1", named=True)
    synthetic_grid(params.out.parent if scratch else tmp_path)
    if scratch:  # the grid's results moved into the run folder, nothing else
        (params.out.parent / "outputs").rename(params.out)
    frame = load_results(params)
    table = tables.coefficient_table(frame, 68)
    best = table[table["method"] == "mean_diff"].iloc[0]
    src = frame[frame["method"] == "mean_diff"].iloc[0]
    layer = int(best["layer"])
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(12, 6)) + np.array([9.0, 0, 0, 40.0, 0, 0])
    write_activations(
        params.inputs,
        {layer: acts},
        6,
        trait=src["trait"],
        variant=src["vector_variant"],
        position=src["position"],
        component=src["component"],
    )
    vector = rng.normal(size=6)
    folder = vectors_dir(
        params.inputs,
        src["trait"],
        src["vector_variant"],
        src["position"],
        src["component"],
        "mean_diff",
    )
    save_vectors(folder, {layer: torch.tensor(vector)}, {})
    write_calibration(params.inputs, "instruct", {"layers": {}, "aggregate": AGGREGATE})

    # the report's massive-activations section reads the same calibration
    assert calibrated.calibration_record(params)["aggregate"] == AGGREGATE
    features = vector_features(params, table, frame)
    md = features[features["method"] == "mean_diff"].iloc[0]
    removed = AGGREGATE["massive_dims" if dim_set == "massive" else "global_dims"]
    clean = acts.copy()
    clean[:, removed] = 0
    assert md["layer_norm"] == pytest.approx(np.linalg.norm(acts, axis=1).mean(), rel=1e-6)
    assert md["layer_norm_clean"] == pytest.approx(np.linalg.norm(clean, axis=1).mean(), rel=1e-6)
    assert md["abs_mean_proj"] == pytest.approx(abs(acts.mean(0) @ vector), rel=1e-5)


def test_each_steered_model_reads_the_features_of_its_own_vectors(tmp_path):
    """Two steered variants (two models) with cells of the same trait, method and position:
    each model's chosen config is measured on the activations and vectors it steered with,
    not on the first model's."""
    params = load_params(
        write_params(tmp_path, models={"instruct": {"id": "m1"}, "base": {"id": "m2"}})
    )
    spec = {"mean_diff": SYNTHETIC["mean_diff"]}
    # m1 steers with vectors from `base`, m2 with vectors from `instruct`
    for steered, source in (("instruct", "base"), ("base", "instruct")):
        model = {"variant": steered, "id": "m1" if steered == "instruct" else "m2"}
        synthetic_grid(
            tmp_path,
            spec,
            variant=steered,
            settings_of={"mean_diff": {"model": model, "vector_variant": source}},
        )
    frame = load_results(params)
    table = tables.coefficient_table(frame, 68)
    assert sorted(table["model"]) == ["m1", "m2"]
    rng = np.random.default_rng(1)
    expected = {}
    for model, source, offset in (("m1", "base", 3.0), ("m2", "instruct", 50.0)):
        src = frame[frame["model"] == model].iloc[0]
        assert src["vector_variant"] == source
        layer = int(table[table["model"] == model]["layer"].iloc[0])
        acts = rng.normal(size=(10, 6)) + offset
        write_activations(
            params.inputs,
            {layer: acts},
            6,
            trait=src["trait"],
            variant=source,
            position=src["position"],
            component=src["component"],
        )
        vector = rng.normal(size=6)
        folder = vectors_dir(
            params.inputs, src["trait"], source, src["position"], src["component"], "mean_diff"
        )
        save_vectors(folder, {layer: torch.tensor(vector)}, {})
        expected[model] = (np.linalg.norm(acts, axis=1).mean(), abs(acts.mean(0) @ vector))
    features = vector_features(params, table, frame).set_index("model")
    for model, (norm, proj) in expected.items():
        assert features.loc[model, "layer_norm"] == pytest.approx(norm, rel=1e-6)
        assert features.loc[model, "abs_mean_proj"] == pytest.approx(proj, rel=1e-5)


def test_two_steered_variants_of_one_model_id_are_two_cells(tmp_path):
    """base and instruct name the same model (as in the main params) and both were steered:
    the report keeps their cells apart, each with its own numbers."""
    params = load_params(write_params(tmp_path))  # both variants are model "m"
    deltas = {
        "instruct": ([10, 40, 70, 90], [95, 90, 80, 50]),
        "base": ([5, 10, 20, 30], [95, 90, 80, 50]),
    }
    for variant, spec in deltas.items():
        model = {"variant": variant, "id": "m"}
        synthetic_grid(
            tmp_path,
            {"mean_diff": spec},
            variant=variant,
            settings_of={"mean_diff": {"model": model}},
        )
    gap = tables.gap_analysis(load_results(params), 68).set_index("model")
    assert sorted(gap.index) == ["m [base]", "m [instruct]"]
    assert gap.loc["m [instruct]", "delta"] == 70.0 and gap.loc["m [instruct]", "n_configs"] == 6
    assert gap.loc["m [base]", "delta"] == 20.0 and gap.loc["m [base]", "n_configs"] == 6
    # the unit each cell's coefficients are in comes from its own settings
    frame = load_results(params)
    assert set(frame["unit"]) == {"norm"}
    assert set(tables.coefficient_table(frame, 68)["unit"]) == {"norm"}


def test_cells_of_two_components_are_two_cells(tmp_path):
    """Vectors of one method and position steering the residual stream and the attention
    output are two cells, each with its own verdict and numbers."""
    params = load_params(write_params(tmp_path))
    specs = {
        "residual": ([10, 40, 70, 90], [95, 90, 80, 50]),
        "attn_out": ([5, 10, 20, 30], [95, 90, 80, 50]),
    }
    for component, spec in specs.items():
        synthetic_grid(
            tmp_path, {"mean_diff": spec, "mean_diff_cleaned": spec}, component=component
        )
    frame = load_results(params)
    gap = tables.gap_analysis(frame, 68)
    gap = gap[gap["method"] == "mean_diff"].set_index("component")
    assert sorted(gap.index) == ["attn_out", "residual"]
    assert gap.loc["residual", "delta"] == 70.0 and gap.loc["attn_out", "delta"] == 20.0
    assert (gap["n_configs"] == 6).all()
    curve = tables.cleaning_curve(frame, 68)
    assert sorted(curve["component"]) == ["attn_out", "attn_out", "residual", "residual"]
    assert set(curve.groupby("component")["gain_n"].count()) == {1}


def test_configs_of_vectors_changed_since_are_left_out_and_said(tmp_path, capsys):
    """The vectors were rebuilt after the cell was steered: its configs measured the old
    vectors, so the report leaves them out and says why in one line."""
    params = load_params(write_params(tmp_path))
    synthetic_grid(tmp_path, {"mean_diff": SYNTHETIC["mean_diff"]})
    frame = load_results(params)
    assert len(frame) == 6  # the log's own md5: every config
    assert "changed" not in capsys.readouterr().err
    trait, variant = frame["trait"].iloc[0], frame["vector_variant"].iloc[0]
    position, component = frame["position"].iloc[0], frame["component"].iloc[0]
    folder = vectors_dir(params.inputs, trait, variant, position, component, "mean_diff")
    save_vectors(folder, {0: torch.ones(6)}, {})  # another md5 than the log's
    capsys.readouterr()
    assert load_results(params).empty
    err = capsys.readouterr().err
    assert "6 of 6 configs" in err and "vectors changed" in err and "steerops steer" in err


def test_configs_measured_at_a_weight_their_coefficient_no_longer_means_are_left_out(
    tmp_path, capsys
):
    """The layer's norm unit changed (activations extracted again) while the vector file
    stayed the same: configs logged at the old weight are left out and said, those at a
    layer whose unit is the same stay. The log's weights are 10 per unit coefficient."""
    import json

    from steerops.vectors.store import METADATA_FILE

    params = load_params(write_params(tmp_path))
    synthetic_grid(tmp_path, {"mean_diff": SYNTHETIC["mean_diff"]})
    frame = load_results(params)
    trait, variant = frame["trait"].iloc[0], frame["vector_variant"].iloc[0]
    position, component = frame["position"].iloc[0], frame["component"].iloc[0]
    folder = vectors_dir(params.inputs, trait, variant, position, component, "mean_diff")
    folder.mkdir(parents=True)
    layers = {"1": {"mean_norm": 10.0}, "2": {"mean_norm": 10.0}}
    (folder / METADATA_FILE).write_text(json.dumps({"layers": layers}))
    capsys.readouterr()
    assert len(load_results(params)) == len(frame)  # the units as logged: every config
    assert "left out" not in capsys.readouterr().err
    layers["2"]["mean_norm"] = 12.5
    (folder / METADATA_FILE).write_text(json.dumps({"layers": layers}))
    kept = load_results(params)
    steered = frame[(frame["layer"].astype(str) == "2") & (frame["coefficient"] != 0)]
    assert len(kept) == len(frame) - len(steered) and len(steered) > 0
    assert set(kept[kept["coefficient"] != 0]["layer"].astype(str)) == {"1"}
    err = capsys.readouterr().err
    assert f"{len(steered)} of {len(frame)} configs" in err and "no longer means" in err


def test_a_cell_without_the_baseline_its_metrics_name_is_left_out_and_said(tmp_path, capsys):
    """metrics.json names settings the log has no baseline for (a log cut short, or written
    by hand): the cell cannot be compared, and the report says so instead of dropping it
    from every table without a word."""
    import json

    params = load_params(write_params(tmp_path))
    synthetic_grid(tmp_path, {"mean_diff": SYNTHETIC["mean_diff"]})
    assert len(load_results(params)) == 6
    assert "no baseline" not in capsys.readouterr().err
    [log] = (params.out / "steering").rglob("results.jsonl")
    metrics = log.parent / "metrics.json"
    metrics.write_text(json.dumps({"settings_hash": "nope"}))
    assert load_results(params).empty
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "no baseline for settings nope" in line and str(metrics.parent) in line


def test_a_cell_whose_unsteered_model_misses_the_bar_reads_baseline_incoherent(tmp_path):
    """No steered config coherent, and the unsteered model under the bar on the selection
    half too: the report's verdict is the cell's own ("baseline incoherent"), not "needs
    finer coefficients"."""
    from report_data import QUESTIONS
    from steering_data import baseline_entry, cell_log, config_entry, settings_for, write_log
    from steerops import stats
    from steerops.steering.best import cell_metrics, protocol

    params = load_params(write_params(tmp_path))
    settings = settings_for(QUESTIONS)
    entries = [baseline_entry(settings, QUESTIONS, [(0.0, 50.0)] * len(QUESTIONS))]
    for coef in (0.5, 1.0):
        scores = [(100.0, 40.0)] * len(QUESTIONS)
        entries.append(config_entry(settings, "mean_diff", "prompt[-1]", 2, coef, scores))
    write_log(cell_log(tmp_path / "outputs", "mean_diff", "prompt[-1]"), entries)
    frame = load_results(params)
    [row] = tables.gap_analysis(frame, 68).to_dict("records")
    assert row["status"] == stats.BASELINE_INCOHERENT
    records = frame.to_dict("records")
    assert cell_metrics(records, 68, protocol(params))["status"] == row["status"]
