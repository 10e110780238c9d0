"""`steerops clean` and cleaned method names: which dims go, before or after fitting.

Calibration files are synthetic, written in the calibration.json contract; activations
come from the helpers in test_vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from steerops.calibration.store import calibration_file
from steerops.cli import main
from steerops.config import load_params
from steerops.io import file_md5, write_json
from steerops.vectors import load_vectors, vectors_for
from steerops.vectors.store import vectors_dir
from vector_data import LAYERS, POSITION, TRAIT, cosine, params_file, stacked, write_activations

D = 12
TOP_BY_LAYER = {"0": [3, 7, 1], "1": [7, 3, 2], "2": [3, 5, 7]}
GLOBAL = [3, 7]


def write_calibration(
    out: Path, variant: str = "instruct", global_dims=GLOBAL, top_by_layer=TOP_BY_LAYER
) -> Path:
    path = calibration_file(out, variant)
    write_json(
        path,
        {
            "variant": variant,
            "model": {"id": "synthetic"},
            "layers": {
                k: {
                    "top_dims": v,
                    "top_values": [100.0] * len(v),
                    "relative": [],
                    "max_median_ratio": 100.0,
                    "massive_dims": v[:1],
                    "norm": 1.0,
                }
                for k, v in top_by_layer.items()
            },
            "aggregate": {
                "top_dims_by_layer": top_by_layer,
                "global_dims": global_dims,
                "global_counts": {str(d): 3 for d in global_dims},
                "rule": {},
            },
        },
    )
    return path


def suppressor_data(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes along u (mostly dim 4); a nuisance e is added to dim 4 and is also what
    varies in the massive dim 3 (50 + e), so a probe that sees dim 3 can cancel e in dim 4."""
    rng = np.random.default_rng(seed)
    u = np.zeros(D)
    u[4], u[[0, 1, 2]] = 1.0, 0.5
    u /= np.linalg.norm(u)

    def one_class(sign: float) -> np.ndarray:
        x = rng.normal(size=(n, D)) + sign * u
        e = 3 * rng.normal(size=n)
        x[:, 4] += e
        x[:, 3] = 50 + e
        return x

    return one_class(1.0), one_class(-1.0)


def setup(
    tmp_path: Path,
    data=None,
    n_pos: int = 30,
    calibration: bool = True,
    methods: str = "mean_diff,probe",
) -> str:
    out = tmp_path / "outputs"
    if data is None:
        data, n_pos = stacked(d=D, massive={3: 80.0, 7: 40.0})
    write_activations(out, data, n_pos, n_val=5)
    if calibration:
        write_calibration(out)
    path = str(params_file(tmp_path))
    assert main(["vectors", "--params", path, "--methods", methods]) == 0
    return path


def stored(tmp_path: Path, method: str):
    return load_vectors(
        vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", method)
    )


def test_mean_diff_pre_and_post_cleaning_agree(tmp_path, capsys):
    """mean_diff is linear: zeroing dims in every activation and then averaging gives the
    same vector as averaging and then zeroing. The only difference is the order of
    normalisation: post-cleaning unit-normalises the full mean difference, zeroes dims and
    renormalises, pre-cleaning normalises once after zeroing. The directions are therefore
    equal (to float rounding), and so are the raw norms (both the norm after zeroing)."""
    pos, neg = suppressor_data()
    path = setup(tmp_path, {0: np.concatenate([pos, neg])}, n_pos=len(pos))
    assert (
        main(["clean", "--params", path, "--variants", "mean_diff_cleaned,mean_diff_preclean"]) == 0
    )
    # the command says what each cleaned method zeroed
    out = capsys.readouterr().out
    for mode in ("post", "pre"):
        said = f"cleaned (top_mean set of calibration instruct, {mode}-extraction): dims 3, 7"
        assert f"{said} at layers 0\n" in out
    post, post_meta = stored(tmp_path, "mean_diff_cleaned")
    pre, pre_meta = stored(tmp_path, "mean_diff_preclean")
    assert cosine(post[0], pre[0]) > 1 - 1e-6
    np.testing.assert_allclose(post[0].numpy(), pre[0].numpy(), atol=1e-6)
    assert post_meta["layers"]["0"]["raw_norm"] == pytest.approx(
        pre_meta["layers"]["0"]["raw_norm"], rel=1e-5
    )
    assert post_meta["calibration"]["mode"] == "post" and post_meta["refit"] is False
    assert pre_meta["calibration"]["mode"] == "pre" and pre_meta["refit"] is True
    # and both are the numpy mean difference with dims 3 and 7 zeroed
    train = np.r_[0:95, 100:195]
    x = np.concatenate([pos, neg])[train]
    gap = x[:95].mean(0) - x[95:].mean(0)
    gap[GLOBAL] = 0
    np.testing.assert_allclose(pre[0].numpy(), gap / np.linalg.norm(gap), atol=1e-6)


def test_probe_pre_and_post_cleaning_differ(tmp_path, capsys):
    """The logistic fit is not linear in the data: with the massive dim 3 available, the
    probe uses it to cancel the nuisance it shares with dim 4 and so keeps a large weight
    on dim 4; zeroing dim 3 afterwards keeps that weight. Fitting without dim 3 (preclean)
    re-weights the remaining dims: dim 4 is now noisy and gets much less weight."""
    pos, neg = suppressor_data()
    path = setup(tmp_path, {0: np.concatenate([pos, neg])}, n_pos=len(pos))
    capsys.readouterr()
    assert main(["clean", "--params", path, "--variants", "probe_dims3,probe_preclean_dims3"]) == 0
    out = capsys.readouterr().out  # dims named in the method: no calibration set is named
    for mode in ("post", "pre"):
        assert f"cleaned (dims named in the method, {mode}-extraction): dims 3 at layers 0\n" in out
    post, _ = stored(tmp_path, "probe_dims3")
    pre, _ = stored(tmp_path, "probe_preclean_dims3")
    post, pre = post[0].numpy(), pre[0].numpy()
    assert post[3] == 0 and pre[3] == 0
    assert cosine(post, pre) < 0.95
    assert abs(post[4]) > 3 * abs(pre[4])

    # both match sklearn on unit-norm rows (train split), cleaned after / before the fit
    x = np.concatenate([pos, neg])[np.r_[0:95, 100:195]]
    y = [1] * 95 + [0] * 95

    def fit(rows: np.ndarray) -> np.ndarray:
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return LogisticRegression(max_iter=5000).fit(rows, y).coef_[0]

    ref_post = fit(x)
    ref_post[3] = 0
    x_clean = x.copy()
    x_clean[:, 3] = 0
    assert cosine(post, ref_post) > 0.9999
    assert cosine(pre, fit(x_clean)) > 0.9999


@pytest.mark.parametrize(
    "variant, dims_by_layer",
    [
        ("mean_diff_top1", {"0": [3], "1": [3], "2": [3]}),
        ("probe_top2", {"0": [3, 7], "1": [3, 7], "2": [3, 7]}),
        ("mean_diff_layertop2", {"0": [3, 7], "1": [7, 3], "2": [3, 5]}),
        ("probe_cleaned", {"0": [3, 7], "1": [3, 7], "2": [3, 7]}),
        ("mean_diff_dims1-5", {"0": [1, 5], "1": [1, 5], "2": [1, 5]}),
    ],
)
def test_post_cleaning_zeroes_dims_and_renormalises(tmp_path, variant, dims_by_layer):
    """Calibrated on `instruct`, extracted from `base`: the metadata says so."""
    path = setup(tmp_path)
    assert main(["clean", "--params", path, "--variants", variant]) == 0
    vectors, meta = stored(tmp_path, variant)
    base_name = meta["base_method"]
    base, base_meta = stored(tmp_path, base_name)
    calibration = meta["calibration"]
    assert calibration["dims_removed"] == dims_by_layer
    assert calibration["mode"] == "post"
    if variant.endswith("dims1-5"):
        assert calibration["variant"] is None and calibration["file"] is None
    else:
        assert calibration["variant"] == "instruct" and meta["variant"] == "base"
        # named from the project folder, so the artifact is the same on every machine
        assert calibration["file"] == "outputs/calibration/instruct/calibration.json"
        assert tmp_path / calibration["file"] == calibration_file(tmp_path / "outputs", "instruct")
        assert not Path(meta["activations"]["dir"]).is_absolute()
        assert (tmp_path / meta["activations"]["dir"]).is_dir()
    for layer in LAYERS:
        expected = base[layer].numpy().copy()
        expected[dims_by_layer[str(layer)]] = 0
        kept = np.linalg.norm(expected)
        np.testing.assert_allclose(vectors[layer].numpy(), expected / kept, atol=1e-6)
        assert meta["layers"][str(layer)]["raw_norm"] == pytest.approx(
            base_meta["layers"][str(layer)]["raw_norm"] * kept, rel=1e-5
        )
        assert (
            meta["layers"][str(layer)]["mean_norm"] == base_meta["layers"][str(layer)]["mean_norm"]
        )


def test_vectors_accepts_cleaned_names_and_matches_clean(tmp_path):
    """The same name works in both stages: refitting (vectors) and reusing the stored base
    vectors (clean) give the same post-cleaned vectors to the bit (a last-bit difference is
    a new vector to the results logs); preclean zeroes even the methods that ignore the
    data."""
    path = setup(tmp_path, methods="mean_diff,random_baseline")
    assert main(["clean", "--params", path, "--variants", "mean_diff_top2"]) == 0
    from_clean, _ = stored(tmp_path, "mean_diff_top2")
    assert (
        main(["vectors", "--params", path, "--methods", "mean_diff_top2,random_baseline_preclean"])
        == 0
    )
    refit, meta = stored(tmp_path, "mean_diff_top2")
    assert meta["refit"] is True
    for layer in LAYERS:
        assert np.array_equal(refit[layer].numpy(), from_clean[layer].numpy()), layer
    random_pre, _ = stored(tmp_path, "random_baseline_preclean")
    assert all(float(v[GLOBAL].abs().max()) == 0 for v in random_pre.values())
    params = load_params(path)
    same, _ = vectors_for(params.out, TRAIT, "base", POSITION, "residual", "mean_diff_top2")
    assert all(np.array_equal(same[k], refit[k]) for k in LAYERS)


def run_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cleaning_errors_are_one_line(tmp_path, capsys):
    path = setup(tmp_path, calibration=False, methods="mean_diff")
    out = tmp_path / "outputs"
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_top1"], capsys)
    assert err == (
        f"steerops clean: error: method 'mean_diff_top1' needs calibration: "
        f"{calibration_file(out, 'instruct')} not found (run `steerops calibrate "
        f"--variant instruct` first)\n"
    )
    err = run_error(
        [
            "clean",
            "--params",
            path,
            "--variants",
            "mean_diff_top1",
            "--calibration-variant",
            "base",
        ],
        capsys,
    )
    assert "steerops calibrate --variant base" in err
    # explicit dims need no calibration
    assert main(["clean", "--params", path, "--variants", "mean_diff_dims0"]) == 0

    write_calibration(out, global_dims=[3, 40])  # 40 >= hidden size 12
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_cleaned"], capsys)
    assert "dim 40 (layer 0) is outside the activations' hidden size 12" in err
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_dims12"], capsys)
    assert "dim 12" in err and "hidden size 12" in err
    write_calibration(out)
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_top3"], capsys)
    assert "top3 asks for 3 dims but aggregate.global_dims has 2" in err
    write_calibration(out, top_by_layer={"0": [3]})
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_layertop1"], capsys)
    assert "aggregate.top_dims_by_layer has no layer 1" in err

    err = run_error(["clean", "--params", path, "--variants", "probe_top1"], capsys)
    probe_dir = vectors_dir(out, TRAIT, "base", POSITION, "residual", "probe")
    assert f"vectors not found: {probe_dir / 'vectors.safetensors'}" in err
    assert "steerops vectors --methods probe" in err
    err = run_error(["clean", "--params", path, "--variants", "mean_diff"], capsys)
    assert "'mean_diff' has no cleaning suffix" in err
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_top1x"], capsys)
    assert "bad cleaning suffix 'top1x'" in err

    # activations re-extracted after the base vectors were made: stale, not silently mixed
    data, n_pos = stacked(d=D, massive={3: 10.0})
    write_activations(out, {k: v + 1 for k, v in data.items()}, n_pos)
    err = run_error(["clean", "--params", path, "--variants", "mean_diff_top1"], capsys)
    assert "computed from other activations" in err
    assert not vectors_dir(out, TRAIT, "base", POSITION, "residual", "mean_diff_top1").exists()


def test_post_cleaning_refuses_a_base_fitted_with_other_params(tmp_path, capsys):
    """`vectors --seed 5` then `clean` at seed 0 (or another probe_c) would post-clean the
    seed-5 vectors under metadata saying seed 0: refused, naming the param. The record also
    says which calibration content the dims came from."""
    path = setup(tmp_path, methods="random_baseline")
    out = tmp_path / "outputs"
    assert main(["vectors", "--params", path, "--methods", "random_baseline", "--seed", "5"]) == 0
    err = run_error(["clean", "--params", path, "--variants", "random_baseline_top1"], capsys)
    assert "fitted with seed 5, params say 0" in err
    assert "steerops vectors --methods random_baseline" in err
    assert not vectors_dir(
        out, TRAIT, "base", POSITION, "residual", "random_baseline_top1"
    ).exists()
    argv = ["clean", "--params", path, "--variants", "random_baseline_top1", "--seed", "5"]
    assert main(argv) == 0
    vectors, meta = stored(tmp_path, "random_baseline_top1")
    base, _ = stored(tmp_path, "random_baseline")
    expected = base[0].numpy().copy()
    expected[GLOBAL[0]] = 0
    np.testing.assert_allclose(vectors[0].numpy(), expected / np.linalg.norm(expected), atol=1e-6)
    assert meta["seed"] == 5
    assert meta["calibration"]["md5"] == file_md5(calibration_file(out, "instruct"))

    # another vectors param than the base's: refused too
    path = setup(tmp_path / "c", methods="probe")
    params = yaml.safe_load(Path(path).read_text())
    Path(path).write_text(yaml.safe_dump({**params, "vectors": {"probe_c": 0.1}}))
    err = run_error(["clean", "--params", path, "--variants", "probe_top1"], capsys)
    assert "fitted with probe_c 1.0, params say 0.1" in err
    # ... but only a param of the base's own method: probe_c leaves mean_diff as it was
    path = setup(tmp_path / "d", methods="mean_diff")
    params = yaml.safe_load(Path(path).read_text())
    Path(path).write_text(yaml.safe_dump({**params, "vectors": {"probe_c": 0.1}}))
    assert main(["clean", "--params", path, "--variants", "mean_diff_top1"]) == 0


def test_a_cleaning_that_removes_nothing_keeps_the_base_tensor_bit_for_bit(tmp_path):
    """A calibration with no massive dims: the cleaned vectors are the base's own tensors,
    so they alias the base (re-normalising u * |raw| can move a last bit, and then the
    grid steers and the report counts one tensor twice)."""
    import torch

    from steerops.vectors.store import save_vectors

    path = setup(tmp_path, methods="mean_diff")
    write_calibration(tmp_path / "outputs", global_dims=[], top_by_layer=dict.fromkeys(LAYERS, []))
    # base vectors whose u * |raw| / |u * |raw|| is not u to the bit
    base, base_meta = stored(tmp_path, "mean_diff")
    generator, drifting = torch.Generator().manual_seed(0), {}
    for layer in LAYERS:
        raw_norm = base_meta["layers"][str(layer)]["raw_norm"]
        while layer not in drifting:
            u = torch.randn(D, generator=generator)
            u = u / u.norm()
            if not (u * raw_norm / float((u * raw_norm).norm())).equal(u):
                drifting[layer] = u
    folder = vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", "mean_diff")
    save_vectors(folder, drifting, {k: v for k, v in base_meta.items() if k != "tensors_md5"})
    assert main(["clean", "--params", path, "--variants", "mean_diff_cleaned"]) == 0
    cleaned, meta = stored(tmp_path, "mean_diff_cleaned")
    for layer in LAYERS:
        assert cleaned[layer].equal(drifting[layer]), layer
        assert meta["layers"][str(layer)]["raw_norm"] == base_meta["layers"][str(layer)]["raw_norm"]


def test_a_calibration_of_a_model_of_another_shape_is_refused(tmp_path, capsys):
    """The instruct variant calibrated while it pointed at another model (a toy's 4 layers
    of 64 dims) is not applied to these activations' dims and layers: one line naming the
    command that calibrates this model."""
    path = setup(tmp_path)
    file = calibration_file(tmp_path / "outputs", "instruct")
    record = yaml.safe_load(file.read_text())  # JSON is YAML
    write_json(file, {**record, "hidden_size": 64, "num_layers": 4})
    capsys.readouterr()
    assert main(["clean", "--params", path, "--variants", "mean_diff_top1"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "hidden size 64 and 4 layers" in err and f"one of hidden size {D} and {len(LAYERS)}" in err
    )
    assert "steerops calibrate --variant instruct" in err and "\n" not in err
    write_json(file, {**record, "hidden_size": 64})  # the layers unrecorded: the size still tells
    assert main(["clean", "--params", path, "--variants", "mean_diff_top1"]) == 2
    assert "hidden size 64" in capsys.readouterr().err
    write_json(file, {**record, "hidden_size": D, "num_layers": len(LAYERS)})  # this model's
    assert main(["clean", "--params", path, "--variants", "mean_diff_top1"]) == 0
