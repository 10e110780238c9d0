"""`steerops report`: the massive-activations analyses as markdown + CSV + PNG, every number
chosen on the selection half of the questions and reported on the held-out half."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerops import stats
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
from steerops.report.answer import answer_lines
from steerops.report.control import controls
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
from steerops.report.markdown import VERDICT_LEGEND, markdown_table
from steerops.report.resplit import resplits
from steerops.report.results import judge_words, judges_in, render_results, untested
from steerops.report.versus_grid import COMPARED, versus_columns, versus_grid
from steerops.report.weighed import weighed
from steerops.search.store import read_before_of
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
    out = params.path(params.report.out)
    files = write_report(params, frame, searched, out)
    _track(params, files)
    print(f"report written to {out / 'report.md'}")


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
        _halves(frame),
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
        checks = _best_checks(gap, again, randoms, weighs, params.report.resplits)
        write_json(staging / "metrics.json", _metrics(gap, prepost, errors, searched) | checks)
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


def _findings(gap: pd.DataFrame, held: pd.Series) -> int:
    """How many findings the cells `held` are: a cell, its aliases and its near copies
    repeat one test, so they count once, held when any of them is (their held-out
    coherences, and so their verdicts, can still differ near the bar)."""
    if gap.empty:
        return 0
    cells = [tuple(map(str, r)) for r in gap[tables.KEY].itertuples(index=False)]
    twin = {
        (*cell, str(m)): str(a or "") or str(c or "")
        for cell, m, a, c in zip(
            cells,
            gap["method"],
            gap["alias_of"].fillna(""),
            gap["near_copy_of"].fillna(""),
            strict=True,
        )
    }

    def root(cell: tuple, method: str) -> str:  # an alias of a near copy: its twin's twin
        seen = {method}
        while (nxt := twin.get((*cell, method), "")) and nxt not in seen:
            seen.add(method := nxt)
        return method

    keys = [f"{c}|{root(c, str(m))}" for c, m in zip(cells, gap["method"], strict=True)]
    return int(held.groupby(keys).any().sum())


def _metrics(gap, prepost, errors, searched) -> dict:
    """A handful of counts and the best cell: chosen on the selection half like every best
    (the largest selection-half delta of a cell's chosen config), reported held out."""
    count = gap[gap["alias_of"] == ""]["status"].value_counts()
    return {
        "cells": int((gap["alias_of"] == "").sum()),
        "cells_ok": int(count.get(stats.OK, 0)),
        # of those, the ones whose held-out test holds over every cell tested (q < 0.05)
        "cells_ok_at_fdr_5pct": int(
            ((gap["status"] == stats.OK) & (gap["heldout_q"] < stats.FDR)).sum()
        ),
        "cells_no_effect": int(count.get(stats.NO_EFFECT, 0)),
        "cells_opposite_effect": int(count.get(stats.OPPOSITE, 0)),
        "cells_incoherent_heldout": int(count.get(stats.INCOHERENT, 0)),
        "cells_too_few_heldout": int(count.get(stats.TOO_FEW, 0)),
        "cells_needing_finer_coefficients": int(count.get(stats.NEEDS_FINER, 0)),
        "cells_baseline_incoherent": int(count.get(stats.BASELINE_INCOHERENT, 0)),
        "cells_trait_unscored": int(count.get(stats.UNSCORED, 0)),
        "cells_heldout_unscored": int(count.get(stats.HELDOUT_UNSCORED, 0)),
        "aliases": int((gap["alias_of"] != "").sum()),
        # cleaned cells counted above whose test repeats their uncleaned method's (a q
        # with the p in its twin's place: `cells_ok_at_fdr_5pct` may count both)
        "near_copies": int((gap["near_copy_of"] != "").sum()),
        # the ok cells counted once: an alias or a near copy repeats its twin's finding
        "findings_ok": _findings(gap, gap["status"] == stats.OK),
        "findings_ok_at_fdr_5pct": _findings(
            gap, (gap["status"] == stats.OK) & (gap["heldout_q"] < stats.FDR)
        ),
        **_best_cell(gap),
        "flagged_preclean_gaps": (
            int((prepost["flag"] == tables.LIKELY_BUG).sum()) if len(prepost) else 0
        ),
        "best_predictor_loo_mae": _num(errors["loo_mae"].min()) if len(errors) else None,
        "searches": int(len(searched)),
        "searches_ok": int((searched["status"] == stats.OK).sum()) if len(searched) else 0,
        # of those, the ones whose held-out test holds over the report's searches (q < 0.05)
        "searches_ok_at_fdr_5pct": int(
            ((searched["status"] == stats.OK) & (searched["heldout_q"] < stats.FDR)).sum()
        ),
        # of those ok, the ones whose held-out half was read before for other choices of
        # earlier searches of the cell: not a first look
        "searches_ok_read_before": _ok_read_before(searched),
        # each search's choice against the grid's, paired on the held-out questions
        # (`versus_grid`): how many were compared, and moved the trait further than it
        **_versus_counts(searched),
    }


def _versus_counts(searched: pd.DataFrame) -> dict[str, int]:
    compared = searched.get("vs_grid", pd.Series(dtype=object)) == COMPARED
    none = pd.Series(dtype=float)
    lo = pd.to_numeric(searched.get("vs_grid_trait_delta_lo", none), errors="coerce")
    hi = pd.to_numeric(searched.get("vs_grid_trait_delta_hi", none), errors="coerce")
    return {
        "searches_vs_grid_compared": int(compared.sum()),
        "searches_beating_grid": int((compared & (lo > 0)).sum()),
        "searches_beaten_by_grid": int((compared & (hi < 0)).sum()),
    }


def _ok_read_before(searched: pd.DataFrame) -> int:
    if not len(searched) or "heldout_read_before" not in searched:
        return 0
    earlier = searched["heldout_read_before"].map(read_before_of).astype(bool)
    return int(((searched["status"] == stats.OK) & earlier).sum())


def _halves(frame: pd.DataFrame) -> str:
    """ "n = A selection / B held-out questions" (the ranges when cells differ)."""
    if frame.empty:
        return "no grid results"
    parts = []
    for name in ("selection", "heldout"):
        values = sorted({int(v) for v in frame[f"{name}_n"].dropna()})
        span = "-".join(map(str, sorted({values[0], values[-1]}))) if values else "?"
        parts.append(f"{span} {'selection' if name == 'selection' else 'held-out'}")
    return " / ".join(parts) + " questions"


INTRO = (
    "Computed from the results logs. Every grid best is chosen on a seeded selection half "
    "of the steering questions and reported on the disjoint held-out half ({halves}; seed "
    "{seed}, `search.heldout_fraction` {fraction:g}): `delta` is the held-out trait delta in "
    "the steering direction against the unsteered baseline on the same questions, "
    "`delta_lo`/`delta_hi` its 95% interval (paired bootstrap over questions, "
    "{resamples} resamples, percentile expanded for n as Student's t expands a mean's), "
    "`coherence` the held-out mean coherence, `n` the held-out "
    "questions; layer L is the output of decoder block L from 0 (HF's hidden_states[L + 1]). "
    "A config is a candidate when it is steered (coefficient != 0) and reaches "
    "coherence >= {t:g} on the selection half; the largest selection-half delta with an "
    "interval above zero wins. " + VERDICT_LEGEND.replace("{", "{{").replace("}", "}}") + " "
    "`alias_of` names a method whose vectors are the same tensors (the alias was evaluated "
    "once) or equal to them within 1e-06 at every layer (float rounding, evaluated on its "
    "own): either is left out of counts, q-values and the coefficient fit. `near_copy_of` "
    "names the uncleaned method of a cleaned variant whose removed dims held under "
    f"{tables.BARELY:.0%} of the uncleaned vector's squared norm and that chose the same "
    "config: its test repeats that method's, so the q-values count the two once (its q is "
    "its p in that method's place); it keeps its verdict and counts. Searches are a separate "
    "table: their trials use the search half only and are never mixed into grid tables."
)


def render_markdown(tables_by_name: dict, threshold: float, halves: str, **protocol_) -> str:
    """report.md: the massive activations (`massive`, with the `dims` lines), then the
    tables, each under its title."""
    titles = {
        "gap_analysis": "Gap analysis: the chosen config per method, held out (`layer` and "
        "`coefficient`: the selection half's choice whatever its `status`; only an ok one is a "
        "coefficient to use, as the best coefficients below list; `under_bar`: "
        "its held-out answers under the coherence bar, of `coherence_scored`; "
        "`coherence_unscored`: those the judge gave no coherence score; `credited_delta`: "
        "the held-out delta with both counted as unmoved (`under_bar_moved` of them "
        "had moved along the steering); `coherence_lo`/`_hi`: the held-out coherence's 95% "
        "interval; `moved_along`/`moved_against`/`unmoved`: its held-out answers by how their "
        "trait moved (`moved_little` of the moves by less than 10 points); `heldout_p`: "
        "one-sided sign-flip p of its held-out deltas; `heldout_q`: that p adjusted over every "
        "cell's but an alias's or a near copy's (whose q is its p in its twin's place), "
        "Benjamini-Hochberg)",
        "preclean_vs_clean_after": "Preclean vs clean-after (per `method`, its `_preclean` "
        "variant against its `_cleaned` one, each at its own chosen config; every dim of the "
        "set `dim_set` names); gap = preclean - clean-after on the held-out questions, "
        "paired interval; `vectors_max_diff` the largest difference between the two unit "
        "vectors over their layers",
        "cleaning_curve": "Cleaning curve: dims cleaned (of the set `dim_set` names) vs "
        "held-out delta; gain = cleaned - uncleaned on the held-out questions, paired interval "
        "(Bonferroni over the `gain_k` cleaned variants of a method: together at 95%)",
        "coefficients": "Best coefficients of the grid (ok cells only; `under_bar`: its "
        "held-out answers under the coherence bar, of `coherence_scored`, and "
        "`credited_delta` the held-out delta with them counted as unmoved, as in the gap "
        "analysis: many under the bar, a coefficient at a coherence cliff; `heldout_q`: the "
        "cell's q over the report's cells but aliases and near copies (as the gap analysis "
        "has it), an ok at 0.05 or more may be chance)",
        "coefficient_prediction": "Coefficient prediction (leave-one-out error on distinct "
        "ok cells: an alias or a near copy is its twin's point; none where every weight is "
        "the same or at its grid's largest coefficient, `not_fitted`)",
        "recommendations": "Recommended starting coefficients (from ok cells only, per "
        "coefficient `unit`; `n` the ok cells behind it: with one, it is that cell's grid "
        "choice, not a fit across cells; `predicted_weight` is an absolute weight; "
        "`n_at_largest_coefficient` of them chose their layer's largest coefficient, where the "
        "optimum may lie beyond the grid)",
        "search_heldout": "Coefficient searches: the chosen config on the search half and on "
        "held-out questions (no choice: no effect, no feasible steering found, baseline "
        "incoherent or trait unscored; `heldout_p`: the one-sided "
        "sign-flip p of its held-out deltas; `heldout_q`: that p adjusted over the report's "
        "searches, Benjamini-Hochberg; both blank here where the choice failed held out, "
        "search_heldout.csv keeps them; `heldout_under_bar`: its "
        "held-out answers under the search's coherence bar, of `heldout_coherence_scored`; "
        "`heldout_credited_delta`: the held-out delta with those answers, and those not "
        "scored for coherence, counted as unmoved; "
        "`heldout_read_before`: other choices of earlier searches of the cell the held-out "
        "half was read for; `vs_grid`: what its choice was compared with (compared, same "
        "config, no grid choice, other settings, or why its scores could not be read); "
        "`grid_layer`/`grid_coefficient`/`grid_status`: the grid's choice of the same method "
        "at the search's bar, from configs scored under the same settings and vectors; "
        "`vs_grid_trait_delta`/`vs_grid_coherence_delta`: the search's choice minus the "
        "grid's on the `vs_grid_n`/`vs_grid_coherence_n` held-out questions both answered, "
        "paired)",
    }
    parts = ["# Steering report", "", _intro(threshold, halves, **protocol_), ""]
    judges = tables_by_name.get("judges") or []
    if judges:  # what "trait" and "coherence" measure, before any number of them
        parts += [f"Judge: {'; '.join(map(judge_words, judges))}.", ""]
    answer = answer_lines(
        tables_by_name["gap_analysis"],
        tables_by_name["search_heldout"],
        tables_by_name["cleaning_curve"],
        threshold,
        tables_by_name.get("grids"),
        tables_by_name.get("trials"),
        tables_by_name.get("resplits"),
        tables_by_name.get("controls"),
        tables_by_name.get("weighs"),
    )
    parts += ["## In short", "", *answer, ""]
    parts += ["## Massive activations (calibration)", "", str(tables_by_name["dims"]), ""]
    parts += [markdown_table(calibrated.massive_display(tables_by_name["massive"])), ""]
    notes = {  # what a table's names do not say
        "coefficient_prediction": "Features per chosen config (`coefficient_features.csv`): "
        "`layer_norm` is the mean L2 norm of the layer's extraction activations, each a "
        "mean-pooled window at the vector's position (not the per-token coefficient unit); "
        "`layer_norm_clean` the same with the cleaned dims zeroed; `abs_mean_proj` is "
        "|mean activation . vector|.",
    }
    for name, title in titles.items():
        note = [notes[name], ""] if name in notes else []
        table = tables_by_name[name]
        if name == "search_heldout":  # as the results page shows it
            table = untested(table)
        body = prediction_body(table) if name == "coefficient_prediction" else markdown_table(table)
        parts += [f"## {title}", "", *note, body, ""]
    parts += [
        "![coefficient curves](coefficient_curves.png)",
        "",
        "![cleaning curve](cleaning_curve.png)",
        "",
    ]
    return "\n".join(parts)


def prediction_body(errors: pd.DataFrame) -> str:
    """The prediction table, or why there is none: a table of blanks reads as a failure."""
    if errors["loo_mae"].notna().any():
        return markdown_table(errors)
    most = int(errors["n"].max()) if len(errors) else 0
    if most < predict.MIN_ROWS:
        return (
            f"Not fitted: leave-one-out needs {predict.MIN_ROWS} distinct ok cells for a "
            f"predictor, and the most any predictor had here is {most} "
            "(`coefficient_prediction.csv` counts them per predictor)."
        )
    reasons = sorted(set(errors["not_fitted"]) - {""})
    return f"Not fitted: {'; '.join(reasons)} (`coefficient_prediction.csv`, `not_fitted`)."


def _intro(threshold: float, halves: str, seed: int = 0, fraction: float = 0.5) -> str:
    return INTRO.format(
        t=threshold,
        halves=halves,
        seed=seed,
        fraction=fraction,
        resamples=stats.RESAMPLES,
        min_heldout=stats.MIN_HELDOUT,
    )


def _best_cell(gap: pd.DataFrame) -> dict:
    """The cell chosen on the selection half alone (`tables.selection_choice`), with its
    held-out verdict, delta, interval and n. It is `best_cell` only when that verdict is OK
    (no effect is never a best); otherwise `best_cell` is None and `selection_choice` names
    the cell that did not hold."""
    best = tables.selection_choice(gap)
    if best is None:
        return {"best_cell": None, "selection_choice": None}
    cell = " ".join(str(best[k]) for k in tables.GROUP)
    return {
        "best_cell": cell if best["status"] == stats.OK else None,
        "selection_choice": cell,
        "best_status": best["status"],
        "best_selection_delta": _num(best["selection_delta"]),
        "best_heldout_delta": _num(best["delta"]),
        "best_heldout_delta_lo": _num(best["delta_lo"]),
        "best_heldout_delta_hi": _num(best["delta_hi"]),
        "best_heldout_n": None if pd.isna(best["n"]) else int(best["n"]),
    }


def _best_checks(gap: pd.DataFrame, again: dict, randoms: dict, weighs: dict, asked: int) -> dict:
    """What the selection choice is checked against (None: no such check): how often
    `asked` other splits of its questions chose it again and their choice held out
    (`resplit.resplits`), its paired held-out gain over a random direction at its config
    (`control.controls`), and its near copy compared where the dims weigh (`weighed.weighed`;
    the first cleaned variant compared there)."""
    best = tables.selection_choice(gap)
    pair = (str(best["model"]), str(best["trait"])) if best is not None else None
    r = again.get(pair)
    c = randoms.get(pair)
    compared = [w for (*at, _), w in sorted(weighs.items()) if tuple(at) == pair and w.compared]
    w = compared[0] if compared else None
    return {
        "resplits": asked if r is None else r.splits,
        "resplits_same_config": None if r is None else r.same_config,
        "resplits_ok": None if r is None else r.ok,
        **_interval_fields("gain_over_random", c.gain if c is not None else None),
        "weighed_layer": None if w is None else w.layer,
        **_interval_fields("weighed_gain", w.gain if w is not None else None),
        "weighed_variant": None if w is None else w.variant,
        # the cleaned variant's coefficient there when it matched the push (None: the
        # choice's own, or nothing compared: weighed_layer None)
        "weighed_cleaned_coefficient": None if w is None else w.cleaned_coefficient,
    }


def _interval_fields(name: str, interval: stats.Interval | None) -> dict:
    """`name`, `name_lo` and `name_hi` of an interval (each None without one)."""
    if interval is None:
        return {name: None, f"{name}_lo": None, f"{name}_hi": None}
    return {name: interval.mean, f"{name}_lo": interval.lo, f"{name}_hi": interval.hi}


def _num(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


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
