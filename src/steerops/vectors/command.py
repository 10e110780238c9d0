"""`steerops vectors` and `steerops clean`: one steering vector per layer, per trait,
position and method.

    steerops vectors --trait toy/refusal --position 'prompt[-1]' --methods mean_diff,probe
    steerops clean --trait toy/refusal --variants mean_diff_top1,probe_preclean \\
        --calibration-variant instruct

`vectors` reads the activations written by `steerops extract` and writes
`<out>/vectors/<trait>/<variant>/<position>/<component>/<method>/`. Any method name of
`steerops.specs` works, cleaned ones included (they read calibration.json).

`clean` makes the cleaned method names only. Post-extraction variants (`mean_diff_top1`,
`probe_layertop2`, `mean_diff_cleaned`, `mean_diff_dims12-345`) zero dims of the stored base
vectors (run `steerops vectors` for the base method first) and renormalise; pre-extraction
variants (`probe_preclean`, `mean_diff_preclean_top2`) zero the dims in the activations and
fit the base method again. The dims come from
`<out>/calibration/<calibration variant>/calibration.json`, from its massive set (`--dim-set
massive`: peak |x| over calibration.massive_threshold and massive_ratio x the layer median,
100 and 1000x by default, the main job's choice) or its
largest-mean set (`top_mean`, used when params set no cleaning.dim_set); the vector metadata
records which.
"""

from __future__ import annotations

import argparse

from steerops.cli import load_params_for, stage_parser
from steerops.errors import SteeropsError
from steerops.vectors.stage import add_selection_flags, run_stage


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "vectors", __doc__)
    add_selection_flags(parser, "vectors.methods")
    parser.set_defaults(func=run)


def register_clean(subparsers) -> None:
    parser = stage_parser(subparsers, "clean", __doc__)
    add_selection_flags(parser, "--variants=cleaning.variants")
    parser.set_defaults(func=run_clean)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    _say_written(run_stage(params, "vectors", params.vectors.methods))


def _say_written(directories) -> None:
    """Each vectors folder written, with its method's best-layer line and, for a cleaned
    method, the dims it zeroed."""
    from steerops.io import read_json
    from steerops.vectors.store import METADATA_FILE

    for directory in directories:
        print(directory)
        meta = read_json(directory / METADATA_FILE)
        for line in (cleaned_line(meta), best_layer_line(directory, meta)):
            if line:
                print(f"  {line}")


def cleaned_line(meta: dict) -> str | None:
    """Which dims a cleaned method zeroed, at which layers, from which calibration, from
    its vectors' metadata (None for a method that cleans nothing)."""
    from steerops.calibration.reading import layer_span

    calibration = meta.get("calibration") or {}
    removed = calibration.get("dims_removed")
    if not isinstance(removed, dict):
        return None
    by_dims: dict[tuple[int, ...], list[int]] = {}
    for layer, dims in removed.items():
        by_dims.setdefault(tuple(sorted(dims)), []).append(int(layer))
    parts = [
        f"{', '.join(map(str, dims)) or 'none'} at layers {layer_span(layers)}"
        for dims, layers in sorted(by_dims.items(), key=lambda kv: min(kv[1]))
    ]
    # dims named in the method (`_dims507`) come from no calibration set
    dim_set, variant = calibration.get("dim_set"), calibration.get("variant")
    source = "dims named in the method" if dim_set is None else f"{dim_set} set of calibration "
    source += "" if dim_set is None else str(variant or "?")
    return (
        f"cleaned ({source}, {calibration.get('mode', '?')}-extraction): "
        f"dims {'; '.join(parts) or 'none'}"
    )


def best_layer_line(directory, meta: dict | None = None) -> str | None:
    """Where a method's vectors separate the classes best on held-out examples, and whether
    that singles a layer out at all (layers tied on accuracy give no preference). `meta`:
    the folder's metadata, when the caller has read it."""
    from steerops.io import read_json
    from steerops.vectors.store import METADATA_FILE

    if meta is None:
        meta = read_json(directory / METADATA_FILE)
    best = meta.get("best") or {}
    if best.get("layer") is None or best.get("heldout_acc") is None:
        # say why, or a method without a best layer reads as one nothing happened to
        return f"no best layer: {best['reason']}" if best.get("reason") else None
    line = (
        f"best layer {best['layer']} by selection accuracy {best['selection_acc']:.3f}; "
        f"held-out accuracy {best['heldout_acc']:.3f} [{best['heldout_lo']:.3f}, "
        f"{best['heldout_hi']:.3f}], n {best['heldout_n']} examples"
        + (f" from {best['heldout_sources']} prompts" if best.get("heldout_sources") else "")
    )
    tied = best.get("tied_layers") or []
    if len(tied) > 1:
        line += (
            f"; {len(tied)} layers tie, so accuracy gives no layer preference: choose the "
            "layer by steering (`steerops steer --layers`)"
        )
    return line + _random_reach(directory, best)


def _random_reach(directory, best: dict) -> str:
    """A warning clause when the random baseline beside this method separates the classes
    within this method's held-out interval: the classes then part along almost any
    direction, and the accuracy does not single this one out."""
    from steerops.io import read_json
    from steerops.vectors.store import METADATA_FILE

    beside = directory.parent / "random_baseline" / METADATA_FILE
    if directory.name == "random_baseline" or not beside.is_file():
        return ""
    chance = read_json(beside).get("best") or {}
    acc = chance.get("heldout_acc")
    if acc is None or acc < best["heldout_lo"]:
        return ""
    return (
        f"; random_baseline reaches {acc:.3f} held out (layer {chance.get('layer')}), inside "
        "this interval: the classes part along random directions too, so this accuracy does "
        "not single the direction out (steering tells)"
    )


def run_clean(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    names = params.cleaning.variants
    for method in names:
        if method.cleaning is None:
            raise SteeropsError(
                f"cleaning.variants: {method.name!r} has no cleaning suffix "
                f"(e.g. {method.name}_top1 or {method.name}_preclean; plain "
                "methods are made by `steerops vectors`)"
            )
    _say_written(run_stage(params, "clean", names, stored_base=True))
