"""What `steerops vectors` and `steerops clean` share: selection flags, the loop over
(trait, position, method), writing each method's vectors, and MLflow logging.

One MLflow run per invocation, with one nested run per (trait, position, method) holding
its params, per-layer metrics (step = layer), the best layer's metrics (`best_*`: chosen on
one half of val, reported on the other; `heldout.py`) and the vector files as artifacts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steerops.calibration.store import stored_massive_by_layer
from steerops.cli import flags, run_out_flag
from steerops.errors import SteeropsError
from steerops.extract.store import activations_dir
from steerops.io import tree_md5
from steerops.specs import MethodName, position_slug
from steerops.tracking import files_tag, input_hash_tags, track
from steerops.traits import trait_dir
from steerops.vectors.activations import check_classes_differ, load_activations
from steerops.vectors.build import Built, build_method, check_base, plan_cleaning
from steerops.vectors.store import (
    METADATA_FILE,
    TENSORS_FILE,
    save_vectors,
    vectors_dir,
    vectors_for,
)

# a method's run: its folder and the folder's content hash (a rerun that writes the same
# bytes logs again only where no FINISHED run holds them: the last one was killed)
VECTOR_FILES = "steerops.vector_files"
_PER_LAYER = ("raw_norm", "train_acc", "val_acc", "selection_acc", "heldout_acc", "midpoint")
# the metadata's `best` record as metrics (None values are not logged)
_BEST = (
    "layer",
    "train_acc",
    "selection_acc",
    "selection_n",
    "heldout_acc",
    "heldout_n",
    "heldout_sources",
    "heldout_lo",
    "heldout_hi",
)


def add_selection_flags(parser: argparse.ArgumentParser, methods: str) -> None:
    """Flags choosing which activations to read (defaults: traits/extraction params) and the
    `methods` flag (a `cli.flags` item)."""
    flags(
        parser,
        f"--trait=traits.names --position=extraction.positions extraction.variant "
        f"extraction.component cleaning.calibration_variant cleaning.dim_set seed {methods}",
    )


def run_stage(
    params, stage: str, names: list[MethodName], *, stored_base: bool = False, progress: bool = True
) -> list[Path]:
    """Compute and write every named method for every selected trait and position.

    With `stored_base`, post-cleaned methods rescale the base method's stored vectors
    instead of refitting it (`steerops clean`). Returns the vectors directories written.
    """
    if not names:
        raise SteeropsError(f"{stage}: no methods given")
    # names and specs were checked when params loaded; trait names are checked before any
    # work too, so bad input writes nothing
    methods = names
    positions = [p.text for p in params.extraction.positions]
    for trait in params.traits.names:
        trait_dir(params.path(params.traits.root), trait)  # CAT/NAME form
    ex = params.extraction
    selection = {
        "traits": params.traits.names,
        "variant": ex.variant,
        "positions": positions,
        "component": ex.component,
    }
    inputs = {
        f"activations.{trait}.{position_slug(pos)}": activations_dir(
            params.out, trait, ex.variant, pos, ex.component
        )
        for trait in params.traits.names
        for pos in positions
    }
    # every input read (and its MD5 checked) before the run opens: a damaged activations
    # file is one error line that leaves the tracking store untouched
    # a run given --out reads its own activations: the extract it needs writes there too
    out_flag = run_out_flag(params)
    activations = {
        (trait, position): load_activations(
            params.out,
            trait,
            ex.variant,
            position,
            ex.component,
            out_flag,
            params.path(params.traits.root),
            params,
        )
        for trait in params.traits.names
        for position in positions
    }
    for (trait, position), acts in activations.items():
        check_classes_differ(acts, trait, position)
    # every method's calibration and stored base vectors checked too: a method that cannot
    # be built fails before anything is written or tracked
    # the calibration every method's warnings read (massive_share), so a damaged one is
    # refused here even when no method cleans
    stored_massive_by_layer(params.out, params.cleaning.calibration_variant)
    bases = {}
    for (trait, position), acts in activations.items():
        for method in methods:
            plan_cleaning(params, acts, method.name, params.cleaning.calibration_variant)
            if stored_base and method.cleaning and method.cleaning.mode == "post":
                base = vectors_for(
                    params.out, trait, ex.variant, position, ex.component, method.base, out_flag
                )
                check_base(base, acts, method, params)
                bases[trait, position, method.name] = base
    written, digests = [], []
    # held: logged once a folder's bytes change, or where no FINISHED run holds them, as
    # `steer` opens no run for a rerun whose work is done (each `dvc repro` after a code
    # change reran this stage and logged every method again)
    run_name = f"{stage} {ex.variant}"
    with track(params, stage, run_name=run_name, inputs=inputs, held=True) as tracker:
        tracker.log_params(
            {
                **selection,
                "methods": [m.name for m in methods],
                "seed": params.seed,
                "calibration_variant": params.cleaning.calibration_variant,
                "vectors": params.vectors.model_dump(exclude={"methods"}),
            }
        )
        for trait in params.traits.names:
            for position in positions:
                acts = activations[trait, position]
                for method in methods:
                    built = build_method(
                        params,
                        acts,
                        method.name,
                        trait=trait,
                        variant=ex.variant,
                        position=position,
                        component=ex.component,
                        calibration_variant=params.cleaning.calibration_variant,
                        base=bases.get((trait, position, method.name)),
                        progress=progress,
                    )
                    directory = vectors_dir(
                        params.out, trait, ex.variant, position, ex.component, method.name
                    )
                    before = tree_md5(directory) if directory.is_dir() else None
                    save_vectors(directory, built.vectors, built.metadata)
                    digest = tree_md5(directory)
                    if digest != before:
                        tracker.keep()
                    _log_method(params, tracker, built, directory, acts.directory, digest)
                    written.append(directory)
                    digests.append(digest)
        if tracker.active and not tracker.kept:
            logged = [
                tracker.finished_run_tagged(VECTOR_FILES, files_tag(folder, digest))
                for folder, digest in zip(written, digests, strict=True)
            ]
            if False in logged:  # written before by a run that was killed, or untagged
                tracker.keep()
    if tracker.active and not tracker.kept:
        print(
            f"steerops {stage}: every vectors folder was written again byte for byte: no new "
            "MLflow run (the runs that wrote them hold these vectors)",
            file=sys.stderr,
        )
    return written


def _log_method(
    params, tracker, built: Built, directory: Path, acts_dir: Path, digest: str
) -> None:
    meta = built.metadata
    calibration = meta["calibration"] or {}
    child_params = {
        key: meta[key]
        for key in (
            "method",
            "base_method",
            "trait",
            "variant",
            "position",
            "component",
            "hidden_size",
        )
    }
    child_params.update(
        {
            "cleaning_mode": calibration.get("mode"),
            "cleaning_spec": calibration.get("spec"),
            "calibration_variant": calibration.get("variant"),
            "calibration_file": calibration.get("file"),
            "refit": meta["refit"],
            **{f"n_{k}": v for k, v in meta["n"].items()},
        }
    )
    run_name = f"{meta['trait']} {meta['position']} {meta['method']}"
    with tracker.child(run_name, child_params) as child:
        layers = meta["layers"]
        for layer, values in layers.items():
            child.log_metrics({k: values[k] for k in _PER_LAYER}, step=int(layer))
        best = meta["best"]
        if best["reason"] is None:
            child.log_metrics({f"best_{k}": best[k] for k in _BEST})
        hashes = input_hash_tags(params, {"activations": acts_dir})
        if calibration.get("file"):
            # recorded relative to the project folder
            file = params.root / calibration["file"]
            hashes.update(input_hash_tags(params, {"calibration": file}))
        tags = {
            **hashes,
            "steerops.method": meta["method"],
            VECTOR_FILES: files_tag(directory, digest),
        }
        if best["reason"] is not None:  # why the run has no best_* metrics
            tags["steerops.no_best"] = best["reason"]
        if best.get("tied_layers"):  # best_layer is then the lowest of equals, no choice
            tags["steerops.best_layer_tied"] = f"{len(best['tied_layers'])} layers tie"
        if meta.get("warnings"):  # one line each; the full text is in metadata.json
            tags["steerops.warnings"] = "\n".join(meta["warnings"])[:4000]
        child.set_tags(tags)
        artifact_dir = f"vectors/{position_slug(meta['position'])}/{meta['method']}"
        for name in (TENSORS_FILE, METADATA_FILE):
            child.log_artifact(directory / name, artifact_path=artifact_dir)
