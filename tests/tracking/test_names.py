"""One naming scheme and value format for every stage's params, metrics and tags."""

from __future__ import annotations

from pathlib import Path

from steerops.tracking import names


def test_values_print_as_researchers_read_them(tmp_path):
    shown = names.params(
        {
            "layers": [0, 1, 2],
            "coefficients": (0.5, 1.0, 1.1),
            "enabled": True,
            "subset": None,
            "c": 0.1 + 0.2,
            "vectors": {"seed": 3, "methods": ["mean_diff", "probe"]},
            "out": tmp_path / "outputs" / "x",
            "elsewhere": Path("/opt/models/m"),
        },
        root=tmp_path,
    )
    assert shown == {
        "layers": "0,1,2",
        "coefficients": "0.5,1,1.1",
        "enabled": "true",
        "c": "0.3",
        "vectors.seed": "3",
        "vectors.methods": "mean_diff,probe",
        "out": "outputs/x",
        "elsewhere": "/opt/models/m",
    }
    assert "None" not in shown.values()


def test_names_converge_on_one_scheme():
    assert names.params({"model": "m", "revision": "r"}) == {"model_id": "m", "model_revision": "r"}
    assert names.metrics(
        {"coherence": 1, "best_coherence": 2, "trait": 3, "trait_delta": 4, "n": None}
    ) == {"coherence_mean": 1.0, "best_coherence_mean": 2.0, "trait_mean": 3.0, "trait_delta": 4.0}
    # the trait a run is about stays a param called trait
    assert names.params({"trait": "toy/refusal"}) == {"trait": "toy/refusal"}
    assert names.metrics({"x": float("nan"), "y": "text", "ok": True}) == {"ok": 1.0}


def test_long_values_are_cut_to_mlflow_limits():
    assert len(names.params({"p": "x" * 10_000})["p"]) == names.MAX_PARAM
    assert names.params({"p": "x" * 10_000})["p"].endswith("...")


def test_every_key_is_one_mlflow_takes():
    """A key MLflow refuses fails the run's whole batch: user text in a key (a trait name
    with `+`, a path-like name) is made a valid key, checked by MLflow's own validators."""
    from mlflow.utils.validation import (
        _validate_metric_name,
        _validate_param_name,
        _validate_tag_name,
    )

    odd = [
        "steerops.judge_served.behavior/refusal+v2",
        "a//b",
        "/rooted",
        "trailing/",
        "..",
        ".",
        "",
        "x(1)@y:z",
        "k" * 300,
        "ünïcode/trait",
    ]
    for name in odd:
        made = names.key(name)
        _validate_tag_name(made)
        _validate_param_name(made)
        _validate_metric_name(made)
        assert len(made) <= names.MAX_KEY
    assert names.key("steerops.trait") == "steerops.trait"  # a valid key is kept
    assert names.key("behavior/refusal+v2") == "behavior/refusal_v2"
    assert names.tags({"t.a+b": "v"}) == {"t.a_b": "v"}
    assert names.params({"m": {"x+y": 1}}) == {"m.x_y": "1"}
    assert names.metrics({"m": {"x+y": 1}}) == {"m.x_y": 1.0}
