"""The stage summary DVC reads: a few held-out headline numbers per cell, so
`dvc metrics show --json` stays small on the default grid (17 methods x 2 positions)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from steering_data import write_grid
from steerops.config import load_params
from steerops.io import read_json
from steerops.steering.best import COMPACT, write_steer_summary
from steerops.steering.outputs import write_csv

METHODS = (
    "mean_diff probe gradient random_baseline pca mean_diff_top1 mean_diff_top2 mean_diff_top3 "
    "mean_diff_top5 mean_diff_cleaned mean_diff_preclean probe_top1 probe_top2 probe_top3 "
    "probe_top5 probe_cleaned probe_preclean"
).split()
POSITIONS = ["prompt[-1]", "response[:5]"]
QUESTIONS = [f"q{i}" for i in range(10)]


def _leaves(tree) -> int:
    if isinstance(tree, dict):
        return sum(_leaves(v) for v in tree.values())
    return 1


def test_dvc_metrics_show_has_a_handful_of_columns_per_cell(tmp_path):
    from steerops.steering.best import cell_metrics, config_rows, protocol
    from steerops.steering.store import METRICS_FILE, ResultsLog

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": {"out": "outputs"}}))
    params = load_params(tmp_path / "params.yaml")
    configs = [(layer, c, 0.8, 0.8, 90.0) for layer in range(4) for c in (0.5, 1.0, 1.5)]
    grid = {(m, p): configs for m in METHODS for p in POSITIONS}
    write_grid(params.out, grid, QUESTIONS)
    for path in sorted((params.out / "steering").rglob("results.jsonl")):
        log = ResultsLog(path)
        h = log.entries[0]["settings_hash"]
        rows = config_rows(log, h, protocol(params), {"trait": "t"})
        write_csv(path.parent / "results.csv", rows)
        (path.parent / METRICS_FILE).write_text(
            json.dumps(cell_metrics(rows, 68, protocol(params)))
        )
    write_steer_summary(params)
    summary = read_json(tmp_path / "metrics" / "steer.json")
    assert len(summary) == len(METHODS) * len(POSITIONS)
    assert all(set(cell) == set(COMPACT) for cell in summary.values())
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True
    )
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/steer.json\n")
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(shown.stdout)[""]["data"]["metrics/steer.json"]["data"]
    # every cell is "too few held out": dvc shows no empty layer or coefficient
    assert _leaves(data) == (len(COMPACT) - 2) * len(summary) == 14 * 34
    cell = data[next(iter(data))]
    # an effect on 5 held-out questions: too few for any test to call one
    assert cell["status"] == "too few held out" and cell["n"] == 5
    assert 0 < cell["delta_lo"] < 80 < cell["delta_hi"]
    # its numbers say which config they are of, but no column offers it as the one to use
    assert "layer" not in cell and "coefficient" not in cell
    assert cell["tried_layer"] is not None and cell["tried_coefficient"] not in (None, 0)


def test_a_damaged_cell_file_names_itself_and_how_to_rebuild_it(tmp_path):
    """Another cell's metrics.json cut short: the gather stops with one line naming it and
    saying how it is rebuilt (this run's own cell is already written)."""
    import pytest

    from steerops.errors import SteeropsError
    from steerops.steering.store import METRICS_FILE

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": {"out": "outputs"}}))
    params = load_params(tmp_path / "params.yaml")
    cell = params.out / "steering" / "t" / "base" / "prompt_m1" / "residual" / "mean_diff"
    cell.mkdir(parents=True)
    (cell / METRICS_FILE).write_text('{"status": "ok", ')
    with pytest.raises(SteeropsError) as err:
        write_steer_summary(params)
    assert str(cell / METRICS_FILE) in str(err.value) and "not valid JSON" in str(err.value)
    assert "steer that cell again to rebuild it from its results log" in str(err.value)


def test_only_an_ok_cell_offers_its_config_as_the_one_to_use():
    """`layer` and `coefficient` name the config to use; a verdict other than ok leaves
    them empty, and `tried_*` still say which config the held-out numbers are of."""
    from steerops.steering.best import compact

    tried = {"tried_layer": 12, "tried_coefficient": 0.2}
    metrics = {
        **tried,
        "layer": 12,
        "coefficient": 0.2,
        "heldout_trait_delta": 0.0,
        "heldout_n": 20,
    }
    for status, used in (("ok", (12, 0.2)), ("no effect", (None, None))):
        row = compact({**metrics, "status": status})
        assert (row["layer"], row["coefficient"]) == used
        assert (row["tried_layer"], row["tried_coefficient"]) == (12, 0.2)
        assert row["delta"] == 0.0 and row["n"] == 20


def test_new_results_say_when_the_report_beside_them_is_behind(tmp_path, monkeypatch, capsys):
    """Steering again into a run's folder (or the pipeline's by hand) replaces its cells'
    numbers; a report written there from the earlier ones is said to be behind, with the
    command that updates it. Under `dvc repro` the report stage follows: nothing said."""
    from steerops.cli import build_parser, load_params_for
    from steerops.steering.best import note_report_behind

    (tmp_path / "exp.yaml").write_text("paths: {out: outputs}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)

    def params(*argv):
        args = build_parser(["steer"]).parse_args(["steer", "--params", "exp.yaml", *argv])
        return load_params_for(args)

    run = params("--out", "runs/mine")
    note_report_behind(run, "steer")
    assert capsys.readouterr().err == ""  # no report there yet
    (tmp_path / "runs" / "mine" / "reports").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "reports" / "report.md").write_text("# old\n")
    note_report_behind(run, "steer")
    assert capsys.readouterr().err == (
        "steerops steer: note: runs/mine/reports/report.md was written from the earlier "
        "results; `steerops report --params exp.yaml --out runs/mine` updates it\n"
    )
    # one steered from another folder's vectors: the report must read them too
    (tmp_path / "mine").mkdir()
    note_report_behind(params("--out", "runs/mine", "--inputs", "mine"), "steer")
    assert "`steerops report --params exp.yaml --out runs/mine --inputs mine` updates it" in (
        capsys.readouterr().err
    )
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.md").write_text("# the pipeline's\n")
    pipeline = params("--pipeline")
    note_report_behind(pipeline, "search")
    assert "reports/report.md was written" in capsys.readouterr().err
    monkeypatch.setenv("DVC_STAGE", "steer")
    note_report_behind(pipeline, "steer")
    assert capsys.readouterr().err == ""
