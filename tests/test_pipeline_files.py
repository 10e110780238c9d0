"""The repository's pipeline files agree with the code: every DVC stage and MLproject entry
point is a command the CLI parses, and every params key a DVC stage declares exists (DVC
refuses to run a stage whose declared params are missing from params.yaml)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from steerops.cli import build_parser
from steerops.config import load_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
ENTRY_POINTS = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def _has_key(tree, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _parses(command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "steerops", command
    args = build_parser(argv[1:]).parse_args(argv[1:])  # as `main` builds it
    assert callable(args.func), command


def test_params_yaml_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.traits.names


def test_every_param_a_stage_declares_is_in_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing = [f"{name}: {key}" for name, stage in STAGES.items()
               for key in stage.get("params", []) if not _has_key(params, key)]
    assert missing == []


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_stage_commands_parse(name):
    cmds = STAGES[name]["cmd"]
    for command in cmds if isinstance(cmds, list) else [cmds]:
        _parses(command)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_mlproject_entry_points_parse(name):
    entry = ENTRY_POINTS[name]
    defaults = {k: v.get("default", "x") for k, v in (entry.get("parameters") or {}).items()}
    command = entry["command"].format(**defaults)
    if command.startswith("dvc "):
        assert command == "dvc repro"
        return
    _parses(command)


def test_cli_help_and_stage_parsing_do_not_import_the_heavy_stack():
    """`steerops --help` and parsing a light stage stay fast: only the named stage's module is
    imported, and neither pulls in torch."""
    import subprocess
    import sys

    code = ("import sys; from steerops.cli import build_parser; "
            "build_parser(['steer']).parse_args(['steer']); "
            "build_parser([]).format_help(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_dvc_accepts_the_pipeline_file():
    """DVC's own schema check (a plot or metric declared the wrong way fails here)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert set(STAGES) <= {line.split()[0] for line in out.stdout.splitlines() if line}
