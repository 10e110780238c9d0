"""`steerops generate`: complete a trait's positive and negative prompts with a model variant.

Writes `responses.jsonl` (one row per completion) and `summary.json` under
`generate.store.responses_dir`. Optional vetting scores every completion with the configured
judge and marks it `kept`: positives with trait >= `positive_min`, negatives with trait <=
`negative_max`. With `paired_filter`, positive and negative prompt lists are paired by
position (equal lengths required) and a (source_index, rollout) pair is kept only if both
of its completions pass.

Re-running with the same generation settings reuses the responses (only vetting is redone
if its settings changed, if it did not finish, since completions are written before vetting,
or if the judge's endpoint refused to judge some of them); `--force` regenerates.
"""

from __future__ import annotations

import argparse
import json
import time

from steerops.cli import flags, load_params_for, stage_parser
from steerops.errors import SteeropsError
from steerops.generate.store import (
    RESPONSES_FILE,
    SUMMARY_FILE,
    drop_finished_classes,
    finished_class,
    keep_finished_class,
    partial_jobs_file,
    previous_summary,
    prompts_md5,
    read_rows,
    responses_dir,
    write_responses,
)
from steerops.io import text_md5
from steerops.judges.base import n_unanswered
from steerops.traits import POLARITIES, Trait, load_trait


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "generate",
        "Complete every positive and negative prompt of each trait "
        "with a model variant, batched, and optionally keep only completions the judge confirms.",
    )
    flags(
        parser,
        "--trait=traits.names generate.variant generate.max_new_tokens "
        "generate.temperature generate.rollouts generate.batch_size generate.vet "
        "generate.paired_filter",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    _precheck(params)
    emptied, refused = [], 0
    for name in params.traits.names:
        summary = generate_trait(params, name, force=args.force)
        kept = summary["kept"]
        print(
            f"{name} [{summary['variant']}]: {summary['counts']['total']} completions, "
            f"kept {kept['positive']} positive / {kept['negative']} negative "
            f"-> {responses_dir(params.out, name, summary['variant'])}"
        )
        emptied += [f"{name} {p}" for p in emptied_classes(summary)]
        refused += summary.get("judge_refused") or 0
    if emptied:  # every trait is generated first; the responses stay for a look
        unjudged = (
            f" ({refused} completions the judge's endpoint would not score: a rerun asks again)"
            if refused
            else ""
        )
        raise SteeropsError(
            f"vetting kept no completion of {', '.join(emptied)}{unjudged}: a direction needs "
            "both classes; see generate.positive_min / generate.negative_max, "
            "generate.max_new_tokens, or generate.vet: false"
        )


def resolve_max_new_tokens(params) -> int:
    """`generate.max_new_tokens`, or for `auto` the most response tokens any extraction
    position reads (open-ended ones, or none reading the response: `auto_open_ended`)."""
    cfg = params.generate
    if cfg.max_new_tokens != "auto":
        return cfg.max_new_tokens
    from steerops.specs import max_response_tokens

    needs = [max_response_tokens(p) for p in params.extraction.positions]
    n = max((k for k in needs if k is not None), default=0)
    if n == 0 or None in needs:  # nothing reads the response, or reads to its end
        n = max(n, cfg.auto_open_ended)
    if cfg.vet:
        n = max(n, cfg.vet_min_new_tokens)
    return n


def generate_trait(params, name: str, force: bool = False, progress: bool = True) -> dict:
    """Complete (and vet) one trait; returns the summary written to `summary.json`."""
    from steerops.models.loading import check_new_tokens, check_variant, model_shape

    cfg = params.generate
    params.variant(cfg.variant, "generate.variant")
    trait = load_trait(params.path(params.traits.root), name)
    _check_pairing(cfg, trait)
    folder = responses_dir(params.out, name, cfg.variant)
    gen = _generation_settings(params, trait)
    gen_hash = text_md5(json.dumps(gen, sort_keys=True))
    judge = None
    if cfg.vet:
        from steerops.judges import make_judge

        judge = make_judge(params, trait)
    vet = {
        "vet": cfg.vet,
        "judge": judge.id if judge else None,
        "positive_min": cfg.positive_min,
        "negative_max": cfg.negative_max,
        "paired_filter": cfg.paired_filter,
    }
    mass = getattr(judge, "min_prob_mass", None)
    if mass is not None:  # applied after the judge's cache, so not in its id
        vet["judge_min_prob_mass"] = mass
    vet_hash = text_md5(json.dumps(vet, sort_keys=True))

    old = previous_summary(folder) if not force else None
    up_to_date = old and old["generation_hash"] == gen_hash and old.get("vetting_hash") == vet_hash
    if up_to_date and not old.get("judge_refused"):
        drop_finished_classes(folder)  # what a run killed after its last write kept
        if progress:
            print(f"{name} [{cfg.variant}]: up to date (--force regenerates)")
        return old
    # an up-to-date trait needs no model; one to generate fails here, before the run opens
    check_variant(params, cfg.variant)
    key = "generate.max_new_tokens" + (
        " (auto: from extraction.positions' response windows, generate.auto_open_ended and "
        "generate.vet_min_new_tokens)"
        if cfg.max_new_tokens == "auto"
        else ""
    )
    check_new_tokens(model_shape(params, cfg.variant), gen["max_new_tokens"], key)
    if judge is not None:  # an endpoint that is down or refuses the key costs no generation
        from steerops.judges import reach_judge

        reach_judge(params, trait)

    from steerops.judges.cached import CachedJudge
    from steerops.models.loading import model_source
    from steerops.tracking import track
    from steerops.tracking.lineage import model_input

    with track(
        params,
        "generate",
        f"generate {name} {cfg.variant}",
        inputs={"trait": trait.path, **model_input(model_source(params, cfg.variant))},
        tags={"steerops.trait": name, "steerops.variant": cfg.variant},
    ) as tracker:
        if old and old["generation_hash"] == gen_hash:
            rows, timing = read_rows(folder), {}  # nothing generated: no speed
        else:
            rows, timing = _complete(params, trait, gen, progress, folder, gen_hash, force)
            if judge is not None:  # keep the completions should the judge fail
                pending = [{**row, "kept": None, "trait": None, "coherence": None} for row in rows]
                write_responses(
                    folder,
                    pending,
                    {
                        "trait": name,
                        "variant": cfg.variant,
                        "settings": gen,
                        "generation_hash": gen_hash,
                        "vetting_hash": None,
                    },
                )
        refused = 0
        if judge is not None:
            refused = _vet(rows, judge, cfg)
        else:
            for row in rows:
                row.update(kept=True, trait=None, coherence=None)
        trait_only = getattr(judge, "trait_scores", None) is not None
        summary = _summarize(trait, cfg.variant, gen, vet, rows, trait_only)
        # answers the endpoint refused to judge are kept nowhere and not kept here: a rerun
        # vets again (the others come from the judge's cache) until they are judged
        summary.update(generation_hash=gen_hash, vetting_hash=vet_hash, judge_refused=refused)
        served = judge.served_summary() if isinstance(judge, CachedJudge) else None
        if served is not None:  # the models an endpoint named for the answers vetting used
            summary["judge_served"] = served
            tracker.set_tags({"steerops.judge_served": served})
        summary = write_responses(folder, rows, summary)
        drop_finished_classes(folder)
        tracker.log_params({"trait": name, "variant": cfg.variant, **gen, **vet})
        tracker.log_metrics(_metrics(summary, timing))
        tracker.log_artifact(folder / SUMMARY_FILE)
        tracker.log_artifact(folder / RESPONSES_FILE)
        emptied = emptied_classes(summary)
        if emptied:  # `run` exits 2 once every trait is done: the run says so too
            unjudged = f" (the judge's endpoint would not score {refused})" if refused else ""
            tracker.fail(f"vetting kept no completion of {' or '.join(emptied)}{unjudged}")
    return summary


def emptied_classes(summary: dict) -> list[str]:
    """The classes vetting kept no completion of, each saying when the judge scored none
    of them (a judge failure, not completions short of the thresholds)."""
    out = []
    for p in POLARITIES:
        count = summary["counts"][p]
        if count and not summary["kept"][p]:
            unscored = (summary.get("unscored") or {}).get(p, 0)
            out.append(
                p + (f" (the judge scored none of its {count})" if unscored == count else "")
            )
    return out


def _generation_settings(params, trait: Trait) -> dict:
    from steerops.models.chat_template import chat_template
    from steerops.models.generation import overridden_decoding
    from steerops.models.loading import generation_config, model_fingerprint, model_source

    cfg = params.generate
    spec = params.variant(cfg.variant)
    settings = {
        "model_id": spec.id,
        "model_revision": spec.revision,
        "dtype": spec.dtype,
        "model_fingerprint": model_fingerprint(model_source(params, cfg.variant), spec.revision),
        # the template's text, not the file it names: an edited file renders prompts anew
        "chat_template": text_md5(t) if (t := chat_template(params, cfg.variant)) else None,
        "prompts_md5": prompts_md5(trait),
        "max_new_tokens": resolve_max_new_tokens(params),
        "temperature": cfg.temperature,
        "rollouts": cfg.rollouts,
        "seed": params.seed,
        "row_format": 2,  # 2: rows carry response_ids (older rows are generated again)
    }
    if cfg.temperature > 0:  # each batch is seeded on its own: a sample depends on its batch
        settings["batch_size"] = cfg.batch_size
    shipped = generation_config(params, cfg.variant)
    if overridden := overridden_decoding(shipped, sampled=cfg.temperature > 0):
        settings["plain_decoding_overrides"] = overridden
    return settings


def _complete(
    params,
    trait: Trait,
    gen: dict,
    progress: bool,
    folder,
    gen_hash: str,
    force: bool,
) -> tuple[list[dict], dict]:
    """Every class's completions; a class an interrupted run finished under the same
    settings is taken as it kept it (`--force`: generated again), one generated is kept."""
    from steerops.models.generation import generate_responses
    from steerops.models.identity import placement
    from steerops.models.kept_jobs import KeptJobs
    from steerops.models.loading import load_model

    cfg = params.generate
    # what an interrupted run kept is of these settings on this placement (`placement`)
    kept_hash = text_md5(json.dumps([gen_hash, placement(params, cfg.variant)], sort_keys=True))
    finished = {p: None if force else finished_class(folder, p, kept_hash) for p in POLARITIES}
    loaded, start = None, 0.0
    rows: list[dict] = []
    new_tokens = 0
    for polarity in POLARITIES:
        kept = finished[polarity]
        if kept is not None:
            if progress:
                print(f"generate {polarity}: {len(kept)} completions kept by an interrupted run")
            rows += [{**row, "index": len(rows) + i} for i, row in enumerate(kept)]
            continue
        if loaded is None:
            loaded = load_model(params, cfg.variant, padding_side="left")
            start = time.perf_counter()
        prompts = getattr(trait, polarity)
        first = len(rows)
        batches = KeptJobs(partial_jobs_file(folder, polarity), kept_hash, fresh=force)
        done = generate_responses(
            loaded.model,
            loaded.tokenizer,
            prompts,
            max_new_tokens=gen["max_new_tokens"],
            temperature=cfg.temperature,
            rollouts=cfg.rollouts,
            batch_size=cfg.batch_size,
            seed=params.seed,
            progress=progress,
            desc=f"generate {polarity}",
            kept=batches,
        )
        if batches.served and progress:
            print(f"generate {polarity}: {batches.served} decodes kept by an interrupted run")
        for c in done:
            source = prompts[c.index]
            new_tokens += len(c.response_ids)
            rows.append(
                {
                    "index": len(rows),
                    "polarity": polarity,
                    "source_index": c.index,
                    "rollout": c.rollout,
                    "system_prompt": source.system_prompt,
                    "prompt": source.prompt,
                    "response": c.response,
                    "response_ids": c.response_ids,
                }
            )
        keep_finished_class(folder, polarity, kept_hash, rows[first:])
        batches.drop()  # the class is kept whole
    if loaded is None:
        return rows, {}  # nothing generated: no speed
    seconds = time.perf_counter() - start
    timing = {
        "seconds": round(seconds, 3),
        "new_tokens": new_tokens,
        "tokens_per_s": round(new_tokens / seconds, 1) if seconds > 0 else None,
    }
    return rows, timing


def _vet(rows: list[dict], judge, cfg) -> int:
    """Score and mark every row kept or not; returns how many the endpoint refused to judge
    (unscored, so not kept)."""
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    # Keeping a completion depends on its trait score alone; a judge that can give that
    # without its costlier coherence reading (the proxy: phrases, no forward pass) does.
    trait_only = getattr(judge, "trait_scores", None)
    if trait_only is not None:
        scores = [(t, None) for t in trait_only(prompts, responses)]
    else:
        scores = judge.score(prompts, responses)
    for row, (trait, coherence) in zip(rows, scores, strict=True):
        row.update(trait=trait, coherence=coherence, kept=_passes(row["polarity"], trait, cfg))
    if cfg.paired_filter:
        passed = {(r["polarity"], r["source_index"], r["rollout"]): r["kept"] for r in rows}
        for row in rows:
            key = (row["source_index"], row["rollout"])
            row["kept"] = all(passed.get((p, *key), False) for p in POLARITIES)
    return n_unanswered(judge, prompts, responses)


def _passes(polarity: str, trait: float | None, cfg) -> bool:
    if trait is None:
        return False
    return trait >= cfg.positive_min if polarity == "positive" else trait <= cfg.negative_max


def _summarize(
    trait: Trait,
    variant: str,
    gen: dict,
    vet: dict,
    rows: list[dict],
    trait_only: bool = False,
) -> dict:
    """`trait_only`: the judge scored the trait alone (`_vet`)."""
    by = {p: [r for r in rows if r["polarity"] == p] for p in POLARITIES}
    summary = {
        "trait": trait.name,
        "variant": variant,
        "settings": {**gen, **vet},
        "max_new_tokens": gen["max_new_tokens"],
        "counts": {
            "positive": len(by["positive"]),
            "negative": len(by["negative"]),
            "total": len(rows),
            "empty": sum(not r["response"] for r in rows),
        },
        "kept": {p: sum(r["kept"] for r in by[p]) for p in POLARITIES},
        "trait_mean": None,
        "coherence_mean": None,
    }
    if vet["vet"]:
        summary["unscored"] = {p: sum(r["trait"] is None for r in by[p]) for p in POLARITIES}
        summary["trait_mean"] = {p: _mean([r["trait"] for r in by[p]]) for p in POLARITIES}
        if any(r["coherence"] is not None for r in rows):
            summary["coherence_mean"] = {
                p: _mean([r["coherence"] for r in by[p]]) for p in POLARITIES
            }
        else:
            # A reader seeing null should know whether the judge failed.
            summary["coherence_note"] = (
                "not read: the judge scored the trait alone, the only score vetting keeps on"
                if trait_only
                else "the judge gave no completion a coherence score"
            )
    return summary


def _metrics(summary: dict, timing: dict) -> dict:
    """`timing`: this invocation's generation ({} when it generated nothing); kept out of
    the DVC-tracked summary, so regenerating the same text writes the same file."""
    out = {
        "completions": summary["counts"]["total"],
        "empty": summary["counts"]["empty"],
        "seconds": timing.get("seconds"),
        "tokens_per_s": timing.get("tokens_per_s"),
        "judge_refused": summary.get("judge_refused", 0),
    }
    for p in POLARITIES:
        out[f"kept_{p}"] = summary["kept"][p]
        out[f"trait_mean_{p}"] = (summary["trait_mean"] or {}).get(p)
        out[f"coherence_mean_{p}"] = (summary["coherence_mean"] or {}).get(p)
    return out


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def _precheck(params) -> None:
    """Every trait's folder and prompts, its pairing and its vetting judge's params, before
    the first trait's work: a bad later name must not cost the earlier ones' generation."""
    params.variant(params.generate.variant, "generate.variant")
    root = params.path(params.traits.root)
    for name in params.traits.names:
        trait = load_trait(root, name)
        _check_pairing(params.generate, trait)
        if params.generate.vet:
            from steerops.judges.factory import check_judge

            check_judge(params, trait)


def _check_pairing(cfg, trait: Trait) -> None:
    if cfg.vet and cfg.paired_filter and len(trait.positive) != len(trait.negative):
        raise SteeropsError(
            f"generate.paired_filter: trait {trait.name!r} has {len(trait.positive)} positive "
            f"but {len(trait.negative)} negative prompts; pairing needs equal counts"
        )
