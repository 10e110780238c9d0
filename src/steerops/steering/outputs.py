"""A steering cell's files, rewritten from its results log after every sweep.

results.csv, metrics.json and curve.png hold the configs of the sweep (`steering.sweep`:
the log keeps every sweep's, and serves a config asked again), so the cell's numbers are a
function of the grid that ran it. They are written while holding the log's lock. Response
files are written for the configs the response policy wants; a file that is missing, damaged
or holds another settings' responses is generated again (greedy, so in float32 the same text
as the logged scores'; in 16-bit floats, where the text can depend on the batch, a file whose
text scored otherwise is marked `rescored`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import sys
from collections.abc import Collection, Mapping
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
    entry_key,
    locked,
    result_dict,
)
from steerops.steering.sweep import sweep_digest, sweep_keys, write_sweep

BASELINE_RESPONSES = "baseline.json"  # in the cell's responses/, beside L<layer>_c<coef>.json


def _say_dropped(out_dir: Path, before: set[str] | None, swept: list[dict]) -> None:
    """A sweep that leaves out configs the cell's latest one had replaces the cell's
    numbers with its own (a sub-grid rerun by accident narrows the cell): said on stderr."""
    from steerops.cli import display_path

    now = {entry_key(c) for c in swept}
    dropped = len(before - now) if before else 0
    if dropped:
        print(
            f"steerops steer: note: {display_path(out_dir)}: this sweep's {len(now)} configs "
            f"replace the latest sweep's {len(before or ())} in results.csv and metrics.json "
            f"({dropped} left out; the results log keeps them: steer them again to count them)",
            file=sys.stderr,
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
        files = {}  # the vector files this sweep steered with: the cell's current numbers
        for result in results:
            for ref in result.config.vectors if result.config is not None else ():
                files.update(evaluator.vector_files(ref.source))
        swept = [config_dict(r.config, r.weights) for r in results if r.config is not None]
        with contextlib.suppress(SteeropsError):  # a damaged record is replaced below
            _say_dropped(out_dir, sweep_keys(out_dir, evaluator.settings_hash), swept)
        sweep = write_sweep(out_dir, evaluator.settings_hash, swept)
        rows = config_rows(
            log,
            evaluator.settings_hash,
            proto,
            labels,
            vector_files=files,
            units=evaluator.units_now(log),
            sweep=sweep,
        )
        metrics = cell_metrics(rows, cfg.min_coherence, proto, alias_of)
        base = baseline_means(log, evaluator.settings_hash)
        metrics.update(
            settings_hash=evaluator.settings_hash,
            n_questions=len(evaluator.questions),
            baseline_trait=base["trait_mean"],
            baseline_coherence=base["coherence_mean"],
            sweep=sweep_digest(sweep),
        )
        write_csv(out_dir / CSV_FILE, sorted(rows, key=grid_order))
        write_json(out_dir / METRICS_FILE, metrics)
        if rows:
            title = f"{session.trait} {rows[0]['method']} {rows[0]['position']} ({session.variant})"
            plots.coefficient_curve(
                rows, base, cfg.min_coherence, out_dir / CURVE_FILE, title, metrics
            )
    best = best_per_layer(rows, cfg.min_coherence)
    keep = {_row_key(r) for r in best.values()}
    folder = out_dir / RESPONSES_DIR
    baseline, results, rescored = _with_missing_responses(
        evaluator, folder, cfg.save_responses, results, keep
    )
    saved = save_responses(
        folder,
        cfg.save_responses,
        evaluator.settings_hash,
        evaluator.unsteered_hash,
        len(evaluator.questions),
        baseline,
        results,
        keep,
        rescored,
    )
    return {"rows": rows, "metrics": metrics, "best": best, "responses": saved}


def _with_missing_responses(
    evaluator, folder: Path, policy: str, results: list[ConfigResult], keep: set[tuple]
) -> tuple[ConfigResult, list[ConfigResult], set[tuple]]:
    """The baseline and `results`, with responses generated again for the files `policy`
    wants that hold no good copy for these settings (a run killed after logging a config's
    scores, before writing its responses; a damaged file; one another settings' sweep
    wrote; a config served from another log): a sweep ends with the files an uninterrupted
    one on these settings writes, and its rerun generates nothing. Also the keys of the
    configs whose responses, generated again, scored otherwise than their log (in 16-bit
    floats greedy text depends on the batch it is decoded in)."""
    baseline = evaluator.baseline()
    if policy == "none":
        return baseline, results, set()
    n = len(evaluator.questions)
    missing = [
        i
        for i, r in enumerate(results)
        if not r.responses
        and r.config is not None
        and (policy == "all" or _result_key(r) in keep)
        and not _kept(_response_file(folder, r), n, settings_hash=evaluator.settings_hash)
    ]
    # the baseline's file serves every sweep that differs only in steering settings
    unsteered = {"unsteered_hash": evaluator.unsteered_hash}
    rescored = set()
    if not baseline.responses and not _kept(folder / BASELINE_RESPONSES, n, **unsteered):
        logged, baseline = baseline, evaluator.baseline_responses()
        if not _same_scores(baseline.scores, logged.scores):
            rescored.add(BASELINE_KEY)
    results = list(results)
    # coefficient 0 steers nothing: its rows are the baseline's, texts included
    zero = [i for i in missing if evaluator.unsteered(results[i].config)]
    if zero:
        rows = baseline.responses or read_json(folder / BASELINE_RESPONSES)["responses"]
        for i in zero:
            results[i] = dataclasses.replace(results[i], responses=rows)
            if BASELINE_KEY in rescored:  # the baseline's regenerated text, so its mark
                rescored.add(_result_key(results[i]))
    regenerated = len(missing)  # coefficient 0's files (the baseline's rows) among them
    missing = [i for i in missing if i not in zero]
    if missing:
        fresh = evaluator.responses([results[i] for i in missing])
        for i, result in zip(missing, fresh, strict=True):
            if not _same_scores(result.scores, results[i].scores):
                rescored.add(_result_key(result))
            results[i] = result
    if rescored:
        configs = len(rescored - {BASELINE_KEY})
        which = " and ".join(
            (["the baseline"] if BASELINE_KEY in rescored else [])
            + ([f"{configs} of the {regenerated} configs"] if configs else [])
        )
        print(
            f"steer: warning: {which} whose responses were generated again for their files "
            "scored otherwise than logged (16-bit decoding depends on the batch's shape): "
            "their files hold the new text and its scores (marked `rescored`), the table and "
            "results.jsonl the logged ones",
            file=sys.stderr,
        )
    return baseline, results, rescored


def _same_scores(fresh: list, logged: list) -> bool:
    """Whether two per-question (trait, coherence) lists agree, to float rounding."""
    if len(fresh) != len(logged):
        return False
    for pair, other in zip(fresh, logged, strict=True):
        for a, b in zip(pair, other, strict=True):
            if (a is None) != (b is None) or (
                a is not None and not math.isclose(a, b, abs_tol=1e-9)
            ):
                return False
    return True


BASELINE_KEY = ("baseline",)  # the baseline's file among the `rescored` keys
RESCORED_NOTE = (
    "generated again for this file after an interrupted run, in 16-bit floats, where text "
    "depends on the batch: this text and its scores differ from the logged ones the "
    "table and results.jsonl report"
)


def _result_key(result: ConfigResult) -> tuple:
    assert result.config is not None
    layer = "+".join(str(v.layer) for v in result.config.vectors)
    return (layer, float(result.config.coefficient))


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def coefficient_text(coefficient: float) -> str:
    """A coefficient as names and headers print it: short (%g) when that reads back as the
    same number, else exact, so two coefficients never share a file or a column."""
    short = f"{coefficient:g}"
    return short if float(short) == coefficient else repr(float(coefficient))


def _response_file(folder: Path, result: ConfigResult) -> Path:
    layer, coefficient = _result_key(result)
    return folder / f"L{layer}_c{coefficient_text(coefficient)}.json"


def _legacy_response_file(folder: Path, result: ConfigResult) -> Path:
    """The name runs before exact names gave the file (%g: 0.1 + 0.2 was `c0.3`)."""
    layer, coefficient = _result_key(result)
    return folder / f"L{layer}_c{coefficient:g}.json"


def _row_key(row: Mapping[str, Any]) -> tuple:
    return (str(row["layer"]), float(row["coefficient"]))


def save_responses(
    folder: Path,
    policy: str,
    settings_hash: str,
    unsteered: str,
    n_questions: int,
    baseline: ConfigResult,
    results: list[ConfigResult],
    best: set[tuple],
    rescored: Collection[tuple] = (),
) -> list[Path]:
    """Write response files for `policy` (`best`: the configs in `best`, keyed by layer and
    coefficient); files of other configs, earlier sweeps' included, stay. Returns the files
    that hold these settings' responses: a config served from a log (no responses here)
    lists the file an earlier run kept for these settings, when it is whole; the baseline
    one kept under the same `unsteered` hash (`store.unsteered_hash`)."""
    if policy == "none":
        return []
    saved = []
    baseline_file = folder / BASELINE_RESPONSES
    if baseline.responses:
        note = {"rescored": RESCORED_NOTE} if BASELINE_KEY in rescored else {}
        write_json(
            baseline_file,
            {
                "settings_hash": settings_hash,
                "unsteered_hash": unsteered,
                "result": result_dict(baseline),
                "responses": baseline.responses,
            }
            | note,
        )
    if _kept(baseline_file, n_questions, unsteered_hash=unsteered):
        saved.append(baseline_file)
    seen = set()
    for result in results:
        assert result.config is not None
        key = config_key(result.config, result.weights)
        if key in seen or (policy == "best" and _result_key(result) not in best):
            continue
        seen.add(key)
        path = _response_file(folder, result)
        if result.responses:
            # generated again after a resume, and scored otherwise than logged
            note = {"rescored": RESCORED_NOTE} if _result_key(result) in rescored else {}
            write_json(
                path,
                {
                    "settings_hash": settings_hash,
                    "config": config_dict(result.config, result.weights),
                    "result": result_dict(result),
                    "responses": result.responses,
                }
                | note,
            )
        else:
            match = {
                "settings_hash": settings_hash,
                "config": config_dict(result.config, result.weights),
            }
            legacy = _legacy_response_file(folder, result)
            if legacy != path and not path.exists() and _kept(legacy, n_questions, **match):
                os.replace(legacy, path)  # an older run's file of this very config
            if not _kept(path, n_questions, **match):
                print(f"note: no responses for {path.stem} under these settings")
                continue
        saved.append(path)
    return saved


def _kept(path: Path, n_questions: int, **match: Any) -> bool:
    """Whether a response file an earlier run wrote holds these settings' responses whole:
    readable, with the `match` values (hashes, the config), one response per question.
    Anything else (missing, torn, another sweep's) is written again; unreadable JSON is
    never a reason to stop a sweep whose scores are in the log."""
    try:
        data = read_json(path)
    except (OSError, ValueError, SteeropsError):
        return False
    return (
        isinstance(data, dict)
        and all(data.get(key) == value for key, value in match.items())
        and isinstance(data.get("result"), dict)
        and isinstance(data.get("responses"), list)
        and len(data["responses"]) == n_questions
    )
