"""The conditions file needs an explicit baseline policy."""

from __future__ import annotations

import json

import pytest

from steerops.errors import SteeropsError
from steerops.extract.conditions import read_conditions


def test_conditions_file_needs_an_explicit_baseline_policy(tmp_path):
    path = tmp_path / "conditions.json"
    path.write_text(
        json.dumps({"baseline": {"id": "base"}, "conditions": [{"id": "x", "system_prompt": "hi"}]})
    )
    with pytest.raises(SteeropsError, match="baseline.system_prompt: required"):
        read_conditions(path)
    path.write_text(
        json.dumps(
            {
                "baseline": {"id": "base", "system_prompt": None},
                "conditions": [{"id": "base", "system_prompt": "hi"}],
            }
        )
    )
    with pytest.raises(SteeropsError, match=r"conditions\[0\].id: duplicate"):
        read_conditions(path)


def test_a_baseline_system_prompt_that_is_not_text_is_refused(tmp_path):
    """It would reach the chat template as the number's text, a system prompt never meant."""
    path = tmp_path / "conditions.json"
    path.write_text(
        json.dumps(
            {
                "baseline": {"id": "base", "system_prompt": 5},
                "conditions": [{"id": "x", "system_prompt": "hi"}],
            }
        )
    )
    with pytest.raises(SteeropsError, match="baseline.system_prompt: must be a string or null"):
        read_conditions(path)
