"""`steerops report`: the massive-activations analyses as markdown + CSV + PNG, every number
chosen on the selection half of the questions and reported on the held-out half."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from steerops.cli import (
    abs_path,
    flags,
    inputs_flag,
    load_params_for,
    rerun_flag,
    run_file,
    stage_parser,
)
from steerops.errors import SteeropsError
from steerops.io import atomic_folder, check_replaceable, read_json, write_json, write_text
from steerops.report import calibrated, plots, predict, tables
from steerops.report.control import controls
from steerops.report.document import halves_text, render_markdown
from steerops.report.examples import example_sections
from steerops.report.grid_words import grids
from steerops.report.load import (
    COLUMNS,
    SEARCH_KEY,
    load_results,
    load_search_heldout,
    load_search_summaries,
    load_search_trials,
    steered_bars,
    vector_features,
)
from steerops.report.report_metrics import best_checks, report_metrics
from steerops.report.resplit import resplits
from steerops.report.results import judges_in, render_results
from steerops.report.versus_grid import versus_columns, versus_grid
from steerops.report.weighed import weighed
from steerops.steering.best import protocol


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "report",
        "From the results files under the outputs root: report.md (In short, the massive "
        "activations, then the tables), gap analysis, preclean vs clean-after, cleaning "
        "curve, best coefficients, coefficient prediction, recommendations, searches and "
        "coefficient curves (a CSV each, and the plots), massive_activations.csv and "
        "metrics.json; with report.results set, the results page too. The report folder is "
        "replaced whole (one holding other files is refused).",
        device=False,  # it reads files only
        out_help="a run's folder (e.g. a scratch steer's runs/steer-<time>/): its results are "
        "reported into DIR/reports/, with the calibration and vector metadata of the "
        "pipeline's outputs (paths.out, or --inputs DIR), which that run steered with; "
        "logged to DIR/mlflow.db when the run has one (it was given --out), else to the "
        "project's store, where a default scratch run logged",
    )
    inputs_flag(parser)
    flags(parser, "report.min_coherence")
    flags(parser, "--report-dir=report.out", type=abs_path)
    # --out's results were steered with the pipeline's vectors: read those, not DIR's
    parser.set_defaults(func=run, inputs_from_pipeline=True)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    # --out DIR: the report and its results page go there
    reports = run_file(params, args, "report.out", "reports")
    if reports is not None:
        params.report.out = str(reports)
    results = run_file(params, args, "report.results", "reports/results.md")
    if results is not None and params.report.results:
        params.report.results = str(results)
    check_report_folder(params)
    folder = getattr(args, "run_folder", None)
    if folder and Path(folder).is_dir() and not (Path(folder) / "mlflow.db").is_file():
        # a default scratch run's folder (runs/steer-<time>): that run logged to the
        # project's store, and its report's run goes beside it, not into a store of its own
        params.use_project_store()
    frame = load_results(params)
    searched = load_search_summaries(params)
    if frame.empty and searched.empty:
        raise SteeropsError(
            f"no steering results under {params.out / 'steering'}: run `steerops steer"
            f"{rerun_flag(params)}` or `steerops search{rerun_flag(params)}` first"
        )
    if not (params.run_folder is not None and params.run_named):  # a run's flags may differ
        _say_outside_grid(params, frame)
    out = params.path(params.report.out)
    files = write_report(params, frame, searched, out)
    _track(params, files)
    print(f"report written to {out / 'report.md'}")


def _say_outside_grid(params, frame: pd.DataFrame) -> None:
    """One stderr line naming the cells the report holds that the grid params name no longer
    holds (another position, trait or component steered before): their folders outlive
    their removal, so they are reported from their last sweep and counted with the rest."""
    if frame.empty:
        return
    st = params.steering
    grid = {
        (trait, st.variant, position.text, st.component, str(method))
        for trait in params.traits.names
        for position in st.positions
        for method in st.methods
    }
    keys = ["trait", "variant", "position", "component", "method"]
    cells = {tuple(map(str, row)) for row in frame[keys].drop_duplicates().itertuples(index=False)}
    # a method dropped from steering.methods alone is named on the results page already
    methods = {str(m) for m in st.methods}
    outside = sorted(c for c in cells if c not in grid and c[4] in methods)
    if outside:
        shown = "; ".join(f"{t} {v} {p} {c} {m}" for t, v, p, c, m in outside[:3])
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        print(
            f"steerops report: note: {len(outside)} cells under {params.out / 'steering'} are "
            f"not in the grid params name ({shown}{more}): reported from their last sweep and "
            "counted with the rest (q-values, metrics.json); remove their folders to leave "
            "them out",
            file=sys.stderr,
        )


CSV_TABLES = (
    "gap_analysis",
    "preclean_vs_clean_after",
    "cleaning_curve",
    "coefficients",
    "coefficient_features",
    "coefficient_prediction",
    "recommendations",
    "search_heldout",
    "coefficient_curves",
)
PLOTS = ("coefficient_curves.png", "cleaning_curve.png")
OTHER_FILES = ("massive_activations.csv", "metrics.json", "report.md")


def check_report_folder(params) -> None:
    """The report replaces its folder whole (a killed report leaves the old one, not a mix):
    a folder holding anything else (a steering cell's, `--report-dir .`) is refused before
    anything is read or written."""
    out = params.path(params.report.out)
    if not out.is_dir():  # new, or a file: said where it is made
        return
    makes = {f"{name}.csv" for name in CSV_TABLES} | set(PLOTS) | set(OTHER_FILES)
    page = _page_in(params, out)
    foreign: list[str] = []
    if page is not None:
        makes.add(page.parts[0])
        if len(page.parts) > 1 and (out / page.parts[0]).is_dir():  # beside the page: kept
            beside = (out / page.parts[0]).rglob("*")
            foreign = [p.relative_to(out).as_posix() for p in beside if p.is_file()]
            foreign = [name for name in foreign if name != page.as_posix()]
    check_replaceable(out, makes, "report.out", "steerops report", foreign)


def _page_in(params, out: Path) -> Path | None:
    """The results page's path inside the report folder (None: elsewhere, or none)."""
    if not params.report.results:
        return None
    page = params.path(params.report.results)
    return page.relative_to(out) if page.is_relative_to(out) else None


def _main_job(params) -> bool:
    """Whether these params are the main job's: a `params.yaml` beside the pipeline's
    `dvc.yaml` (or params built without a file)."""
    file = params.file
    return file is None or (file.name == "params.yaml" and (file.parent / "dvc.yaml").is_file())


def _params_flag(params) -> str:
    """ "--params FILE" that reads these params again from the working directory."""
    flag = params.params_flag.strip()
    return flag or f"--params {os.path.relpath(params.file)}"


def write_report(params, frame: pd.DataFrame, searched: pd.DataFrame, out: Path) -> list[Path]:
    """Every table from grid cells only (chosen on the selection half, reported on the
    held-out half); the searches in a table of their own. Written into a new folder that
    takes `out`'s place once whole."""
    threshold = coherence_bar(params, steered_bars(params, frame))
    proto = protocol(params)
    # every input is read before the first file is written: a damaged one leaves the
    # report as it was, not half rewritten
    record = calibrated.calibration_record(params)
    massive = calibrated.massive_table(record)
    trials = load_search_trials(params)
    if frame.empty:
        frame = pd.DataFrame(columns=COLUMNS)
    stored = calibrated.vector_loader(params)  # each vector file read once for every table
    calibrated.with_near_aliases(params, frame, stored)
    prepost = tables.preclean_vs_clean_after(frame, threshold, proto.seed)
    curve = tables.cleaning_curve(frame, threshold, proto.seed)
    sets = calibrated.dim_sets(params, frame)
    calibrated.with_dim_sets(curve, prepost, sets)
    calibrated.with_removed_shares(params, frame, curve, sets, stored)
    calibrated.with_window_massive(params, frame, curve)
    calibrated.with_vector_agreement(params, frame, prepost, stored)
    # a near copy's test is its uncleaned method's: the q-values count it once
    gap = tables.gap_analysis(frame, threshold, proto.seed, calibrated.near_copies(curve))
    coefs = tables.coefficient_table(frame, threshold, gap)
    steered = grids(frame, threshold)  # what each cell's grid steered: both pages say it
    # the choice made again on other splits of the same questions: both pages say it
    again = resplits(
        frame, gap, threshold, proto.heldout_fraction, proto.seed, params.report.resplits
    )
    # the choice against a random direction, and a near copy tested where its dims weigh
    randoms = controls(frame, gap, proto.seed, threshold)
    # each search's choice against the grid's of its method, question by question
    heldout = load_search_heldout(params)
    versus = versus_grid(frame, searched, heldout, SEARCH_KEY, threshold, proto.seed)
    searched = pd.concat([searched.reset_index(drop=True), versus_columns(versus)], axis=1)
    weighs = weighed(frame, curve, gap, proto.seed, threshold)
    features = vector_features(params, coefs, frame)
    errors = predict.loo_errors(features)
    recs = predict.recommendations(features, errors)
    points = plots.curve_points(frame, gap, threshold)
    tabled = (gap, prepost, curve, coefs, features, errors, recs, searched, points)
    csvs = dict(zip(CSV_TABLES, tabled, strict=True))
    text = render_markdown(
        {
            **csvs,
            "massive": massive,
            "dims": calibrated.dims_line(record),
            "grids": steered,
            "trials": trials,
            "resplits": again,
            "controls": randoms,
            "weighs": weighs,
            "judges": judges_in(frame),
        },
        threshold,
        halves_text(frame),
        seed=proto.seed,
        fraction=proto.heldout_fraction,
    )
    results = params.path(params.report.results) if params.report.results else None
    page = _page_in(params, out)
    # the page's own inputs, read before the first write as the tables' are
    read: dict[str, Any] = {"trials": trials, "grids": steered, "resplits": again}
    read["controls"] = randoms
    read["weighs"] = weighs
    if results is not None:
        read["examples"] = example_sections(params, frame, gap, threshold)
        if heatmap := calibrated.heatmap_path(params):
            read["heatmap"] = _relative(heatmap, params.path(".")).rstrip("/")
    with atomic_folder(out) as staging:
        for name, table in csvs.items():
            write_text(staging / f"{name}.csv", table.to_csv(index=False, float_format="%.6g"))
        plots.coefficient_curves(points, threshold, staging / PLOTS[0])
        plots.cleaning_curve(curve, staging / PLOTS[1])
        checks = best_checks(gap, again, randoms, weighs, params.report.resplits)
        write_json(
            staging / "metrics.json", report_metrics(gap, prepost, errors, searched) | checks
        )
        table = massive.to_csv(index=False, float_format="%.6g")
        write_text(staging / "massive_activations.csv", table)
        write_text(staging / "report.md", text)
        if page is not None:  # a run's page: in the folder, replaced with it
            _write_results(params, frame, searched, csvs, record, threshold, read, staging / page)
    files = [out / f"{name}.csv" for name in CSV_TABLES] + [out / p for p in PLOTS]
    files += [out / name for name in OTHER_FILES]
    if results is not None:
        if page is None:
            _write_results(params, frame, searched, csvs, record, threshold, read, results)
        files.append(results)
    return files


def _write_results(params, frame, searched, csvs, record, threshold, read, page: Path) -> None:
    """The results page (`report.results`), written at `page`; `read` holds its inputs
    beyond the tables (the grids' words, the searches' trials, the choice's held-out
    answers)."""
    proto = protocol(params)
    setup = {"seed": proto.seed, "fraction": proto.heldout_fraction, "threshold": threshold}
    setup["out"] = _relative(params.out, params.path("."))
    # a run's own folder (--out): its page names it and how to regenerate it
    setup["run"] = params.run_folder is not None and params.run_named
    # the main job is the params.yaml beside the pipeline's dvc.yaml, which `make repro`
    # runs; another params file's page names its experiment and the command for it
    setup["params_flag"] = "" if _main_job(params) else _params_flag(params)
    setup["experiment"] = params.experiment
    if not setup["run"]:  # how the coefficients apply, to port a choice elsewhere (a run's
        st = params.steering  # flags may have steered otherwise than the params say)
        # a method dropped from steering.methods keeps its cells (and its verdicts)
        steered_cells = set(frame["method"].astype(str)) if len(frame) else set()
        setup["steering"] = {
            "unit": st.coefficient_unit,
            "scope": st.scope,
            "max_new_tokens": st.max_new_tokens,
            "subset": st.subset,
            # vectors the stage built that no grid cell steered: the page says so, or a
            # reader takes "among 3 methods" for every method there was
            "unsteered": [
                str(m)
                for m in params.vectors.methods
                if str(m) not in map(str, st.methods) and str(m) not in steered_cells
            ],
            # methods the grid names with no config kept here: never steered, or every
            # logged config measured vectors rebuilt since (stderr says which); without
            # this line the page reads as if they were never asked for
            "unmeasured": [str(m) for m in st.methods if str(m) not in steered_cells],
        }
    if params.inputs_named:  # --inputs DIR: its calibration and vector metadata
        setup["inputs"] = _relative(params.inputs, params.path("."))
    # a run's methods may come from flags, so only the main job's page checks them
    grid = {str(m) for m in params.steering.methods}
    setup["methods"] = None if setup["run"] else grid
    searched_now = {str(m) for m in params.search.methods} or grid  # empty: the grid's
    setup["search_methods"] = None if setup["run"] else searched_now
    setup |= read
    write_text(page, render_results(frame, searched, csvs, record, setup))


def coherence_bar(params, steered: dict[str, float]) -> float:
    """The bar the report judges every cell at: `report.min_coherence` when set; else the one
    the cells were steered with, when they agree (a scratch `steer --min-coherence 60` is
    reported at 60); else `steering.min_coherence`. A cell steered at another bar than the
    report's is said on stderr: its verdicts here differ from the ones steer printed."""
    bar = params.report.min_coherence
    bars = set(steered.values())
    if bar is None:
        bar = bars.pop() if len(bars) == 1 else params.steering.min_coherence
    others = sorted({b for b in steered.values() if b != bar})
    if others:
        cells = sum(b != bar for b in steered.values())
        listed = ", ".join(f"{b:g}" for b in others)
        print(
            f"steerops report: warning: {cells} of {len(steered)} cells were steered at "
            f"coherence >= {listed}; this report judges every cell at {bar:g} "
            "(--min-coherence sets it; a search's verdict keeps its own bar)",
            file=sys.stderr,
        )
    return bar


def _relative(path: Path, root: Path) -> str:
    """`path` as the results page names it: relative to the params dir when inside it."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return (path.relative_to(root) if path.is_relative_to(root) else path).as_posix() + "/"


def _track(params, files: list[Path]) -> None:
    """The report's run: its protocol as params, metrics.json's counts as metrics (the
    best cell and its status as tags), and its files."""
    from steerops.tracking import track

    counts = next((read_json(p) for p in files if p.name == "metrics.json"), {})
    numbers = {k: v for k, v in counts.items() if isinstance(v, int | float)}
    words = {f"steerops.{k}": v for k, v in counts.items() if isinstance(v, str)}
    with track(params, "report", "report", inputs={"outputs": params.out / "steering"}) as tracker:
        tracker.log_params(
            {
                "min_coherence": params.report.min_coherence,
                "heldout_fraction": params.search.heldout_fraction,
                "seed": params.seed,
            }
        )
        tracker.log_metrics({k: float(v) for k, v in numbers.items()})
        tracker.set_tags(words)
        for path in files:
            tracker.log_artifact(path, artifact_path="report")
