"""A steering cell's files, rewritten from its results log after every sweep.

results.csv, metrics.json and curve.png hold every config logged under the sweep's settings
(earlier sweeps' included), so a follow-up sweep with other coefficients adds to the cell
instead of replacing it. They are written while holding the log's lock, so two sweeps on
one cell cannot leave files that miss the other's configs. Response files are written for
configs generated in this sweep and never deleted.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import atomic_path, read_json, write_json
from steerops.steering import plots
from steerops.steering.best import (
    ROW_COLUMNS,
    baseline_means,
    best_per_layer,
    cell_metrics,
    config_rows,
    grid_order,
    protocol,
)
from steerops.steering.configs import ConfigResult
from steerops.steering.store import (
    CSV_FILE,
    CURVE_FILE,
    METRICS_FILE,
    RESPONSES_DIR,
    RESULTS_FILE,
    ResultsLog,
    config_dict,
    config_key,
    locked,
    result_dict,
)


def write_cell(
    params, evaluator, out_dir: Path, results: list[ConfigResult], alias_of: str | None
) -> dict[str, Any]:
    """Write the cell's files from its log; returns its rows, metrics and saved responses."""
    cfg, session = params.steering, evaluator.session
    labels = {
        "trait": session.trait,
        "variant": session.variant,
        "vector_variant": session.vector_variant,
    }
    proto = protocol(params)
    log_path = out_dir / RESULTS_FILE
    with locked(log_path):
        log = ResultsLog(log_path)
        rows = config_rows(log, evaluator.settings_hash, proto, labels)
        metrics = cell_metrics(rows, cfg.min_coherence, proto, alias_of)
        base = baseline_means(log, evaluator.settings_hash)
        metrics.update(
            settings_hash=evaluator.settings_hash,
            n_questions=len(evaluator.questions),
            baseline_trait=base["trait_mean"],
            baseline_coherence=base["coherence_mean"],
        )
        write_csv(out_dir / CSV_FILE, sorted(rows, key=grid_order))
        write_json(out_dir / METRICS_FILE, metrics)
        if rows:
            title = f"{session.trait} {rows[0]['method']} {rows[0]['position']} ({session.variant})"
            plots.coefficient_curve(rows, base, cfg.min_coherence, out_dir / CURVE_FILE, title)
    best = best_per_layer(rows, cfg.min_coherence)
    keep = {_row_key(r) for r in best.values()}
    folder = out_dir / RESPONSES_DIR
    baseline, results = _with_missing_responses(
        evaluator, folder, cfg.save_responses, results, keep
    )
    saved = save_responses(
        folder, cfg.save_responses, evaluator.settings_hash, baseline, results, keep
    )
    return {"rows": rows, "metrics": metrics, "best": best, "responses": saved}


def _with_missing_responses(
    evaluator, folder: Path, policy: str, results: list[ConfigResult], keep: set[tuple]
) -> tuple[ConfigResult, list[ConfigResult]]:
    """The baseline and `results`, with responses generated again for the files `policy`
    wants that no run wrote (a run killed after logging a config's scores, before writing
    its responses): an interrupted sweep resumes to the files an uninterrupted one writes."""
    baseline = evaluator.baseline()
    if policy == "none":
        return baseline, results
    # only configs logged under these settings: served from other settings (e.g. a subset
    # of logged questions) they were never meant to have files here
    missing = [
        i
        for i, r in enumerate(results)
        if not r.responses
        and r.logged_here
        and r.config is not None
        and (policy == "all" or _result_key(r) in keep)
        and not _response_file(folder, r).exists()
    ]
    if (
        (missing or baseline.logged_here)
        and not baseline.responses
        and not (folder / "baseline.json").exists()  # earlier files are never rewritten
    ):
        baseline = evaluator.baseline_responses()
    if missing:
        fresh = evaluator.responses([results[i] for i in missing])
        results = list(results)
        for i, result in zip(missing, fresh, strict=True):
            results[i] = result
    return baseline, results


def _result_key(result: ConfigResult) -> tuple:
    assert result.config is not None
    layer = "+".join(str(v.layer) for v in result.config.vectors)
    return (layer, float(result.config.coefficient))


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _response_file(folder: Path, result: ConfigResult) -> Path:
    layer, coefficient = _result_key(result)
    return folder / f"L{layer}_c{coefficient:g}.json"


def _row_key(row: Mapping[str, Any]) -> tuple:
    return (str(row["layer"]), float(row["coefficient"]))


def save_responses(
    folder: Path,
    policy: str,
    settings_hash: str,
    baseline: ConfigResult,
    results: list[ConfigResult],
    best: set[tuple],
) -> list[Path]:
    """Write response files for `policy` (`best`: the configs in `best`, keyed by layer and
    coefficient); files of other configs, earlier sweeps' included, stay.

    A config served from a log has no responses here, so it keeps the file an earlier run
    wrote for it (when one exists)."""
    if policy == "none":
        return []
    saved = []
    if baseline.responses:
        write_json(
            folder / "baseline.json",
            {
                "settings_hash": settings_hash,
                "result": result_dict(baseline),
                "responses": baseline.responses,
            },
        )
    if (folder / "baseline.json").exists():
        saved.append(folder / "baseline.json")
    seen = set()
    for result in results:
        assert result.config is not None
        key = config_key(result.config, result.weights)
        if key in seen or (policy == "best" and _result_key(result) not in best):
            continue
        seen.add(key)
        path = _response_file(folder, result)
        if result.responses:
            write_json(
                path,
                {
                    "settings_hash": settings_hash,
                    "config": config_dict(result.config, result.weights),
                    "result": result_dict(result),
                    "responses": result.responses,
                },
            )
        elif _kept_hash(path) != settings_hash:
            if path.exists() and _kept_hash(path) is None:
                path.unlink()  # damaged: no half file beside the good ones
                why = "an earlier run kept a damaged file, now removed"
            elif not result.logged_here:  # e.g. a scratch run served from the pipeline's log
                why = "its scores were served from another log or from other questions"
            else:
                why = "an earlier run evaluated it without keeping them"
            print(f"note: no responses for {path.stem}: {why}")
            continue
        saved.append(path)
    return saved


def _kept_hash(path: Path) -> str | None:
    """The settings hash of a response file an earlier run kept; None when there is none
    or it is damaged (unreadable JSON is not a reason to stop a sweep whose scores are in
    the log)."""
    try:
        data = read_json(path)
    except (OSError, ValueError, SteeropsError):
        return None
    return data.get("settings_hash") if isinstance(data, dict) else None
