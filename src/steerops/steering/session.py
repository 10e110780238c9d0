"""The model side of steering one trait: what every evaluation shares, loaded once.

A `SteeringSession` holds the steered model variant, the judge (with the trait's prompts),
the trait's steering questions and the vector sets. It turns a config's coefficient into
weights, generates steered rows through the per-row engine and judges them; it keeps no
results (that is the evaluator's cache) and logs nothing (that is `steering.runs`). The grid
and the search each load one session and evaluate every question set on it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from steerops import stats
from steerops.io import text_md5
from steerops.judges.base import n_unanswered
from steerops.models import unsteered
from steerops.models.chat_template import chat_template
from steerops.models.decode import StaticLoop
from steerops.models.decode_memory import FREE_SHARE, auto_rows
from steerops.models.generation import (
    encode_prompt,
    overridden_decoding,
    pad_id,
    render_prompts,
    stop_token_ids,
)
from steerops.models.loading import generation_config, load_model, model_fingerprint
from steerops.specs import Layers
from steerops.steering.configs import Config, ConfigResult, summarize
from steerops.steering.engine import SteeringTable, generate_steered
from steerops.steering.sources import VectorSources
from steerops.traits import load_trait


class SteeringSession:
    def __init__(self, params, trait: str, progress: bool = True):
        from steerops.judges import check_judge, make_judge

        cfg = params.steering
        self.params, self.trait, self.progress = params, trait, progress
        self.variant, self.vector_variant = cfg.variant, cfg.vector_variant
        params.variant(self.vector_variant)  # unknown names fail here, not after loading
        data = load_trait(
            params.path(params.traits.root), trait, need_prompts=False, need_questions=True
        )
        self.questions: list[str] = data.questions[: cfg.subset] if cfg.subset else data.questions
        check_judge(params, data)  # a bad judge fails before the model loads, not after
        self.loaded = load_model(params, self.variant)
        self.judge = make_judge(params, data, self.loaded)
        if self.judge_reads_steered_model() and params.judge.kind == "proxy":
            # its likelihood reading starts where generation's unsteered blocks end
            unsteered.keep(self.loaded.model, list(self.loaded.layout.layers))
        self.stops = stop_token_ids(self.loaded.model, self.loaded.tokenizer)
        self.sources = VectorSources(  # the pipeline's vectors (a scratch run's too) or --inputs'
            params.inputs,
            trait,
            self.vector_variant,
            self.loaded.layout.hidden_size,
            params.inputs_flag,
        )
        spec = params.variant(self.variant)
        self.model = {
            "variant": self.variant,
            "id": spec.id,
            "revision": spec.revision,
            "dtype": spec.dtype,
            "fingerprint": model_fingerprint(self.loaded.source, spec.revision),
        }
        template = chat_template(params, self.variant)  # one from params, not the folder's
        if template is not None:
            self.model["chat_template"] = text_md5(template)
        # steered decoding is greedy
        if overridden := overridden_decoding(generation_config(params, self.variant), False):
            self.model["plain_decoding_overrides"] = overridden

    def judge_beside_generation(self) -> bool:
        """Whether judging can run while the steered model generates without taking its
        compute: an endpoint or the exact toy judge, or a judge model on another device
        (on the same one the two would share cores or GPU memory for no gain)."""
        if self.judge_reads_steered_model():
            return False
        judge = self.params.judge
        if judge.kind in ("openai", "toy"):
            return True
        steered = self.params.variant(self.variant)
        own = self.params.variant(judge.variant or self.variant)
        if own.device_map or steered.device_map:
            return False
        return _place(own.device) != _place(steered.device)

    def judge_reads_steered_model(self) -> bool:
        """Whether the judge reads with the steered model object (a local judge of the
        steered variant): it must never run while steering hooks are on that model."""
        return getattr(self.judge, "model", None) is self.loaded.model

    def layers(self, spec: Layers, key: str = "layers") -> list[int]:
        """The layers `spec` (params key `key`) selects in the steered model."""
        return spec.resolve(self.loaded.layout.num_layers, key)

    def weights(self, config: Config) -> tuple[float, ...]:
        """Absolute weight on each unit vector of `config`, direction sign included; fails
        with one line when a vector (or its layer norm) is missing."""
        cfg = self.params.steering
        sign = stats.direction_sign(cfg.direction)
        out = []
        for ref in config.vectors:
            self.sources.vector(ref)
            scale = 1.0 if cfg.coefficient_unit == "absolute" else self.sources.layer_norm(ref)
            out.append(sign * float(config.coefficient) * scale)
        return tuple(out)

    def encode(self, questions: list[str]) -> list[list[int]]:
        tokenizer = self.loaded.tokenizer
        return [encode_prompt(tokenizer, t) for t in render_prompts(tokenizer, questions)]

    def generate_kwargs(self) -> dict[str, Any]:
        cfg = self.params.steering
        return {
            "pad_token_id": pad_id(self.loaded.tokenizer, self.stops),
            "stop_ids": self.stops,
            "max_new_tokens": cfg.max_new_tokens,
            "scope": cfg.scope,
            "max_batch_rows": self.batch_rows,
            "cache_implementation": cfg.cache_implementation,
            "loop": cfg.loop,
            # every call's cache has room for the longest question: one cache length, so one
            # set of kept states and graphs serves every question subset of the session
            "loop_options": StaticLoop(prompt_room=self.longest_prompt),
            "progress": self.progress,
        }

    @functools.cached_property
    def longest_prompt(self) -> int:
        """Tokens of the trait's longest steering question as the model reads it."""
        return max(len(p) for p in self.encode(self.questions))

    @functools.cached_property
    def batch_rows(self) -> int:
        """`steering.max_batch_rows`, with auto sized once, for the trait's longest question
        (every evaluation then runs the same slot counts, one compiled graph each, where
        a second sizing would see the first one's kept caches as used). A local judge on
        the steered model's device works while those caches are kept: it leaves half the
        share of free memory to the judge."""
        cfg = self.params.steering
        if cfg.max_batch_rows != "auto":
            return cfg.max_batch_rows
        share = FREE_SHARE if self.judge_beside_generation() else FREE_SHARE / 2
        rows, sized_from = auto_rows(
            self.loaded.model, self.longest_prompt, cfg.max_new_tokens, share
        )
        if sized_from is not None and self.progress:
            print(f"steer: {rows:,} rows a decode step (max_batch_rows auto: {sized_from})")
        return rows

    def generate(
        self,
        prompts: list[list[int]],
        configs: list[tuple[Config, tuple[float, ...]] | None],
        desc: str,
        rows: list[tuple[int, int]] | None = None,
    ) -> list[list[int]]:
        """New tokens for every config x prompt (config-major), or for the (config index,
        prompt index) pairs `rows`; a None config generates its prompts unsteered."""
        if rows is None:
            rows = [(k, q) for k in range(len(configs)) for q in range(len(prompts))]
        table = None
        if any(configs[k] is not None for k, _ in rows):
            table = SteeringTable(
                [
                    []
                    if (entry := configs[k]) is None
                    else [
                        (ref.layer, self.sources.vector(ref), w)
                        for ref, w in zip(entry[0].vectors, entry[1], strict=True)
                    ]
                    for k, _ in rows
                ]
            )
        return generate_steered(
            self.loaded.model,
            self.loaded.layout,
            [prompts[q] for _, q in rows],
            table,
            desc=desc,
            **self.generate_kwargs(),
        )

    def score(self, questions: list[str], generated: list[list[list[int]]]) -> list[ConfigResult]:
        """Decode and judge every config's responses (one list per config) in one judge call;
        results carry no config yet."""
        tokenizer = self.loaded.tokenizer
        texts = [
            [str(tokenizer.decode(ids, skip_special_tokens=True)).strip() for ids in per_config]
            for per_config in generated
        ]
        try:
            scores = self.judge.score(questions * len(texts), [t for ts in texts for t in ts])
        finally:
            kept = unsteered.kept(self.loaded.model)
            if kept is not None:
                kept.clear()  # read or not, these responses are done with
        n = len(questions)
        out = []
        for k, responses in enumerate(texts):
            part = scores[k * n : (k + 1) * n]
            summary = summarize(part)
            rows = [
                {"question": q, "response": r, "trait": t, "coherence": c}
                for q, r, (t, c) in zip(questions, responses, part, strict=True)
            ]
            out.append(
                ConfigResult(
                    None,
                    summary["trait_mean"],
                    summary["coherence_mean"],
                    summary["n"],
                    rows,
                    n_unscored=summary["n_unscored"],
                    n_refused=n_unanswered(self.judge, questions, responses),
                )
            )
        return out

    def say_judge_cost(self, tracker, progress: bool) -> None:
        """What the judge cost this run (an endpoint's prompts are paid for): printed, and
        logged on `tracker` as `judge_prompts_sent` / `judge_prompts_cached`."""
        from steerops.judges.cached import CachedJudge

        scorer = self.judge
        if not isinstance(scorer, CachedJudge) or not (scorer.calls or scorer.cache_hits):
            return
        if progress:
            print(
                f"judge: {scorer.calls} prompts sent to {scorer.model_name}, "
                f"{scorer.cache_hits} answered from its cache"
            )
        tracker.log_metrics(
            {"judge_prompts_sent": scorer.calls, "judge_prompts_cached": scorer.cache_hits}
        )

    def settings(self, questions: list[str]) -> dict[str, Any]:
        """Everything that changes a response or its score except the config itself."""
        cfg = self.params.steering
        return {
            **self._judge_settings(),
            "trait": self.trait,
            "model": self.model,
            "vector_variant": self.vector_variant,
            "questions_hash": questions_hash(questions),
            "n_questions": len(questions),
            "max_new_tokens": cfg.max_new_tokens,
            "judge": self.judge.id,
            "scope": cfg.scope,
            "direction": cfg.direction,
            "coefficient_unit": cfg.coefficient_unit,
        }

    def _judge_settings(self) -> dict[str, Any]:
        """What changes a score beside the judge's id, under keys present only when they
        apply (settings logged without them stay valid): the threshold of a judge that
        reads numbers (applied after its cache, so not in its id), and the dtype and own
        chat template of a local judge's variant other than the steered one (the steered
        variant's are in `model`)."""
        out: dict[str, Any] = {}
        mass = getattr(self.judge, "min_prob_mass", None)
        if mass is not None:
            out["judge_min_prob_mass"] = mass
        variant = self.params.judge.variant
        if self.params.judge.kind in ("hf", "proxy") and variant and variant != self.variant:
            template = chat_template(self.params, variant)
            out["judge_model"] = {
                "dtype": self.params.variant(variant).dtype,
                "chat_template": text_md5(template) if template is not None else None,
            }
        return out


def _place(device: str | None) -> torch.device:
    """A device spec as the device it names (`cuda` is `cuda:0`, unset is the CPU)."""
    place = torch.device(device or "cpu")
    return torch.device(place.type, 0) if place.type == "cuda" and place.index is None else place


def questions_hash(questions: list[str]) -> str:
    """The MD5 naming a question list: of the lines joined, which tells lists apart unless a
    question holds a line break (["a\nb", "c"] joins as ["a", "b\nc"] does), so such a
    list is hashed as JSON instead (the hashes of every other list, in logs, unchanged)."""
    if any("\n" in q for q in questions):
        return text_md5(json.dumps(questions))
    return text_md5("\n".join(questions))
