"""The command line as a user meets it: complete, clean help for every stage and flag; flag
errors blamed on the flag; scratch or pipeline decided before anything is written."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from steerops.cli import abs_path, build_parser, load_params_for, main, run_or_path
from steerops.errors import SteeropsError


def _parsers(parser: argparse.ArgumentParser, path=("steerops",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_flag_of_every_stage_has_clean_help():
    problems = []
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        for leak in ("OVERRIDE", "override:", "<function", "(self", "lambda", "object at 0x"):
            if leak in text:
                problems.append(f"{' '.join(path)}: help shows {leak!r}")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            if not action.help or not action.help.strip():
                problems.append(f"{' '.join(path)} {action.option_strings}: no help")
            metavar = action.metavar if isinstance(action.metavar, str) else ""
            if metavar and not re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[a-z]+)?(\[,\.\.\])?", metavar):
                problems.append(f"{' '.join(path)} {action.option_strings}: metavar {metavar}")
    assert problems == []


# params keys that name a file or folder: in the params file they are relative to it, given
# as a flag relative to the working directory (as a shell user expects)
PATH_KEYS = {
    "paths.toy",
    "paths.smollm2",
    "paths.out",
    "traits.root",
    "calibration.prompts",
    "probes.tasks",
    "probes.scores",
    "probes.comparisons",
    "probes.confounds",
    "probes.ood.conditions",
    "probes.ood.rates",
    "probes.ood.probe_run",
    "report.out",
    "report.results",
    "search.known_results",
    "judge.cache_dir",
}


def test_every_path_flag_is_relative_to_the_working_directory():
    loose = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            key = action.dest.removeprefix("override:")
            if key in PATH_KEYS and action.type not in (abs_path, run_or_path):
                loose.append(f"{' '.join(path)} {action.option_strings}")
    assert loose == []


def test_a_relative_path_flag_reads_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(
        ["calibrate", "--params", "exp/params.yaml", "--prompts", "data/prompts.jsonl"]
    )
    params = load_params_for(args)
    assert params.path(params.calibration.prompts) == tmp_path / "data" / "prompts.jsonl"


def test_a_stage_run_without_a_params_file_says_it_runs_on_the_defaults(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # outside the project: its paths are the toy's defaults
    params = load_params_for(build_parser().parse_args(["calibrate"]))
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("steerops calibrate: no params.yaml in ") and str(tmp_path) in line
    assert "--params FILE" in line and params.seed == 0
    (tmp_path / "params.yaml").write_text("seed: 3\n")  # in the project folder: silent
    assert load_params_for(build_parser().parse_args(["calibrate"])).seed == 3
    assert capsys.readouterr().err == ""


def test_flag_values_are_blamed_on_the_flag(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    code = main(["steer", "--params", str(tmp_path / "params.yaml"), "--max-new-tokens", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == (
        "steerops steer: error: --max-new-tokens: Input should be greater than or equal to 1 "
        "(got 0) (params: steering.max_new_tokens)"
    )
    assert not (tmp_path / "runs").exists()
    (tmp_path / "bad.yaml").write_text("steering: {max_new_tokens: 0}\n")
    assert main(["steer", "--params", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml: steering.max_new_tokens:" in capsys.readouterr().err


def test_a_key_two_commands_set_with_other_flags_is_blamed_on_the_one_typed(tmp_path, capsys):
    """`probe train --scores` and `probe thurstonian --out-csv` both set probes.scores: an
    error about it names the flag of the command that ran (it had named --out-csv)."""
    (tmp_path / "params.yaml").write_text("tracking: {enabled: false}\n")
    argv = ["probe", "train", "--params", str(tmp_path / "params.yaml")]
    assert main([*argv, "--scores", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("steerops probe train: error: --scores: file not found: "), err
    assert err.endswith("(params: probes.scores)") and "--out-csv" not in err
    # and a missing comparisons file is blamed on --comparisons
    argv = ["probe", "thurstonian", "--params", str(tmp_path / "params.yaml")]
    assert main([*argv, "--comparisons", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "error: --comparisons: file not found: " in err, err


def test_a_negative_search_range_says_how_to_steer_the_other_way(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("search: {coef_min: 0.5, coef_max: 2.0}\n")
    params = str(tmp_path / "params.yaml")
    for argv, says in [
        (
            ["--coef-min", "-0.3"],
            "--coef-min: negative: a search's coefficients are magnitudes; to steer the other "
            "way set steering.direction: negative (--direction negative)",
        ),
        (["--coef-max", "0"], "--coef-max: zero: the range needs a top above 0"),
    ]:
        assert main(["search", "--params", params, *argv]) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert err.startswith(f"steerops search: error: {says}"), err


def test_a_check_across_keys_is_blamed_on_the_flags_it_names(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("search: {coef_min: 0.5, coef_max: 2.0}\n")
    params = str(tmp_path / "params.yaml")
    for argv, blamed in [
        (["--coef-min", "3", "--coef-max", "1"], "--coef-min/--coef-max"),
        (["--coef-min", "3"], "--coef-min"),
        (["--coef-max", "0.1", "--trials", "4"], "--coef-max"),
    ]:
        assert main(["search", "--params", params, *argv]) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert err == (
            f"steerops search: error: {blamed}: coef_max must be greater than coef_min "
            "(params: search)"
        )
    (tmp_path / "params.yaml").write_text("search: {coef_min: 3, coef_max: 1}\n")
    assert main(["search", "--params", params, "--trials", "4"]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.endswith("params.yaml: search: coef_max must be greater than coef_min")


def test_a_run_of_its_own_shares_a_judge_cache_named_outside_the_pipeline_s_outputs(
    tmp_path, monkeypatch
):
    """A cache in paths.out is the pipeline's (a scratch run leaves it as it is: its own goes
    in its folder); one named elsewhere is shared, so a run by hand asks no answer it holds."""
    monkeypatch.delenv("DVC_STAGE", raising=False)
    pipeline_cache = (tmp_path / "outputs" / "judge_cache").resolve()
    inside = _params(tmp_path)  # the default: outputs/judge_cache
    assert Path(inside.judge.cache_dir) == inside.run_folder / "judge_cache"
    assert inside.pipeline_judge_cache == pipeline_cache  # read, never written
    shared = tmp_path / "answers"
    for named in (str(shared), "answers"):  # absolute, or relative to the params file
        params = _params(tmp_path, yaml_extra=f"judge: {{cache_dir: {named}}}\n")
        assert params.path(params.judge.cache_dir) == shared
        assert params.pipeline_judge_cache is None
    out = _params(tmp_path, "--out", str(tmp_path / "mine"))
    assert Path(out.judge.cache_dir) == tmp_path / "mine" / "judge_cache"
    assert out.pipeline_judge_cache == pipeline_cache
    # --out and --inputs name another paths.out: the pipeline's cache is still left alone
    (tmp_path / "theirs").mkdir()
    inputs = _params(tmp_path, "--inputs", str(tmp_path / "theirs"))
    assert Path(inputs.judge.cache_dir) == inputs.run_folder / "judge_cache"
    assert inputs.pipeline_judge_cache == pipeline_cache
    generate = _params(tmp_path, "--out", str(tmp_path / "gen"), stage="generate")
    assert Path(generate.judge.cache_dir) == tmp_path / "gen" / "judge_cache"


def _params(tmp_path, *argv, stage="steer", yaml_extra=""):
    (tmp_path / "params.yaml").write_text("paths: {out: outputs}\n" + yaml_extra)
    args = build_parser([stage]).parse_args(
        [stage, "--params", str(tmp_path / "params.yaml"), *argv]
    )
    return load_params_for(args)


def test_hand_runs_of_steer_are_scratch_runs_and_dvc_runs_are_the_pipeline(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    scratch = _params(tmp_path)
    assert scratch.run_folder.parent == tmp_path / "runs" and scratch.run_folder.is_dir()
    assert scratch.out == scratch.run_root == scratch.run_folder
    assert scratch.inputs == tmp_path / "outputs"  # vectors come from the pipeline
    assert capsys.readouterr().out == ""  # said once the stage's inputs are checked
    scratch.inputs_checked()
    scratch.inputs_checked()
    assert capsys.readouterr().out.count("scratch run in") == 1
    again = _params(tmp_path)
    assert again.run_folder != scratch.run_folder  # two runs in one second: two folders
    for pipeline in (_params(tmp_path, "--pipeline"),):
        assert pipeline.run_folder is None and pipeline.out == tmp_path / "outputs"
        assert pipeline.run_root == tmp_path
    monkeypatch.setenv("DVC_STAGE", "steer")
    assert _params(tmp_path).run_folder is None
    # a producer stage run by hand still writes the pipeline's outputs
    monkeypatch.delenv("DVC_STAGE")
    assert _params(tmp_path, stage="vectors").run_folder is None


def test_out_on_a_producer_stage_moves_its_whole_run(tmp_path):
    params = _params(tmp_path, "--out", str(tmp_path / "elsewhere"), stage="vectors")
    assert params.out == params.inputs == params.run_root == tmp_path / "elsewhere"
    with pytest.raises(SystemExit):
        build_parser(["steer"]).parse_args(["steer", "--pipeline=1"])


@pytest.mark.parametrize("stage", ["steer", "vectors"])
@pytest.mark.parametrize(
    "where",
    [".", "outputs", "outputs/steering", "./outputs/../outputs", "reports", "metrics/run"],
)
def test_out_never_names_the_project_or_the_pipeline_outputs(tmp_path, monkeypatch, stage, where):
    """--out writes a run of its own: the project folder would put its metrics/ over the
    pipeline's, paths.out (or a folder in it) its cells into the pipeline's cells, and
    report.out or metrics/ files the next `steerops report` refuses to write beside."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SteeropsError, match="--out") as err:
        _params(tmp_path, "--out", where, stage=stage)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "metrics").exists()
    assert _params(tmp_path, "--out", "runs/mine", stage=stage).run_root == tmp_path / "runs/mine"


def test_a_list_flag_may_start_with_a_negative_number(tmp_path):
    """`--coefficients -1,1` is a list of two coefficients, not a missing value (argparse
    before Python 3.13 took `-1,1` for a flag); a value that is no number stays an error."""
    params = _params(tmp_path, "--pipeline", "--coefficients", "-0.5,0.5", "--subset", "3")
    assert params.steering.coefficients == [-0.5, 0.5]
    assert _params(tmp_path, "--pipeline", "--coefficients", "-1e-1").steering.coefficients == [
        -0.1
    ]
    with pytest.raises(SystemExit):
        build_parser(["steer"]).parse_args(["steer", "--coefficients", "-x"])


def test_device_flag_pins_every_variant_of_the_run(toy_params):
    """`--device` (one worker per GPU on a shared params file) replaces every variant's
    device and device_map for this run; the params file is not changed."""

    before = toy_params.read_text()
    argv = ["steer", "--params", str(toy_params), "--pipeline", "--device", "cuda:1"]
    params = load_params_for(build_parser(["steer"]).parse_args(argv))
    assert {v.device for v in params.models.values()} == {"cuda:1"}
    assert {v.device_map for v in params.models.values()} == {None}
    unpinned = load_params_for(build_parser(["steer"]).parse_args(argv[:-2]))
    assert {v.device for v in unpinned.models.values()} == {"cpu"}
    assert toy_params.read_text() == before


def test_an_interrupt_exits_130_saying_how_to_resume(tmp_path, monkeypatch, capsys):
    from report_data import synthetic_grid, write_params

    synthetic_grid(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("steerops.report.command.write_report", interrupted)
    assert main(["report", "--params", str(write_params(tmp_path))]) == 130
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "steerops report: interrupted; whatever finished before it is kept: run the same "
        "command again to resume"
    )


def test_an_interrupt_while_the_stage_imports_is_one_line(monkeypatch, capsys):
    import steerops.cli as cli

    def importing(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", importing)
    assert main(["report"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["steerops: interrupted"]


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["clean", "--methods", "x"], "steerops clean: error: unrecognized arguments: --methods x"),
        (["probe", "ood", "--bogus"], "steerops probe ood: error: unrecognized arguments: --bogus"),
        (["--bogus"], "steerops: error: unrecognized arguments: --bogus"),
        (["--bogus", "probe", "train"], "steerops: error: unrecognized arguments: --bogus"),
    ],
)
def test_an_unknown_flag_is_named_by_the_command_it_was_given_to(argv, prefix, capsys):
    from conftest import parser_error_line

    line = parser_error_line(argv, capsys)
    assert line.startswith(prefix) and line.endswith(f"(see {prefix.split(': ')[0]} --help)")


def test_ridge_alphas_must_be_positive(tmp_path, capsys):
    from report_data import write_params

    params = str(write_params(tmp_path))
    assert main(["probe", "train", "--params", params, "--alphas=-1000,10"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("steerops probe train: error: --alphas: Input should be greater than 0")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_response_length_below_one_token_is_refused_up_front(tmp_path, capsys):
    from report_data import write_params

    params = str(write_params(tmp_path))
    for bad in ("0", "-3"):
        assert main(["generate", "--params", params, "--max-new-tokens", bad]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line == (
            f"steerops generate: error: --max-new-tokens: must be >= 1 or auto (got {bad}) "
            "(params: generate.max_new_tokens)"
        )
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_path_of_the_wrong_kind_is_one_line(tmp_path, capsys):
    from report_data import synthetic_grid, write_params

    synthetic_grid(tmp_path)
    taken = tmp_path / "a_file"
    taken.write_text("keep me")
    argv = ["report", "--params", str(write_params(tmp_path)), "--report-dir", str(taken)]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"steerops report: error: {taken}: a file is where a folder must be (give a folder path)"
    )
    assert taken.read_text() == "keep me"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["steer", "--direction", "up"], "argument --direction: invalid choice: 'up'"),
        (["probe", "train", "--cv-folds", "x"], "argument --cv-folds: expected int, got 'x'"),
        (["bogus"], "argument STAGE: invalid choice: 'bogus'"),
    ],
)
def test_a_bad_flag_is_one_error_line(argv, message, capsys):
    from conftest import parser_error_line

    line = parser_error_line(argv, capsys)
    assert message in line and line.startswith("steerops")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--vet", "--no-vet"], "--vet and --no-vet both given: the last, --no-vet,"),
        (["steer", "--layers", "1", "--layers=2"], "--layers given twice: the last one is used"),
        (["steer", "--max-new", "5", "--max-new-tokens", "6"], "--max-new-tokens given twice"),
        (["probe", "train", "--layers", "1", "--layers", "2"], "--layers given twice"),
    ],
)
def test_a_setting_given_twice_is_said_before_the_stage_runs(tmp_path, capsys, argv, message):
    """The last value wins, as in most tools (an alias's flag may be given again), but the
    run says so first: a sweep under the value the user did not mean is costly."""
    import steerops.cli as cli

    missing = str(tmp_path / "missing.yaml")
    assert main([*argv, "--params", missing]) == 2  # the stage ran, and stopped at params
    lines = capsys.readouterr().err.strip().splitlines()
    from conftest import command_of

    assert lines[0].startswith(f"steerops {command_of(argv)}: warning: {message}"), lines
    assert "params file not found" in lines[-1]
    # each flag once, or the same name in two nested commands, is no warning
    once = argv[: [i for i, a in enumerate(argv) if a.startswith("--")][1]]
    assert cli.flag_given_twice(cli.build_parser(argv), once) == ""
    assert cli.flag_given_twice(cli.build_parser(["probe"]), ["probe", "--help"]) == ""


# Checks that need the model's depth or the params' variants run after params load; an
# error about a key a flag set still names the flag the user typed, before any run opens.
TOY_LAYERS = "the model has layers 0-3"
UNKNOWN_CHAT = "models.chat: unknown model variant (known: base, instruct)"
CHECKED_LATER = [
    (
        ["steer", "--layers", "7"],
        f"--layers: '7' is out of range ({TOY_LAYERS}) (params: steering.layers)",
    ),
    (
        ["steer", "--layers", "1", "--coefficients", "0"],
        "--coefficients: only 0, the unsteered model (the baseline is run anyway): give a "
        "steered coefficient (params: steering.coefficients)",
    ),
    (["steer", "--variant", "chat"], f"--variant: {UNKNOWN_CHAT} (params: steering.variant)"),
    (
        ["steer", "--vector-variant", "chat"],
        f"--vector-variant: {UNKNOWN_CHAT} (params: steering.vector_variant)",
    ),
    (
        ["steer", "--device", "cuda:99"],
        "--device: cuda:99 is not available (0 CUDA devices) (params: models.instruct.device)",
    ),
    (
        ["search", "--layers", "7"],
        f"--layers: '7' is out of range ({TOY_LAYERS}) (params: search.layers)",
    ),
    (
        ["extract", "--position", "prompt[-1]", "--layers", "2,7"],
        f"--layers: '7' is out of range ({TOY_LAYERS}) (params: extraction.layers)",
    ),
    (
        ["extract", "--tasks", "TASKS", "--layers", "7"],
        f"--layers: '7' is out of range ({TOY_LAYERS}) (params: extraction.layers)",
    ),
    (
        ["extract", "--tasks", "TASKS", "--variant", "chat"],
        f"--variant: {UNKNOWN_CHAT} (params: extraction.variant)",
    ),
    (["extract", "--variant", "chat"], f"--variant: {UNKNOWN_CHAT} (params: extraction.variant)"),
    (["generate", "--variant", "chat"], f"--variant: {UNKNOWN_CHAT} (params: generate.variant)"),
    (
        ["calibrate", "--variant", "chat"],
        f"--variant: {UNKNOWN_CHAT} (params: calibration.variant)",
    ),
    (
        ["calibrate", "--prompts", "missing.jsonl"],
        "--prompts: file not found: MISSING (params: calibration.prompts)",
    ),
]


@pytest.mark.parametrize(
    "argv, message", CHECKED_LATER, ids=[" ".join(a) for a, _ in CHECKED_LATER]
)
def test_a_flag_value_checked_after_params_load_is_blamed_on_the_flag(
    tmp_path, toy_world, no_model_loads, capsys, monkeypatch, argv, message
):
    from conftest import refused_up_front, write_params

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    tasks = tmp_path / "mine.jsonl"
    tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
    argv = [a.replace("TASKS", str(tasks)) for a in argv]
    argv += ["--params", str(write_params(tmp_path, toy_world))]
    if argv[0] in ("steer", "search"):
        argv.append("--pipeline")  # no scratch-run line
    monkeypatch.chdir(tmp_path)
    line = refused_up_front(argv, tmp_path, capsys)
    assert line == f"steerops {argv[0]}: error: " + message.replace(
        "MISSING", str(tmp_path / "missing.jsonl")
    )


def test_the_same_problem_in_the_params_file_names_the_params_key(
    tmp_path, toy_world, no_model_loads, capsys
):
    from conftest import refused_up_front, write_params

    params = write_params(tmp_path, toy_world, steering={"layers": "7"})
    line = refused_up_front(["steer", "--params", str(params), "--pipeline"], tmp_path, capsys)
    assert line == f"steerops steer: error: steering.layers: '7' is out of range ({TOY_LAYERS})"


TELEMETRY_CHECK = """
import contextlib, io, json, os, sys
if sys.argv[1] == "main":
    from steerops.cli import main
    with contextlib.redirect_stdout(io.StringIO()):  # no stage: the help
        main([])
from mlflow.telemetry import utils
utils._IS_IN_CI_ENV_OR_TESTING = False  # pytest's and CI's own variables turn it off too
print(json.dumps([os.environ.get("MLFLOW_DISABLE_TELEMETRY"), utils.is_telemetry_disabled()]))
"""


def test_mlflow_telemetry_is_off_in_a_steerops_process(tmp_path):
    """MLflow's usage telemetry would reach config.mlflow-telemetry.io on every tracked run
    (no network at run time): `main` turns it off before any stage imports mlflow, in the
    variable mlflow reads; a process that did not run `main` has it on."""
    import json
    import os
    import subprocess
    import sys

    off = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")  # the user's own choice, not under test
    env = {k: v for k, v in os.environ.items() if k not in off}

    def seen(how: str) -> list:
        done = subprocess.run(
            [sys.executable, "-c", TELEMETRY_CHECK, how],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert seen("main") == ["true", True]
    assert seen("bare") == [None, False]


@pytest.mark.parametrize("held", ["dvc.yaml", "dvc.lock"])
def test_out_never_names_another_projects_folder(tmp_path, monkeypatch, held):
    """--out naming the folder of another project (the main one, given the toy experiment's
    params) would write its metrics/ over that project's pipeline."""
    other = tmp_path / "main_project"
    (other / "metrics").mkdir(parents=True)
    (other / held).write_text("stages: {}\n")
    (other / "metrics" / "steer.json").write_text("{}")
    mine = tmp_path / "exp"
    mine.mkdir()
    monkeypatch.chdir(other)
    for stage in ("steer", "vectors"):
        with pytest.raises(SteeropsError) as err:
            _params(mine, "--out", ".", stage=stage)
        assert str(err.value) == (
            f"--out {other}: a project folder (it holds {held}), whose metrics/ are its "
            "pipeline's; name a folder for this run (e.g. runs/NAME)"
        )
    assert sorted(p.name for p in other.rglob("*")) == sorted(["metrics", held, "steer.json"])
    assert _params(mine, "--out", "runs/mine").run_root == other / "runs/mine"
    kept = other / "runs" / "kept"  # a params file copied into a run folder as its record
    kept.mkdir(parents=True)
    (kept / "params.yaml").write_text("seed: 3\n")
    assert _params(mine, "--out", "runs/kept").run_root == kept


def test_out_never_names_another_experiments_folder_or_files(tmp_path, monkeypatch, capsys):
    """An experiment kept in a folder of its own (a params file beside its outputs, no
    dvc.yaml: the toy experiment) is another pipeline: --out names neither its folder nor a
    folder in its outputs, reports or metrics, and neither does a path flag of a run given
    --out; nor steerops' own source. A run folder holding a params copy is still a run's."""
    import steerops
    from steerops.cli import main

    main_project = tmp_path / "main"
    toy = main_project / "experiments" / "toy"
    (toy / "outputs").mkdir(parents=True)
    (toy / "reports").mkdir()
    (toy / "params.yaml").write_text("paths: {out: outputs}\nreport: {out: reports}\n")
    mine = tmp_path / "exp"
    mine.mkdir()
    monkeypatch.chdir(main_project)
    for out, says in [
        ("experiments/toy", "a project folder (it holds params.yaml and its outputs)"),
        ("experiments/toy/reports", "inside experiments/toy's reports (experiments/toy/reports"),
        ("experiments/toy/metrics/x", "inside experiments/toy's metrics"),
        (str(Path(steerops.__file__).parents[1] / "x"), "inside steerops' source"),
    ]:
        with pytest.raises(SteeropsError) as err:
            _params(mine, "--out", out)
        assert says in str(err.value), err.value
    assert sorted(p.relative_to(toy).as_posix() for p in toy.rglob("*")) == [
        "outputs",
        "params.yaml",
        "reports",
    ]
    copy = main_project / "runs" / "kept"  # a params copy, its outputs folder not there
    copy.mkdir(parents=True)
    (copy / "params.yaml").write_text("paths: {out: outputs}\n")
    assert _params(mine, "--out", "runs/kept").run_root == copy
    # an experiment not run yet (a fresh checkout's experiments/toy: its params file alone)
    # is one still; a params copy beside what a run wrote is that run's record
    fresh = main_project / "experiments" / "fresh"
    fresh.mkdir()
    (fresh / "params.yaml").write_text("paths: {out: outputs}\nseed: 1\n")
    with pytest.raises(SteeropsError, match="it holds params.yaml, its outputs not made yet"):
        _params(mine, "--out", "experiments/fresh")
    kept = main_project / "kept"
    (kept / "steering").mkdir(parents=True)
    (kept / "params.yaml").write_text("paths: {out: outputs}\n")
    assert _params(mine, "--out", "kept").run_root == kept
    # ... or a copy of the params file in use, kept before the first run
    copied = main_project / "sweeps" / "a"
    copied.mkdir(parents=True)
    (copied / "params.yaml").write_bytes((mine / "params.yaml").read_bytes())
    assert _params(mine, "--out", "sweeps/a").run_root == copied
    # what an experiment writes at its top too (its MLflow store) makes it no run's
    (fresh / "mlflow.db").touch()
    with pytest.raises(SteeropsError, match="its outputs not made yet"):
        _params(mine, "--out", "experiments/fresh")
    # a path flag of a run given --out: refused before anything is read or written
    capsys.readouterr()
    for argv, says in [
        (
            ["report", "--report-dir", "experiments/toy/reports"],
            "--report-dir experiments/toy/reports: inside experiments/toy's reports",
        ),
        (["report", "--report-dir", str(mine / "reports")], "inside the pipeline's reports"),
        (
            ["probe", "thurstonian", "--out-csv", "experiments/toy/outputs/probe_scores/s.csv"],
            "--out-csv experiments/toy/outputs/probe_scores/s.csv: inside experiments/toy's "
            "outputs",
        ),
    ]:
        argv += ["--params", str(mine / "params.yaml"), "--out", "runs/r"]
        assert main(argv) == 2
        assert says in capsys.readouterr().err
        assert not (main_project / "runs" / "r").exists()
    assert not (toy / "outputs" / "probe_scores").exists()


def test_a_path_flag_says_it_is_read_from_the_working_directory(capsys):
    """A path flag resolves against the working directory, its params key against the
    params file's folder: the flag's help says the former, never the latter."""
    from steerops.cli import main

    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flag = text.split("--report-dir REPORT_DIR ")[-1].split(" --")[0]
    assert "relative to the working directory" in flag and "params dir" not in flag


def test_every_path_flag_of_every_command_says_so_in_its_help():
    """Explicit help text (probe thurstonian's) must not drop the note either."""
    import argparse

    from steerops.cli import abs_path, build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    paths = [
        (p.prog, a.option_strings[0], a.help)
        for p in parsers(build_parser())
        for a in p._actions
        if a.type is abs_path and a.option_strings and a.dest.startswith("override")
    ]
    assert len(paths) > 10
    assert [p for p in paths if "relative to the working directory" not in (p[2] or "")] == []


def test_no_command_prints_the_help_and_an_error_line_on_stderr(capsys):
    from steerops.cli import main

    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert err[0].startswith("usage: steerops") and any(" steer " in line for line in err)
    assert err[-1] == "steerops: error: no command given (one of those above)"


@pytest.mark.parametrize(
    ("argv", "loads_a_model"),
    [(["report"], False), (["probe", "thurstonian"], False), (["steer"], True)],
)
def test_only_a_stage_that_loads_a_model_takes_device(argv, loads_a_model):
    """`--device` puts the models a run loads on a device: on a stage that reads files
    only, its help would promise what it does not do."""
    parser = build_parser(argv[:1])
    if loads_a_model:
        assert parser.parse_args([*argv, "--device", "cpu"]).device == "cpu"
    else:
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--device", "cpu"])


def test_a_key_is_named_when_the_params_file_or_a_flag_sets_it(tmp_path, monkeypatch):
    """Whatever its value: the default's own path, written out, is named."""
    monkeypatch.setenv("DVC_STAGE", "steer")  # the pipeline's run: no scratch folder
    assert not _params(tmp_path).named("probes.tasks")
    spelled = "probes: {tasks: data/toy/probes/tasks.jsonl}\n"  # the default's value
    assert _params(tmp_path, yaml_extra=spelled).named("probes.tasks")
    assert _params(tmp_path, "--subset", "3").named("steering.subset")
    assert not _params(tmp_path).named("steering.subset")


import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import steerops.report.command  # noqa: E402


class _InterruptedWhileCollected:
    """An object whose finaliser is where a Ctrl-C landed."""

    def __del__(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize("platform", ["posix", "windows"])
def test_an_interrupt_python_drops_in_a_finaliser_still_stops_the_stage(
    tmp_path, monkeypatch, capsys, platform
):
    """Python prints and drops an exception raised in a `__del__`: a Ctrl-C landing there
    would let the stage run to its end with exit 0 (and `dvc repro` go on to the next
    stage). The stage stops as on any other Ctrl-C instead (without `pthread_kill`, as on
    Windows, through `_thread.interrupt_main`)."""
    from report_data import synthetic_grid, write_params

    if platform == "windows":
        monkeypatch.delattr(signal, "pthread_kill")
    synthetic_grid(tmp_path)
    ran_on = []

    def collected_mid_stage(*args, **kwargs):
        _InterruptedWhileCollected()  # its finaliser runs here, and raises
        until = time.monotonic() + 3
        while time.monotonic() < until:  # the rest of a long stage: not run
            pass
        ran_on.append(True)

    monkeypatch.setattr("steerops.report.command.write_report", collected_mid_stage)
    assert main(["report", "--params", str(write_params(tmp_path))]) == 130
    assert ran_on == []
    err = capsys.readouterr().err
    assert "steerops report: interrupted; whatever finished" in err
    assert "Exception ignored" not in err


def test_an_interrupt_dropped_as_the_stage_ends_still_ends_it_as_interrupted(
    tmp_path, monkeypatch, capsys
):
    """Dropped in the stage's last moments, before the timer that hands it back rings: the
    stage ends as interrupted (exit 130), so `dvc repro` stops there."""
    from report_data import synthetic_grid, write_params

    synthetic_grid(tmp_path)
    write_report = steerops.report.command.write_report

    def collected_at_the_end(*args, **kwargs):
        written = write_report(*args, **kwargs)
        _InterruptedWhileCollected()
        return written

    monkeypatch.setattr("steerops.report.command.write_report", collected_at_the_end)
    monkeypatch.setattr("steerops.report.command._track", lambda *args, **kwargs: None)
    assert main(["report", "--params", str(write_params(tmp_path))]) == 130
    assert "steerops report: interrupted" in capsys.readouterr().err


def test_other_exceptions_in_finalisers_are_reported_as_python_reports_them(
    tmp_path, monkeypatch, request
):
    from report_data import synthetic_grid, write_params

    class FailsWhileCollected:
        def __del__(self):
            raise ValueError("a finaliser's own failure")

    synthetic_grid(tmp_path)
    reported = []
    alarm_before = signal.getsignal(signal.SIGALRM)
    signal.setitimer(signal.ITIMER_REAL, 300)  # a caller's own timer, left as it was
    request.addfinalizer(lambda: signal.setitimer(signal.ITIMER_REAL, 0))
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    write_report = steerops.report.command.write_report

    def collected_mid_stage(*args, **kwargs):
        FailsWhileCollected()
        return write_report(*args, **kwargs)

    monkeypatch.setattr("steerops.report.command.write_report", collected_mid_stage)
    assert main(["report", "--params", str(write_params(tmp_path))]) == 0
    assert [str(e) for e in reported] == ["a finaliser's own failure"]
    sys.unraisablehook(type("U", (), {"exc_value": ValueError("after")})())
    assert [str(e) for e in reported][-1] == "after"  # main put the recorder back
    assert signal.getsignal(signal.SIGALRM) is alarm_before
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 200  # nobody's timer touched


_SLOW_FINALISER = """
import signal, sys, time
from steerops.cli import _interrupts_not_dropped, _terminated_as_interrupted

if sys.argv[1] == "ignore-sigint":  # as a job started with `&` inherits it
    signal.signal(signal.SIGINT, signal.SIG_IGN)

class SlowToCollect:
    def __del__(self):
        print("collecting", flush=True)
        time.sleep(20)  # where the signal lands

try:
    with _terminated_as_interrupted() as terminated, _interrupts_not_dropped():
        SlowToCollect()
        time.sleep(20)
        print("ran on", flush=True)
except KeyboardInterrupt:
    print("stopped", flush=True)
    sys.exit(143 if terminated else 130)
"""


@pytest.mark.parametrize(
    "sent,sigint,code",
    [(signal.SIGINT, "handled", 130), (signal.SIGTERM, "handled", 143)]
    + [(signal.SIGTERM, "ignore-sigint", 143)],
)
def test_a_real_signal_in_a_finaliser_stops_the_process(sent, sigint, code):
    """A Ctrl-C or SIGTERM landing in a `__del__` stops the process as anywhere else, also
    where SIGINT is ignored (the dropped SIGTERM's interrupt is sent again as a SIGINT)."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_FINALISER, sigint], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "collecting"
        proc.send_signal(sent)
        assert proc.wait(timeout=10) == code
        assert proc.stdout.read().split() == ["stopped"]
    finally:
        proc.kill()


def test_an_ignored_sigint_stays_ignored_for_the_programs_a_stage_starts():
    """Where SIGINT is ignored (a job started with `&`), the stage keeps it ignored: a
    Python handler would not be inherited by the programs it starts (`git`, a compiler),
    which a Ctrl-C at the terminal would then kill."""
    import subprocess

    script = (
        "import signal, subprocess, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "from steerops.cli import _interrupts_not_dropped, _terminated_as_interrupted\n"
        "with _terminated_as_interrupted(), _interrupts_not_dropped():\n"
        "    child = 'import os, signal; os.kill(os.getpid(), signal.SIGINT); print(\"alive\")'\n"
        "    out = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True)\n"
        "    print(out.returncode, out.stdout.strip())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["0", "alive"], done.stderr
