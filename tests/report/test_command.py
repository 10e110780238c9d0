"""`steerops report` from results logs: deterministic, one-line errors, chosen on the selection
half and reported held out with the right interval, "no effect" without a recommendation,
searches in a table of their own, the steering direction, and plots per (method, position)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from report_data import QUESTIONS, cells, synthetic_grid, write_params
from steering_data import reference_interval, refusing, write_grid
from steerops.cli import main
from steerops.io import read_json


def _row(table, **keys):
    hit = table
    for k, v in keys.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, keys
    return hit.iloc[0]


def _report(tmp_path, **blocks):
    assert main(["report", "--params", str(write_params(tmp_path, **blocks))]) == 0
    return tmp_path / "reports"


def test_report_command_is_deterministic(tmp_path):
    synthetic_grid(tmp_path)
    first = {p.name: p.read_bytes() for p in _report(tmp_path).iterdir()}
    second = {p.name: p.read_bytes() for p in _report(tmp_path).iterdir()}
    assert first == second
    assert {
        "report.md",
        "gap_analysis.csv",
        "cleaning_curve.csv",
        "coefficients.csv",
        "coefficient_curves.png",
        "coefficient_curves.csv",
        "cleaning_curve.png",
        "metrics.json",
    } <= set(first)
    text = first["report.md"].decode()
    # the verdicts of the cells themselves (the page's legend names every verdict anyway)
    statuses = set(pd.read_csv(io.BytesIO(first["gap_analysis.csv"]))["status"])
    assert {"needs finer coefficients", "no effect"} <= statuses
    assert "likely implementation problem" in text
    assert "held-out" in text and "paired bootstrap" in text
    # what "trait" and "coherence" measure is said before any of their numbers
    judge = "Judge: toy, `toy:exact`: the toy world's exact judge."
    assert text.index(judge) < text.index("## ")
    # the prediction features are said under their table, not only in the code
    prediction = text.split("## Coefficient prediction")[1].split("##")[0]
    assert "`layer_norm` is the mean L2 norm" in prediction


def test_report_without_results_is_one_line_error(tmp_path, capsys):
    assert main(["report", "--params", str(write_params(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no steering results" in err[0]
    # the commands it names write what this report reads: the same params file's pipeline
    flag = f"--params {tmp_path / 'params.yaml'} --pipeline"
    assert f"run `steerops steer {flag}` or `steerops search {flag}` first" in err[0]


def test_the_best_is_chosen_in_sample_and_reported_held_out_with_its_interval(tmp_path):
    """mean_diff at 1.5 is the best on the selection half (70) but poor held out (20); at
    1.0 it is the reverse (40 / 80). The report picks 1.5 and prints 20 with the bootstrap
    interval of the held-out questions."""
    spec = {(m, "prompt[-1]"): c for (m, _), c in cells().items() if m == "mean_diff"}
    spec[("mean_diff", "prompt[-1]")] = [
        (2, 0.5, 0.1, 0.1, 95.0),
        (2, 1.0, 0.4, 0.8, 90.0),
        (2, 1.5, 0.7, 0.2, 80.0),
        (2, 2.0, 0.9, 0.9, 50.0),
    ]
    _, heldout = write_grid(tmp_path / "outputs", spec, QUESTIONS, seed=5)
    out = _report(tmp_path, seed=5)
    gap = _row(pd.read_csv(out / "gap_analysis.csv"), method="mean_diff")
    assert (gap["coefficient"], gap["selection_delta"], gap["delta"]) == (1.5, 70, 20)
    d = np.array([100.0 if q in refusing(heldout, 0.2) else 0.0 for q in heldout])
    _, lo, hi = reference_interval(d, seed=5)
    assert gap["n"] == len(heldout) == 20
    assert (gap["delta_lo"], gap["delta_hi"]) == pytest.approx((lo, hi), abs=1e-4)
    assert f"+20.0 [{lo:+.1f}, {hi:+.1f}]" in (out / "report.md").read_text()


def test_a_no_effect_cell_is_labelled_so_and_gives_no_recommendation(tmp_path):
    synthetic_grid(tmp_path)
    out = _report(tmp_path)
    gap = pd.read_csv(out / "gap_analysis.csv")
    assert _row(gap, method="random_baseline")["status"] == "no effect"
    for name in ("coefficients.csv", "recommendations.csv", "coefficient_features.csv"):
        table = pd.read_csv(out / name)
        assert not {"random_baseline", "gradient"} & set(table["method"]), name
    metrics = read_json(out / "metrics.json")
    assert metrics["cells_no_effect"] == 1 and metrics["cells_needing_finer_coefficients"] == 1
    ok = gap[gap["status"] == "ok"]
    assert metrics["cells_ok"] == len(ok[ok["alias_of"].isna()]) > 0
    # mean_diff_preclean's ok (delta 20) rests on 4 of its 20 held-out questions, each up by
    # 100: the interval clears zero, the sign-flip p is 0.5**4, and its q is above 5%
    weak = _row(gap, method="mean_diff_preclean")
    assert weak["status"] == "ok" and weak["delta"] == 20 and weak["delta_lo"] > 0
    assert weak["heldout_p"] == pytest.approx(0.5**4, abs=0.005) and weak["heldout_q"] > 0.05
    assert metrics["cells_ok_at_fdr_5pct"] == (ok["heldout_q"] < 0.05).sum() == len(ok) - 1


def test_no_config_reaching_the_threshold_is_reported_not_a_crash(tmp_path):
    spec = {"probe": ([10, 40, 70, 90], [60, 50, 40, 30])}
    synthetic_grid(tmp_path, spec)
    out = _report(tmp_path)
    gap = _row(pd.read_csv(out / "gap_analysis.csv"), method="probe")
    # the best coherence a steered config reached (the unsteered config has 100)
    assert gap["status"] == "needs finer coefficients" and gap["best_coherence_reached"] == 60
    assert pd.read_csv(out / "recommendations.csv").empty


def _write_search(out, method: str, best: dict):
    from steerops.io import write_json
    from steerops.search.store import search_dir

    folder = search_dir(out, "toy/refusal", "instruct", "prompt[-1]", "residual", method)
    (folder / "trials.csv").parent.mkdir(parents=True, exist_ok=True)
    (folder / "trials.csv").write_text("number,layer,coefficient\n")
    base = {
        "trait": "toy/refusal",
        "variant": "instruct",
        "vector_variant": "base",
        "method": method,
        "position": "prompt[-1]",
        "component": "residual",
        "direction": "positive",
        "n_trials": 6,
        "n_known": 8,
        "n_feasible": 3,
        "n_generations": {"total": 100},
    }
    write_json(folder / "best.json", {**base, **best})


def _write_ok_search(out, method: str, search: dict, heldout: dict):
    """A finished study whose choice (layer 2, coefficient 1.6) is ok held out."""
    _write_search(
        out,
        method,
        {
            "status": "ok",
            "feasible": True,
            "chosen": {"trial": 1, "layer": 2, "coefficient": 1.6, "weight": 16.0},
            "search": search,
            "heldout": heldout,
        },
    )


def _write_no_choice_search(out, method: str):
    _write_search(
        out, method, {"status": "no feasible steering found", "feasible": False, "chosen": None}
    )


def test_searches_are_a_table_of_their_own(tmp_path):
    synthetic_grid(tmp_path)
    before = pd.read_csv(_report(tmp_path) / "gap_analysis.csv")
    held = {"trait_delta": 71.0, "delta_lo": 60.0, "delta_hi": 80.0, "coherence_mean": 81.0}
    search = {"trait_delta": 78.0, "delta_lo": 70.0, "delta_hi": 85.0, "n": 20}
    _write_ok_search(tmp_path / "outputs", "mean_diff", search, {**held, "n": 20})
    _write_no_choice_search(tmp_path / "outputs", "random_baseline")
    out = _report(tmp_path)
    # a search trial (other questions, another baseline) never joins a grid table
    pd.testing.assert_frame_equal(pd.read_csv(out / "gap_analysis.csv"), before)
    searched = pd.read_csv(out / "search_heldout.csv")
    md = _row(searched, method="mean_diff")
    assert (md["coefficient"], md["search_trait_delta"], md["heldout_trait_delta"]) == (
        1.6,
        78.0,
        71.0,
    )
    assert (md["heldout_delta_lo"], md["heldout_delta_hi"], md["heldout_n"]) == (60, 80, 20)
    rb = _row(searched, method="random_baseline")
    assert rb["status"] == "no feasible steering found" and np.isnan(rb["coefficient"])
    text = (out / "report.md").read_text()
    assert "+71.0 [+60.0, +80.0]" in text and "no feasible steering found" in text
    # no calibration here: its section says so in words, with no empty table under them
    section = text.split("## Massive activations (calibration)", 1)[1].split("\n## ", 1)[0]
    assert section.strip() and "_no data_" not in section


def test_searches_held_out_p_is_adjusted_over_the_searches_alone(tmp_path):
    """Each search's held-out p gets its Benjamini-Hochberg q over the report's searches (a
    search with no choice has no test and no q); the grid's q-values stay as they were."""
    from scipy.stats import false_discovery_control

    synthetic_grid(tmp_path)
    before = pd.read_csv(_report(tmp_path) / "gap_analysis.csv")
    held = {"trait_delta": 40.0, "delta_lo": 10.0, "delta_hi": 70.0, "coherence_mean": 81.0}
    ps = {"mean_diff": 0.004, "probe": 0.07}  # an ok whose test does not hold
    search = {"trait_delta": 50.0, "delta_lo": 20.0, "delta_hi": 80.0, "n": 20}
    for method, p in ps.items():
        _write_ok_search(tmp_path / "outputs", method, search, {**held, "n": 20, "p": p})
    _write_no_choice_search(tmp_path / "outputs", "random_baseline")
    out = _report(tmp_path)
    pd.testing.assert_frame_equal(pd.read_csv(out / "gap_analysis.csv"), before)
    searched = pd.read_csv(out / "search_heldout.csv")
    expected = false_discovery_control(list(ps.values()), method="bh")
    for (method, _), q in zip(ps.items(), expected, strict=True):
        assert _row(searched, method=method)["heldout_q"] == pytest.approx(q, rel=1e-5)
    assert np.isnan(_row(searched, method="random_baseline")["heldout_q"])
    # 0.004 alone would hold at 5% (q 0.008 over two): the headline counts one of two
    metrics = read_json(out / "metrics.json")
    assert (metrics["searches_ok"], metrics["searches_ok_at_fdr_5pct"]) == (2, 1)


def test_negative_direction_measures_deltas_toward_suppression(tmp_path):
    """Cells steered with direction negative: the baseline refuses and steering suppresses
    it; the report's deltas are in each cell's own steering direction (whatever the params
    now say), so the largest suppression is the best."""
    from steerops.config import load_params
    from steerops.report.load import load_results

    grid = cells()
    negative = {method: {"direction": "negative"} for method, _ in grid}
    selection, heldout = write_grid(
        tmp_path / "outputs", grid, QUESTIONS, baseline_trait=100.0, settings_of=negative
    )
    # the all-questions delta (results.csv, steer_curves.csv) is baseline - trait: the share
    # of questions a config stops refusing, positive
    frame = load_results(load_params(write_params(tmp_path)))  # params' direction: positive
    assert len(frame) == sum(len(configs) for configs in grid.values())
    for (method, _), configs in grid.items():
        for layer, coef, sel, held, _ in configs:
            [row] = frame[
                (frame["method"] == method)
                & (frame["layer"] == layer)
                & (frame["coefficient"] == coef)
            ].itertuples()
            stopped = len(refusing(selection, sel)) + len(refusing(heldout, held))
            assert row.trait_delta == pytest.approx(100.0 * stopped / len(QUESTIONS))
            assert row.trait_delta == pytest.approx(100.0 - row.trait_mean)
    for steering in ({"direction": "negative"}, {}):
        out = _report(tmp_path, steering=steering)
        gap = pd.read_csv(out / "gap_analysis.csv")
        assert _row(gap, method="mean_diff")["delta"] == 70.0
        assert _row(gap, method="probe")["delta"] == 95.0
        assert _row(gap, method="mean_diff")["status"] == "ok"
        assert "steering direction" in (out / "report.md").read_text()
    # the paired gain of a cleaned variant is signed the same way (+65 - +70)
    curve = pd.read_csv(out / "cleaning_curve.csv")
    cleaned = curve[(curve["method"] == "mean_diff") & (curve["variant"] == "mean_diff_cleaned")]
    assert cleaned["gain"].iloc[0] == pytest.approx(65.0 - 70.0)


def test_plot_series_are_per_method_and_position_and_trace_to_grid_configs(tmp_path):
    from steerops.config import load_params
    from steerops.report.load import load_results

    spec = cells()
    spec.update(cells(position="response[:5]"))
    write_grid(tmp_path / "outputs", spec, QUESTIONS)
    out = _report(tmp_path)
    points = pd.read_csv(out / "coefficient_curves.csv")
    series = points.groupby(["method", "position"])
    # one series per (method, position) with a single layer each; aliases drawn once
    assert len(series) == 2 * len({m for m, _ in spec})
    assert (series["layer"].nunique() == 1).all()
    frame = load_results(load_params(tmp_path / "params.yaml"))
    for p in points.itertuples():
        [config] = frame[
            (frame["method"] == p.method)
            & (frame["position"] == p.position)
            & (frame["layer"] == p.layer)
            & (frame["coefficient"] == p.coefficient)
        ].itertuples()
        assert config.heldout_trait_delta == pytest.approx(p.delta)
        # a point's own coherence, not its cell's verdict, says whether it is usable
        assert p.heldout_coherent == (config.heldout_coherence_mean >= 68)
    gap = pd.read_csv(out / "gap_analysis.csv")
    for (method, position), line in series:
        cell = _row(gap, method=method, position=position)
        assert (line["cell_status"] == cell["status"]).all()
        chosen = line[line["chosen"]]
        if pd.isna(cell["coefficient"]):
            assert chosen.empty
        else:
            assert list(chosen["coefficient"]) == [cell["coefficient"]]
    png = (out / "coefficient_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_report_with_out_writes_into_that_folder_only(tmp_path, capsys):
    synthetic_grid(tmp_path)  # the pipeline's results, and its report
    params = str(write_params(tmp_path, report={"results": "docs/results.md"}))
    assert main(["report", "--params", params]) == 0
    pipeline = {p: p.read_bytes() for p in tmp_path.glob("*/*.*") if p.parent.name != "outputs"}
    assert len(pipeline) > 5
    run = tmp_path / "run"
    write_grid(run, cells(), QUESTIONS)  # another run's results
    capsys.readouterr()
    assert main(["report", "--params", params, "--out", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report written to {run / 'reports' / 'report.md'}"
    assert (run / "reports" / "results.md").is_file() and (
        run / "reports" / "gap_analysis.csv"
    ).is_file()
    assert {p: p.read_bytes() for p in pipeline} == pipeline  # the pipeline's report untouched


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"layers": {"1": ', "not valid JSON (line 1: Expecting value)"),
        ('{"layers": [1, 2], "aggregate": {}}', "layers: Input should be a valid dictionary"),
        (
            '{"aggregate": {"massive_dims": "507"}}',
            "aggregate.massive_dims: Input should be a valid list",
        ),
    ],
)
def test_a_damaged_input_leaves_the_report_as_it_was(tmp_path, capsys, text, problem):
    from steerops.calibration.store import calibration_file

    synthetic_grid(tmp_path)
    out = _report(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    damaged = calibration_file(tmp_path / "outputs", "instruct")
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_text(text)  # cut short, or not the shape calibrate writes
    capsys.readouterr()
    assert main(["report", "--params", str(tmp_path / "params.yaml")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"steerops report: error: {damaged}: {problem}")
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_report_folder_holding_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    """`--report-dir` pointed at a steering cell's folder (or `.`): the report replaces its
    folder whole, so one holding files it does not write is refused before anything runs."""
    synthetic_grid(tmp_path)
    params = str(write_params(tmp_path))
    cell = next((tmp_path / "outputs" / "steering").rglob("results.jsonl")).parent
    before = {p: p.read_bytes() for p in cell.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["report", "--params", params, "--report-dir", str(cell)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"{cell} holds " in line and "which steerops report does not write" in line
    assert {p: p.read_bytes() for p in cell.rglob("*") if p.is_file()} == before


def test_a_report_that_fails_while_writing_leaves_the_old_one_whole(tmp_path, monkeypatch):
    """A report killed or failing half-way through its files: the folder is the previous
    report, not new tables beside an old report.md."""
    from steerops.report import plots

    synthetic_grid(tmp_path)
    out = _report(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # after the CSVs, before the plots and report.md

    monkeypatch.setattr(plots, "cleaning_curve", broken)
    argv = ["report", "--params", str(tmp_path / "params.yaml"), "--min-coherence", "10"]
    assert main(argv) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".reports.")] == []


def test_the_best_cell_metric_is_chosen_on_the_selection_half(tmp_path):
    """`probe` is best held out, `mean_diff` on the selection half: the headline metric
    names mean_diff and reports its held-out numbers, never the held-out maximum."""
    grid = {
        ("mean_diff", "prompt[-1]"): [(2, 1.0, 0.8, 0.4, 90.0), (2, 0.0, 0.0, 0.0, 100.0)],
        ("probe", "prompt[-1]"): [(2, 1.0, 0.5, 0.9, 90.0), (2, 0.0, 0.0, 0.0, 100.0)],
    }
    write_grid(tmp_path / "outputs", grid, QUESTIONS)
    out = _report(tmp_path)
    gap = pd.read_csv(out / "gap_analysis.csv")
    md = _row(gap, method="mean_diff")
    metrics = read_json(out / "metrics.json")
    assert metrics["best_cell"].endswith("prompt[-1] residual mean_diff")
    assert metrics["best_selection_delta"] == pytest.approx(80.0)
    assert metrics["best_heldout_delta"] == pytest.approx(md["delta"]) == pytest.approx(40.0)
    assert (metrics["best_heldout_delta_lo"], metrics["best_heldout_delta_hi"]) == pytest.approx(
        (md["delta_lo"], md["delta_hi"])
    )
    assert metrics["best_heldout_n"] == 20 and metrics["best_status"] == "ok"
    assert _row(gap, method="probe")["delta"] == pytest.approx(90.0)


def test_a_cell_without_an_ok_choice_is_never_the_best_cell(tmp_path):
    """`mean_diff` has the largest selection-half delta but none held out ("no effect"):
    the choice did not hold, so there is no best cell. Falling back to the OK `probe`
    would choose by held-out results; `probe` is best only once mean_diff is not a
    candidate on the selection half either."""
    grid = {
        ("mean_diff", "prompt[-1]"): [(2, 1.0, 0.9, 0.0, 90.0), (2, 0.0, 0.0, 0.0, 100.0)],
        ("probe", "prompt[-1]"): [(2, 1.0, 0.5, 0.5, 90.0), (2, 0.0, 0.0, 0.0, 100.0)],
    }
    write_grid(tmp_path / "outputs", grid, QUESTIONS)
    out = _report(tmp_path)
    gap = pd.read_csv(out / "gap_analysis.csv")
    assert _row(gap, method="mean_diff")["status"] == "no effect"
    metrics = read_json(out / "metrics.json")
    assert metrics["best_cell"] is None
    assert metrics["selection_choice"].endswith("prompt[-1] residual mean_diff")
    assert metrics["best_status"] == "no effect" and metrics["best_heldout_delta"] == 0.0
    # no effect on the selection half: not a candidate, and the OK probe is the best
    (tmp_path / "c").mkdir()
    grid[("mean_diff", "prompt[-1]")][0] = (2, 1.0, 0.0, 0.9, 90.0)
    write_grid(tmp_path / "c" / "outputs", grid, QUESTIONS)
    metrics = read_json(_report(tmp_path / "c") / "metrics.json")
    assert metrics["best_cell"].endswith("prompt[-1] residual probe")
    assert metrics["best_status"] == "ok" and metrics["best_heldout_delta"] == pytest.approx(50.0)
    (tmp_path / "b").mkdir()
    write_grid(
        tmp_path / "b" / "outputs", {k: grid[k] for k in [("mean_diff", "prompt[-1]")]}, QUESTIONS
    )
    assert read_json(_report(tmp_path / "b") / "metrics.json")["best_cell"] is None


def test_the_report_bar_defaults_to_steers(tmp_path):
    """Without `report.min_coherence` the report judges at `steering.min_coherence`, the bar
    steer's verdicts used: a config at coherence 60 counts under a bar of 55 and not 68."""
    synthetic_grid(tmp_path, {"probe": ([10, 40, 70, 90], [60, 50, 40, 30])})
    gap = pd.read_csv(_report(tmp_path, steering={"min_coherence": 55.0}) / "gap_analysis.csv")
    assert _row(gap, method="probe")["status"] != "needs finer coefficients"
    gap = pd.read_csv(_report(tmp_path) / "gap_analysis.csv")
    assert _row(gap, method="probe")["status"] == "needs finer coefficients"
    both = {"steering": {"min_coherence": 55.0}, "report": {"min_coherence": 68.0}}
    gap = pd.read_csv(_report(tmp_path, **both) / "gap_analysis.csv")
    assert _row(gap, method="probe")["status"] == "needs finer coefficients"


def _steered_at(folder, bars: dict[str, float]) -> None:
    """Each cell's metrics.json as steer writes it, at the bar given by method."""
    from steerops.config import load_params
    from steerops.io import write_json
    from steerops.steering.best import cell_metrics, config_rows, protocol
    from steerops.steering.store import METRICS_FILE, ResultsLog

    params = load_params(write_params(folder))
    for path in sorted((folder / "outputs" / "steering").rglob("results.jsonl")):
        log = ResultsLog(path)
        h = log.entries[0]["settings_hash"]
        rows = config_rows(log, h, protocol(params), {"trait": "t"})
        bar = bars[path.parent.name]
        write_json(path.parent / METRICS_FILE, cell_metrics(rows, bar, protocol(params)))


def test_a_run_steered_at_its_own_bar_is_reported_at_it(tmp_path, capsys):
    """Cells steered with --min-coherence 55 (recorded in their metrics.json) are reported
    at 55 without the flag again; cells at two bars are judged at the params' bar, with a
    warning; an explicit report bar wins."""
    synthetic_grid(tmp_path, {"probe": ([10, 40, 70, 90], [60, 50, 40, 30])})
    _steered_at(tmp_path, {"probe": 55.0})
    # a cell the report leaves out (no results log) does not set the bar
    [probe] = (tmp_path / "outputs" / "steering").rglob("probe")
    (probe.parent / "ghost").mkdir()
    (probe.parent / "ghost" / "metrics.json").write_text('{"min_coherence": 40.0}')
    capsys.readouterr()
    gap = pd.read_csv(_report(tmp_path) / "gap_analysis.csv")
    assert _row(gap, method="probe")["status"] != "needs finer coefficients"
    assert "warning" not in capsys.readouterr().err
    gap = pd.read_csv(_report(tmp_path, report={"min_coherence": 68.0}) / "gap_analysis.csv")
    assert _row(gap, method="probe")["status"] == "needs finer coefficients"
    err = capsys.readouterr().err
    assert (
        "1 of 1 cells were steered at coherence >= 55; this report judges every cell at 68" in err
    )

    two = tmp_path / "two"
    two.mkdir()
    synthetic_grid(two, {"probe": ([10, 40, 70, 90], [60, 50, 40, 30]), "pca": ([50], [90])})
    _steered_at(two, {"probe": 55.0, "pca": 68.0})
    gap = pd.read_csv(_report(two) / "gap_analysis.csv")
    assert _row(gap, method="probe")["status"] == "needs finer coefficients"
    assert "1 of 2 cells were steered at coherence >= 55" in capsys.readouterr().err


def test_the_prediction_section_says_why_it_has_no_table():
    from steerops.report import predict
    from steerops.report.document import prediction_body

    rows = [(1.0, 10.0, 3.0, 0.5), (2.0, 20.0, 3.0, 0.5), (3.0, 30.0, 3.0, 0.5)]
    features = pd.DataFrame(rows, columns=["weight", "layer_norm", "layer_norm_clean", "x"])
    features["abs_mean_proj"] = features["weight"] ** 2
    # two distinct ok cells: no predictor can be scored, and the section says so
    body = prediction_body(predict.loo_errors(features.iloc[:2]))
    assert body.startswith("Not fitted: leave-one-out needs 3 distinct ok cells")
    assert "the most any predictor had here is 2" in body and "|" not in body
    # three: the table, with the scale on layer_norm exact
    table = prediction_body(predict.loo_errors(features))
    assert table.startswith("| predictor | n | loo_mae |")
    assert "| k * layer_norm | 3 |" in table and "| mean | 3 | 1 | 0.5 |" in table


def test_a_results_page_in_a_subfolder_of_the_report_is_rewritten_and_nothing_beside_it_lost(
    tmp_path, capsys
):
    synthetic_grid(tmp_path)
    params = str(write_params(tmp_path, report={"results": "reports/page/results.md"}))
    assert main(["report", "--params", params]) == 0
    assert main(["report", "--params", params]) == 0  # its own page: not in the way
    page = tmp_path / "reports" / "page"
    assert sorted(p.name for p in page.iterdir()) == ["results.md"]
    (page / "notes.md").write_text("mine")
    capsys.readouterr()
    assert main(["report", "--params", params]) == 2
    assert "holds page/notes.md, which steerops report does not write" in capsys.readouterr().err
    assert (page / "notes.md").read_text() == "mine"


def test_a_report_reads_each_vector_file_once_for_all_its_tables(tmp_path, monkeypatch):
    """Near aliases, removed shares and the preclean agreement all read the grid's vectors:
    one loader serves the three."""
    from collections import Counter

    from steerops.report import calibrated

    synthetic_grid(tmp_path)
    reads: Counter = Counter()
    read = calibrated.vectors_for

    def counting(*args):
        reads[args[1:-1]] += 1
        return read(*args)

    monkeypatch.setattr(calibrated, "vectors_for", counting)
    _report(tmp_path)
    assert reads and max(reads.values()) == 1


def test_the_report_s_run_carries_its_counts_and_best_cell(tmp_path):
    """The report stage's MLflow run holds what its metrics.json says (counts as metrics,
    the best cell and its verdict as tags) and the protocol it chose with, not files only."""
    from mlflow import MlflowClient

    synthetic_grid(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = _report(tmp_path, tracking={"uri": uri}, seed=0)
    counts = read_json(out / "metrics.json")
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`steerops.stage` = 'report'"
    )
    assert run.data.metrics["cells"] == counts["cells"] > 0
    assert run.data.metrics["cells_ok"] == counts["cells_ok"]
    assert run.data.tags["steerops.best_cell"] == counts["best_cell"]
    assert run.data.tags["steerops.best_status"] == counts["best_status"]
    assert run.data.params["heldout_fraction"] == "0.5" and run.data.params["seed"] == "0"


def test_findings_count_a_cell_with_its_aliases_and_near_copies_once_held_if_any_is():
    from steerops.report.report_metrics import findings as _findings

    cell = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    rows = [
        ("a", "", "", "ok"),
        ("a_cleaned", "", "a", "ok"),  # a near copy of a
        ("a_preclean", "a_cleaned", "", "ok"),  # an alias of the near copy: still a's
        ("b", "", "", "no effect"),
        ("b_cleaned", "", "b", "ok"),  # ok where its twin is not, near the bar: one finding
        ("c", "", "", "no effect"),
    ]
    gap = pd.DataFrame(
        [
            cell | dict(zip(("method", "alias_of", "near_copy_of", "status"), r, strict=True))
            for r in rows
        ]
    )
    assert _findings(gap, gap["status"] == "ok") == 2
    # the same methods on another model are other findings
    both = pd.concat([gap, gap.assign(model="n")], ignore_index=True)
    assert _findings(both, both["status"] == "ok") == 4
    assert _findings(gap.iloc[:0], gap["status"].iloc[:0] == "ok") == 0
