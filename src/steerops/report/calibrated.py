"""What the report says about the calibrated dims: the massive activations per layer and the
large-mean global dims, from the calibration JSON (`steerops.calibration.store`), and which
dim set each cleaned method's vectors were cleaned with (vector metadata `calibration`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerops import stats
from steerops.calibration.reading import (
    NEAR,
    massive_spans,
    near_line,
    near_rule,
    rare_line,
    rare_words,
    rule_words,
)
from steerops.calibration.store import calibration_file, heatmap_file, read_calibration
from steerops.errors import SteeropsError
from steerops.io import read_json
from steerops.report import tables
from steerops.report.weighed import push_note
from steerops.vectors.store import METADATA_FILE, vectors_dir, vectors_for

MASSIVE_COLUMNS = ["layer", "dim", "peak", "ratio_to_median", "median_abs", "token", "position"]


def calibration_record(params) -> dict[str, Any] | None:
    """The calibration of `cleaning.calibration_variant`, or None when it was not run.
    Read from the pipeline's outputs, as the vectors a scratch run steers with are."""
    path = calibration_file(params.inputs, params.cleaning.calibration_variant)
    return read_calibration(path) if path.is_file() else None


def heatmap_path(params) -> Path | None:
    """The calibration's heatmap.png beside the record `calibration_record` reads, if drawn."""
    path = heatmap_file(params.inputs, params.cleaning.calibration_variant)
    return path if path.is_file() else None


def heatmap_line(path: str | None) -> list[str]:
    """The line pointing at the heatmap and what its panels show (none without one)."""
    if not path:
        return []
    return [
        f"- Heatmap: `{path}` (left: each (layer, dim)'s peak |x| over the layer's median, "
        "massive cells outlined, the ratio bar marked on the colour bar, each massive dim "
        "labelled with its peak's token@position; right: |mean| over the layer's mean |mean|, "
        "global dims marked)"
    ]


def massive_table(record: dict[str, Any] | None) -> pd.DataFrame:
    """One row per (layer, massive dim): its peak signed value, the peak's ratio to the
    layer's median |activation|, that median, and the token (and position) where it peaks."""
    rows = []
    for key, layer in sorted((record or {}).get("layers", {}).items(), key=lambda kv: int(kv[0])):
        for dim in layer.get("massive_dims", []):
            peak = layer.get("massive", {}).get(str(dim), {})
            rows.append(
                {
                    "layer": int(key),
                    "dim": int(dim),
                    "peak": peak.get("value"),
                    "ratio_to_median": peak.get("ratio"),
                    "median_abs": layer.get("median_abs"),
                    "token": peak.get("token", ""),
                    "position": peak.get("position"),
                }
            )
    return pd.DataFrame(rows, columns=MASSIVE_COLUMNS)


def massive_display(table: pd.DataFrame) -> pd.DataFrame:
    """The massive table as printed: peaks to 0.1, ratios to 1, medians to 4 digits."""
    shown = table.copy()
    for column, spec in (("peak", ".1f"), ("ratio_to_median", ".0f"), ("median_abs", ".4g")):
        shown[column] = [format(v, spec) if v is not None else "" for v in shown[column]]
    return shown


def dims_line(record: dict[str, Any] | None) -> str:
    """The massive set and the large-mean global set on one line each (markdown)."""
    if record is None:
        return "_no calibration_"
    aggregate = record.get("aggregate", {})
    rule = aggregate.get("massive_rule") or {}
    massive = aggregate.get("massive_dims")
    spans = ", ".join(massive_spans(aggregate))
    return "\n".join(
        [
            f"- Massive dims ({rule_words(rule)}, over all "
            f"{record.get('n_tokens', '?')} calibration tokens): "
            + (spans or ("none" if massive is not None else "not recorded (older calibration)")),
            *(
                [
                    f"- {rare_words(record).capitalize()} (not massive by the rule: left "
                    f"out of the massive set, and of cleaning that set): {rare}"
                ]
                if (rare := rare_line(record))
                else []
            ),
            "- Near the bar, where the cut falls (not massive at these layers, but over "
            f"1/{NEAR:g} of each bar: {near_rule(record)}): {near_line(record)}",
            "- Large-mean global dims (in a layer's top "
            f"{aggregate.get('rule', {}).get('top_n', '?')} by |mean| at >= "
            f"{aggregate.get('rule', {}).get('min_layers', '?')} layers; not necessarily "
            "massive): " + (", ".join(map(str, aggregate.get("global_dims", []))) or "none"),
        ]
    )


# what a cleaned variant removed, by the set it cleaned (`cleaning.dim_set`): a `top_mean`
# dim is the largest by mean, not necessarily massive
_REMOVED = {"massive": "massive dims", "top_mean": "largest-mean dims"}


def removed_dims(dim_sets: Any) -> str:
    """ "massive dims", "largest-mean dims", or both named, for the sets cleaned (unknown or
    none: "massive dims", the question the section asks)."""
    named = sorted({_REMOVED.get(str(s), "") for s in dim_sets} - {""})
    return " or ".join(named) if named else _REMOVED["massive"]


def dim_sets(params, frame: pd.DataFrame) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """{(trait, position, component, method): the calibration its vectors were cleaned with
    (`dim_set`, `dims_removed` per layer)} for every method of the grid whose metadata
    records a dim set (uncleaned methods have none)."""
    found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    keys = ["trait", "vector_variant", "position", "component", "method"]
    for trait, variant, position, component, method in (
        frame[keys].drop_duplicates().itertuples(index=False, name=None)
    ):
        path = vectors_dir(params.inputs, trait, variant, position, component, method)
        meta = path / METADATA_FILE
        if not meta.is_file():
            continue
        calibration = read_json(meta).get("calibration") or {}
        if calibration.get("dim_set"):
            found[(trait, position, component, method)] = calibration
    return found


def with_dim_sets(curve: pd.DataFrame, prepost: pd.DataFrame, sets: dict) -> None:
    """Add the `dim_set` column to the cleaning curve and preclean tables, and to the curve
    `dims_removed`, how many dims the chosen layer's vector lost ("all" is a set's size, which
    can be fewer than 5), and `removed_ids`, which (in place)."""
    names = {key: str(calibration["dim_set"]) for key, calibration in sets.items()}
    keys = list(
        zip(curve["trait"], curve["position"], curve["component"], curve["variant"], strict=True)
    )
    curve["dim_set"] = [names.get(key, "") for key in keys]
    curve["dims_removed"] = [
        0 if dims == "0" else _removed(sets.get(key), layer)
        for key, dims, layer in zip(keys, curve["dims_cleaned"], curve["layer"], strict=True)
    ]
    # which dims, as the metadata lists them: with several massive dims, which ones matters
    curve["removed_ids"] = [
        "" if dims == "0" else _removed_ids(sets.get(key), layer)
        for key, dims, layer in zip(keys, curve["dims_cleaned"], curve["layer"], strict=True)
    ]
    column = []
    for row in prepost.itertuples():
        t, p, c, m = row.trait, row.position, row.component, row.method
        pre = names.get((t, p, c, f"{m}_preclean"), "")
        post = names.get((t, p, c, f"{m}_cleaned"), "")
        if row.preclean_status == tables.NOT_STEERED:  # only the side that ran is named
            column.append(post)
        elif row.clean_after_status == tables.NOT_STEERED:
            column.append(pre)
        else:
            column.append(
                pre if pre == post else f"preclean {pre or '?'}, clean-after {post or '?'}"
            )
    prepost["dim_set"] = column


def with_removed_shares(
    params, frame: pd.DataFrame, curve: pd.DataFrame, sets: dict, stored: Loader | None = None
) -> None:
    """Add `removed_share` to the cleaning curve (in place): the share of the uncleaned
    method's unit vector (its squared norm) that a cleaned variant's removed dims held at
    the variant's chosen layer. It says how far cleaning turned the direction (cosine
    sqrt(1 - share)): a share near 0 means the comparison barely tests the dims. NaN where
    unknown (uncleaned rows, no layer chosen, vectors or metadata missing)."""
    variants = _vector_variants(frame)
    stored = stored or vector_loader(params)
    shares, peaks = [], []
    for row in curve.itertuples(index=False):
        layer = _layer(row.layer)
        removed = sets.get((row.trait, row.position, row.component, row.variant))
        variant = variants.get((row.model, row.trait, row.position, row.component, row.method))
        vectors = (
            None
            if row.dims_cleaned == "0" or variant is None
            else stored(row.trait, variant, row.position, row.component, row.method)
        )
        by_layer = {k: _share(v, _dims_removed(removed, k)) for k, v in (vectors or {}).items()}
        by_layer = {k: v for k, v in by_layer.items() if v is not None}
        shares.append(by_layer.get(layer, np.nan) if layer is not None else np.nan)
        peak = max(by_layer, key=lambda k: (by_layer[k], -k)) if by_layer else None
        peaks.append((peak, by_layer[peak]) if peak is not None else (np.nan, np.nan))
    curve["removed_share"] = shares
    # where the same dims hold the most of the vector: a layer whose comparison would test them
    curve["peak_share_layer"] = [layer for layer, _ in peaks]
    curve["peak_share"] = [share for _, share in peaks]
    if {"gain", "gain_note"} <= set(curve.columns):
        _note_near_copies(curve)


def with_window_massive(params, frame: pd.DataFrame, curve: pd.DataFrame) -> None:
    """Add to the cleaning curve (in place) how many of the extracted examples
    (`window_examples`, train and validation) hold a massive token (extraction's per-token
    rule: any dim over both bars against its sequence's prompt median) in the pooled window
    at the vector's position, as the uncleaned method's vectors recorded it when built:
    `window_massive` at the chosen layer, `peak_window_massive` at `peak_share_layer`. None
    there says no cleaned dim is massive where the vector is built, whatever it is on the
    calibration's tokens. NaN where unknown (uncleaned rows, vectors gone or older)."""
    variants = _vector_variants(frame)
    records: dict[tuple, dict[str, Any] | None] = {}

    def record(row: Any) -> dict[str, Any] | None:
        variant = variants.get((row.model, row.trait, row.position, row.component, row.method))
        key = (row.trait, variant, row.position, row.component, row.method)
        if variant is not None and key not in records:
            path = vectors_dir(params.inputs, *key) / METADATA_FILE
            try:
                meta = read_json(path) if path.is_file() else None
            except (OSError, ValueError, SteeropsError):
                meta = None  # the report says what it can: a damaged record is unknown
            records[key] = meta if isinstance(meta, dict) else None
        return records.get(key)

    def at(meta: dict[str, Any] | None, layer: int | None) -> float:
        entry = ((meta or {}).get("layers") or {}).get(str(layer)) or {}
        count = entry.get("window_massive")
        return np.nan if layer is None or count is None else int(count)

    counts, peaks, examples = [], [], []
    for row in curve.itertuples(index=False):
        meta = record(row) if row.dims_cleaned != "0" else None
        counts.append(at(meta, _layer(row.layer)))
        peaks.append(at(meta, _layer(getattr(row, "peak_share_layer", None))))
        n = (meta or {}).get("n") or {}
        examples.append(sum(n.values()) if n else np.nan)
    curve["window_massive"] = counts
    curve["peak_window_massive"] = peaks
    curve["window_examples"] = examples


def window_words(row: Any) -> str:
    """Whether the cleaned dims can be massive where a cleaning curve row's vector is built
    (`with_window_massive`), at its chosen layer and where its dims weigh most: "" unknown."""
    n = stats.as_number(getattr(row, "window_examples", None))
    layers: dict[int, int] = {}
    for layer, count in (
        (row.layer, getattr(row, "window_massive", None)),
        (getattr(row, "peak_share_layer", None), getattr(row, "peak_window_massive", None)),
    ):
        if _layer(layer) is not None and stats.as_number(count) is not None:
            layers[_layer(layer)] = int(count)
    if n is None or not layers:
        return ""
    where = f"at `{row.position}`, where the vectors are built"
    if not any(layers.values()):
        # no token of any window passes the bars on any dim, so none on the cleaned ones
        elsewhere = (
            "the dims are massive elsewhere (other tokens or other layers), not there, so "
            if getattr(row, "dim_set", "") == "massive"
            else ""
        )
        return (
            f"{where}, no extracted example's pooled window holds a massive token at layer "
            f"{' or '.join(str(k) for k in sorted(layers))} (0 of {int(n)}, on any dim): "
            f"{elsewhere}what cleaning takes from these vectors is the classes' difference "
            "along the dims on ordinary tokens"
        )
    counts = ", ".join(f"{c} of {int(n)} at layer {k}" for k, c in sorted(layers.items()))
    return (
        f"{where}, extracted examples whose pooled window holds a massive token (on any dim, "
        f"not necessarily a cleaned one): {counts}"
    )


def _share(vector: Any, dims: list | None) -> float | None:
    """The squared-norm share `dims` hold of `vector` (None: the dims are unknown there)."""
    if dims is None:
        return None
    unit = vector.double()
    return float(unit[list(dims)].pow(2).sum() / unit.pow(2).sum()) if dims else 0.0


def _note_near_copies(curve: pd.DataFrame) -> None:
    """`gain_note` of a compared variant whose cleaned dims held under `tables.BARELY` of
    the vector: the CSV and report.md say it too, not only results.md, since a gain of
    +0.0 between near copies reads as "the dims do not matter", which it cannot show; of
    one whose dims held more, the harder push of its renormalised vector (`push_note`)."""
    near = _near(curve) & (curve["gain_note"] == "")
    picked = curve.loc[near, ["removed_share", "layer"]].itertuples(index=False)
    curve.loc[near, "gain_note"] = [near_copy_note(share, layer) for share, layer in picked]
    # the others changed the vector enough to test the dims, and its push along the rest
    pushed = (curve["removed_share"] >= tables.BARELY) & curve["gain"].notna()
    pushed &= curve["gain_note"] == ""
    shares = curve.loc[pushed, "removed_share"]
    curve.loc[pushed, "gain_note"] = [push_note(share) for share in shares]


def _near(curve: pd.DataFrame) -> pd.Series:
    """The compared variants whose cleaned dims held under `tables.BARELY` of the vector."""
    return (curve["removed_share"] < tables.BARELY) & curve["gain"].notna()


def near_copies(curve: pd.DataFrame) -> dict[tuple, str]:
    """The cleaned variants (`tables.GROUP` keys, the variant as method) whose held-out test
    repeats their uncleaned method's, named by it: a near copy (`_near`, under the same
    settings) that chose the same layer and coefficient asks the same questions of nearly
    the same vector. Like an alias, it is then one test in the report's q-values; else two
    near-identical p's would lower each other's q."""
    if curve.empty or "removed_share" not in curve:
        return {}
    rows = curve[_near(curve) & (curve["gain_note"] != tables.SETTINGS_DIFFER)]
    bases = curve[curve["dims_cleaned"] == "0"].set_index(tables.GROUP)
    out = {}
    for row in rows.itertuples(index=False):
        key = tuple(getattr(row, k) for k in tables.KEY)
        if (*key, row.method) not in bases.index:
            continue
        base = bases.loc[(*key, row.method)]
        if tables.same_value(base["layer"], row.layer) and tables.same_value(
            base["coefficient"], row.coefficient
        ):
            out[(*key, row.variant)] = row.method
    return out


def near_copy_note(share: float, layer: Any) -> str:
    """Why a cleaned variant's gain cannot test its dims: they held too little of the
    vector. The vector is a difference (of class means, a probe's weights...): dims large in
    the activations but alike in both classes cancel in it, and the tokens its position
    pools may not be where the dims are massive."""
    return (
        f"near copy: the cleaned dims held {share:.2%} of the vector's squared norm at layer "
        f"{_layer(layer)} (cosine {tables.cosine_left(share):.3f}), so this gain cannot tell "
        "whether the dims matter; they are a small part of the vector (alike in both classes "
        "there, or not massive at the vector's position), whatever their size in the "
        "activations"
    )


def with_vector_agreement(
    params, frame: pd.DataFrame, prepost: pd.DataFrame, stored: Loader | None = None
) -> None:
    """Add `vectors_max_diff` to the preclean table (in place): the largest difference
    between the preclean and clean-after unit vectors, element by element over every layer
    both hold. For `mean_diff` (linear in the activations) it must be rounding, which checks
    the implementation without the judge; a gap in the steered deltas cannot tell a
    rounding difference from none. NaN where a side's vectors are missing."""
    variants = _vector_variants(frame)
    stored = stored or vector_loader(params)

    def vectors(row: Any, suffix: str) -> dict[int, Any] | None:
        method = f"{row.method}{suffix}"
        variant = variants.get((row.model, row.trait, row.position, row.component, method))
        args = (row.trait, variant, row.position, row.component, method)
        return None if variant is None else stored(*args)

    diffs = []
    for row in prepost.itertuples(index=False):
        pre, post = vectors(row, "_preclean"), vectors(row, "_cleaned")
        both = sorted(set(pre or {}) & set(post or {}))
        diffs.append(_max_diff(pre, post, both) if pre and post and both else np.nan)
    prepost["vectors_max_diff"] = diffs


# Unit vectors this close at every layer are one direction up to float32 rounding (a
# preclean and a clean-after mean_diff differ by about 1e-8): one finding, not two.
NEAR_ALIAS = 1e-6


def with_near_aliases(params, frame: pd.DataFrame, stored: Loader | None = None) -> None:
    """Name in `alias_of` (in place) a method whose unit vectors equal an earlier method's
    of its cell to within `NEAR_ALIAS` at every layer, as an alias of the same tensors is
    named: it was evaluated on its own, but it is one test and one finding in the report's
    counts, q-values and coefficient fit."""
    if frame.empty:
        return
    variants = _vector_variants(frame)
    stored = stored or vector_loader(params)
    for key, cell in frame.groupby(tables.KEY, sort=True):
        free = sorted(m for m, rows in cell.groupby("method") if rows["alias_of"].iloc[0] == "")
        if len(free) < 2:
            continue  # nothing to compare: no vectors read
        canonical: list[tuple[str, dict[int, Any]]] = []
        for method in free:
            variant = variants.get((*key, method))
            vectors = None if variant is None else stored(key[1], variant, *key[2:], method)
            if not vectors:
                continue
            twin = next((m for m, v in canonical if _within(v, vectors, NEAR_ALIAS)), None)
            if twin is None:
                canonical.append((method, vectors))
                continue
            rows = (frame[tables.KEY] == pd.Series(key, index=tables.KEY)).all(axis=1)
            frame.loc[rows & (frame["method"] == method), "alias_of"] = twin


def _within(a: dict[int, Any], b: dict[int, Any], tolerance: float) -> bool:
    """Whether two vector sets hold the same layers, each element within `tolerance`."""
    return set(a) == set(b) and _max_diff(a, b, a) <= tolerance


def _max_diff(a: dict[int, Any], b: dict[int, Any], layers) -> float:
    """The largest element-wise difference between two vector sets over `layers`."""
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in layers)


Loader = Callable[..., dict[int, Any] | None]


def vector_loader(params) -> Loader:
    """A loader of the vectors under the inputs, by (trait, variant, position, component,
    method), each read once; None for vectors gone since the grid steered them (nothing to
    measure). The report shares one across its tables (`stored` of the `with_` functions)."""
    loaded: dict[tuple, dict[int, Any] | None] = {}

    def load(*key: str) -> dict[int, Any] | None:
        if key not in loaded:
            try:
                loaded[key] = vectors_for(params.inputs, *key, params.inputs_flag)[0]
            except SteeropsError:
                loaded[key] = None
        return loaded[key]

    return load


def _vector_variants(frame: pd.DataFrame) -> dict[tuple, str]:
    """{(model, trait, position, component, method): the variant its vectors came from}:
    two models of one report may steer vectors of different variants."""
    keys = ["model", "trait", "position", "component", "method", "vector_variant"]
    rows = frame[keys].drop_duplicates().itertuples(index=False, name=None)
    return {tuple(k[:5]): k[5] for k in rows}


def _layer(value: Any) -> int | None:
    """A chosen config's single layer (None: no choice, or several vectors)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if np.isfinite(number) and number == int(number) else None


def _removed(calibration: dict[str, Any] | None, layer: Any) -> float:
    """Dims removed from a cleaned vector at `layer` (NaN when unknown: no layer chosen, or
    no metadata with the per-layer record)."""
    dims = _dims_removed(calibration, _layer(layer))
    return np.nan if dims is None else len(dims)


def _removed_ids(calibration: dict[str, Any] | None, layer: Any) -> str:
    """ "507" or "5, 40, 17": the dims removed from a cleaned vector at `layer` ("" when
    none or unknown)."""
    return ", ".join(map(str, _dims_removed(calibration, _layer(layer)) or []))


def _dims_removed(calibration: dict[str, Any] | None, layer: int | None) -> list | None:
    """The dims a cleaned vector's metadata records removed at `layer` (None: unknown)."""
    if layer is None:
        return None
    return ((calibration or {}).get("dims_removed") or {}).get(str(layer))
