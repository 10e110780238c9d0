"""The massive set in cleaning (`cleaning.dim_set`), the `norm` unit the vectors carry, and
the warnings: vectors mostly in massive dims, windows holding a massive token, old units."""

from __future__ import annotations

import logging

import numpy as np

from steerops.calibration.store import calibration_file
from steerops.cli import main
from steerops.io import read_json, write_json
from steerops.vectors import load_vectors
from steerops.vectors.store import vectors_dir
from vector_data import POSITION, TRAIT, params_file, write_activations

D = 12
MASSIVE_BY_LAYER = {"0": [3], "1": [3, 7], "2": []}


def write_calibration(out) -> None:
    top = {"0": [5, 3, 1], "1": [5, 7, 3], "2": [5, 1, 3]}
    write_json(
        calibration_file(out, "instruct"),
        {
            "variant": "instruct",
            "layers": {k: {"massive_dims": v} for k, v in MASSIVE_BY_LAYER.items()},
            "aggregate": {
                "top_dims_by_layer": top,
                "global_dims": [5, 1],
                "massive_dims": [3, 7],
                "massive_by_layer": MASSIVE_BY_LAYER,
            },
        },
    )


def data(seed: int = 0) -> dict[int, np.ndarray]:
    """Classes apart mostly along dim 3 (a massive dim at layers 0 and 1), a little along
    dims 0-2."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in (0, 1, 2):
        x = rng.normal(size=(60, D))
        x[:30, 3] += 40.0
        x[:30, :3] += 1.0
        out[layer] = x
    return out


def setup(tmp_path, token_norm: bool = True, **blocks) -> str:
    out = tmp_path / "outputs"
    directory = write_activations(out, data(), 30, n_val=5)
    if token_norm:
        meta = read_json(directory / "metadata.json")
        meta["token_norm"] = {
            str(k): {
                "token_norm": 10.0 + k,
                "tokens": 600,
                "massive_tokens": 60,
                "window_massive": 60 if k == 1 else 0,
                # over the unit's 1.25 bar at layer 2 only (8.8 vs 12, 1.36x), under at 0 and 1
                "example_median": {0: 9.0, 1: 9.0, 2: 8.8}[k],
            }
            for k in (0, 1, 2)
        }
        write_json(directory / "metadata.json", meta)
    write_calibration(out)
    path = str(params_file(tmp_path, **blocks))
    assert main(["vectors", "--params", path, "--methods", "mean_diff"]) == 0
    return path


def test_a_norm_unit_that_is_not_finite_is_warned(tmp_path):
    """An activation that overflowed at a prompt token outside the window leaves the vector
    finite and the unit NaN: said at the vectors, refused by steering in `norm` units."""
    out = tmp_path / "outputs"
    directory = write_activations(out, data(), 30, n_val=5)
    meta = read_json(directory / "metadata.json")
    meta["token_norm"] = {
        str(k): {"token_norm": float("nan") if k == 1 else 10.0, "tokens": 600} for k in (0, 1, 2)
    }
    write_json(directory / "metadata.json", meta)
    write_calibration(out)
    assert main(["vectors", "--params", str(params_file(tmp_path)), "--methods", "mean_diff"]) == 0
    _, meta = stored(tmp_path, "mean_diff")
    # NaN is null in JSON; the unit's kind still says the per-token norm, so neither the
    # pooled rows' norm stands in for it nor does the line blame old activations
    assert meta["layers"]["1"]["mean_norm"] is None
    assert meta["layers"]["1"]["norm_unit"] == "token"
    assert not any(line.startswith("pooled_unit") for line in meta["warnings"])
    unit = [line for line in meta["warnings"] if line.startswith("nonfinite_unit")]
    assert unit == [
        "nonfinite_unit: mean_diff prompt[-1]: the norm unit is not finite at layers 1 (an "
        "activation overflowed in the model's dtype at a prompt token, or no prompt token was "
        "kept): steering in `norm` units refuses these layers; load the model in bfloat16 or "
        "float32 (models.<variant>.dtype) and extract again"
    ]


def stored(tmp_path, method):
    return load_vectors(
        vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", method)
    )


def test_cleaning_uses_the_chosen_dim_set(tmp_path):
    path = setup(tmp_path / "massive", cleaning={"dim_set": "massive"})
    variants = "mean_diff_top1,mean_diff_layertop2,mean_diff_cleaned"
    assert main(["clean", "--params", path, "--variants", variants]) == 0
    _, top1 = stored(tmp_path / "massive", "mean_diff_top1")
    assert top1["calibration"]["dim_set"] == "massive"
    assert top1["calibration"]["dims_removed"] == {"0": [3], "1": [3], "2": [3]}
    _, layertop = stored(tmp_path / "massive", "mean_diff_layertop2")
    assert layertop["calibration"]["dims_removed"] == MASSIVE_BY_LAYER  # fewer where fewer
    vectors, cleaned = stored(tmp_path / "massive", "mean_diff_cleaned")
    assert cleaned["calibration"]["dims_removed"]["2"] == [3, 7]
    assert float(vectors[0][3]) == 0.0 and float(vectors[1][7]) == 0.0
    # The default set is the largest-mean one.
    path = setup(tmp_path / "mean")
    assert main(["clean", "--params", path, "--variants", "mean_diff_top1"]) == 0
    _, top1 = stored(tmp_path / "mean", "mean_diff_top1")
    assert top1["calibration"]["dim_set"] == "top_mean"
    assert top1["calibration"]["dims_removed"]["0"] == [5]


def test_norm_unit_and_warnings(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="steerops.vectors.warnings"):
        setup(tmp_path / "new")
    vectors, meta = stored(tmp_path / "new", "mean_diff")
    for k in ("0", "1", "2"):
        assert meta["layers"][k]["mean_norm"] == 10.0 + int(k)  # the per-token unit
        assert meta["layers"][k]["norm_unit"] == "token"
        share = (
            float(vectors[int(k)][MASSIVE_BY_LAYER[k]].pow(2).sum()) if MASSIVE_BY_LAYER[k] else 0
        )
        assert meta["layers"][k]["massive_share"] == round(share, 6)
    assert meta["layers"]["0"]["massive_share"] > 0.9
    assert [meta["layers"][k]["unit_median"] for k in ("0", "1", "2")] == [9.0, 9.0, 8.8]
    kinds = [line.split(":")[0] for line in meta["warnings"]]
    assert kinds == ["massive_vector", "massive_window", "skewed_unit"]
    assert "at layers 0,1 " in meta["warnings"][0]  # dim 3 is not massive at layer 2
    assert "60/60 examples (layers 1)" in meta["warnings"][1]
    assert (
        "is up to 1.36x the median example's median token norm (layer 2; over 1.25x at "
        "layers 2)" in meta["warnings"][2]
    )
    assert [r.getMessage() for r in caplog.records] == meta["warnings"]
    # Activations without the per-token norm keep the pooled rows' norm, and say so.
    setup(tmp_path / "old", token_norm=False)
    _, meta = stored(tmp_path / "old", "mean_diff")
    pooled = np.linalg.norm(data()[0], axis=1).mean()
    assert meta["layers"]["0"]["mean_norm"] == meta["layers"]["0"]["pooled_norm"]
    assert abs(meta["layers"]["0"]["mean_norm"] - pooled) < 1e-4
    assert meta["layers"]["0"]["norm_unit"] == "pooled_window"
    assert meta["layers"]["0"]["unit_median"] is None  # no check of a pooled unit
    assert meta["warnings"][-1].startswith("pooled_unit: mean_diff prompt[-1]: ")
