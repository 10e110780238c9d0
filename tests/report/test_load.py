"""The coefficient features the report fits predictors on, against numpy on the stored
activations and vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from report_data import synthetic_grid, write_params
from steerops.calibration.store import write_calibration
from steerops.config import load_params
from steerops.report import tables
from steerops.report.load import load_results, vector_features
from steerops.vectors.store import save_vectors, vectors_dir
from vector_data import write_activations

# the calibration's two sets differ: cleaning removes only the set `cleaning.dim_set` names
AGGREGATE = {"global_dims": [0, 1, 2], "massive_dims": [3]}


@pytest.mark.parametrize("dim_set", ["massive", "top_mean"])
def test_the_clean_norm_leaves_out_the_dims_cleaning_removes(tmp_path, dim_set):
    synthetic_grid(tmp_path)
    params = load_params(write_params(tmp_path, cleaning={"dim_set": dim_set}))
    frame = load_results(params)
    table = tables.coefficient_table(frame, 68)
    best = table[table["method"] == "mean_diff"].iloc[0]
    src = frame[frame["method"] == "mean_diff"].iloc[0]
    layer = int(best["layer"])
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(12, 6)) + np.array([9.0, 0, 0, 40.0, 0, 0])
    write_activations(
        params.out,
        {layer: acts},
        6,
        trait=src["trait"],
        variant=src["vector_variant"],
        position=src["position"],
        component=src["component"],
    )
    vector = rng.normal(size=6)
    folder = vectors_dir(
        params.out,
        src["trait"],
        src["vector_variant"],
        src["position"],
        src["component"],
        "mean_diff",
    )
    save_vectors(folder, {layer: torch.tensor(vector)}, {})
    write_calibration(params.out, "instruct", {"layers": {}, "aggregate": AGGREGATE})

    features = vector_features(params, table, frame)
    md = features[features["method"] == "mean_diff"].iloc[0]
    removed = AGGREGATE["massive_dims" if dim_set == "massive" else "global_dims"]
    clean = acts.copy()
    clean[:, removed] = 0
    assert md["layer_norm"] == pytest.approx(np.linalg.norm(acts, axis=1).mean(), rel=1e-6)
    assert md["layer_norm_clean"] == pytest.approx(np.linalg.norm(clean, axis=1).mean(), rel=1e-6)
    assert md["abs_mean_proj"] == pytest.approx(abs(acts.mean(0) @ vector), rel=1e-5)
