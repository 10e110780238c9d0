"""`steerops report`: the massive-activations analyses as markdown + CSV + PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from steerops.cli import abs_path, flags, load_params_for, stage_parser
from steerops.errors import SteeropsError
from steerops.io import write_json, write_text
from steerops.report import plots, predict, tables
from steerops.report.load import load_results, load_search_summaries, vector_features


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "report",
        "Gap analysis, preclean vs clean-after, cleaning curve, "
        "coefficient table and coefficient prediction, computed from the results files under "
        "the outputs root.",
    )
    flags(parser, "report.min_coherence")
    flags(parser, "--report-dir=report.out", type=abs_path)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    frame = load_results(params)
    if frame.empty:
        raise SteeropsError(
            f"no steering results under {params.out / 'steering'}: "
            "run `steerops steer` or `steerops search` first"
        )
    out = params.path(params.report.out)
    files = write_report(params, frame, out)
    _track(params, files)
    print(f"report written to {out / 'report.md'}")


def write_report(params, frame: pd.DataFrame, out: Path) -> list[Path]:
    threshold = params.report.min_coherence
    grid = frame[frame["source"] == "grid"] if (frame["source"] == "grid").any() else frame
    gap = tables.gap_analysis(frame, threshold)
    prepost = tables.preclean_vs_clean_after(grid, threshold)
    curve = tables.cleaning_curve(grid, threshold)
    coefs = tables.coefficient_table(grid, threshold)
    features = vector_features(params, coefs, grid)
    searched = load_search_summaries(params)
    errors = predict.loo_errors(features)
    recs = predict.recommendations(features, errors)
    csvs = {
        "gap_analysis": gap,
        "preclean_vs_clean_after": prepost,
        "cleaning_curve": curve,
        "coefficients": coefs,
        "coefficient_features": features,
        "coefficient_prediction": errors,
        "recommendations": recs,
        "search_heldout": searched,
    }
    files = []
    for name, table in csvs.items():
        path = out / f"{name}.csv"
        write_text(path, table.to_csv(index=False, float_format="%.6g"))
        files.append(path)
    plots.coefficient_curves(grid, threshold, out / "coefficient_curves.png")
    files.append(out / "coefficient_curves.png")
    if not curve.empty:
        plots.cleaning_curve(curve, out / "cleaning_curve.png")
        files.append(out / "cleaning_curve.png")
    write_json(out / "metrics.json", _metrics(gap, prepost, errors))
    write_text(out / "report.md", render_markdown(csvs, threshold))
    return files + [out / "metrics.json", out / "report.md"]


def _metrics(gap, prepost, errors) -> dict:
    ok = gap[gap["status"] == "ok"]
    return {
        "configs_feasible_methods": int(len(ok)),
        "methods_needing_finer_coefficients": int((gap["status"] != "ok").sum()),
        "best_delta": _num(ok["best_delta"].max()) if len(ok) else None,
        "flagged_preclean_gaps": int((prepost["flag"] != "").sum()) if len(prepost) else 0,
        "best_predictor_loo_mae": _num(errors["loo_mae"].min()) if len(errors) else None,
    }


def render_markdown(tables_by_name: dict[str, pd.DataFrame], threshold: float) -> str:
    titles = {
        "gap_analysis": "Gap analysis: best trait delta at coherence >= {t:g}",
        "preclean_vs_clean_after": "Preclean vs clean-after (all global massive dims)",
        "cleaning_curve": "Cleaning curve: massive dims cleaned vs best delta",
        "coefficients": "Optimal coefficients",
        "coefficient_prediction": "Coefficient prediction (leave-one-out error)",
        "recommendations": "Recommended starting coefficients",
        "search_heldout": "Coefficient search: the chosen config on the search half and on "
        "held-out questions",
    }
    parts = [
        "# Steering report",
        "",
        f"Computed from results files; a config counts when coherence >= {threshold:g}. "
        "Trait deltas are measured in the steering direction.",
        "",
    ]
    for name, title in titles.items():
        parts += [f"## {title.format(t=threshold)}", "", _markdown_table(tables_by_name[name]), ""]
    parts += [
        "![coefficient curves](coefficient_curves.png)",
        "",
        "![cleaning curve](cleaning_curve.png)",
        "",
    ]
    return "\n".join(parts)


def _markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no data_"
    head = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def _num(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _track(params, files: list[Path]) -> None:
    from steerops.tracking import track

    with track(params, "report", "report", inputs={"outputs": params.out / "steering"}) as tracker:
        for path in files:
            tracker.log_artifact(path, artifact_path="report")
