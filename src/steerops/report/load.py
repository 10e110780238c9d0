"""Collect tracked steering and search results into one tidy frame, plus the vector and
activation properties the coefficient predictor uses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerops.calibration.store import stored_global_dims
from steerops.extract.store import activations_dir, is_complete
from steerops.extract.store import read_layer as read_activations
from steerops.search.store import best_row, searches
from steerops.steering.store import CSV_FILE
from steerops.vectors.store import is_stored, load_vectors, vectors_dir

COLUMNS = (
    "model trait variant vector_variant position component method layer coefficient "
    "weight trait_mean coherence_mean trait_delta n source"
).split()


def load_results(params) -> pd.DataFrame:
    """Every steering grid result (`results.csv`) and search trial (`trials.csv`) under the
    outputs root, labelled with the model id of the variant they were applied to.

    `trait_delta` is measured in the steering direction (`steering.direction`): with
    `negative`, a drop of the trait is a positive delta, so "best" means the same everywhere
    in the report."""
    frames = []
    for csv in sorted((params.out / "steering").rglob(CSV_FILE)):
        frames.append(pd.read_csv(csv).assign(source="grid"))
    for trials_csv, best in searches(params.out):
        trials = pd.read_csv(trials_csv)
        if not trials.empty:
            frames.append(_search_frame(trials, best))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat(frames, ignore_index=True)
    frame["trait_delta"] = frame["trait_delta"] * _sign(params.steering.direction)
    frame["model"] = [_model_id(params, v) for v in frame["variant"]]
    frame = frame.dropna(subset=["trait_mean", "coherence_mean"])
    return frame[COLUMNS].sort_values(COLUMNS[:9], kind="mergesort").reset_index(drop=True)


def _search_frame(trials: pd.DataFrame, best: dict) -> pd.DataFrame:
    trials = trials[trials["state"].astype(str).str.lower() == "complete"].copy()
    # a search stores its objective (the delta in its own direction); undo that sign
    trials["trait_delta"] = trials["trait_delta"] * _sign(best.get("direction", "positive"))
    for key in ("trait", "variant", "vector_variant", "position", "component", "method"):
        trials[key] = best.get(key)
    trials["n"] = (best.get("search") or {}).get("n_questions", np.nan)
    return trials.assign(source="search")


SEARCH_COLUMNS = (
    "model trait position method feasible layer coefficient search_trait_delta "
    "search_coherence heldout_trait_delta heldout_coherence n_trials n_generations"
).split()


def load_search_summaries(params) -> pd.DataFrame:
    """One row per search study (`best.json`): the chosen config, its trait delta and
    coherence on the search half, and on the held-out half it never saw."""
    rows = [best_row(best) for _, best in searches(params.out)]
    for row in rows:
        row["model"] = _model_id(params, row["variant"])
    frame = pd.DataFrame(rows, columns=SEARCH_COLUMNS)
    return frame.sort_values(
        ["model", "trait", "position", "method"], kind="mergesort"
    ).reset_index(drop=True)


def _sign(direction: str) -> float:
    return -1.0 if direction == "negative" else 1.0


def _model_id(params, variant: str) -> str:
    return params.models[variant].id if variant in params.models else str(variant)


def vector_features(params, table: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Per best config: the layer's activation norm with and without the calibrated massive
    dims and the projection of the mean activation on the vector."""
    rows = []
    dims = stored_global_dims(params.out, params.cleaning.calibration_variant)
    for _, best in table.iterrows():
        src = frame[
            (frame["trait"] == best["trait"])
            & (frame["method"] == best["method"])
            & (frame["position"] == best["position"])
        ].iloc[0]
        layer = int(best["layer"])
        feats = {
            "model": best["model"],
            "method": best["method"],
            "position": best["position"],
            "layer": layer,
            "coefficient": best["coefficient"],
            "weight": abs(best["weight"]),
            "layer_norm": np.nan,
            "layer_norm_clean": np.nan,
            "abs_mean_proj": np.nan,
        }
        acts_dir = activations_dir(
            params.out, src["trait"], src["vector_variant"], src["position"], src["component"]
        )
        vec_dir = vectors_dir(
            params.out,
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
    return pd.DataFrame(rows)
