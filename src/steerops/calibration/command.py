"""`steerops calibrate`: find a model variant's massive-activation dimensions.

Runs the calibration prompts through the chat template, generates greedy responses, then
feeds prompt + response back through the model, reading the residual stream after every
decoder block on every token: the first token and the template's tokens included, since
that is where massive activations live. Statistics stream per batch (see
`steerops.calibration.stats`); writes `calibration.json` and `heatmap.png` (see
`steerops.calibration.store`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from steerops.calibration.aggregate import summarize
from steerops.calibration.heatmap import plot_heatmap
from steerops.calibration.reading import (
    massive_spans,
    near_line,
    near_rule,
    rare_line,
    rare_words,
    rule_words,
)
from steerops.calibration.stats import LayerSums
from steerops.calibration.store import (
    calibration_file,
    drop_partial,
    heatmap_file,
    partial_responses_file,
    write_calibration,
)
from steerops.cli import abs_path, flags, load_params_for, stage_parser
from steerops.errors import SteeropsError
from steerops.traits import Prompt, read_prompts_jsonl


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "calibrate",
        "Generate responses to the calibration prompts and "
        "measure, per layer, the residual activations over all tokens: each dim's peak |x| "
        "and the token it occurs at, max/median ratios, massive dims (peak > "
        "massive_threshold and > massive_ratio x the layer median in at least "
        "massive_min_sequences sequences), the dims with the largest "
        "mean, norms, and the global dims across layers.",
    )
    flags(
        parser,
        "calibration.variant calibration.max_new_tokens calibration.top_k "
        "calibration.massive_threshold calibration.massive_ratio "
        "calibration.massive_min_sequences calibration.global_top_n "
        "calibration.global_min_layers calibration.batch_size",
    )
    flags(parser, "calibration.prompts", type=abs_path)  # relative to the working directory
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    record = calibrate(params)
    variant = params.calibration.variant
    aggregate = record["aggregate"]
    rule, massive = aggregate["massive_rule"], "; ".join(massive_spans(aggregate))
    print(
        f"calibration [{variant}]: {record['n_tokens']} tokens -> "
        f"{calibration_file(params.out, variant)}\n"
        f"  massive dims ({rule_words(rule)}): {massive or 'none'}\n"
        + (
            f"  {rare_words(record)} (not massive: left out of the massive set): {rare}\n"
            if (rare := rare_line(record))
            else ""
        )
        + f"  near the bar (not massive at these layers, but {near_rule(record)}): "
        f"{near_line(record)}\n"
        f"  large-mean global dims (not necessarily massive): "
        f"{', '.join(map(str, aggregate['global_dims'])) or 'none'}"
    )


def load_calibration_prompts(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise SteeropsError(f"calibration.prompts: file not found: {path}")
    prompts = read_prompts_jsonl(path)
    if not prompts:
        raise SteeropsError(f"calibration.prompts: no prompts in {path}")
    return prompts


def calibrate(params, progress: bool = True) -> dict:
    """Run calibration for `calibration.variant`; returns the calibration.json record."""
    from steerops.models.generation import generate_responses
    from steerops.models.kept_jobs import KeptJobs
    from steerops.models.loading import (
        check_new_tokens,
        check_variant,
        load_model,
        model_shape,
        model_source,
    )
    from steerops.tracking import track
    from steerops.tracking.lineage import model_input

    cfg = params.calibration
    prompts_file = params.path(cfg.prompts)
    prompts = load_calibration_prompts(prompts_file)
    spec = params.variant(cfg.variant, "calibration.variant")
    check_variant(params, cfg.variant)  # a bad source or device fails before the run opens
    shape = model_shape(params, cfg.variant)
    _check_global_min_layers(cfg.global_min_layers, shape.num_layers)
    _check_min_sequences(cfg.massive_min_sequences, len(prompts), prompts_file)
    check_new_tokens(shape, cfg.max_new_tokens, "calibration.max_new_tokens")
    settings = {
        k: getattr(cfg, k)
        for k in (
            "max_new_tokens",
            "top_k",
            "massive_threshold",
            "massive_ratio",
            "massive_min_sequences",
            "global_top_n",
            "global_min_layers",
        )
    }
    kept = KeptJobs(
        partial_responses_file(params.out, cfg.variant), _responses_key(params, prompts_file)
    )
    with track(
        params,
        "calibrate",
        f"calibrate {cfg.variant}",
        inputs={
            "calibration_prompts": prompts_file,
            **model_input(model_source(params, cfg.variant)),
        },
        tags={"steerops.variant": cfg.variant},
    ) as tracker:
        start = time.perf_counter()
        loaded = load_model(params, cfg.variant, padding_side="left")
        _check_global_min_layers(cfg.global_min_layers, loaded.layout.num_layers)
        completions = generate_responses(
            loaded.model,
            loaded.tokenizer,
            prompts,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            seed=params.seed,
            progress=progress,
            desc="calibrate: generate",
            kept=kept,
        )
        if kept.served and progress:
            print(f"calibrate: {kept.served} responses kept by an interrupted run")
        if not any(c.response_ids for c in completions):
            raise SteeropsError(f"models.{cfg.variant}: every calibration response was empty")
        # a prompt whose response is empty still counts: its template tokens are where
        # massive activations live, and sequence k stays the prompts file's prompt k
        seqs = [list(c.prompt_ids) + list(c.response_ids) for c in completions]
        sums = token_stats(loaded, seqs, cfg.batch_size, progress, cfg.massive_min_sequences)
        record = {
            "variant": cfg.variant,
            "model": {
                "variant": cfg.variant,
                "id": spec.id,
                "revision": spec.revision,
                "dtype": spec.dtype,
            },
            # the model's shape, which `clean` checks its activations against (a calibration
            # of another model, left in the variant's folder, would zero the wrong dims)
            "hidden_size": loaded.layout.hidden_size,
            "num_layers": loaded.layout.num_layers,
            "prompts": cfg.prompts,
            "settings": settings,
            "n_prompts": len(prompts),
            "empty_responses": sum(not c.response_ids for c in completions),
            "n_tokens": sum(len(s) for s in seqs),
            "n_response_tokens": sum(len(c.response_ids) for c in completions),
            **summarize(
                sums,
                top_k=cfg.top_k,
                threshold=cfg.massive_threshold,
                ratio=cfg.massive_ratio,
                global_top_n=cfg.global_top_n,
                global_min_layers=cfg.global_min_layers,
                token_text=lambda seq, pos: loaded.tokenizer.decode([seqs[seq][pos]]),
            ),
        }
        # the wall time goes to MLflow only: the same inputs give the same calibration.json,
        # which cleaned vectors record by MD5 (and DVC by content)
        seconds = round(time.perf_counter() - start, 3)
        heatmap = heatmap_file(params.out, cfg.variant)
        plot_heatmap(record, heatmap)
        out_file = write_calibration(params.out, cfg.variant, record)
        drop_partial(params.out, cfg.variant)
        _log(tracker, record, out_file, heatmap, seconds)
    return record


def _responses_key(params, prompts_file: Path) -> str:
    """What the greedy responses depend on: the model's identity, dtype and placement, the
    prompts' bytes and the length."""
    import json

    from steerops.io import file_md5, text_md5
    from steerops.models.identity import placement, variant_identity

    cfg = params.calibration
    key = {
        **variant_identity(params, cfg.variant),
        **placement(params, cfg.variant),
        "dtype": params.variant(cfg.variant).dtype,
        "prompts_md5": file_md5(prompts_file),
        "max_new_tokens": cfg.max_new_tokens,
    }
    return text_md5(json.dumps(key, sort_keys=True))


def _check_global_min_layers(min_layers: int, num_layers: int | None) -> None:
    """No dim could ever be global past the model's depth (None: known after loading)."""
    if num_layers is not None and min_layers > num_layers:
        raise SteeropsError(
            f"calibration.global_min_layers: {min_layers} is more than the model's "
            f"{num_layers} layers"
        )


def _check_min_sequences(min_sequences: int, n_prompts: int, prompts_file: Path) -> None:
    if min_sequences > n_prompts:
        raise SteeropsError(
            f"calibration.massive_min_sequences: {min_sequences} is more than the "
            f"{n_prompts} calibration prompts in {prompts_file}, so no dim could be massive; "
            "lower it or add prompts"
        )


def token_stats(
    loaded,
    seqs: list[list[int]],
    batch_size: int,
    progress: bool = True,
    min_sequences: int = 1,
) -> dict[int, LayerSums]:
    """Stream every layer's residual on every token of `seqs` into per-layer `LayerSums`
    (each keeping its dims' `min_sequences` largest per-sequence peaks); batches are
    length-sorted and left-padded (padding is masked out)."""
    from steerops.models.batching import Batcher, length_order, pad_batch
    from steerops.models.capture import forward_capture

    layout = loaded.layout
    layers = list(range(layout.num_layers))
    sums = {layer: LayerSums.zeros(layout.hidden_size, min_sequences) for layer in layers}
    pad = loaded.tokenizer.pad_token_id or 0  # padded positions are masked out
    lengths = [len(s) for s in seqs]
    batcher = Batcher(
        max_rows=batch_size,
        what="calibration sequence",
        hint="lower calibration.max_new_tokens or use more memory",
    )
    bar = tqdm(
        total=len(seqs),
        desc="calibrate: activations",
        unit="seq",
        disable=None if progress else True,
    )

    def compute(batch: list[int]) -> dict[int, torch.Tensor]:
        ids, mask, _ = pad_batch([seqs[i] for i in batch], pad, side="left")
        device = loaded.input_device
        return forward_capture(loaded.model, layout, ids.to(device), mask.to(device), layers)

    def done(batch: list[int], store: dict[int, torch.Tensor]) -> None:
        width = max(lengths[i] for i in batch)
        real = torch.zeros((len(batch), width), dtype=torch.bool)
        where = torch.zeros((len(batch), width, 2), dtype=torch.int64)
        for row, i in enumerate(batch):
            real[row, width - lengths[i] :] = True
            where[row, width - lengths[i] :, 0] = i
            where[row, width - lengths[i] :, 1] = torch.arange(lengths[i])
        for layer in layers:
            out = store[layer]
            tokens = out[real.to(out.device)]
            finite = torch.isfinite(tokens).all(-1)  # per token
            if not finite.all():  # an overflow would pass for a massive dim
                bad = int(where[real][~finite.cpu()][0, 0])
                remedy = (
                    f"it overflows in float16: set models.{loaded.name}.dtype to bfloat16 "
                    "or float32"
                    if out.dtype == torch.float16
                    else "check the model's weights"
                )
                raise SteeropsError(
                    f"calibration: block {layer} gave non-finite activations ({out.dtype}) on "
                    f"calibration sequence {bad}: {remedy}"
                )
            sums[layer].add(tokens, where[real])
        bar.update(len(batch))

    with bar:
        batcher.run(length_order(lengths), lengths, compute, done)
    return sums


def _log(tracker, record: dict, out_file: Path, heatmap: Path, seconds: float) -> None:
    tracker.log_params(
        {
            "variant": record["variant"],
            "model_id": record["model"]["id"],
            "n_prompts": record["n_prompts"],
            **record["settings"],
        }
    )
    tracker.log_metrics(
        {
            "n_tokens": record["n_tokens"],
            "seconds": seconds,
            "n_global_dims": len(record["aggregate"]["global_dims"]),
            "n_massive_dims": len(record["aggregate"]["massive_dims"]),
        }
    )
    # per-layer series (step = layer); a layer's count under the run's own `n_massive_dims`
    # would overwrite it (the last layer's 0 on SmolLM2, whose dim 507 is massive at 11-27)
    for layer, stats in record["layers"].items():
        tracker.log_metrics(
            {
                "norm": stats["norm"],
                "median_abs": stats["median_abs"],
                "max_median_ratio": stats["max_median_ratio"],
                "layer_n_massive_dims": len(stats["massive_dims"]),
            },
            step=int(layer),
        )
    aggregate = record["aggregate"]
    tracker.set_tags(
        {
            "global_dims": ",".join(map(str, aggregate["global_dims"])),
            "massive_dims": ",".join(map(str, aggregate["massive_dims"])),
        }
    )
    tracker.log_artifact(out_file)
    tracker.log_artifact(heatmap)
