"""The factory picks the judge params name."""

from __future__ import annotations

import pytest

from steerops.config import load_params
from steerops.errors import SteeropsError


def test_unknown_judge_kind_is_a_params_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("judge:\n  kind: gpt\n")
    with pytest.raises(SteeropsError, match="judge.kind"):
        load_params(path)
