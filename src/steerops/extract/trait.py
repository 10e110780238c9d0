"""Trait mode: activations of a trait's positive and negative examples at one position.

Prompt positions read the trait's prompts directly; response positions (and `all[...]`)
read the kept rows of `steerops generate`'s responses file. One MLflow run per
(trait, variant, position, component), tagged with the DVC hash of its input data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from steerops.cli import run_out_flag
from steerops.extract import engine, store
from steerops.extract.inputs import (
    assign_splits,
    is_paired,
    prompt_examples,
    response_examples,
    split_counts,
)
from steerops.extract.provenance import make_job, model_metadata, run_logged
from steerops.extract.store import activations_dir
from steerops.generate.store import (
    check_generated_length,
    check_prompts,
    load_kept_responses,
    responses_file,
)
from steerops.io import file_md5
from steerops.models.loading import LoadedModel
from steerops.specs import Position, parse_position
from steerops.tracking.lineage import model_input
from steerops.traits import load_trait


def extract_trait(
    params,
    loaded: LoadedModel,
    trait_name: str,
    position: Position | str,
    layers: list[int],
    component: str | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> tuple[Path, dict]:
    """Extract one trait at one position; returns (output dir, metadata). Skips the work
    when the output already holds this exact extraction (unless `force`)."""
    cfg = params.extraction
    pos = parse_position(position)
    component = component or cfg.component
    trait = load_trait(params.path(params.traits.root), trait_name)
    if pos.needs_response:
        source = responses_file(params.out, trait_name, loaded.name)
        out_flag = run_out_flag(params)
        check_generated_length(source, trait_name, pos, out_flag)
        check_prompts(source, trait, out_flag)
        counts = trait.prompt_counts()
        rows = load_kept_responses(source, trait_name, loaded.name, counts, out_flag)
        examples = response_examples(loaded.tokenizer, rows)
    else:
        source = trait.path
        examples = prompt_examples(loaded.tokenizer, trait)
    n_sources = trait.prompt_counts()
    assign_splits(examples, params.seed, cfg.val_fraction, n_sources)

    out_dir = activations_dir(params.out, trait_name, loaded.name, pos.text, component)
    job = make_job(params, loaded, out_dir, pos, layers, component)
    prompts_md5 = store.prompts_md5(trait)
    # prompts: what of the trait folder the activations read (its steering questions, the
    # judge's files and the definition do not change them, nor should their record)
    source_hash = file_md5(source) if pos.needs_response else prompts_md5

    def describe(kept: list[engine.Example]) -> dict:
        return {
            "trait": trait_name,
            **model_metadata(loaded, params.root, job.settings["weights"]),
            "seed": params.seed,
            "val_fraction": cfg.val_fraction,
            # positive i and negative i share source prompt i (pca pairs them)
            "paired": is_paired(n_sources),
            "source_hash": source_hash,
            "prompts_md5": prompts_md5,
            "examples": _example_rows(kept, pos),
            "counts": split_counts(kept),
        }

    engine.require_windows(examples, pos)
    digest = engine.job_hash(job, examples)
    if not force:
        done = store.completed(out_dir, digest)
        if done is not None:
            now = {"source_hash": source_hash, "prompts_md5": prompts_md5}
            rows = _example_rows(engine.select(examples, pos)[0], pos)
            # the same rows (the digest says so) with the windows an older extraction lacks
            if [_plain(r) for r in rows] == [_plain(r) for r in done["examples"]]:
                now["examples"] = rows
            return out_dir, store.record_sources(out_dir, done, now)

    from steerops.tracking import track

    run_name = f"extract {trait_name} {loaded.name} {pos.text} {component}"
    inputs = {"responses" if pos.needs_response else "trait": source, **model_input(loaded.source)}
    with track(
        params,
        "extract",
        run_name,
        inputs=inputs,
        tags={"steerops.trait": trait_name, "steerops.variant": loaded.name},
        # killed once the metadata is written (last), the run still finished
        done_when={out_dir / store.METADATA_FILE: digest},
    ) as tracker:
        tracker.log_params(
            {
                "mode": "trait",
                "trait": trait_name,
                "variant": loaded.name,
                "model": loaded.spec.id,
                "revision": loaded.spec.revision,
                "position": pos.text,
                "component": component,
                "layers": layers,
                "dtype": cfg.dtype,
                "token_budget": cfg.token_budget,
                "shard_examples": cfg.shard_examples,
                "seed": params.seed,
                "val_fraction": cfg.val_fraction,
                "padding_side": cfg.padding_side,
            }
        )
        meta = run_logged(tracker, params, loaded, examples, job, describe, progress, on_shard)
    return out_dir, meta


def _example_rows(kept: list[engine.Example], pos) -> list[dict]:
    """metadata.json's examples: each row's identity and which tokens it pooled (a short
    answer pools fewer)."""
    return [{**ex.info, **engine.window_record(ex, pos)} for ex in kept]


def _plain(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("window", "tokens")}
