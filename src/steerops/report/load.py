"""Collect steering grid results and search outcomes into tidy frames, plus the vector and
activation properties the coefficient predictor uses.

Grid results come from each cell's results log, under the settings its `metrics.json` names
(the configs of the cell's latest sweep, `steering.sweep`), with each config's
numbers on all questions, on the selection half and on the held-out half
(`steering.best.config_rows`, the split and intervals of `steerops.stats`). Search outcomes
come from each study's `best.json`. The two are separate frames: a search trial is measured
on other questions against another baseline, so it never joins a grid table.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from steerops import stats
from steerops.calibration.store import stored_global_dims, stored_massive_dims
from steerops.cli import error_line, rerun_flag
from steerops.errors import SteeropsError
from steerops.extract.store import activations_dir, is_complete
from steerops.extract.store import read_layer as read_activations
from steerops.io import file_md5, read_json
from steerops.search.store import best_row, searches
from steerops.steering.best import ROW_COLUMNS, aliases, config_rows, protocol, vector_map
from steerops.steering.configs import VectorRef, vector_file_key
from steerops.steering.store import (
    METRICS_FILE,
    RESULTS_FILE,
    ResultsLog,
    entry_key,
    same_weight,
    scope_of,
    scores_of,
    steering_dir,
)
from steerops.steering.sweep import sweep_keys
from steerops.vectors.store import METADATA_FILE as VECTORS_METADATA
from steerops.vectors.store import (
    TENSORS_FILE,
    is_stored,
    load_vectors,
    recorded_mean_norm,
    vectors_dir,
)

# `settings`: the cell's steering settings hash (configs of two cells compare only under
# equal settings: scope, unit, judge, questions... are in it, the method is not); `scope`:
# the same settings but the questions (`scope_of`: a search's held-out answers pair with a
# config of equal scope); `earlier_configs`: the configs of the cell's earlier sweeps under
# its settings (`steering.sweep`), whose held-out numbers were computed too; `sign`:
# the direction the cell steered in (-1: to suppress the trait), which signs its deltas;
# `unit`: what its coefficients multiply (`steering.coefficient_unit`)
COLUMNS = [
    "model",
    *ROW_COLUMNS,
    *("alias_of", "heldout_traits", "heldout_coherences", "heldout_deltas"),
    *("scores", "baseline_scores"),
    *("heldout_baseline_trait", "heldout_baseline_coherence"),
    "selection_baseline_coherence",  # a bar the unsteered model misses: baseline incoherent
    *("judge", "settings", "scope", "sign", "unit", "earlier_configs"),
]
CELL = ["model", "trait", "variant", "position", "component"]


def load_results(params) -> pd.DataFrame:
    """One row per config of every steering cell under the outputs root. Deltas on the halves
    are in the steering direction; `heldout_traits` maps each held-out question to the
    config's trait score (for paired comparisons between configs); `alias_of` names the
    method whose vectors are the same tensors at every layer; `judge` is the judge the
    cell's baseline settings name. Each cell's deltas are signed by the direction its own
    settings name (params' direction for a log that names none)."""
    proto = protocol(params)
    rows: list[dict] = []
    root = params.out / "steering"
    for path in sorted(root.rglob(RESULTS_FILE)) if root.is_dir() else []:
        log = ResultsLog(path)
        settings_hash = _cell_settings(log, path.parent / METRICS_FILE)
        baseline = log.baseline(settings_hash) if settings_hash else None
        if baseline is None:
            print(
                f"steerops report: warning: {path.parent}: no baseline for settings "
                f"{settings_hash or '(none named)'} in its results log: the cell is left out "
                f"(run `steerops steer{rerun_flag(params)}` to measure it again)",
                file=sys.stderr,
            )
            continue
        settings = baseline.get("settings") or {}
        model = settings.get("model") or {}
        labels = {
            "trait": settings.get("trait"),
            "variant": model.get("variant"),
            "vector_variant": settings.get("vector_variant"),
            "model": _model_id(params, model.get("variant"), model.get("id")),
            "judge": str(settings.get("judge") or ""),
            "settings": settings_hash,
            "scope": scope_of(settings),
        }
        direction = settings.get("direction", proto.direction)
        cell = replace(proto, sign=stats.direction_sign(direction))
        files = _vector_files_now(params, log, settings_hash, labels)
        labels["sign"] = cell.sign
        labels["unit"] = str(settings.get("coefficient_unit") or "")  # "": a log that names none
        units = _units_now(params, log, settings_hash, labels)
        sweep = sweep_keys(path.parent, settings_hash)
        # configs of earlier sweeps under the same settings and vectors, dropped from the
        # latest: their held-out numbers were computed too, so a grid revised since may have
        # been chosen knowing them (configs of rebuilt vectors are `_say_left_out`'s)
        measured = {entry_key(e["config"]) for e in log.configs(settings_hash, files, units)}
        labels["earlier_configs"] = 0 if sweep is None else len(measured - sweep)
        rows += config_rows(
            log,
            settings_hash,
            cell,
            labels,
            keep_heldout=True,
            vector_files=files,
            units=units,
            sweep=sweep,
        )
        _say_left_out(path.parent, log, settings_hash, measured, sweep, rerun_flag(params))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    frame["model"] = _model_labels(frame)
    frame["alias_of"] = _alias_column(frame)
    order = ["model", "trait", "variant", "position", "component", "method", "layer", "coefficient"]
    return frame.sort_values(order, kind="mergesort", key=_sort_key).reset_index(drop=True)


def _vector_files_now(params, log: ResultsLog, settings_hash: str, labels: dict) -> dict:
    """{vector file: md5} of the files the cell's configs steer with, as they are on disk
    now (the pipeline's vectors, which a scratch run reads too): configs measured with
    other vectors are not the cell's (`ResultsLog.configs`)."""
    out: dict[str, str] = {}
    entries = [e for e in log.entries if e["type"] == "config"]
    for entry in entries:
        if entry.get("settings_hash") != settings_hash:
            continue
        for v in entry["config"]["vectors"]:
            key = vector_file_key(v["method"], v["position"], v["component"])
            if key in out:
                continue
            args = (labels["trait"], labels["vector_variant"], v["position"], v["component"])
            path = vectors_dir(params.inputs, *args, v["method"]) / TENSORS_FILE
            if path.is_file():
                out[key] = file_md5(path)
    return out


def _units_now(params, log: ResultsLog, settings_hash: str, labels: dict) -> dict[str, float]:
    """Each logged vector's weight per unit coefficient now (`ResultsLog.units_now`), from
    the vectors' metadata on disk (the layer's `mean_norm`); a vector without one is left
    out."""
    metadata: dict[Path, dict] = {}

    def layer_norm(ref: VectorRef) -> float | None:
        args = (labels["trait"], labels["vector_variant"], ref.position, ref.component)
        folder = vectors_dir(params.inputs, *args, ref.method)
        if folder not in metadata:
            path = folder / VECTORS_METADATA
            metadata[folder] = read_json(path) if path.is_file() else {}
        return recorded_mean_norm(metadata[folder], ref.layer)

    return log.units_now(settings_hash, labels["unit"] == "absolute", layer_norm)


def _say_left_out(
    cell: Path,
    log: ResultsLog,
    settings_hash: str,
    current: set[str],
    sweep: set[str] | None,
    flag: str = "",
) -> None:
    """One line when configs of the cell's sweep measured vectors that are no longer on
    disk, or at a weight their coefficient no longer means (the vectors or their layer's
    unit were rebuilt and the cell not steered again): they are left out, not wrong.
    `current`: the keys of the configs measured with the vectors and units now
    (`ResultsLog.configs`); `flag`: what the hint's command needs (`cli.rerun_flag`)."""
    logged = {
        entry_key(e["config"])
        for e in log.entries
        if e["type"] == "config" and e.get("settings_hash") == settings_hash
    }
    if sweep is not None:
        logged &= sweep
    if gone := len(logged - current):
        print(
            f"steerops report: warning: {cell}: {gone} of {len(logged)} configs were "
            "measured with vectors changed since (or at a weight their coefficient no "
            f"longer means) and are left out (run `steerops steer{flag}` to measure them "
            "again)",
            file=sys.stderr,
        )


def _model_labels(frame: pd.DataFrame) -> list[str]:
    """Each row's model id, with its variant when cells of two steered variants share the
    id (e.g. `steer --variant base` where base and instruct name one folder): the tables
    group by model, and two variants' cells are not one cell."""
    shared = frame.groupby("model")["variant"].nunique()
    many = set(shared[shared > 1].index)
    return [
        f"{model} [{variant}]" if model in many else model
        for model, variant in zip(frame["model"], frame["variant"], strict=True)
    ]


def steered_bars(params, frame: pd.DataFrame) -> dict[str, float]:
    """The coherence bar each grid cell of `frame` (the cells `load_results` kept) was
    steered and judged with (its `metrics.json`), by the cell's folder."""
    root = params.out / "steering"
    keys = ["trait", "variant", "position", "component", "method"]
    bars = {}
    # only the kept cells: one the report leaves out does not set its bar
    for cell in frame[keys].drop_duplicates().itertuples(index=False, name=None):
        folder = steering_dir(params.out, *cell)
        try:
            bar = read_json(folder / METRICS_FILE).get("min_coherence")
        except (OSError, ValueError, SteeropsError, AttributeError):
            continue  # none yet, or load_results says what is wrong with the cell
        if isinstance(bar, int | float) and not isinstance(bar, bool):
            bars[str(folder.relative_to(root))] = float(bar)
    return bars


def _cell_settings(log: ResultsLog, metrics_file) -> str | None:
    """The settings hash the cell's files describe (its latest sweep's)."""
    if metrics_file.is_file():
        value = read_json(metrics_file).get("settings_hash")
        if value:
            return str(value)
    configs = [e for e in log.entries if e["type"] == "config"]
    return configs[-1].get("settings_hash") if configs else None


def _alias_column(frame: pd.DataFrame) -> list[str]:
    names: dict[tuple, str] = {}
    for key, cell in frame.groupby(CELL, sort=True, dropna=False):
        maps = {m: vector_map(rows.to_dict("records")) for m, rows in cell.groupby("method")}
        for method, canonical in aliases(maps).items():
            names[(*key, method)] = canonical
    return [
        names.get((*(r[c] for c in CELL), r["method"]), "")
        for r in frame[CELL + ["method"]].to_dict("records")
    ]


def _sort_key(column: pd.Series) -> pd.Series:
    """Layers in numeric order (multi-vector configs' "1+2" after single layers)."""
    if column.name != "layer":
        return column
    return column.map(lambda v: f"{v:09d}" if isinstance(v, int) else f"~{v}")


# a search's cell: two searches differing only in component are two rows
SEARCH_KEY = ["model", "trait", "position", "component", "method"]
SEARCH_COLUMNS = (
    "model trait position component method status min_coherence coherence_margin "
    "heldout_feasible layer "
    "coefficient search_n search_trait_delta search_delta_lo search_delta_hi search_coherence "
    "heldout_n "
    "heldout_trait_delta heldout_delta_lo heldout_delta_hi heldout_p heldout_q heldout_coherence "
    "heldout_coherence_lo heldout_coherence_hi heldout_coherence_scored heldout_under_bar "
    "heldout_under_margin "
    "heldout_coherence_unscored heldout_under_bar_moved heldout_baseline_trait "
    "heldout_baseline_coherence heldout_credited_delta heldout_credited_lo heldout_credited_hi "
    "heldout_read_before n_trials range_exhausted n_known n_generations"
).split()


def load_search_summaries(params) -> pd.DataFrame:
    """One row per search study (`best.json`): its outcome, and the chosen config's numbers
    on the search half and on the held-out half it never saw, each with its interval; the
    held-out p's q over the report's searches (Benjamini-Hochberg: the searches are a family
    of their own, as their table is apart from the grid's)."""
    rows = []
    for _, best in searches(params.out):
        # stopped short of `search.trials`: its sampler had nothing new to try in the range
        exhausted = bool(best.get("range_exhausted", False))
        rows.append(best_row(best) | {"range_exhausted": exhausted})
    for row in rows:
        row["model"] = _model_id(params, row["variant"])
    ps = [stats.as_number(row.get("heldout_p")) for row in rows]
    for row, q in zip(rows, stats.false_discovery_q(ps), strict=True):
        row["heldout_q"] = q
    frame = pd.DataFrame(rows, columns=SEARCH_COLUMNS)
    return frame.sort_values(SEARCH_KEY, kind="mergesort").reset_index(drop=True)


def load_search_trials(params) -> dict[tuple, pd.DataFrame]:
    """Each finished search's trials (`trials.csv`: scored on the search half, never held
    out), keyed by `SEARCH_KEY` as the search table's rows are."""
    out = {}
    for path, best in searches(params.out):
        row = best_row(best) | {"model": _model_id(params, best["variant"])}
        key = tuple(str(row[k]) for k in SEARCH_KEY)
        try:
            out[key] = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # no header even: no trials to tell of
            out[key] = pd.DataFrame()
    return out


@dataclass(frozen=True)
class SearchAnswers:
    """A search's chosen config on its held-out questions, from the search's own results
    log (the scores its held-out verdict rests on): the scope of the settings they were
    scored under (`scope_of`: questions aside) and {question: (trait, coherence)}; or, with
    no scores, why (`missing`: `UNREADABLE`, `NOT_LOGGED` or `REBUILT`)."""

    scope: str | None
    scores: dict[str, tuple]
    missing: str = ""


UNREADABLE = "its results log cannot be read"
NOT_LOGGED = "its results log holds no scored held-out entry of the choice"
REBUILT = "its choice was measured with vectors (or a unit) rebuilt since"


def load_search_heldout(params) -> dict[tuple, SearchAnswers]:
    """Each finished search's held-out answers to its choice (`SearchAnswers`), keyed by
    `SEARCH_KEY`; a search with no choice has none. A log that cannot be read is said on
    stderr and leaves that search uncompared, not the report unwritten."""
    out = {}
    for path, best in searches(params.out):
        if best.get("chosen") is None:
            continue
        row = best_row(best) | {"model": _model_id(params, best["variant"])}
        log_file = path.parent / RESULTS_FILE
        try:
            found = _search_answers(params, ResultsLog(log_file), best)
        # a damaged log or best.json feeds one line of the report: said, not fatal
        except (OSError, SteeropsError, ValueError, TypeError, KeyError, AttributeError) as exc:
            print(
                f"steerops report: warning: {error_line(exc)}; the search is not compared "
                f"with the grid (repair or remove {log_file}, the search's cache of scores; "
                f"`steerops search{rerun_flag(params)}` then scores its choice again)",
                file=sys.stderr,
            )
            found = SearchAnswers(None, {}, UNREADABLE)
        out[tuple(str(row[k]) for k in SEARCH_KEY)] = found
    return out


def _search_answers(params, log: ResultsLog, best: dict) -> SearchAnswers:
    held = (best.get("heldout") or {}).get("settings_hash")
    chosen = best["chosen"]
    layer, coefficient = stats.as_number(chosen["layer"]), stats.as_number(chosen["coefficient"])
    baseline = log.baseline(held) if isinstance(held, str) else None
    questions = log.questions(held) if isinstance(held, str) else None
    if baseline is None or questions is None or layer is None or coefficient is None:
        return SearchAnswers(None, {}, NOT_LOGGED)
    settings = baseline["settings"]
    labels = {
        "trait": settings.get("trait"),
        "vector_variant": settings.get("vector_variant"),
        "unit": str(settings.get("coefficient_unit") or ""),
    }
    weight = stats.as_number(chosen.get("weight"))

    def is_choice(entry: dict) -> bool:
        """The chosen config (at its weight, when best.json records one), scored on every
        held-out question."""
        vectors, c = entry["config"]["vectors"], stats.as_number(entry["config"].get("coefficient"))
        return (
            len(vectors) == 1
            and int(vectors[0]["layer"]) == int(layer)
            and c is not None
            and math.isclose(c, coefficient, rel_tol=1e-9)
            and (weight is None or same_weight(float(vectors[0]["weight"]), weight))
            and len(scores_of(entry) or []) == len(questions)
        )

    files = _vector_files_now(params, log, held, labels)
    units = _units_now(params, log, held, labels)
    for entry in log.configs(held, files, units):  # measured with the vectors on disk now
        if is_choice(entry):
            scores = scores_of(entry) or []
            return SearchAnswers(scope_of(settings), dict(zip(questions, scores, strict=True)))
    logged = any(
        e["type"] == "config" and e.get("settings_hash") == held and is_choice(e)
        for e in log.entries
    )
    return SearchAnswers(scope_of(settings), {}, REBUILT if logged else NOT_LOGGED)


def _model_id(params, variant: str | None, fallback: str | None = None) -> str:
    if variant in params.models:
        return params.models[variant].id
    return str(fallback or variant)


FEATURE_COLUMNS = (
    "model method position alias_of near_copy_of layer coefficient unit weight "
    "at_largest_coefficient "
    "layer_norm layer_norm_clean abs_mean_proj"
).split()


def vector_features(params, table: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Per chosen config: the layer's activation norm with and without the calibrated massive
    dims and the projection of the mean activation on the vector."""
    rows = []
    # the dims cleaning removes: the calibrated set `cleaning.dim_set` names
    stored = stored_massive_dims if params.cleaning.dim_set == "massive" else stored_global_dims
    # inputs: the pipeline's outputs, which a scratch run's steering read its vectors from
    dims = stored(params.inputs, params.cleaning.calibration_variant)
    for _, best in table.iterrows():
        if stats.as_number(best["layer"]) is None:
            continue  # a config of several vectors ("4+8") has no one layer's features
        # the chosen config's own cell: with two steered models, each read its own vectors
        src = frame[
            (frame["model"] == best["model"])
            & (frame["trait"] == best["trait"])
            & (frame["method"] == best["method"])
            & (frame["position"] == best["position"])
            & (frame["component"] == best["component"])
        ].iloc[0]
        layer = int(best["layer"])
        feats = {
            "model": best["model"],
            "method": best["method"],
            "position": best["position"],
            "alias_of": best.get("alias_of", ""),
            "near_copy_of": best.get("near_copy_of", ""),
            "layer": layer,
            "coefficient": best["coefficient"],
            "unit": best["unit"],
            "weight": abs(best["weight"]),
            "at_largest_coefficient": bool(best.get("at_largest_coefficient", False)),
            "layer_norm": np.nan,
            "layer_norm_clean": np.nan,
            "abs_mean_proj": np.nan,
        }
        acts_dir = activations_dir(
            params.inputs, src["trait"], src["vector_variant"], src["position"], src["component"]
        )
        vec_dir = vectors_dir(
            params.inputs,
            src["trait"],
            src["vector_variant"],
            src["position"],
            src["component"],
            src["method"],
        )
        if is_complete(acts_dir) and is_stored(vec_dir):
            acts = read_activations(acts_dir, layer)
            vec = load_vectors(vec_dir)[0][layer]
            clean = acts.clone()
            if dims:
                clean[:, [d for d in dims if d < clean.shape[1]]] = 0
            feats.update(
                layer_norm=float(acts.norm(dim=1).mean()),
                layer_norm_clean=float(clean.norm(dim=1).mean()),
                abs_mean_proj=float(abs(acts.mean(0) @ vec)),
            )
        rows.append(feats)
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)  # the columns even with no "ok" cell
