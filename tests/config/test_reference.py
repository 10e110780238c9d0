"""docs/params.md: every params key with its default, the main job's value and a description,
and the file is what the params models print today."""

from __future__ import annotations

from pathlib import Path

import yaml

from steerops.config import Params
from steerops.config.reference import VARIANT, keys, render

ROOT = Path(__file__).resolve().parents[2]


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    """Dotted keys of a nested mapping's leaves, model variants named `<variant>`."""
    out: set[str] = set()
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if prefix == "models.":
            key = f"models.{VARIANT}"
        if isinstance(value, dict):
            out |= _leaves(value, key + ".")
        else:
            out.add(key)
    return out


def test_the_page_is_what_the_models_print():
    page = (ROOT / "docs" / "params.md").read_text()
    assert page == render(ROOT / "params.yaml"), "run `make docs` to rewrite docs/params.md"


def test_every_key_is_listed_and_described():
    listed = {key: field for key, field in keys()}
    assert _leaves(yaml.safe_load((ROOT / "params.yaml").read_text())) <= set(listed)
    dumped = Params().model_dump(mode="json")
    dumped.pop("models")
    assert _leaves(dumped) == {k for k in listed if not k.startswith("models.")}
    assert not [key for key, field in listed.items() if not (field.description or "").strip()]


def test_a_value_the_main_job_changes_is_shown_beside_the_default(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "search": {"trials": 3},
                "models": {"base": {"id": "a"}, "instruct": {"id": "b", "dtype": "bfloat16"}},
            }
        )
    )
    rows = {line.split(" | ")[0].strip("| `"): line for line in render(params).splitlines()}
    assert rows["search.trials"].split(" | ")[1:3] == ["`24`", "`3`"]
    assert rows["seed"].split(" | ")[2] == "same"
    assert rows["search.batch"].split(" | ")[2] == ""
    assert '"base": "a"' in rows[f"models.{VARIANT}.id"]
    assert rows[f"models.{VARIANT}.dtype"].split(" | ")[2] == '`"bfloat16"`'


def test_a_key_of_fixed_values_names_them_and_others_do_not():
    """A Literal (or one beside null) lists its values on the page; a number that also
    takes "auto" does not (its description says what auto is)."""
    from typing import Literal

    from steerops.config.reference import _choices

    assert _choices(Literal["unit", "standardize", "none"]) == " (one of: unit, standardize, none)"
    assert _choices(Literal["static"] | None) == " (one of: static)"
    assert _choices(int | Literal["auto"]) == _choices(int) == _choices(str | None) == ""
    assert "(one of: unit, standardize, none)" in render_page_row("vectors.probe_rows")


def render_page_row(key: str) -> str:
    page = render(ROOT / "params.yaml").splitlines()
    return next(line for line in page if f"`{key}`" in line)
