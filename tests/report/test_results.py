"""The results page (`report.results`) and the report's massive-activations section, on a
synthetic run: the page is written only when asked, every number on it is the one in the
run's files (calibration JSON, the report's CSVs, the search summary), a no-effect cell is
reported as such, and cleaned methods name the dim set their vectors were cleaned with."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from report_data import COEFS, QUESTIONS, SYNTHETIC, cells, synthetic_grid, write_params
from steering_data import COMPONENT, TRAIT, write_grid
from steerops import stats
from steerops.calibration.store import write_calibration
from steerops.cli import main
from steerops.config import load_params
from steerops.io import write_json
from steerops.search.store import search_dir
from steerops.vectors.store import vectors_dir

POSITION = "prompt[-1]"
PEAKS = {2: 24859.23, 3: -1234.56}  # dim 7's peak per layer (signed)
DIM_SETS = {  # the set each cleaned method's vectors record
    "mean_diff_cleaned": "massive",
    "mean_diff_preclean": "massive",
    "mean_diff_top1": "massive",
    "probe_cleaned": "massive",
    "probe_preclean": "top_mean",
}


def _layer(massive: dict[int, float], median: float) -> dict:
    return {
        "median_abs": median,
        "massive_dims": sorted(massive),
        "massive": {
            str(d): {
                "dim": d,
                "value": v,
                "ratio": round(abs(v) / median, 2),
                "sequence": 0,
                "position": 0,
                "token": "<|im_start|>",
            }
            for d, v in massive.items()
        },
    }


def _calibration(out) -> dict:
    record = {
        "variant": "instruct",
        "model": {"id": "m"},
        "n_tokens": 321,
        "layers": {
            "1": _layer({}, 0.5),
            "2": _layer({7: PEAKS[2]}, 2.5),
            "3": _layer({7: PEAKS[3]}, 1.2),
        },
        "aggregate": {
            "global_dims": [7, 3, 11],
            "rule": {"top_n": 5, "min_layers": 2},
            "massive_dims": [7],
            "massive_by_layer": {"1": [], "2": [7], "3": [7]},
            "massive_layers": {"7": [2, 3]},
            "massive_rule": {"threshold": 100.0, "ratio": 1000.0},
        },
    }
    write_calibration(out, "instruct", record)
    return record


def _run(tmp_path) -> dict:
    """A grid, its calibration, the cleaned vectors' metadata and one search."""
    out = tmp_path / "outputs"
    synthetic_grid(tmp_path)
    record = _calibration(out)
    for method, dim_set in DIM_SETS.items():
        folder = vectors_dir(out, TRAIT, "base", POSITION, COMPONENT, method)
        write_json(folder / "metadata.json", {"calibration": {"dim_set": dim_set}})
    best = {
        "trait": TRAIT,
        "variant": "instruct",
        "vector_variant": "base",
        "component": COMPONENT,
        "direction": "positive",
        "method": "mean_diff",
        "position": POSITION,
        "status": "ok",
        "feasible": True,
        "chosen": {"trial": 1, "layer": 2, "coefficient": 1.6, "weight": 16.0},
        "search": {"trait_delta": 78.0, "delta_lo": 70.0, "delta_hi": 85.0, "n": 20},
        "heldout": {
            "trait_delta": 71.0,
            "delta_lo": 60.5,
            "delta_hi": 80.3,
            "p": 0.000649,
            "coherence_mean": 81.0,
            "n": 20,
        },
        "n_trials": 6,
        "n_known": 8,
        "n_generations": {"total": 100},
    }
    folder = search_dir(out, TRAIT, "instruct", POSITION, COMPONENT, "mean_diff")
    write_json(folder / "best.json", best)
    (folder / "trials.csv").write_text("number,layer,coefficient\n")  # a finished search
    return {"record": record, "best": best}


def _report(tmp_path, results: str | None = "docs/results.md"):
    report = {"results": results} if results else {}
    assert main(["report", "--params", str(write_params(tmp_path, report=report))]) == 0
    return tmp_path / "reports"


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _rows(section: str) -> list[dict[str, str]]:
    """The section's markdown table as dicts (pipes escaped as \\| stay inside a cell)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    head, body = cells[0], cells[2:]
    assert all(len(row) == len(head) for row in body), "a cell split the table"
    return [dict(zip(head, row, strict=True)) for row in body]


def test_the_results_page_is_written_only_when_asked(tmp_path):
    _run(tmp_path)
    _report(tmp_path, results=None)
    assert not (tmp_path / "docs").exists()
    _report(tmp_path)
    first = (tmp_path / "docs" / "results.md").read_bytes()
    _report(tmp_path)
    assert (tmp_path / "docs" / "results.md").read_bytes() == first  # deterministic
    text = first.decode()
    assert "Generated by `steerops report`" in text and "`make repro`" in text
    for line in (
        "- Model: m",
        f"- Trait: {TRAIT}",
        "- Judge: toy, `toy:exact`: the toy world's exact judge",
    ):
        assert line in text
    assert "- Questions per cell: 40 scored (20 selection / 20 held out); split seed" in text
    # each side of the preclean table carries its held-out interval
    [md] = [
        r for r in _rows(_section(text, "Preclean vs clean-after")) if r["method"] == "mean_diff"
    ]
    assert re.fullmatch(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", md["preclean_delta [95% CI]"])
    assert re.fullmatch(
        r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", md["clean_after_delta [95% CI]"]
    )
    # the main job's page says which questions it steered (`steering.subset`)
    # and which of the vectors built it did not steer
    params = write_params(
        tmp_path,
        report={"results": "docs/results.md"},
        steering={"subset": 40},
        vectors={"methods": ["pca", "mean_diff", "probe"]},
    )
    assert main(["report", "--params", str(params)]) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    assert (
        "- Questions per cell: 40 scored (20 selection / 20 held out), of each trait's steering "
        "questions the first 40 (`steering.subset`); split seed"
    ) in text
    # probe is not in steering.methods, but its cells from an earlier sweep have verdicts
    assert "probe" not in {str(m) for m in load_params(params).steering.methods}
    [line] = [x for x in text.splitlines() if x.startswith("- Steering: ")]
    assert line.endswith(
        "; built but not steered: `pca` (in `vectors.methods`, not in `steering.methods`: no "
        "verdict here)"
    )
    # a method the grid names with no config measured (never steered, or its vectors
    # rebuilt since: the report leaves those configs out) is named, not silently missing
    grid = [str(m) for m in load_params(params).steering.methods]
    params = write_params(
        tmp_path,
        report={"results": "docs/results.md"},
        steering={"subset": 40, "methods": [*grid, "pca"]},
        vectors={"methods": ["pca", "mean_diff", "probe"]},
    )
    assert main(["report", "--params", str(params)]) == 0
    [line] = [
        x
        for x in (tmp_path / "docs" / "results.md").read_text().splitlines()
        if x.startswith("- Steering: ")
    ]
    assert "built but not steered" not in line
    assert line.endswith(
        "; in `steering.methods` but with no config measured with their vectors as they are "
        "now: `pca` (not steered yet, or their vectors were rebuilt since: no verdict here "
        "until `steerops steer` measures them)"
    )


def test_both_pages_give_the_verdicts_one_legend(tmp_path):
    """report.md and the results page explain every verdict in the same words, and name
    each verdict the tables can print."""
    _run(tmp_path)
    out = _report(tmp_path)
    pages = ((tmp_path / "docs" / "results.md").read_text(), (out / "report.md").read_text())
    legends = [page.split("Verdicts: ", 1)[1].split(" Coherences print", 1)[0] for page in pages]
    assert legends[0] == legends[1]
    verdicts = (stats.OK, stats.NO_EFFECT, stats.OPPOSITE, stats.INCOHERENT, stats.TOO_FEW)
    verdicts += (stats.NEEDS_FINER, stats.UNSCORED, stats.HELDOUT_UNSCORED)
    assert all(f"**{verdict}**" in legends[0] for verdict in verdicts)


def test_massive_dims_per_layer_come_from_the_calibration_json(tmp_path):
    record = _run(tmp_path)["record"]
    out = _report(tmp_path)
    for text in ((tmp_path / "docs" / "results.md").read_text(), (out / "report.md").read_text()):
        section = _section(text, "Massive activations")
        rows = _rows(section)
        assert [(int(r["layer"]), int(r["dim"])) for r in rows] == [(2, 7), (3, 7)]
        for row in rows:
            layer = record["layers"][row["layer"]]
            peak = layer["massive"]["7"]
            assert float(row["peak"]) == pytest.approx(peak["value"], abs=0.05)
            assert float(row["ratio_to_median"]) == pytest.approx(peak["ratio"], abs=0.5)
            assert float(row["median_abs"]) == pytest.approx(layer["median_abs"])
            assert row["token"] == r"<\|im_start\|>" and row["position"] == "0"
        assert "7 at layers 2-3" in section
        assert "Large-mean global dims" in section and ": 7, 3, 11" in section
    csv = pd.read_csv(out / "massive_activations.csv")
    assert csv["peak"].tolist() == pytest.approx([PEAKS[2], PEAKS[3]], rel=1e-5)  # %.6g


def test_verdicts_and_coefficients_match_the_gap_table_and_no_effect_says_so(tmp_path):
    _run(tmp_path)
    out = _report(tmp_path)
    text = (tmp_path / "docs" / "results.md").read_text()
    section = _section(text, "Best coefficients of the grid, held out")
    gap = pd.read_csv(out / "gap_analysis.csv")
    cliffs = 0
    for row in gap.itertuples():
        [line] = [x for x in section.splitlines() if f"`{row.method}`" in x]
        assert f"**{row.status}**" in line
        if row.status != "needs finer coefficients":
            numbers = f"{row.delta:+.1f} [{row.delta_lo:+.1f}, {row.delta_hi:+.1f}]"
            assert numbers in line and f"coefficient {row.coefficient:g}:" in line
            assert f"layer {row.layer:g}," in line
        # an ok choice is the best of the grid that was steered, which the line names
        layers = "layers 1, 2" if row.method == "mean_diff" else "layer 2"
        steered = 5 if row.method == "mean_diff" else len(SYNTHETIC[row.method][0])
        coefficients = ", ".join(f"{c:g}" for c in COEFS[: steered if steered < 5 else 4])
        # ... or the only coherent one (coherence >= 68 on the selection half)
        cohs = SYNTHETIC[row.method][1] + ([99.0] if row.method == "mean_diff" else [])
        which = "the only coherent one" if sum(c >= 68 for c in cohs) == 1 else "best"
        grid = f"{which} of {steered} steered configs ({layers}; coefficients {coefficients})"
        assert (grid in line) == (row.status == "ok")
        edge = "the grid's largest coefficient at this layer, so a larger one may steer more"
        assert (edge in line) == (row.status == "ok" and row.at_largest_coefficient)
        # the next coefficient up at the chosen layer was incoherent on the selection half
        deltas, coherences = SYNTHETIC[row.method]
        up = COEFS.index(row.coefficient) + 1 if row.status == "ok" else len(coherences)
        if up < len(coherences) and coherences[up] < 68:
            assert f"the next larger coefficient here ({COEFS[up]:g}) is incoherent" in line
            cliffs += 1
        else:
            assert "the next larger coefficient" not in line
    assert cliffs >= 1  # mean_diff's 1.5, next to 2.0 at coherence 50
    [no_effect] = [x for x in section.splitlines() if "`random_baseline`" in x]
    # its selection-half interval reaches zero: decided there, and shown
    assert "**no effect** on the selection half, no optimal coefficient" in no_effect
    assert "selection delta +5.0 [+0.0, +20.0]; held-out delta" in no_effect
    ok = gap[gap["status"] == "ok"]["method"]
    assert set(ok) == set(pd.read_csv(out / "coefficients.csv")["method"])


def test_cleaning_tables_name_the_dim_set_from_the_vector_metadata(tmp_path):
    _run(tmp_path)
    out = _report(tmp_path)
    curve = pd.read_csv(out / "cleaning_curve.csv", keep_default_na=False)
    for row in curve.itertuples():
        assert row.dim_set == DIM_SETS.get(row.variant, ""), row.variant
    prepost = pd.read_csv(out / "preclean_vs_clean_after.csv", keep_default_na=False)
    sets = dict(zip(prepost["method"], prepost["dim_set"], strict=True))
    assert sets == {"mean_diff": "massive", "probe": "preclean top_mean, clean-after massive"}
    text = (tmp_path / "docs" / "results.md").read_text()
    rows = _rows(_section(text, "Cleaning curve"))
    assert [r["dim_set"] for r in rows] == list(curve["dim_set"])
    curve = pd.read_csv(out / "cleaning_curve.csv")
    assert [r["delta [95% CI]"] for r in rows] == _intervals(curve, "delta")
    prepost = pd.read_csv(out / "preclean_vs_clean_after.csv")
    rows = _rows(_section(text, "Preclean vs clean-after"))
    assert [r["gap [95% CI]"] for r in rows] == _intervals(prepost, "gap")


def _intervals(table: pd.DataFrame, name: str) -> list[str]:
    """The CSV's "estimate [low, high]" per row ("" where nothing was chosen)."""
    return [
        "" if pd.isna(mid) else f"{mid:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        for mid, lo, hi in zip(table[name], table[f"{name}_lo"], table[f"{name}_hi"], strict=True)
    ]


def test_the_search_result_is_the_summary_s_held_out_numbers(tmp_path):
    best = _run(tmp_path)["best"]
    _report(tmp_path)
    text = (tmp_path / "docs" / "results.md").read_text()
    [row] = _rows(_section(text, "The search, held out"))
    held = best["heldout"]
    assert row["heldout_trait_delta [95% CI]"] == (
        f"{held['trait_delta']:+.1f} [{held['delta_lo']:+.1f}, {held['delta_hi']:+.1f}]"
    )
    assert float(row["heldout_coherence"]) == held["coherence_mean"]
    assert row["heldout_p"] == stats.p_text(held["p"])  # as the verdict lines print a p
    assert (row["status"], row["coefficient"], row["heldout_n"]) == ("ok", "1.6", "20")


def test_whether_cleaning_helps_is_read_from_the_paired_gain(tmp_path):
    _run(tmp_path)
    out = _report(tmp_path)
    curve = pd.read_csv(out / "cleaning_curve.csv", keep_default_na=False)
    compared = curve[curve["gain"] != ""]
    assert len(compared) and set(compared["dims_cleaned"]) <= {"1", "2", "3", "5", "all"}
    text = (tmp_path / "docs" / "results.md").read_text()
    section = _section(text, "Does removing")
    # the heading names the sets the compared variants cleaned (one has no metadata)
    assert set(compared["dim_set"]) == {"", "massive"}
    assert "## Does removing massive dims help?" in text
    lines = [x for x in section.splitlines() if x.startswith("- ")]
    assert len(lines) == len(compared)
    for line, row in zip(lines, compared.itertuples(), strict=True):
        gain, lo, hi = float(row.gain), float(row.gain_lo), float(row.gain_hi)
        assert f"`{row.variant}`" in line and f"[{lo:+.1f}, {hi:+.1f}], n {row.gain_n}" in line
        says = (
            "cleaning helps"
            if lo > 0
            else "cleaning hurts"
            if hi < 0
            else "each held-out question's trait score was the same in both"
            if lo == hi
            else "no detectable difference"
        )
        assert f"{gain:+.1f}" in line and says in line
        k = int(row.gain_k)
        assert (f"one of {k} cleaned variants compared" in line) == (k > 1)


def test_a_verdict_with_an_interval_of_no_width_says_why():
    from steerops.report.results import _verdict_lines

    row = {"trait": "t", "position": "p", "method": "m", "alias_of": "", "layer": 2}
    row |= {"coefficient": 1.0, "coherence": 98.0, "n": 20, "at_largest_coefficient": False}
    gap = pd.DataFrame(
        [
            row | {"status": "no effect", "delta": 0.0, "delta_lo": 0.0, "delta_hi": 0.0},
            row | {"status": "ok", "delta": 50.0, "delta_lo": 20.0, "delta_hi": 75.0},
        ]
    )
    flat, ok = _verdict_lines(gap, threshold=68.0)
    assert (
        "+0.0 [+0.0, +0.0] (every question gave the same delta: an interval of no "
        "width, not precision), coherence" in flat
    )
    assert "no width" not in ok


def test_an_ok_line_gives_its_sign_flip_test_and_says_when_it_does_not_hold_over_the_cells():
    from steerops.report.results import _verdict_lines

    row = {"trait": "t", "position": "p", "alias_of": "", "layer": 2, "status": "ok"}
    row |= {"coefficient": 1.0, "coherence": 90.0, "n": 20, "at_largest_coefficient": False}
    row |= {"delta": 30.0, "delta_lo": 5.0, "delta_hi": 55.0, "selection_delta_lo": 10.0}
    gap = pd.DataFrame(
        [
            row | {"method": "a", "heldout_p": 0.00004, "heldout_q": 0.00012},
            row | {"method": "b", "heldout_p": 0.0201, "heldout_q": 0.0602},
            row | {"method": "c", "heldout_p": 0.0625, "heldout_q": 0.08},
            row
            | {"method": "d", "heldout_p": 0.7, "heldout_q": 0.7, "status": "no effect"}
            | {"delta": 2.0, "delta_lo": -20.0},
        ]
    )
    held, lucky, sparse, flat = _verdict_lines(gap, threshold=68.0)
    assert (
        "; sign-flip p < 0.001 one-sided, q < 0.001 over the report's 4 cells (`a`, `b`, `c`, "
        "`d`)" in held
    )
    assert "not significant" not in held
    assert (
        "; **not significant once the report's 4 cells are counted together** (sign-flip p "
        "0.0201 one-sided, q 0.0602 over the report's 4 cells (`a`, `b`, `c`, `d`))" in lucky
    )
    # an interval above zero that its test does not confirm: still ok, and says why
    assert sparse.startswith("- t p `c`: **ok**")
    assert (
        "n 20; **its sign-flip test does not confirm it** (sign-flip p 0.0625 one-sided, q 0.0800 "
        "over the report's 4 cells (`a`, `b`, `c`, `d`); p is not under 0.025: the interval "
        "clears zero on a few "
        "questions that moved far; steer more questions)" in sparse
    )
    # other verdicts carry no test
    assert "sign-flip" not in flat and "sign-flip" not in held.split("; sign-flip p")[0]
    # an alias is out of the q's family (its twin's test is counted): its line gives p only
    twin = row | {"method": "e", "alias_of": "a", "heldout_p": 0.0031, "heldout_q": None}
    [line] = _verdict_lines(pd.DataFrame([twin]), threshold=68.0)
    assert line.endswith("n 20; sign-flip p 0.00310 one-sided")
    # a near copy's q is its p in its twin's place: the line says so, and the family it is
    # over does not count it
    copy = row | {"method": "a_cleaned", "near_copy_of": "a", "heldout_p": 0.00005}
    two = gap.iloc[:2].assign(near_copy_of="")
    lines = _verdict_lines(
        pd.concat([two, pd.DataFrame([copy | {"heldout_q": 0.0001}])]), threshold=68.0
    )
    assert lines[2].endswith(
        "n 20; sign-flip p < 0.001 one-sided, q < 0.001 over the report's 2 cells (`a`, `b`), in "
        "`a`'s "
        "place (a near copy of it at the same config)"
    )
    assert "over the report's 2 cells" in lines[0]


def test_a_report_of_a_scratch_run_reads_the_pipelines_calibration_and_vectors(
    tmp_path, monkeypatch
):
    """`report --out RUN` on a scratch steer's folder: the run steered the pipeline's vectors,
    so the massive dims and each cleaned method's dim set come from the pipeline's outputs,
    and the report equals the pipeline's on the same results."""
    import shutil

    _run(tmp_path)
    pipeline = _report(tmp_path)
    run = tmp_path / "runs" / "steer-1"
    for stage in ("steering", "search"):  # a scratch run holds results only
        shutil.copytree(tmp_path / "outputs" / stage, run / stage)
    params = str(tmp_path / "params.yaml")
    assert main(["report", "--params", params, "--out", str(run)]) == 0
    for name in ("report.md", "massive_activations.csv", "cleaning_curve.csv"):
        assert (run / "reports" / name).read_text() == (pipeline / name).read_text(), name
    # its results page is the run's, with the command that regenerates it
    page = (run / "reports" / "results.md").read_text().splitlines()
    assert page[0] == "# Results of the run in `runs/steer-1/`"
    assert "Generated by `steerops report --out runs/steer-1/` from" in page[2]
    assert "the pipeline's calibration" in page[2]
    # given --inputs DIR, it says so, and its command keeps the flag
    assert main(["report", "--params", params, "--out", str(run), "--inputs", str(run)]) == 0
    page = (run / "reports" / "results.md").read_text().splitlines()
    command = "steerops report --out runs/steer-1/ --inputs runs/steer-1/"
    assert f"Generated by `{command}` from" in page[2]
    assert "`runs/steer-1/`'s calibration" in page[2]
    # the pipeline's page of a params file given by flag is that experiment's, not the main
    # job's `make repro` regenerates; of ./params.yaml, the main job's
    flag = f"--params {tmp_path / 'params.yaml'}"
    main_page = (tmp_path / "docs" / "results.md").read_text().splitlines()
    assert main_page[0] == f"# Results of experiment `toy-refusal` (`{flag}`)"
    assert f"Regenerate it with `steerops report {flag}` after its stages ran" in main_page[2]
    # from the experiment's own folder, without --params: still that experiment's
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 0
    main_page = (tmp_path / "docs" / "results.md").read_text().splitlines()
    assert main_page[0] == "# Results of experiment `toy-refusal` (`--params params.yaml`)"
    # the params.yaml beside the pipeline's dvc.yaml is the main job's, which make repro runs
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert main(["report"]) == 0
    main_page = (tmp_path / "docs" / "results.md").read_text().splitlines()
    assert main_page[0] == "# Results of the main job" and "make repro" in main_page[2]


def test_a_report_logs_where_the_run_it_reports_logged(tmp_path, monkeypatch):
    """A default scratch run (runs/steer-<time>/) logged to the project's store and keeps no
    store of its own: its report goes to the project's store too. A run given --out has
    DIR/mlflow.db, and its report goes there."""
    from steerops.report import command
    from steerops.tracking.store import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params_file = write_params(tmp_path, tracking={"enabled": True})
    used = []
    monkeypatch.setattr(command, "_track", lambda params, files: used.append(tracking_uri(params)))
    scratch, named = tmp_path / "runs" / "steer-1", tmp_path / "runs" / "mine"
    for run in (scratch, named):
        write_grid(run, cells(), QUESTIONS)
    (named / "mlflow.db").write_bytes(b"")  # `steer --out runs/mine` made its store
    for run in (scratch, named):
        assert main(["report", "--params", str(params_file), "--out", str(run)]) == 0
    project = load_params(params_file)
    assert used == [tracking_uri(project), f"sqlite:///{named / 'mlflow.db'}"]
    assert not (scratch / "mlflow.db").exists()
    for run in (scratch, named):  # each report in its run's folder all the same
        assert (run / "reports" / "report.md").is_file()
    assert not (tmp_path / "reports").exists()


def test_cells_without_a_scored_steered_config_say_why(tmp_path):
    """A cell holding only the unsteered config, and one whose steered configs are coherent
    but were given no trait score: each gets its own verdict line, and the report and the
    results page are written whole."""
    import json

    from steering_data import cell_log

    synthetic_grid(
        tmp_path,
        {"mean_diff": SYNTHETIC["mean_diff"], "probe": ([], []), "gradient": SYNTHETIC["probe"]},
    )
    log = cell_log(tmp_path / "outputs", "gradient", POSITION)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    for e in entries:
        if e["type"] == "config" and e["config"]["coefficient"] != 0:
            e["scores"] = [[None, coherence] for _, coherence in e["scores"]]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    out = _report(tmp_path)
    gap = pd.read_csv(out / "gap_analysis.csv").set_index("method")
    assert gap.loc["probe", "status"] == "needs finer coefficients"
    assert gap.loc["gradient", "status"] == "trait unscored"
    assert gap.loc["mean_diff", "status"] == "ok"
    section = _section(
        (tmp_path / "docs" / "results.md").read_text(), "Best coefficients of the grid, held out"
    )
    [probe] = [x for x in section.splitlines() if "`probe`" in x]
    assert "no steered config has a coherence score" in probe
    [gradient] = [x for x in section.splitlines() if "`gradient`" in x]
    assert "**trait unscored**" in gradient and "steered config a trait score" in gradient
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cells_trait_unscored"] == 1 and metrics["cells_needing_finer_coefficients"] == 1
    # a report of that one cell alone (no other cell's number in its column)
    alone = tmp_path / "alone"
    alone.mkdir()
    synthetic_grid(alone, {"probe": ([], [])})
    _report(alone)
    assert "no steered config has a coherence score" in (alone / "docs" / "results.md").read_text()


def test_a_search_at_another_coherence_bar_says_so(tmp_path):
    """A search keeps the verdict of its own `min_coherence`: the page shows that bar, and
    says when it is not the one the page states for the grid."""
    best = _run(tmp_path)["best"]
    folder = search_dir(tmp_path / "outputs", TRAIT, "instruct", POSITION, COMPONENT, "mean_diff")
    write_json(folder / "best.json", {**best, "min_coherence": 50.0})
    _report(tmp_path)
    section = _section((tmp_path / "docs" / "results.md").read_text(), "The search, held out")
    [row] = _rows(section)
    assert float(row["min_coherence"]) == 50.0
    assert "coherence >= 50, not this page's 68" in section
    write_json(folder / "best.json", {**best, "min_coherence": 68.0})
    _report(tmp_path)
    section = _section((tmp_path / "docs" / "results.md").read_text(), "The search, held out")
    assert float(_rows(section)[0]["min_coherence"]) == 68.0 and "not this page's" not in section


def test_no_effect_on_the_selection_half_is_not_worded_as_a_held_out_finding():
    """The legend's "no effect" covers both halves; a line decided on the selection half
    shows that half's interval, next to a held-out one that may be above zero."""
    from steerops.report.results import VERDICTS, _verdict_lines

    row = {"trait": "t", "position": "p", "method": "m", "alias_of": "", "layer": 2}
    row |= {"coefficient": 1.0, "coherence": 98.0, "n": 20, "at_largest_coefficient": False}
    row |= {"status": "no effect", "delta": 30.0, "delta_lo": 10.0, "delta_hi": 50.0}
    gap = pd.DataFrame(
        [
            row | {"selection_delta": 12.0, "selection_delta_lo": -5.0, "selection_delta_hi": 30.0},
            row | {"selection_delta": 40.0, "selection_delta_lo": 20.0, "selection_delta_hi": 60.0},
        ]
    )
    on_selection, held_out = _verdict_lines(gap, threshold=68.0)
    assert "**no effect** on the selection half" in on_selection
    assert "selection delta +12.0 [-5.0, +30.0]" in on_selection
    assert "**no effect** held out" in held_out and "selection delta" not in held_out
    assert "selection half" in VERDICTS.split("**no effect**")[1].split("**")[0]


def test_an_opposite_effect_is_worded_by_the_half_that_moved_and_counted_apart():
    """ "opposite effect": every coherent config moved the trait the other way (a sign to
    check), or the selection half's effect reversed held out (the halves disagree); counted
    in metrics.json under its own name, not as "no effect"."""
    from steerops.report.report_metrics import report_metrics as _metrics
    from steerops.report.results import VERDICTS, _verdict_lines

    row = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    row |= {"method": "m", "alias_of": "", "layer": 2, "coefficient": 1.0, "coherence": 90.0}
    row |= {"n": 20, "at_largest_coefficient": False, "status": "opposite effect"}
    row |= {"delta": -60.0, "delta_lo": -85.0, "delta_hi": -35.0, "selection_delta": -40.0}
    gap = pd.DataFrame(
        [
            row | {"selection_delta_lo": -65.0, "selection_delta_hi": -15.0},
            row | {"method": "k", "selection_delta_lo": 5.0, "selection_delta_hi": 60.0},
        ]
    )
    against, reversed_ = _verdict_lines(gap, threshold=68.0)
    assert against.startswith("- t p `m`: **opposite effect**, no optimal coefficient (chosen")
    assert "selection delta -40.0 [-65.0, -15.0]; held-out delta -60.0 [-85.0, -35.0]" in against
    assert against.endswith("check the vector's sign and `steering.direction`")
    assert "the selection half's effect reversed held out" in reversed_
    assert "**opposite effect**" in VERDICTS
    gap["heldout_q"], gap["near_copy_of"] = float("nan"), ""
    empty = pd.DataFrame(columns=["flag", "loo_mae", "status"])
    no_searches = pd.DataFrame(columns=["status", "heldout_q"])
    counts = _metrics(gap, empty, empty, no_searches)
    assert counts["cells_opposite_effect"] == 2 and counts["cells_no_effect"] == 0
    assert counts["best_cell"] is None  # the reversed cell is no best
    assert counts["near_copies"] == 0
    gap.loc[1, "near_copy_of"] = "m"  # a near copy stays a cell of its own, counted apart
    counts = _metrics(gap, empty, empty, no_searches)
    assert counts["near_copies"] == 1 and counts["cells_opposite_effect"] == 2


def test_tables_never_print_a_coherence_or_bound_across_its_verdict():
    from steerops.report.markdown import markdown_table

    table = pd.DataFrame(
        {
            "status": ["incoherent held out", "ok"],
            "min_coherence": [68.0, 68.0],
            "delta": [40.0, 12.0],
            "delta_lo": [20.0, 0.03],
            "delta_hi": [60.0, 30.0],
            "coherence": [67.996, 83.38],
        }
    )
    rows = _rows(markdown_table(table))
    assert [r["coherence"] for r in rows] == ["67.99", "83.38"]
    assert rows[1]["delta [95% CI]"] == "+12.0 [+0.03, +30.0]"
    assert rows[0]["min_coherence"] == "68"


def test_the_cleaning_gain_header_says_its_intervals_hold_together():
    from steerops.report.markdown import markdown_table

    table = pd.DataFrame({"gain": [1.0], "gain_lo": [-2.0], "gain_hi": [4.0], "gain_k": [5]})
    [row] = _rows(markdown_table(table))
    assert row["gain [95% CI, all gain_k together]"] == "+1.0 [-2.0, +4.0]"


def test_a_verdict_on_few_held_out_questions_says_so_as_steer_does():
    from steerops.report.results import _verdict_lines
    from steerops.steering.terminal import verdict_line

    row = {"trait": "t", "position": "p", "method": "m", "alias_of": "", "layer": 2}
    row |= {"coefficient": 1.0, "coherence": 98.0, "at_largest_coefficient": False}
    row |= {"status": "ok", "delta": 50.0, "delta_lo": 20.0, "delta_hi": 75.0}
    few, enough = _verdict_lines(pd.DataFrame([row | {"n": 8}, row | {"n": 10}]), threshold=68.0)
    assert "only 8 held-out questions" in few and "only" not in enough
    metrics = {"status": "ok", "layer": 2, "coefficient": 1.0, "selection_n": 8}
    metrics |= {"tried_layer": 2, "tried_coefficient": 1.0}
    metrics |= {"heldout_trait_delta": 50.0, "heldout_delta_lo": 20.0, "heldout_delta_hi": 75.0}
    metrics |= {"heldout_coherence": 98.0, "heldout_n": 8, "min_coherence": 68.0}
    assert (
        stats.few_questions_note(8) in verdict_line(metrics) and stats.few_questions_note(8) in few
    )


@pytest.mark.parametrize(
    ("n", "k", "says"),
    [
        (5, 1, "too few held-out questions to tell (5; one claim needs 6)"),
        (6, 1, "cleaning helps"),
        (7, 5, "too few held-out questions to tell (7; 5 claims together need 8)"),
        (8, 5, "cleaning helps"),
    ],
)
def test_cleaning_is_not_said_to_help_on_fewer_questions_than_a_test_needs(n, k, says):
    """An interval above zero on 5 questions is every question moving up, which a sign test
    puts at p = 0.03 one-sided: not 95% for one claim, far from it for five together."""
    from steerops.report.results import _cleaning_lines

    row = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    row |= {"method": "mean_diff", "status": "ok", "gain_note": "", "dims_removed": 1}
    row |= {"layer": 2, "dims_cleaned": "1", "variant": "mean_diff_top1"}
    row |= {"gain": 60.0, "gain_lo": 20.0, "gain_hi": 100.0, "gain_n": n, "gain_k": k}
    [line] = _cleaning_lines(pd.DataFrame([row]))
    assert line.endswith(f"**{says}**")


def test_a_cleaning_line_says_how_much_of_the_direction_the_removed_dims_held(tmp_path):
    """The removed dims' share of the uncleaned vector's squared norm at the chosen layer,
    and the cosine it leaves: near 0 and 1, the comparison barely tests the dims."""
    import numpy as np
    import torch

    from steerops.report.calibrated import with_removed_shares
    from steerops.report.results import _cleaning_lines
    from steerops.vectors.store import save_vectors

    params = load_params(write_params(tmp_path))
    rng = np.random.default_rng(0)
    vectors = {layer: torch.tensor(rng.normal(size=8), dtype=torch.float32) for layer in (1, 2)}
    vectors[2][3] = 2.5  # the dims the cleaned variant removes carry a known share
    base = vectors_dir(params.out, TRAIT, "base", POSITION, COMPONENT, "mean_diff")
    save_vectors(base, {k: v / v.norm() for k, v in vectors.items()}, {"method": "mean_diff"})
    key = {"model": "m", "trait": TRAIT, "position": POSITION, "component": COMPONENT}
    key |= {"method": "mean_diff"}
    frame = pd.DataFrame([key | {"vector_variant": "base"}])
    curve = pd.DataFrame(
        [
            key | {"variant": "mean_diff", "dims_cleaned": "0", "layer": 2.0},
            key | {"variant": "mean_diff_top1", "dims_cleaned": "1", "layer": 2.0},
            key | {"variant": "mean_diff_top2", "dims_cleaned": "2", "layer": np.nan},
        ]
    )
    removed = {"dim_set": "massive", "dims_removed": {"1": [0], "2": [3, 5]}}
    sets = {(TRAIT, POSITION, COMPONENT, m): removed for m in ("mean_diff_top1", "mean_diff_top2")}
    with_removed_shares(params, frame, curve, sets)
    unit = vectors[2].double().numpy()
    share = (unit[3] ** 2 + unit[5] ** 2) / (unit**2).sum()
    assert curve["removed_share"][1] == pytest.approx(share, rel=1e-6)  # float32 stored
    assert np.isnan(curve["removed_share"][0]) and np.isnan(curve["removed_share"][2])
    # at every layer the vector has, the same dims' share: the largest names its layer
    first = vectors[1].double().numpy()
    at_one = first[0] ** 2 / (first**2).sum()
    peak = max((at_one, 1), (share, 2))
    assert (curve["peak_share"][1], curve["peak_share_layer"][1]) == pytest.approx(peak, rel=1e-6)
    assert curve["peak_share_layer"][2] == peak[1]  # whatever layer the variant chose
    assert np.isnan(curve["peak_share"][0])  # the uncleaned row removed nothing

    row = {**key, "status": "ok", "gain_note": "", "dims_removed": 2, "removed_ids": "3, 5"}
    row |= {"layer": 2, "dims_cleaned": "1", "variant": "mean_diff_top1", "gain_k": 1}
    row |= {"gain": 0.0, "gain_lo": -10.0, "gain_hi": 10.0, "gain_n": 20}
    [line] = _cleaning_lines(pd.DataFrame([row | {"removed_share": share}]))
    assert (
        f"2 removed at layer 2 (3, 5), which held {share:.2%} of `mean_diff`'s squared norm there "
        f"(cosine {np.sqrt(1 - share):.3f} between the two)"
    ) in line


def test_a_cleaning_line_says_whether_the_dims_are_massive_where_the_vector_is_built(tmp_path):
    """The extracted examples whose pooled window holds a massive token, as the uncleaned
    method's vectors recorded them per layer, at the chosen layer and where the dims weigh
    most: none says no cleaned dim is massive there (and a `massive` set's dims are massive
    elsewhere); some are counted without a claim about the cleaned dims; unknown (no
    record) says nothing."""
    import torch

    from steerops.report.calibrated import window_words, with_window_massive
    from steerops.report.results import _cleaning_lines
    from steerops.vectors.store import save_vectors

    params = load_params(write_params(tmp_path))
    key = {"model": "m", "trait": TRAIT, "position": POSITION, "component": COMPONENT}
    frame = pd.DataFrame(
        [key | {"method": m, "vector_variant": "base"} for m in ("mean_diff", "probe")]
    )
    counts = {"1": {"window_massive": 3}, "2": {"window_massive": 0}, "3": {"window_massive": 0}}
    n = {"train_pos": 4, "train_neg": 3, "val_pos": 2, "val_neg": 1}
    base = vectors_dir(params.out, TRAIT, "base", POSITION, COMPONENT, "mean_diff")
    unit = {k: torch.ones(8) / 8**0.5 for k in (1, 2, 3)}
    save_vectors(base, unit, {"method": "mean_diff", "layers": counts, "n": n})
    cleaned = {"dims_cleaned": "all", "variant": "mean_diff_cleaned", "dim_set": "massive"}
    curve = pd.DataFrame(
        [
            key | {"method": "mean_diff", "variant": "mean_diff", "dims_cleaned": "0", "layer": 2},
            key | {"method": "mean_diff", "layer": 2, "peak_share_layer": 1} | cleaned,
            key | {"method": "mean_diff", "layer": 2, "peak_share_layer": 3} | cleaned,
            key | {"method": "probe", "layer": 2, "peak_share_layer": 1} | cleaned,  # no record
        ]
    )
    with_window_massive(params, frame, curve)
    assert curve["window_massive"].tolist()[1:3] == [0, 0]
    assert curve["peak_window_massive"].tolist()[1:3] == [3, 0]
    assert curve["window_examples"].tolist()[1:3] == [10, 10]  # train and validation
    for column in ("window_massive", "peak_window_massive", "window_examples"):
        assert np.isnan(curve[column][0]) and np.isnan(curve[column][3])
    rows = list(curve.itertuples(index=False))
    assert window_words(rows[1]) == (
        f"at `{POSITION}`, where the vectors are built, extracted examples whose pooled window "
        "holds a massive token (on any dim, not necessarily a cleaned one): 3 of 10 at layer 1, "
        "0 of 10 at layer 2"
    )
    none = (
        f"at `{POSITION}`, where the vectors are built, no extracted example's pooled window "
        "holds a massive token at layer 2 or 3 (0 of 10, on any dim): "
    )
    ordinary = (
        "what cleaning takes from these vectors is the classes' difference along the dims on "
        "ordinary tokens"
    )
    assert (
        window_words(rows[2])
        == none
        + "the dims are massive elsewhere (other tokens or other layers), not there, so "
        + ordinary
    )
    # the largest-mean dims are not said to be massive anywhere
    assert window_words(rows[2]._replace(dim_set="top_mean")) == none + ordinary
    assert window_words(rows[0]) == window_words(rows[3]) == ""
    gain = {"status": "ok", "gain_note": "", "dims_removed": 1, "gain_k": 1, "gain_n": 20}
    gain |= {"gain": 0.0, "gain_lo": -10.0, "gain_hi": 10.0}
    lines = _cleaning_lines(curve.iloc[[2]].assign(**gain))
    assert lines[1] == f"  - {window_words(rows[2])}"


@pytest.mark.parametrize(
    ("share", "low", "caveat"),
    [
        (0.0076, -10.0, True),
        (0.0076, 5.0, True),
        (0.2, -10.0, False),
        (float("nan"), -10.0, False),
    ],
)
def test_a_null_gain_of_a_barely_changed_vector_is_not_read_as_dims_not_mattering(
    share, low, caveat
):
    """The main job's cleaning removed 0.76% of the vector's squared norm: a gain or none
    from a near-copy says nothing of the dims, and the line says so; a real change keeps its
    plain verdict."""
    from steerops.report.results import _cleaning_lines

    row = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    row |= {"method": "mean_diff", "status": "ok", "gain_note": "", "dims_removed": 1}
    row |= {"layer": 2, "dims_cleaned": "all", "variant": "mean_diff_cleaned", "gain_k": 1}
    row |= {"gain": 10.0, "gain_lo": low, "gain_hi": 30.0, "gain_n": 20, "removed_share": share}
    [line] = _cleaning_lines(pd.DataFrame([row]))
    assert ("**cannot tell whether the dims matter: the cleaned vector is nearly" in line) is caveat
    # a real change says its harder push beside the verdict; a near copy's is negligible
    pushed = share >= 0.05
    assert ("harder along the other dims" in line) is pushed
    assert (line.endswith("**") or pushed) and ("cleaning helps" in line) is (low > 0)


@pytest.mark.parametrize(
    ("cleaned", "uncleaned", "gain", "says"),
    [
        (("incoherent held out", 0.25), ("ok", 0.2), (30.0, 5.0, 55.0), "not a gain from the"),
        (("ok", 0.2), ("incoherent held out", 0.25), (-30.0, -55.0, -5.0), "not a loss from the"),
        (("ok", 0.25), ("ok", 0.2), (30.0, 5.0, 55.0), "cleaning helps"),
        (("ok", 0.2), ("ok", 0.2), (30.0, 5.0, 55.0), "cleaning helps"),
        (("incoherent held out", 0.2), ("ok", 0.2), (-30.0, -55.0, -5.0), "cleaning hurts"),
        (("ok", 0.2, 17), ("ok", 0.2), (30.0, 5.0, 55.0), "cleaning helps"),
        (("ok", 0.25, 17), ("ok", 0.2), (30.0, 5.0, 55.0), "cleaning helps"),
    ],
)
def test_a_cleaning_gain_of_picks_apart_says_what_it_holds(cleaned, uncleaned, gain, says):
    """Each variant is compared at its own chosen config: a higher trait bought by a pick
    incoherent held out is no gain of the dims, and picks at different configs say that
    the gain holds the change of what differs (the layer, the coefficient or both)."""
    from steerops.report.results import _cleaning_lines

    key = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    key |= {"method": "mean_diff", "gain_note": "", "dims_removed": 1, "layer": 12}
    base = key | {"dims_cleaned": "0", "variant": "mean_diff", "gain": float("nan")}
    base |= {"status": uncleaned[0], "coefficient": uncleaned[1]}
    row = key | {"dims_cleaned": "all", "variant": "mean_diff_cleaned", "gain_k": 1}
    row |= {"status": cleaned[0], "coefficient": cleaned[1], "gain_n": 20, "removed_share": 0.3}
    row |= {"layer": cleaned[2] if len(cleaned) > 2 else 12}
    row |= dict(zip(("gain", "gain_lo", "gain_hi"), gain, strict=True))
    [line] = _cleaning_lines(pd.DataFrame([base, row]))
    assert f"**{says}" in line
    moved = [
        name
        for name, differ in (
            ("layer", row["layer"] != 12),
            ("coefficient", cleaned[1] != uncleaned[1]),
        )
        if differ
    ]
    assert ("each at its own chosen config" in line) is bool(moved)
    said = {
        ("layer",): "the gain holds the layer's change too",
        ("coefficient",): "the gain holds the coefficient's change too",
        ("layer", "coefficient"): "the gain holds the layer's and the coefficient's change too",
    }
    if moved:
        assert said[tuple(moved)] in line
    assert f"verdicts: {cleaned[0]} cleaned, {uncleaned[0]} uncleaned" in line
    # the dims held 30% of the vector: at one coefficient the renormalised cleaned vector
    # pushes 1 / sqrt(0.7) harder along the rest, which the gain holds too
    assert f"pushes {1 / 0.7**0.5:.3f}x harder along the other dims" in line
    assert f"the cleaned one at the coefficient x {0.7**0.5:.3f} matches it" in line


def test_the_grid_named_keeps_signed_coefficients_apart_and_unscored_is_not_incoherent():
    from types import SimpleNamespace

    from steerops.report.grid_words import grid_words as _grid_words
    from steerops.report.grid_words import grids as _grids

    cell = {"model": "m", "trait": "t", "position": "p", "component": "c", "method": "x"}
    rows = [(-0.4, 90.0), (0.2, 85.0), (0.4, 50.0), (0.0, 99.0)]
    frame = pd.DataFrame(
        [cell | {"layer": 2, "coefficient": c, "selection_coherence_mean": h} for c, h in rows]
    )
    chosen = SimpleNamespace(layer=2, coefficient=0.2)
    [grid] = _grids(frame, 68.0).values()
    best, cliff = _grid_words(chosen, grid)
    # -0.4 is larger but the other way: 0.2 is the smallest of its sign, and said so
    assert best == (
        "best of 3 steered configs (layer 2; coefficients -0.4, 0.2, 0.4); 0.2 is the smallest "
        "coefficient steered here: nothing smaller was tried"
    )
    assert "next larger coefficient here (0.4) is incoherent" in cliff
    # -0.4 is stronger, but the other way: it says nothing about +0.2's edge
    frame.loc[frame["coefficient"] == 0.4, "selection_coherence_mean"] = None
    [grid] = _grids(frame, 68.0).values()
    assert _grid_words(chosen, grid)[1] == ""  # no coherence score: not called incoherent


def test_the_preclean_table_says_how_far_the_two_vectors_differ(tmp_path):
    """`vectors_max_diff`: the largest element-wise difference between the preclean and
    clean-after unit vectors over the layers both hold (numpy), NaN where a side is
    missing."""
    import numpy as np
    import torch

    from steerops.report.calibrated import with_vector_agreement
    from steerops.vectors.store import save_vectors

    params = load_params(write_params(tmp_path))
    rng = np.random.default_rng(1)
    units = {}
    for method, layers in (("mean_diff_preclean", (1, 2, 3)), ("mean_diff_cleaned", (1, 2))):
        vectors = {k: torch.tensor(rng.normal(size=8), dtype=torch.float32) for k in layers}
        units[method] = {k: v / v.norm() for k, v in vectors.items()}
        folder = vectors_dir(params.out, TRAIT, "base", POSITION, COMPONENT, method)
        save_vectors(folder, units[method], {"method": method})
    key = {"model": "m", "trait": TRAIT, "position": POSITION, "component": COMPONENT}
    methods = ["mean_diff_preclean", "mean_diff_cleaned", "probe_preclean"]
    frame = pd.DataFrame([key | {"method": m, "vector_variant": "base"} for m in methods])
    # another model's cells, steered with vectors of a variant that has none
    frame = pd.concat([frame, frame.assign(model="other", vector_variant="chat")])
    prepost = pd.DataFrame(
        [key | {"method": "mean_diff"}, key | {"method": "probe"}]
        + [key | {"model": "other", "method": "mean_diff"}]
    )
    with_vector_agreement(params, frame, prepost)
    pre, post = units["mean_diff_preclean"], units["mean_diff_cleaned"]
    want = max(np.abs(pre[k].numpy() - post[k].numpy()).max() for k in (1, 2))
    assert prepost["vectors_max_diff"][0] == pytest.approx(want, rel=1e-6)
    assert np.isnan(prepost["vectors_max_diff"][1])  # no probe vectors
    assert np.isnan(prepost["vectors_max_diff"][2])  # the other model's variant has none


def test_vectors_equal_to_float_rounding_are_one_finding(tmp_path):
    """A preclean mean_diff is its clean-after twin up to float32 rounding (about 1e-8):
    named an alias of it, so one finding is one test and one ok cell; vectors apart by
    more than 1e-6 somewhere, another layer set, or an exact alias already named, stay."""
    import numpy as np
    import torch

    from steerops.report.calibrated import with_near_aliases
    from steerops.vectors.store import save_vectors

    params = load_params(write_params(tmp_path))
    rng = np.random.default_rng(2)
    base = {k: torch.tensor(rng.normal(size=8), dtype=torch.float64) for k in (1, 2)}
    base = {k: v / v.norm() for k, v in base.items()}
    nudge = torch.zeros(8, dtype=torch.float64)
    nudge[3] = 5e-7
    spread = {
        "mean_diff_cleaned": base,
        "mean_diff_preclean": {k: v + nudge for k, v in base.items()},  # rounding apart
        "mean_diff_top1": {1: base[1], 2: base[2] + 10 * nudge},  # 5e-6 at one layer
        "probe_cleaned": {1: base[1]},  # a layer short
        "probe_preclean": base,  # the same tensors: named by the vectors' hashes already
    }
    for method, units in spread.items():
        folder = vectors_dir(params.out, TRAIT, "base", POSITION, COMPONENT, method)
        save_vectors(folder, {k: v.float() for k, v in units.items()}, {"method": method})
    key = {"model": "m", "trait": TRAIT, "position": POSITION, "component": COMPONENT}
    exact = {"probe_preclean": "mean_diff_cleaned"}
    frame = pd.DataFrame(
        [
            key | {"method": m, "vector_variant": "base", "alias_of": exact.get(m, ""), "i": i}
            for m in spread
            for i in range(2)  # two configs a method
        ]
    )
    with_near_aliases(params, frame)
    named = frame.groupby("method")["alias_of"].agg(set).to_dict()
    assert named == {
        "mean_diff_cleaned": {""},
        "mean_diff_preclean": {"mean_diff_cleaned"},
        "mean_diff_top1": {""},
        "probe_cleaned": {""},
        "probe_preclean": {"mean_diff_cleaned"},
    }


def test_cells_outside_the_grid_params_name_are_said_on_stderr(tmp_path, capsys):
    """Cells of a position (trait, component) steered before outlive its removal from
    params: the report says they are there and counted, and how to leave them out."""
    _run(tmp_path)
    methods = sorted(SYNTHETIC)
    traits = {"names": [TRAIT]}
    for position, said in ((POSITION, False), ("response[:5]", True)):
        steering = {"methods": methods, "positions": [position], "component": COMPONENT}
        params = write_params(tmp_path, steering=steering, traits=traits)
        assert main(["report", "--params", str(params)]) == 0
        err = capsys.readouterr().err
        note = f"steerops report: note: {len(methods)} cells under "
        assert (note in err) == said, err
        if said:
            assert f"{TRAIT} instruct {POSITION} {COMPONENT} mean_diff" in err
            assert "counted with the rest (q-values, metrics.json)" in err


def test_a_method_dropped_from_params_is_named_so_on_the_main_jobs_page(tmp_path):
    """Its cell's results log (its study) outlives its removal from `steering.methods`
    (`search.methods`), so the page still shows its last sweep (study), and says that no
    run refreshes it."""
    _run(tmp_path)
    kept = ["mean_diff", "probe"]
    report = {"results": "docs/results.md"}
    params = write_params(tmp_path, report=report, steering={"methods": kept})
    assert main(["report", "--params", str(params)]) == 0
    section = _section((tmp_path / "docs" / "results.md").read_text(), "Best coefficients")
    lines = {m: [x for x in section.splitlines() if f"`{m}`" in x] for m in SYNTHETIC}
    marker = "(no longer in `steering.methods`: from its last sweep)"
    for method, [line] in lines.items():
        assert (marker in line) == (method not in kept), line
    # the search of `mean_diff` is named once `search.methods` leaves it out
    dropped = "No longer searched (`search.methods`), shown from their last study: `mean_diff`."
    for search, named in (({}, False), ({"methods": ["probe"]}, True)):
        steering = {"methods": kept}
        params = write_params(tmp_path, report=report, steering=steering, search=search)
        assert main(["report", "--params", str(params)]) == 0
        page = (tmp_path / "docs" / "results.md").read_text()
        assert (dropped in _section(page, "The search, held out")) == named


def test_a_verdict_says_how_many_held_out_answers_are_under_the_bar():
    from steerops.report.results import _verdict_lines

    row = {"trait": "t", "position": "p", "method": "m", "alias_of": "", "layer": 12, "n": 20}
    row |= {"coefficient": 0.2, "coherence": 83.22, "at_largest_coefficient": False}
    row |= {"status": "ok", "delta": 50.0, "delta_lo": 20.0, "delta_hi": 75.0}
    some, none, unknown = _verdict_lines(
        pd.DataFrame(
            [
                row
                | {"under_bar": 5, "coherence_scored": 20}
                | {"credited_delta": 40.0, "credited_lo": 10.0, "credited_hi": 65.0}
                | {"under_bar_moved": 2},
                row | {"under_bar": 0, "coherence_scored": 20},
                row | {"under_bar": None, "coherence_scored": None},
            ]
        ),
        threshold=68.0,
    )
    assert (
        "coherence 83.22 (5 of 20 answers under 68), n 20; with the 5 answers under 68 "
        "counted as unmoved (2 had moved along the steering), delta +40.0 [+10.0, +65.0]" in some
    )
    assert "answers under" not in none and "answers under" not in unknown


def test_a_compared_near_copy_carries_its_caveat_into_the_cleaning_curve(tmp_path):
    """report.md and cleaning_curve.csv show `gain_note`: a +0.0 gain between a vector and
    its near copy (the cleaned dims small at its position) must not read as "the dims do
    not matter" there either. A variant whose dims held a real share, or that was not
    compared, gets no note; a note already there (settings differ) is kept."""
    import numpy as np
    import torch

    from steerops.report import tables
    from steerops.report.calibrated import with_removed_shares
    from steerops.vectors.store import save_vectors

    params = load_params(write_params(tmp_path))
    vector = torch.ones(8)
    vector[3] = 0.1  # 0.01 / 7.01 of the squared norm: a near copy once dim 3 is gone
    base = vectors_dir(params.out, TRAIT, "base", POSITION, COMPONENT, "mean_diff")
    save_vectors(base, {2: vector / vector.norm()}, {"method": "mean_diff"})
    key = {"model": "m", "trait": TRAIT, "position": POSITION, "component": COMPONENT}
    key |= {"method": "mean_diff", "dims_cleaned": "1", "layer": 2.0}
    gain = {"gain": 0.0, "gain_note": ""}
    curve = pd.DataFrame(
        [
            key | {"variant": "mean_diff", "dims_cleaned": "0", "gain": np.nan, "gain_note": ""},
            key | {"variant": "mean_diff_small"} | gain,
            key | {"variant": "mean_diff_large"} | gain,
            key | {"variant": "mean_diff_uncompared", "gain": np.nan, "gain_note": ""},
            key | {"variant": "mean_diff_other", "gain": np.nan} | {"gain_note": "settings differ"},
        ]
    )
    small = {"dim_set": "massive", "dims_removed": {"2": [3]}}
    large = {"dim_set": "massive", "dims_removed": {"2": [0, 1, 2]}}
    sets = {
        (TRAIT, POSITION, COMPONENT, "mean_diff_small"): small,
        (TRAIT, POSITION, COMPONENT, "mean_diff_large"): large,
        (TRAIT, POSITION, COMPONENT, "mean_diff_uncompared"): small,
        (TRAIT, POSITION, COMPONENT, "mean_diff_other"): small,
    }
    frame = pd.DataFrame([{k: key[k] for k in ("model", "trait", "position", "component")}])
    frame["method"], frame["vector_variant"] = "mean_diff", "base"
    with_removed_shares(params, frame, curve, sets)
    notes = dict(zip(curve["variant"], curve["gain_note"], strict=True))
    share = 0.01 / 7.01
    assert notes["mean_diff_small"] == (
        f"near copy: the cleaned dims held {share:.2%} of the vector's squared norm at layer "
        f"2 (cosine {np.sqrt(1 - share):.3f}), so this gain cannot tell whether the dims "
        "matter; they are a small part of the vector (alike in both classes there, or not "
        "massive at the vector's position), whatever their size in the activations"
    )
    assert curve.set_index("variant")["removed_share"]["mean_diff_large"] > tables.BARELY
    # dims holding more: the note says the renormalised vector's harder push instead
    from steerops.report.weighed import push_note

    large = curve.set_index("variant")["removed_share"]["mean_diff_large"]
    assert notes["mean_diff_large"] == push_note(large) and "harder" in push_note(large)
    assert notes["mean_diff_uncompared"] == ""  # no gain: nothing to qualify
    assert notes["mean_diff"] == "" and notes["mean_diff_other"] == "settings differ"


def test_empty_cleaning_sections_say_what_calibration_found():
    """No massive dim: the cleaned variants remove nothing, so there is no gain to read;
    the page says so instead of 'no cleaned variant' or a bare 'no data'."""
    from steerops.report.markdown import markdown_table
    from steerops.report.results import _cleaning_lines

    key = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    curve = pd.DataFrame(
        [
            {**key, "method": "mean_diff", "variant": v, "dims_cleaned": d, "dims_removed": r}
            | {"gain": np.nan, "gain_note": ""}
            for v, d, r in (("mean_diff", "0", 0), ("mean_diff_cleaned", "all", 0))
        ]
    )
    assert _cleaning_lines(curve) == [
        "_no dim was removed: the cleaned variants are the uncleaned vectors_"
    ]
    assert _cleaning_lines(curve[curve["dims_cleaned"] == "0"]) == [
        "_no cleaned variant with an uncleaned one to compare_"
    ]
    assert markdown_table(pd.DataFrame(), "no dim is massive") == "_no dim is massive_"


def test_a_near_copy_reaches_the_report_s_q_values_through_the_vectors(tmp_path):
    """`steerops report` end to end: `mean_diff_top1` chose mean_diff's config, and its
    cleaned dim held 0.14% of mean_diff's vector there, so it is a near copy: out of the
    family (mean_diff's q over the others, scipy's), its own q its p in mean_diff's place.
    With a dim that held a real share, it is a test of its own."""
    import torch
    from scipy.stats import false_discovery_control

    from steering_data import cell_log
    from steerops.io import file_md5, read_json
    from steerops.vectors.store import TENSORS_FILE, save_vectors

    synthetic_grid(tmp_path)
    params = load_params(write_params(tmp_path))

    logs = {m: cell_log(params.out, m, POSITION) for m in ("mean_diff", "mean_diff_top1")}
    logged = {m: path.read_text() for m, path in logs.items()}

    def save(method: str, vector, **meta) -> None:
        """Vectors as the cell's log measured them: its md5, 10 units a coefficient."""
        folder = vectors_dir(params.out, TRAIT, "base", POSITION, COMPONENT, method)
        norms = {str(layer): {"mean_norm": 10.0} for layer in (1, 2)}
        unit = vector / vector.norm()
        save_vectors(
            folder, {1: unit.clone(), 2: unit}, {"method": method, "layers": norms, **meta}
        )
        md5 = file_md5(folder / TENSORS_FILE)
        logs[method].write_text(logged[method].replace(': "md5"', f': "{md5}"'))

    def vectors(removed: int, weight: float):
        vector = torch.ones(8)
        vector[removed] = weight
        save("mean_diff", vector)
        cleaned = vector.clone()
        cleaned[removed] = 0.0
        calibration = {"dim_set": "massive", "dims_removed": {"2": [removed]}}
        save("mean_diff_top1", cleaned, calibration=calibration)

    vectors(removed=3, weight=0.1)  # 0.01 / 7.01 of the squared norm
    out = _report(tmp_path, results=None)
    gap = pd.read_csv(out / "gap_analysis.csv", keep_default_na=False, na_values=[""])
    copy = gap.set_index("method").loc["mean_diff_top1"]
    assert copy["near_copy_of"] == "mean_diff"
    family = gap[(gap["near_copy_of"].fillna("") == "") & (gap["alias_of"].fillna("") == "")]
    family = family.dropna(subset=["heldout_p"])
    q = false_discovery_control(family["heldout_p"].to_numpy(), method="bh")
    assert family["heldout_q"].to_numpy() == pytest.approx(q, rel=1e-5)
    stand_in = family["heldout_p"].where(family["method"] != "mean_diff", copy["heldout_p"])
    [own] = false_discovery_control(stand_in.to_numpy(), method="bh")[
        (family["method"] == "mean_diff").to_numpy()
    ]
    assert copy["heldout_q"] == pytest.approx(own, rel=1e-5)
    metrics = read_json(out / "metrics.json")
    assert metrics["near_copies"] == 1
    # a near copy repeats its twin's finding: counted among the cells, not the findings
    ok = gap["status"] == "ok"
    own = ok & gap["alias_of"].isna() & gap["near_copy_of"].isna()
    assert copy["status"] == "ok" and metrics["findings_ok"] == own.sum()
    assert metrics["findings_ok"] == metrics["cells_ok"] - 1
    held = own & (gap["heldout_q"] < 0.05)
    assert metrics["findings_ok_at_fdr_5pct"] == held.sum()

    vectors(removed=3, weight=2.0)  # 4 / 11 of it: the cleaning turned the vector
    gap = pd.read_csv(_report(tmp_path, results=None) / "gap_analysis.csv")
    assert gap.set_index("method")["near_copy_of"].isna().all()
    assert gap["heldout_q"].notna().sum() == len(family) + 1


def test_the_answer_says_what_the_search_s_trials_found_and_the_grid_points_at_it(tmp_path):
    """Under the search's bullet, its trials per layer (search half, not held out), read
    from its trials.csv; the grid's cliff note then points at them instead of suggesting a
    search that already ran."""
    _run(tmp_path)
    folder = search_dir(tmp_path / "outputs", TRAIT, "instruct", POSITION, COMPONENT, "mean_diff")
    (folder / "trials.csv").write_text(
        "number,layer,coefficient,weight,trait_mean,coherence_mean,trait_delta,feasible,state,"
        "source,rows\n"
        "0,2,1.5,15,70,80,70,True,complete,known,20\n"
        "1,2,1.6,16,78,75,78,True,complete,search,20\n"
        "2,2,1.8,18,85,60,85,False,complete,search,20\n"
    )
    _report(tmp_path)
    text = (tmp_path / "docs" / "results.md").read_text()
    short = _section(text, "In short")
    search = short.split("  - the search of `mean_diff`", 1)[1]
    assert (
        "\n    - search-half trials at layer 2 (3 trials of this study, 1 of them the grid's, n 20 "
        "each; not "
        "held out): best "
        "coherent delta +78.0 at 1.6 (coherence 75.00); coherence falls under 68 between 1.6 "
        "(coherence 75.00, delta +78.0) and 1.8 (coherence 60.00, delta +85.0)"
    ) in search
    [md] = [x for x in _section(text, "Best coefficients").splitlines() if "`mean_diff`:" in x]
    # the search's own choice (1.6) lies between the two: its held-out verdict is said
    assert (
        "(the search's trials between them narrow where, on the search half; its choice "
        "between them, 1.6, is ok held out)"
    ) in md
    assert "`steerops search` finds where" not in md
    # trials that never went between the grid's last coherent step and the next say nothing
    (folder / "trials.csv").write_text(
        "number,layer,coefficient,weight,trait_mean,coherence_mean,trait_delta,feasible,state,"
        "source,rows\n"
        "0,2,1.5,15,70,80,70,True,complete,known,20\n"
        "1,2,2.5,25,90,30,90,False,complete,search,20\n"
        "2,1,1.8,18,20,90,20,True,complete,search,20\n"
    )
    _report(tmp_path)
    text = (tmp_path / "docs" / "results.md").read_text()
    [md] = [x for x in _section(text, "Best coefficients").splitlines() if "`mean_diff`:" in x]
    assert "(a finer grid or `steerops search` finds where)" in md


def test_a_search_that_failed_held_out_shows_no_test_on_either_page(tmp_path):
    """Its choice has no effect to test, so neither report.md nor the results page prints
    its p or q as if it were evidence; search_heldout.csv keeps both."""
    best = _run(tmp_path)["best"]
    folder = search_dir(tmp_path / "outputs", TRAIT, "instruct", POSITION, COMPONENT, "mean_diff")
    write_json(folder / "best.json", {**best, "status": "incoherent held out"})
    out = _report(tmp_path)
    assert pd.read_csv(out / "search_heldout.csv")["heldout_p"].notna().all()
    for page in ((tmp_path / "docs" / "results.md"), (out / "report.md")):
        text = page.read_text()
        title = "The search, held out" if page.name == "results.md" else "Coefficient searches"
        [row] = _rows(_section(text, title))
        assert row["status"] == "incoherent held out"
        assert row["heldout_p"] == row["heldout_q"] == "", page.name
    # an ok choice's test stays on both
    write_json(folder / "best.json", best)
    out = _report(tmp_path)
    [row] = _rows(_section((out / "report.md").read_text(), "Coefficient searches"))
    assert row["heldout_p"] == stats.p_text(best["heldout"]["p"])
