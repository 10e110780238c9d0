"""Compute one method's vectors (any name `steerops.specs.methods` accepts) and metadata.

    plain   fit the base method on the train activations, unit-normalise
    pre     zero the dims in the activations, fit, zero them in the result too (so methods
            that never look at the data, such as random_baseline, leave them out as well),
            unit-normalise once
    post    take the base method's raw vector (freshly fitted, or stored by `steerops
            vectors` and rescaled by its raw_norm), zero the dims, renormalise

`raw_norm` is the norm before the final unit-normalisation, after any zeroing, so pre and
post cleaning of the same linear method report the same raw norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steerops.calibration.store import load_calibration, stored_massive_by_layer
from steerops.cli import run_out_flag
from steerops.errors import SteeropsError
from steerops.io import file_md5
from steerops.specs import MethodName, parse_method
from steerops.tracking.names import relative
from steerops.vectors.activations import TraitActivations
from steerops.vectors.cleaning import dims_to_remove, zero_dims
from steerops.vectors.heldout import choose, split_val
from steerops.vectors.methods import METHODS, PAIRED_METHODS, get_method
from steerops.vectors.metrics import hits, separation
from steerops.vectors.store import check_hidden_size
from steerops.vectors.warnings import collect, massive_share


@dataclass
class Built:
    method: MethodName
    vectors: dict[int, torch.Tensor]
    metadata: dict[str, Any]


def layer_seed(seed: int, layer: int) -> int:
    """Seed of one layer's fit, so layers differ but each is reproducible on its own."""
    return seed * 1000 + layer


def plan_cleaning(
    params, acts: TraitActivations, name: str, calibration_variant: str
) -> tuple[dict[int, list[int]], dict[str, Any] | None]:
    """({layer: dims to zero}, the metadata's calibration record) for method `name` over
    these activations; raises (one line) when its calibration is missing or unusable."""
    cleaning = parse_method(name).cleaning
    if cleaning is None:
        return {}, None
    dim_set = params.cleaning.dim_set
    calibration, file = None, None
    if cleaning.needs_calibration:
        calibration, file = load_calibration(params.out, calibration_variant, f"method {name!r}")
        _check_same_shape(calibration, file, acts, name, calibration_variant, run_out_flag(params))
    removed = dims_to_remove(
        cleaning,
        calibration,
        acts.layers,
        acts.hidden_size,
        str(file) if file else name,
        dim_set,
    )
    return removed, {
        "variant": calibration_variant if file else None,
        "file": relative(file, params.root) if file else None,
        # which calibration.json content the dims came from (the file is rewritten in place)
        "md5": file_md5(file) if file else None,
        "mode": cleaning.mode,
        "spec": cleaning.spec,
        # which calibrated set the dims come from (none for an explicit dims list)
        "dim_set": dim_set if cleaning.needs_calibration else None,
        "dims_removed": {str(layer): dims for layer, dims in removed.items()},
    }


def _check_same_shape(
    calibration: dict[str, Any],
    file: Path,
    acts: TraitActivations,
    name: str,
    variant: str,
    out_flag: str,
) -> None:
    """A calibration of a model of another shape (the variant pointed elsewhere when it ran)
    names dims and layers that mean nothing here: one line, not vectors cleaned of them.
    Calibrations written before they recorded the shape are not checked."""
    theirs = (calibration.get("hidden_size"), calibration.get("num_layers"))
    mine = (acts.hidden_size, acts.metadata.get("num_layers"))
    if all(a is None or b is None or a == b for a, b in zip(theirs, mine, strict=True)):
        return

    def shape(size, layers) -> str:
        return f"hidden size {size}" + ("" if layers is None else f" and {layers} layers")

    raise SteeropsError(
        f"method {name!r}: {file} calibrated a model of {shape(*theirs)}, but these "
        f"activations come from one of {shape(*mine)} (models.{variant} changed since?): "
        f"run `steerops calibrate --variant {variant}{out_flag}`"
    )


def build_method(
    params,
    acts: TraitActivations,
    name: str,
    *,
    trait: str,
    variant: str,
    position: str,
    component: str,
    calibration_variant: str,
    base: tuple[dict[int, torch.Tensor], dict[str, Any]] | None = None,
    progress: bool = True,
) -> Built:
    """Vectors for method `name`; `base` = stored (vectors, metadata) of the base method to
    post-clean instead of refitting it."""
    method = parse_method(name)
    cleaning = method.cleaning
    removed, calibration_record = plan_cleaning(params, acts, name, calibration_variant)
    if base is not None:
        check_base(base, acts, method, params)
    fit = get_method(method.base)
    massive = stored_massive_by_layer(params.out, calibration_variant)
    halves = split_val(acts, params.seed)
    vectors, layers_meta = {}, {}
    for layer in tqdm(
        acts.layers, desc=f"{name} {position}", disable=not progress or None, leave=False
    ):
        x = acts.layer(layer)
        dims = removed.get(layer, [])
        stored = None  # the base's (unit vector, raw norm) as its files hold them
        if base is not None:
            stored = (base[0][layer].float(), float(base[1]["layers"][str(layer)]["raw_norm"]))
        else:
            data = zero_dims(x, dims) if cleaning and cleaning.mode == "pre" else x
            rows, extra = fit_rows(acts, method.base)
            raw = fit(
                data[rows[0]],
                data[rows[1]],
                seed=layer_seed(params.seed, layer),
                config=params.vectors,
                **extra,
            ).float()
            if cleaning and cleaning.mode == "post":
                # refitted, the base goes through the form `clean` reads it in: one name
                # is one tensor to the bit whichever stage built it (a last-bit change
                # is a new vector to the results logs, whose configs then go stale)
                norm = float(raw.norm())
                stored = (raw / norm, norm)
        if stored is not None:
            raw = stored[0] * stored[1]
        raw = zero_dims(raw, dims)
        raw_norm = float(raw.norm())
        if not raw_norm > 0 or not torch.isfinite(raw).all():
            raise SteeropsError(
                f"method {name!r} gave a zero or non-finite vector at layer "
                f"{layer} ({acts.directory})"
            )
        if stored is not None and not dims:
            # nothing removed: the base's own tensor to the bit (normalising u * |raw| again
            # can move a last bit, and the cleaned method then reads as a vector of its own)
            unit, raw_norm = stored
        else:
            unit = raw / raw_norm
        vectors[layer] = unit
        norm_unit, unit_kind = acts.norm_unit(layer)
        token = acts.token_norm(layer) or {}
        layers_meta[str(layer)] = {
            "raw_norm": raw_norm,
            # the `norm` coefficient unit steering multiplies by (see norm_unit)
            "mean_norm": norm_unit,
            "norm_unit": unit_kind,
            "pooled_norm": acts.mean_norm(layer),
            # the unit's check: the median example's median token norm (token units only)
            "unit_median": token.get("example_median") if unit_kind == "token" else None,
            "window_massive": token.get("window_massive"),
            "massive_share": massive_share(
                unit, None if massive is None else massive.get(layer, [])
            ),
            # on the val halves (`heldout`); None where the halves cannot serve
            "selection_acc": None,
            "heldout_acc": None,
            **separation(
                unit, x, acts.train.pos, acts.train.neg, acts.val.pos, acts.val.neg, **halves.rows()
            ),
        }
    n_examples = len(acts.metadata.get("examples", []))
    metadata = {
        "method": name,
        "base_method": method.base,
        "trait": trait,
        "variant": variant,
        "position": position,
        "component": component,
        "hidden_size": acts.hidden_size,
        "source_hash": acts.file_hash,
        "seed": params.seed,
        "activations": {
            "dir": relative(acts.directory, params.root),
            "source_hash": acts.metadata.get("source_hash"),
            "model": acts.metadata.get("model"),
        },
        "config": params.vectors.model_dump(exclude={"methods"}),
        "refit": base is None,
        # the examples train_acc and val_acc count, by class (an accuracy needs its n)
        "n": {
            f"{split}_{polarity}": len(getattr(getattr(acts, split), polarity))
            for split in ("train", "val")
            for polarity in ("pos", "neg")
        },
        "calibration": calibration_record,
        "layers": layers_meta,
        # chosen on one half of val, reported on the other (the max of val_acc is optimistic)
        "best": choose(
            layers_meta,
            halves,
            params.seed,
            lambda layer: hits(
                vectors[layer],
                acts.layer(layer),
                acts.train.pos,
                acts.train.neg,
                halves.heldout.pos,
                halves.heldout.neg,
            ),
        ),
        "warnings": collect(name, position, layers_meta, n_examples),
    }
    return Built(method, vectors, metadata)


def fit_rows(acts: TraitActivations, base: str) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    """(positive rows, negative rows) to fit on and extra keyword arguments: a paired method
    gets matched pairs on a paired trait; activations without the `paired` flag keep the
    old rule (rows paired by index when the counts are equal)."""
    train = acts.train
    if base not in PAIRED_METHODS or acts.paired is None:
        return (train.pos, train.neg), {}
    if acts.paired and train.pairs is not None and len(train.pairs[0]):
        return train.pairs, {"paired": True}
    return (train.pos, train.neg), {"paired": False}


def check_base(
    base: tuple[dict[int, torch.Tensor], dict[str, Any]],
    acts: TraitActivations,
    method: MethodName,
    params,
) -> None:
    """Stored base vectors must come from the same activations, the same seed and params of
    their own method, and cover every layer."""
    vectors, meta = base
    if meta.get("source_hash") != acts.file_hash:
        raise SteeropsError(
            f"stored {method.base!r} vectors were computed from other "
            f"activations than {acts.directory} (rerun `steerops vectors "
            f"--methods {method.base}{run_out_flag(params)}`)"
        )
    # the cleaned vectors' metadata records the params' seed and config: a base fitted with
    # others (e.g. `vectors --seed 5`, then `clean` at seed 0) would make it lie
    now = {"seed": params.seed, **params.vectors.model_dump(exclude={"methods"})}
    then = {"seed": meta.get("seed"), **(meta.get("config") or {})}
    # a param named after another method (probe_c for mean_diff) does not change the base
    others = tuple(f"{m}_" for m in METHODS if m != method.base)
    changed = [
        k
        for k in now
        if k in then and then[k] is not None and then[k] != now[k] and not k.startswith(others)
    ]
    if changed:
        key = changed[0]
        raise SteeropsError(
            f"stored {method.base!r} vectors were fitted with {key} {then[key]!r}, params "
            f"say {now[key]!r} (rerun `steerops vectors --methods {method.base}"
            f"{run_out_flag(params)}`)"
        )
    for layer, vector in vectors.items():
        check_hidden_size(vector, acts.hidden_size, f"stored {method.base!r} layer {layer}")
    missing = [
        layer
        for layer in acts.layers
        if layer not in vectors or str(layer) not in meta.get("layers", {})
    ]
    if missing:
        raise SteeropsError(
            f"stored {method.base!r} vectors lack layers {missing} (rerun "
            f"`steerops vectors --methods {method.base}{run_out_flag(params)}`)"
        )
