"""How an extraction is set up from params and what it records about the model it read: the
job, the settings that enter its hash, the metadata beside the activations, the MLflow
inputs (with DVC hashes) and the run's metrics. Shared by trait mode and task-set mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from steerops.extract.engine import Example, Job, extractor_for, run_job
from steerops.extract.store import METADATA_FILE
from steerops.io import text_md5
from steerops.models.fingerprint import HUB, model_fingerprint
from steerops.models.loading import LoadedModel
from steerops.specs import Position
from steerops.tracking.names import relative
from steerops.traits import POLARITIES


def make_job(
    params,
    loaded: LoadedModel,
    out_dir: Path,
    position: Position,
    layers: list[int],
    component: str,
) -> Job:
    """The extraction job of one output folder, as params' `extraction` block sets it up."""
    settings = model_settings(loaded.spec, loaded.source, loaded.tokenizer)
    return job_of(params, settings, out_dir, position, layers, component)


def job_of(
    params, settings: dict, out_dir: Path, position: Position, layers: list[int], component: str
) -> Job:
    """`make_job` from the model's `model_settings` (which a tokenizer alone gives)."""
    cfg = params.extraction
    settings = {**settings, "padding_side": cfg.padding_side}
    return Job(
        out_dir,
        position,
        layers,
        component,
        cfg.dtype,
        settings=settings,
        shard_examples=cfg.shard_examples,
        token_budget=cfg.token_budget,
        massive=(params.calibration.massive_threshold, params.calibration.massive_ratio),
    )


def run_logged(
    tracker,
    params,
    loaded: LoadedModel,
    examples: list[Example],
    job: Job,
    describe: Callable[[list[Example]], dict],
    progress: bool,
    on_shard: Callable[[int], None] | None,
) -> dict:
    """Run `job` on the model and log the run's metrics and metadata to `tracker`."""
    cfg = params.extraction
    extractor = extractor_for(loaded, cfg.padding_side, cfg.compile)
    meta = run_job(extractor, examples, job, describe, progress=progress, on_shard=on_shard)
    log_run(tracker, meta, job.out_dir)
    return meta


def model_settings(spec, source: str, tokenizer) -> dict:
    """What identifies the model in the settings hash: content, never a path, so a copied
    project (or model folder) finds its extractions up to date. `spec`: the variant's
    params, `source`: where it loads from."""
    fingerprint = model_fingerprint(source, spec.revision)
    return {
        "model": spec.id if fingerprint == HUB else None,  # a hub id names its weights
        "revision": spec.revision,
        "model_dtype": spec.dtype,
        "weights": fingerprint,
        "chat_template": text_md5(str(tokenizer.chat_template or "")),
    }


def model_metadata(loaded: LoadedModel, root: Path, weights: str) -> dict:
    """The model an artifact came from; a local folder named relative to the project `root`
    (the params folder), so the artifact reads the same on every machine. `weights`: the
    fingerprint its job's settings already hold (`model_settings`)."""
    local = Path(loaded.source).exists()
    return {
        "model": {
            "variant": loaded.name,
            "id": loaded.spec.id,
            "revision": loaded.spec.revision,
            "source": relative(loaded.source, root) if local else loaded.source,
            "weights": weights,  # content, or "hub" for a hub id the cache does not hold whole
            "dtype": loaded.spec.dtype,
        },
        "hidden_size": loaded.layout.hidden_size,
        "num_layers": loaded.layout.num_layers,
    }


def log_run(tracker, meta: dict, out_dir: Path) -> None:
    counts, timing = meta.get("counts", {}), meta["timing"]
    metrics = {
        "examples": sum(counts.get(k, 0) for k in POLARITIES) or counts.get("tasks"),
        "dropped_empty": counts.get("dropped_empty"),
        "seconds": timing["seconds"],
        "tokens": timing["tokens"],
        "tokens_per_s": timing["tokens_per_s"],
        "reused_shards": timing["reused_shards"],
    }
    metrics.update({f"mean_norm_layer_{k}": v for k, v in meta["mean_norm"].items()})
    for layer, entry in (meta.get("token_norm") or {}).items():
        metrics[f"token_norm_layer_{layer}"] = entry["token_norm"]
        metrics[f"massive_tokens_layer_{layer}"] = entry["massive_tokens"]
    tracker.log_metrics(metrics)
    tracker.log_artifact(out_dir / METADATA_FILE)
