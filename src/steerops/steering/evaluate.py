"""Score steering configs: steered generation of every config x question, judged, cached.

`SteeringEvaluator` loads the steered model variant and the judge once. `evaluate(configs)`
generates all uncached configs x questions through the per-row steering engine in as few
`generate` calls as `steering.max_batch_rows` allows, scores them in one judge call per
chunk, and appends each result to the `results.jsonl` of its vectors' steering directory,
so a re-run under the same settings serves it from there. The settings hash covers
everything that changes a response or its score except the config itself: the steered
model (id, revision, dtype, and a fingerprint of local weights), the vector variant, the
questions, max_new_tokens, the judge and its prompts, scope, direction and coefficient unit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.io import text_md5
from steerops.models.generation import encode_prompt, render_prompts, stop_token_ids
from steerops.models.loading import load_model, model_fingerprint
from steerops.paths import steering_dir
from steerops.steering.engine import SteeringTable, generate_steered
from steerops.steering.inputs import VectorSources
from steerops.steering.results import (
    RESULTS_FILE,
    ConfigResult,
    ConfigSpec,
    ResultsLog,
    VectorRef,
    config_dict,
    config_key,
    run_params,
    settings_hash,
    summarize,
)
from steerops.traits import load_trait

__all__ = ["ConfigResult", "ConfigSpec", "SteeringEvaluator", "VectorRef"]

BASELINES_FILE = "baselines.jsonl"
_CHUNK_SUB_BATCHES = 4  # configs per chunk fill about this many sub-batches


class SteeringEvaluator:
    def __init__(self, params, trait: str, questions: list[str] | None = None,
                 variant: str | None = None, vector_variant: str | None = None,
                 tracker=None, progress: bool = True, results_dir: str | Path | None = None):
        """`results_dir`: keep the results log (and baselines) there instead of in each
        vector source's steering directory (e.g. a search keeps its own)."""
        from steerops.judges import make_judge

        cfg = params.steering
        self.params, self.trait, self.tracker, self.progress = params, trait, tracker, progress
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.variant = variant or cfg.variant
        self.vector_variant = vector_variant or cfg.vector_variant
        params.variant(self.vector_variant)  # unknown names fail here, not after loading
        data = load_trait(params.path(params.traits.root), trait, need_prompts=False,
                          need_questions=questions is None)
        if questions is None:
            questions = data.questions[:cfg.subset] if cfg.subset else data.questions
        if not questions:
            raise SteeropsError(f"trait {trait!r}: no steering questions to evaluate")
        self.questions = list(questions)
        self.loaded = load_model(params, self.variant)
        self.judge = make_judge(params, data)
        tokenizer = self.loaded.tokenizer
        self._prompt_ids = [encode_prompt(tokenizer, t)
                            for t in render_prompts(tokenizer, self.questions)]
        self._stops = stop_token_ids(self.loaded.model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else self._stops[0]
        self.sources = VectorSources(params, trait, self.vector_variant,
                                     self.loaded.layout.hidden_size)
        self._baseline: ConfigResult | None = None
        spec = params.variant(self.variant)
        self.settings: dict[str, Any] = {
            "trait": trait,
            "model": {"variant": self.variant, "id": spec.id, "revision": spec.revision,
                      "dtype": spec.dtype, "fingerprint": model_fingerprint(self.loaded.source)},
            "vector_variant": self.vector_variant,
            "questions_hash": text_md5("\n".join(self.questions)),
            "n_questions": len(self.questions),
            "max_new_tokens": cfg.max_new_tokens,
            "judge": self.judge.id,
            "scope": cfg.scope,
            "direction": cfg.direction,
            "coefficient_unit": cfg.coefficient_unit,
        }
        self.settings_hash: str = settings_hash(self.settings)

    # -- vectors and coefficients ------------------------------------------------------------

    def layer_norm(self, method: str, position: str, component: str, layer: int) -> float:
        """The layer's mean activation norm recorded with the vectors."""
        return self.sources.layer_norm(method, position, component, layer)

    def weight_for(self, method: str, position: str, component: str, layer: int,
                   coefficient: float) -> float:
        """Absolute weight on the unit vector for a coefficient, direction sign included."""
        cfg = self.params.steering
        scale = 1.0 if cfg.coefficient_unit == "absolute" else \
            self.layer_norm(method, position, component, layer)
        sign = -1.0 if cfg.direction == "negative" else 1.0
        return sign * float(coefficient) * scale

    def _vector(self, ref: VectorRef) -> torch.Tensor:
        return self.sources.vector(ref.method, ref.position, ref.component, ref.layer)

    def _files(self, config: ConfigSpec) -> dict[str, str]:
        return self.sources.file_hashes(config.vectors)

    # -- storage -----------------------------------------------------------------------------

    def results_path(self, config: ConfigSpec) -> Path:
        """The results log a config belongs to: its (first) vector's steering directory."""
        if self.results_dir is not None:
            return self.results_dir / RESULTS_FILE
        ref = config.vectors[0]
        return steering_dir(self.params.out, self.trait, self.variant, ref.position,
                            ref.component, ref.method) / RESULTS_FILE

    def _baselines_path(self) -> Path:
        if self.results_dir is not None:
            return self.results_dir / BASELINES_FILE
        return self.params.out / "steering" / self.trait / self.variant / BASELINES_FILE

    def baseline_entry(self) -> dict[str, Any]:
        base = self.baseline()
        return {"type": "baseline", "settings_hash": self.settings_hash,
                "settings": self.settings,
                "result": {"trait_mean": base.trait_mean, "coherence_mean": base.coherence_mean,
                           "n": base.n, "n_unscored": base.n_unscored}}

    # -- evaluation --------------------------------------------------------------------------

    def baseline(self) -> ConfigResult:
        """The unsteered result, generated once per settings and then served from disk."""
        if self._baseline is not None:
            return self._baseline
        log = ResultsLog(self._baselines_path())
        entry = log.baseline(self.settings_hash)
        if entry is not None:
            r = entry["result"]
            self._baseline = ConfigResult(None, r["trait_mean"], r["coherence_mean"], r["n"], [],
                                          n_unscored=r.get("n_unscored", 0), cached=True)
        else:
            ids = generate_steered(self.loaded.model, self.loaded.layout, self._prompt_ids, None,
                                   desc="steer: baseline", **self._generate_kwargs())
            self._baseline = self._score([None], [ids])[0]
            log.append([self.baseline_entry()])
        return self._baseline

    def evaluate(self, configs: list[ConfigSpec]) -> list[ConfigResult]:
        """Results in `configs` order; uncached configs are generated together."""
        base = self.baseline()
        results: list[ConfigResult | None] = [None] * len(configs)
        todo: dict[str, list[int]] = {}  # config key -> positions (duplicates evaluated once)
        logs: dict[Path, ResultsLog] = {}
        for i, config in enumerate(configs):
            if not config.vectors:
                raise SteeropsError("a steering config needs at least one vector")
            for ref in config.vectors:
                self._vector(ref)
            path = self.results_path(config)
            if path not in logs:
                logs[path] = ResultsLog(path)
            entry = logs[path].find(self.settings_hash, config, self._files(config))
            if entry is not None:
                results[i] = _cached_result(config, entry["result"], base)
            else:
                todo.setdefault(config_key(config), []).append(i)
        pending = [configs[positions[0]] for positions in todo.values()]
        per_chunk = max(1, _CHUNK_SUB_BATCHES * self.params.steering.max_batch_rows
                        // len(self.questions))
        for start in range(0, len(pending), per_chunk):
            chunk = pending[start:start + per_chunk]
            for config, result in zip(chunk, self._run_chunk(chunk, base), strict=True):
                for i in todo[config_key(config)]:
                    results[i] = result
        if self.tracker is not None:
            self.log_runs(self.tracker, results)
        return results  # type: ignore[return-value]

    def _run_chunk(self, chunk: list[ConfigSpec], base: ConfigResult) -> list[ConfigResult]:
        rows = [[(r.layer, self._vector(r), r.weight) for r in config.vectors]
                for config in chunk for _ in self.questions]
        prompts = [p for _ in chunk for p in self._prompt_ids]
        started = time.perf_counter()
        ids = generate_steered(self.loaded.model, self.loaded.layout, prompts, SteeringTable(rows),
                               desc=f"steer: {len(chunk)} configs", **self._generate_kwargs())
        seconds = time.perf_counter() - started
        n = len(self.questions)
        results = self._score(chunk, [ids[k * n:(k + 1) * n] for k in range(len(chunk))])
        by_file: dict[Path, list[dict]] = {}
        for config, result in zip(chunk, results, strict=True):
            result.trait_delta = _delta(result.trait_mean, base.trait_mean)
            by_file.setdefault(self.results_path(config), []).append({
                "type": "config", "settings_hash": self.settings_hash,
                "config": config_dict(config), "vector_files": self._files(config),
                "result": {"trait_mean": result.trait_mean,
                           "coherence_mean": result.coherence_mean,
                           "trait_delta": result.trait_delta, "n": result.n,
                           "n_unscored": result.n_unscored},
                "timing": {"chunk_seconds": round(seconds, 3), "chunk_configs": len(chunk)},
            })
        for path, entries in by_file.items():
            log = ResultsLog(path)
            if log.baseline(self.settings_hash) is None:
                entries = [self.baseline_entry(), *entries]
            log.append(entries)
        return results

    def _generate_kwargs(self) -> dict[str, Any]:
        cfg = self.params.steering
        return {"pad_token_id": self._pad, "stop_ids": self._stops,
                "max_new_tokens": cfg.max_new_tokens, "scope": cfg.scope,
                "max_batch_rows": cfg.max_batch_rows,
                "cache_implementation": cfg.cache_implementation, "progress": self.progress}

    def _score(self, configs: list[ConfigSpec | None],
               generated: list[list[list[int]]]) -> list[ConfigResult]:
        """Decode and judge every config's responses in one judge call."""
        tokenizer = self.loaded.tokenizer
        texts = [[tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in per_config]
                 for per_config in generated]
        flat = [t for per_config in texts for t in per_config]
        scores = self.judge.score(self.questions * len(configs), flat)
        n = len(self.questions)
        out = []
        for k, config in enumerate(configs):
            part = scores[k * n:(k + 1) * n]
            summary = summarize(part)
            responses = [{"question": q, "response": r, "trait": t, "coherence": c}
                         for q, r, (t, c) in zip(self.questions, texts[k], part, strict=True)]
            out.append(ConfigResult(config, summary["trait_mean"], summary["coherence_mean"],
                                    summary["n"], responses, n_unscored=summary["n_unscored"]))
        return out

    def log_runs(self, tracker, results: list[ConfigResult]) -> None:
        """A nested MLflow run per config under `tracker`'s run, so the UI can compare
        configs side by side."""
        labels = {"model": self.settings["model"]["id"], "variant": self.variant,
                  "vector_variant": self.vector_variant, "trait": self.trait,
                  "judge": self.judge.id, "scope": self.params.steering.scope,
                  "settings_hash": self.settings_hash}
        for result in results:
            params = {**labels, **run_params(result.config), "cached": result.cached}
            name = f"{params['method']} L{params['layer']} c{result.config.coefficient}"
            with tracker.child(name, params) as child:
                child.log_metrics({"trait_mean": result.trait_mean,
                                   "coherence_mean": result.coherence_mean,
                                   "trait_delta": result.trait_delta})


def _delta(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _cached_result(config: ConfigSpec, r: dict[str, Any], base: ConfigResult) -> ConfigResult:
    return ConfigResult(config, r["trait_mean"], r["coherence_mean"], r["n"], [],
                        n_unscored=r.get("n_unscored", 0),
                        trait_delta=_delta(r["trait_mean"], base.trait_mean), cached=True)
