"""The repository's pipeline files agree with the code: every DVC stage and MLproject entry
point is a command the CLI parses, every params key a DVC stage declares exists (DVC
refuses to run a stage whose declared params are missing from params.yaml), and every stage
declares the code and the params its command reads (else DVC keeps stale outputs)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

import codebase
from steerops.cli import build_parser
from steerops.config import Params, load_params
from steerops.config.judge import JUDGE_REACH

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
ENTRY_POINTS = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def _has_key(tree, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


# Params that change no output: where runs are logged; report.out, read by every stage's
# --out check (a run by hand must not write into the pipeline's reports); and how the judge
# is reached (its key's variable, retries, timeouts, concurrency, cache folder)
NOT_STAGE_INPUTS = (
    "experiment",
    "tracking",
    "report.out",
    *(f"judge.{key}" for key in JUDGE_REACH),
)


def _parses(command: str):
    argv = shlex.split(command)
    assert argv[0] == "steerops", command
    args = build_parser(argv[1:]).parse_args(argv[1:])  # as `main` builds it
    assert callable(args.func), command
    return args.func


def _commands(stage: dict) -> list[str]:
    return stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]


def _stage_modules(stage: dict) -> set[str]:
    """Every steerops module the stage's commands can import (statically, transitively)."""
    found: set[str] = set()
    for command in _commands(stage):
        func = _parses(command)
        found |= codebase.closure(codebase.function_imports(func.__module__, func.__name__))
        found.add(func.__module__)
    return found


def test_params_yaml_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.traits.names


def test_every_param_a_stage_declares_is_in_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing = [
        f"{name}: {key}"
        for name, stage in STAGES.items()
        for key in stage.get("params", [])
        if not _has_key(params, key)
    ]
    assert missing == []


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_stage_commands_parse(name):
    for command in _commands(STAGES[name]):
        _parses(command)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_stage_depends_on_the_code_and_params_its_command_reads(name):
    stage = STAGES[name]
    modules = _stage_modules(stage)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
    files = sorted(codebase.modules()[m].relative_to(ROOT).as_posix() for m in modules)
    uncovered = [
        f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
    ]
    assert uncovered == [], f"{name}: code missing from deps"
    blocks = frozenset(Params.model_fields)
    reads = set().union(*(codebase.params_reads(m, blocks) for m in modules))
    declared = stage.get("params", [])
    undeclared = sorted(
        key
        for key in reads
        if not key.startswith(NOT_STAGE_INPUTS)
        and not any(key == p or key.startswith(p + ".") for p in declared)
    )
    assert undeclared == [], f"{name}: params read but not declared"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_stage_declares_a_whole_params_block_only_where_it_reads_it_whole(name):
    """Per-key deps: a block declared whole but read key by key re-runs the stage for keys
    it never reads (`steering.save_responses` re-ran the search)."""
    blocks = frozenset(Params.model_fields)
    reads = set().union(*(codebase.params_reads(m, blocks) for m in _stage_modules(STAGES[name])))
    too_wide = []
    for key in STAGES[name].get("params", []):
        fields = getattr(Params.model_fields.get(key, None), "annotation", None)
        keys = getattr(fields, "model_fields", None)
        if keys is None or key in reads:
            continue
        unread = sorted(k for k in keys if f"{key}.{k}" not in reads)
        if unread:
            too_wide.append(f"{key} (never reads {', '.join(unread)})")
    assert too_wide == [], f"{name}: declare the keys it reads"


def test_how_the_judge_is_reached_reruns_no_stage():
    """Raising `judge.concurrency` or a timeout, or naming another key variable, leaves every
    stage's lock as it was: no stage declares those keys, nor the judge block whole."""
    declaring = {
        name: key
        for name, stage in STAGES.items()
        for key in stage.get("params", [])
        for reach in JUDGE_REACH
        if f"judge.{reach}" == key or f"judge.{reach}".startswith(key + ".")
    }
    assert declaring == {}
    # what the judge answers is still an input of every stage that scores
    for name in ("generate", "steer", "search"):
        assert {"judge.kind", "judge.model", "judge.version"} <= set(STAGES[name]["params"])


def test_the_dependency_check_follows_tuple_aliases_and_calls():
    """`a, b = params.x, params.y` aliases both; a block passed to a function of the same
    module counts the keys that function reads of its parameter; a name bound to two
    blocks counts both whole."""
    import ast

    source = (
        "def inner(c):\n"
        "    return c.one\n"
        "def run(params):\n"
        "    st, se = params.steering, params.search\n"
        "    inner(st)\n"
        "    inner(c=params.generate)\n"
        "    other(se)\n"
        "def twice(params):\n"
        "    cfg = params.steering\n"
        "    cfg.one\n"
        "    cfg = params.generate\n"
        "    cfg.two\n"
    )
    blocks = frozenset({"steering", "search", "generate"})
    codebase.tree.cache_clear()
    original = codebase.tree
    try:
        codebase.tree = lambda name: ast.parse(source)  # type: ignore[assignment]
        reads = codebase.params_reads.__wrapped__("probe", blocks)
    finally:
        codebase.tree = original
    # `twice` rebinds one name to two blocks: both count whole
    assert reads == {"steering.one", "generate.one", "search", "steering", "generate"}


def test_the_dependency_check_sees_lazy_imports_and_aliased_params():
    """The static analysis behind the check above, on modules whose reads are known."""
    blocks = frozenset(Params.model_fields)
    # `steer` imports the session inside a function; the session imports the judges there too
    steer = codebase.closure(codebase.function_imports("steerops.steering.command", "run"))
    assert {
        "steerops.steering.session",
        "steerops.judges.factory",
        "steerops.models.batching",
    } <= steer
    # `cfg = params.generate` then `cfg.vet`: one key, not the whole block
    reads = codebase.params_reads("steerops.generate.command", blocks)
    assert {"generate.vet", "extraction.positions", "models", "seed"} <= reads
    assert "extraction" not in reads


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_mlproject_entry_points_parse(name):
    entry = ENTRY_POINTS[name]
    defaults = {k: v.get("default", "x") for k, v in (entry.get("parameters") or {}).items()}
    command = entry["command"].format(**defaults)
    if command.startswith("dvc "):
        assert command == "dvc repro report"  # the main job, as `make repro` runs it
        return
    for part in command.split("&&"):
        _parses(part.strip())


def test_dvc_sends_no_usage_data_and_checks_for_no_updates():
    """No network at run time: DVC's analytics and update check are off in the committed
    config, so `make repro` on a machine without network waits for nothing."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config.get("core", "analytics") == "false"
    assert config.get("core", "check_update") == "false"


def _flagless(command: str) -> list[str]:
    """The subcommand words of a stage command (`steerops probe train`), flags dropped."""
    words = shlex.split(command)
    return words[: next((i for i, w in enumerate(words) if w.startswith("-")), len(words))]


def test_every_stage_has_the_entry_point_that_runs_what_it_runs():
    """An entry point per DVC stage, on the params file its `params` parameter names (the
    main job's by default): the stage's commands, with the same --pipeline."""
    for name, stage in STAGES.items():
        entry = ENTRY_POINTS[name]
        assert entry["parameters"]["params"]["default"] == "params.yaml", name
        ours = [c.strip() for c in entry["command"].split("&&")]
        theirs = _commands(stage)
        assert [_flagless(c) for c in ours] == [_flagless(c) for c in theirs], name
        for mine, dvc in zip(ours, theirs, strict=True):
            assert ("--pipeline" in mine) == ("--pipeline" in dvc), name
            assert "--params {params}" in mine, name


def test_cli_help_and_stage_parsing_do_not_import_the_heavy_stack():
    """`steerops --help` and parsing a light stage stay fast: only the named stage's module is
    imported, and neither pulls in torch."""
    import subprocess
    import sys

    code = (
        "import sys; from steerops.cli import build_parser; "
        "build_parser(['steer']).parse_args(['steer']); "
        "build_parser([]).format_help(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dvc_accepts_the_pipeline_file():
    """DVC's own schema check (a plot or metric declared the wrong way fails here)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert set(STAGES) <= {line.split()[0] for line in out.stdout.splitlines() if line}


def test_the_committed_lock_is_of_the_code_the_main_job_runs():
    """A checkout whose dvc.lock predates its code reruns the stages whose code moved (a
    fresh clone, `make repro` or `dvc pull` would not start from what is recorded): after
    a code change, `dvc repro report` and commit dvc.lock. Only code is compared here; the
    data a fresh clone lacks is DVC's to fetch."""
    import json
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--with-deps", "--json", "report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    moved = {
        f"{stage}: {path}"
        for stage, changes in json.loads(out.stdout or "{}").items()
        for change in changes
        if isinstance(change, dict)
        for path, state in change.get("changed deps", {}).items()
        if path.startswith("src/") and state == "modified"
    }
    assert not moved, f"run `dvc repro report` and commit dvc.lock: {sorted(moved)}"


def test_make_recipes_find_the_venvs_steerops_without_activation(tmp_path):
    """`make repro` runs `dvc repro`, whose stages call `steerops` by name: from a shell
    whose PATH lacks the venv, a recipe still finds the venv's `steerops` first."""
    probe = tmp_path / "probe.mk"
    probe.write_text("probe:\n\t@command -v steerops\n")
    found = subprocess.run(
        ["make", "-s", "-f", "Makefile", "-f", str(probe), "probe"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == str(ROOT / ".venv" / "bin" / "steerops")


def test_every_stage_output_follows_paths_out():
    """`dvc exp run -S paths.out=...` moves every output: none is written to a fixed folder
    DVC would then look for in vain."""
    text = (ROOT / "dvc.yaml").read_text()
    fixed = [line.strip() for line in text.splitlines() if "outputs/" in line.split("#")[0]]
    assert fixed == []


def test_a_failing_stage_leaves_its_metrics_and_reports_in_place(tmp_path):
    """DVC deletes a stage's outputs before it runs unless they persist: the metrics and
    reports the commands write atomically persist, so a stage that fails leaves a checkout
    with the files dvc.lock records (checked with DVC itself on a stage that fails)."""
    import sys

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    kept = []
    for stage in spec["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                if isinstance(out, dict):
                    [(path, flags)] = out.items()
                    if flags.get("cache") is False:
                        assert flags.get("persist") is True, path
                        kept.append(path)
    assert "metrics/steer.json" in kept and "reports/report.md" in kept
    # the main job's cached outputs persist too (the worlds' builds aside): a bad param
    # fails its stage without DVC deleting what the last good run wrote first
    for name, stage in spec["stages"].items():
        if name in ("toy", "smollm2") or name.startswith("probe"):
            continue
        for out in stage.get("outs", []):
            assert isinstance(out, dict) and next(iter(out.values())).get("persist"), (name, out)
    metrics = {"m.json": {"cache": False, "persist": True}}
    cmd = f"{sys.executable} -c \"import sys; sys.exit(open('p').read().strip() == 'fail')\""
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"s": {"cmd": cmd, "deps": ["p"], "metrics": [metrics]}}})
    )
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path)
    (tmp_path / "p").write_text("ok")
    (tmp_path / "m.json").write_text('{"a": 1}')
    run = [sys.executable, "-m", "dvc", "repro", "-q"]
    assert subprocess.run(run, cwd=tmp_path).returncode == 0
    (tmp_path / "p").write_text("fail")
    assert subprocess.run(run, cwd=tmp_path, capture_output=True).returncode != 0
    assert (tmp_path / "m.json").read_text() == '{"a": 1}'


def test_dvc_plots_colour_each_steered_series_with_the_project_s_templates(tmp_path):
    """`dvc plots show` with the project's templates (.dvc/plots): every steering config a
    point coloured by its series (method @ position layer), trait and coherence told apart;
    the cleaning curve's categories ("all") on an ordinal axis, coloured by method."""
    import json
    import shutil
    import sys

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True
    )
    shutil.copytree(ROOT / ".dvc" / "plots", tmp_path / ".dvc" / "plots")
    cleaning = next(
        next(iter(p.values()))
        for p in spec["stages"]["report"]["plots"]
        if isinstance(p, dict) and "reports/cleaning_curve.csv" in p
    )
    cleaning = {k: v for k, v in cleaning.items() if k not in ("cache", "persist")}  # stage keys
    plots = [*spec["plots"], {"reports/cleaning_curve.csv": cleaning}]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    for name in ("metrics/steer_curves.csv", "reports/cleaning_curve.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)

    def vega(target: str) -> dict:
        shown = subprocess.run(
            [sys.executable, "-m", "dvc", "plots", "show", "--show-vega", target],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(shown.stdout)

    curves = vega("steering_curves")
    assert curves["encoding"]["color"] == {"field": "series", "type": "nominal"}
    values = curves["data"]["values"]
    with open(ROOT / "metrics" / "steer_curves.csv") as f:
        n_configs = len(f.readlines()) - 1
    assert len(values) == 2 * n_configs  # trait and coherence of every config
    assert {v["field"] for v in values} == {"trait_mean", "coherence_mean"}
    assert curves["encoding"]["shape"]["field"] == "field"  # which score a point is
    clean = vega("reports/cleaning_curve.csv")
    assert clean["encoding"]["x"]["type"] == "ordinal"
    assert clean["encoding"]["color"]["field"] == "method"
    assert "all" in {v["dims_cleaned"] for v in clean["data"]["values"]}
