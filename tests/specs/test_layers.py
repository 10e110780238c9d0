"""Layer specs: terms, ranges, steps and percentages resolved against a depth; errors name the bad
term."""

from __future__ import annotations

import pytest

from steerops.errors import SteeropsError
from steerops.specs import check_layers, parse_layers


@pytest.mark.parametrize(
    "spec, n, expected",
    [
        ("all", 4, [0, 1, 2, 3]),
        ("ALL", 2, [0, 1]),
        ("15", 34, [15]),
        ("5,10,15", 34, [5, 10, 15]),
        ("5-20", 34, list(range(5, 21))),
        ("0-30:5", 34, [0, 5, 10, 15, 20, 25, 30]),
        ("30%-60%", 34, list(range(10, 21))),  # 30% of 34 -> 10, 60% -> 20
        ("50%", 4, [2]),
        ("0%-100%", 4, [0, 1, 2, 3]),
        ("0,5-7,90%", 34, [0, 5, 6, 7, 30]),
        ("30-40", 34, [30, 31, 32, 33]),  # ranges are clamped to the model
        ("1,1,0-2", 4, [0, 1, 2]),  # deduplicated and sorted
        ("3, 1", 4, [1, 3]),
        ("2-3:5", 4, [2]),
        (3, 4, [3]),
        ([3, 1, "0-1"], 4, [0, 1, 3]),
    ],
)
def test_layer_specs(spec, n, expected):
    assert parse_layers(spec, n) == expected
    check_layers(spec)


def test_percentages_agree_with_depth_fractions():
    for n in (4, 26, 34, 62):
        for pct in range(0, 101, 5):
            expected = min(int(pct / 100 * n + 1e-9), n - 1)
            assert parse_layers(f"{pct}%", n) == [expected]


@pytest.mark.parametrize(
    "spec, token",
    [
        ("40", "'40'"),
        ("40-50", "'40-50'"),
        ("a", "'a'"),
        ("5-", "'5-'"),
        ("20-5", "'20-5'"),
        ("60%-30%", "'60%-30%'"),
        ("0-30:0", "'0-30:0'"),
        ("5:2", "'5:2'"),
        ("150%", "'150%'"),
        ("-1", "'-1'"),
        ("", "empty"),
        ("1,,2", "empty"),
        ("\u0663", "'\u0663'"),  # an Arabic-Indic 3: plain decimals only
        ("1 2", "'1 2' (separate layers with commas"),  # not layer 12
        ("2 5-2 9", "'2 5-2 9'"),
        ([1, 2.5], "2.5"),
        ([-1], "-1"),
        (True, "True"),
    ],
)
def test_bad_layers_name_the_token(spec, token):
    with pytest.raises(SteeropsError) as err:
        parse_layers(spec, 34)
    message = str(err.value)
    assert token in message and "\n" not in message


def test_syntax_check_needs_no_model():
    check_layers("0-30:5,40%")
    with pytest.raises(SteeropsError, match="'x7'"):
        check_layers("1,x7")


@pytest.mark.parametrize("spec, token", [(-1, "-1"), ([], "no layer"), ([3, -2], "-2")])
def test_syntax_check_refuses_negative_and_empty_specs(spec, token):
    # params load through check_layers: these must not wait for a stage's preflight
    with pytest.raises(SteeropsError) as err:
        check_layers(spec)
    assert token in str(err.value) and "\n" not in str(err.value)
