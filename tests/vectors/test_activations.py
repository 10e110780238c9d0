"""Reading trait activations: files that break the extract contract are named."""

from __future__ import annotations

import pytest

from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.io import read_json, write_json
from vector_data import params_file, stacked, write_activations

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


def test_activations_that_break_the_contract_are_named(tmp_path):
    data, n_pos = stacked()
    directory = write_activations(tmp_path / "outputs", data, n_pos, hidden_size=13)
    params = load_params(params_file(tmp_path))
    from steerops.vectors.activations import load_activations

    with pytest.raises(
        SteeropsError,
        match=r"layer_0 has shape \[60, 12\], metadata says "
        r"\[60, 13\]",
    ):
        load_activations(params.out, TRAIT, "base", POSITION, "residual")
    meta = read_json(directory / "metadata.json")
    meta["hidden_size"] = 12
    meta["examples"][5]["polarity"] = "neutral"
    write_json(directory / "metadata.json", meta)
    with pytest.raises(SteeropsError, match=r"examples\[5\]\.polarity"):
        load_activations(params.out, TRAIT, "base", POSITION, "residual")
