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


OUT_OF_RANGE = "is out of range (beyond 1.8e308, the largest float)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["steer", "--coefficients", "1e400"], f"argument --coefficients: '1e400' {OUT_OF_RANGE}"),
        (["steer", "--coefficients", "1,-2E+999"], f"--coefficients: '-2E+999' {OUT_OF_RANGE}"),
        (["steer", "--coefficients", "1,nan"], "argument --coefficients: 'nan' is not a finite"),
        (["steer", "--min-coherence", "inf"], "argument --min-coherence: 'inf' is not a finite"),
        (["probe", "train", "--alphas", "1,1e999"], f"argument --alphas: '1e999' {OUT_OF_RANGE}"),
        (["generate", "--temperature", "1e309"], f"--temperature: '1e309' {OUT_OF_RANGE}"),
        # Python reads these as 10 and 1: a shell number is plain ASCII digits
        (["steer", "--coefficients", "0.5,1_0"], "--coefficients: expected float, got '1_0'"),
        (["steer", "--coefficients", "\uff11"], "--coefficients: expected float, got '\uff11'"),
        (["steer", "--subset", "1_0"], "--subset: expected int, got '1_0'"),
    ],
)
def test_a_number_flag_that_is_not_finite_is_named_as_typed(argv, message, capsys):
    """A float too large for a float reads as inf: the error quotes what was typed."""
    from conftest import parser_error_line

    line = parser_error_line(argv, capsys)
    assert line.startswith(f"steerops {argv[0]}") and message in line, line


def test_an_integer_flag_of_any_size_parses_as_typed():
    huge = "1" + "0" * 400  # too large for a float, a fine Python int
    assert _parse(["steer", "--subset", huge]) == {"steering.subset": int(huge)}
