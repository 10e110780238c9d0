"""Method names: base method plus cleaning suffix; errors name the bad token."""

from __future__ import annotations

import pytest

from steerops.errors import SteeropsError
from steerops.specs import parse_method

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


@pytest.mark.parametrize(
    "name, base, mode, select, n, dims",
    [
        ("mean_diff", "mean_diff", None, None, None, ()),
        ("random_baseline", "random_baseline", None, None, None, ()),
        ("mean_diff_top2", "mean_diff", "post", "top", 2, ()),
        ("probe_layertop3", "probe", "post", "layertop", 3, ()),
        ("mean_diff_cleaned", "mean_diff", "post", "global", None, ()),
        ("mean_diff_dims12-345", "mean_diff", "post", "dims", None, (12, 345)),
        ("probe_preclean", "probe", "pre", "global", None, ()),
        ("mean_diff_preclean_top2", "mean_diff", "pre", "top", 2, ()),
        ("pca_preclean_dims7", "pca", "pre", "dims", None, (7,)),
    ],
)
def test_method_name_grammar(name, base, mode, select, n, dims):
    parsed = parse_method(name)
    assert parsed.base == base and parsed.name == name
    if mode is None:
        assert parsed.cleaning is None
    else:
        c = parsed.cleaning
        assert (c.mode, c.select, c.n, c.dims) == (mode, select, n, dims)
        assert c.needs_calibration == (select != "dims")


@pytest.mark.parametrize(
    "written, canonical",
    [
        ("mean_diff_dims05", "mean_diff_dims5"),
        ("mean_diff_dims345-12", "mean_diff_dims12-345"),
        ("probe_preclean_dims7-007-3", None),  # 7 twice
        ("pca_preclean_dims3-1", "pca_preclean_dims1-3"),
    ],
)
def test_every_spelling_of_a_cleaning_is_one_method(written, canonical):
    if canonical is None:
        with pytest.raises(SteeropsError, match="dim repeated"):
            parse_method(written)
        return
    assert parse_method(written) == parse_method(canonical)
    assert parse_method(written).name == canonical


@pytest.mark.parametrize(
    "name, token",
    [
        ("mean_dif", "'mean_dif'"),
        ("lda_top1", "'lda_top1'"),
        ("mean_diff_top0", "'top0'"),
        ("mean_diff_top", "'top'"),
        ("probe_dims1-1", "'dims1-1'"),
        ("probe_preclean_x", "'x'"),
        ("mean_diff_", "''"),
        ("mean_diff_dims\u0663", "'dims\u0663'"),  # an Arabic-Indic digit: not a plain decimal
    ],
)
def test_bad_method_names_name_the_bad_token(name, token):
    with pytest.raises(SteeropsError) as err:
        parse_method(name)
    message = str(err.value)
    assert token in message and "\n" not in message
    if "unknown method" in message:
        assert "mean_diff, pca, probe, random_baseline" in message
