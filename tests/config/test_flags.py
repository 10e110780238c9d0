"""CLI flags take type, choices, metavar and help from the params fields they override."""

from __future__ import annotations

import argparse

import pytest

from steerops.cli import build_parser
from steerops.config import load_params
from steerops.config.flags import field_of, flag_kwargs


def _parse(stage_argv: list[str]) -> dict:
    args = build_parser(stage_argv).parse_args(stage_argv)
    return {
        k.removeprefix("override:"): v
        for k, v in vars(args).items()
        if k.startswith("override:") and v is not None
    }


def test_types_choices_and_help_come_from_the_field():
    kwargs = flag_kwargs("steering.direction", "--direction")
    assert kwargs["choices"] == ["positive", "negative"]
    assert kwargs["help"].startswith(field_of("steering.direction").description)
    assert "(params: steering.direction)" in kwargs["help"]
    assert flag_kwargs("generate.vet", "--vet")["action"] is argparse.BooleanOptionalAction
    assert flag_kwargs("steering.subset", "--subset")["type"]("3") == 3
    assert flag_kwargs("steering.coefficients", "--coefficients")["type"]("0.5,1") == [0.5, 1.0]
    auto = flag_kwargs("generate.max_new_tokens", "--max-new-tokens")["type"]
    assert (auto("auto"), auto("12")) == ("auto", 12)
    with pytest.raises(argparse.ArgumentTypeError, match="int or 'auto'"):
        auto("many")
    assert "30%%-60%%" in flag_kwargs("steering.layers", "--layers")["help"]  # argparse-safe
    with pytest.raises(KeyError, match="no such params key"):
        field_of("steering.nope")


def test_every_stage_parses_its_flags_into_params_overrides(tmp_path):
    parser = build_parser()  # registers every stage: each flag names an existing key
    assert parser.format_help()
    given = _parse(
        [
            "steer",
            "--method",
            "probe",
            "--position",
            "prompt[-1]",
            "--component",
            "attn_out",
            "--max-batch-rows",
            "8",
        ]
    )
    assert given == {
        "steering.methods": ["probe"],
        "steering.positions": ["prompt[-1]"],
        "steering.component": "attn_out",
        "steering.max_batch_rows": 8,
    }
    # `--method X` is the sweep list [X]: params load it as a one-cell grid
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    params = load_params(tmp_path / "params.yaml", given)
    assert [m.name for m in params.steering.methods] == ["probe"]
    assert _parse(["search", "--no-known", "--method", "mean_diff"]) == {
        "search.import_known": False,
        "search.methods": ["mean_diff"],
    }
    with pytest.raises(SystemExit):
        build_parser(["steer"]).parse_args(["steer", "--direction", "sideways"])


def test_an_empty_list_item_is_a_typo_not_a_shorter_list():
    import argparse

    from steerops.config.flags import csv_list

    parse = csv_list(float)
    assert parse("0.5, 1,2") == [0.5, 1.0, 2.0] and parse("") == []
    for text in ("mean_diff,,probe", "1,", ",1"):
        with pytest.raises(argparse.ArgumentTypeError, match="empty item"):
            csv_list()(text)
