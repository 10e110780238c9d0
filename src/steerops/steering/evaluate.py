"""Score steering configs on one question set, generating only what no results log has.

`SteeringEvaluator(session, questions)` evaluates configs in the user's units on the
session's model: `check(configs)` fails early on a missing vector or layer norm,
`baseline()` is the unsteered result and `evaluate(configs)` generates every uncached config
x question through the per-row engine in as few `generate` calls as
`steering.max_batch_rows` allows, judges them in one call per chunk, and appends each result
to the `results.jsonl` of its vectors' steering directory (or of `results_dir`, as a search
keeps its own), so a re-run under the same settings serves it from there. The settings hash
covers everything that changes a response or its score except the config itself (see
`SteeringSession.settings`). Several evaluators (a search's and its held-out questions) share
one session and so one model load.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import text_md5
from steerops.steering.configs import Config, ConfigResult, VectorSource, delta
from steerops.steering.session import SteeringSession
from steerops.steering.store import (
    BASELINES_FILE,
    RESULTS_FILE,
    ResultsLog,
    baselines_file,
    config_dict,
    config_key,
    result_dict,
    results_file,
)

_CHUNK_SUB_BATCHES = 4  # configs per chunk fill about this many sub-batches


def settings_hash(settings: dict[str, Any]) -> str:
    return text_md5(json.dumps(settings, sort_keys=True))[:16]


class SteeringEvaluator:
    def __init__(
        self,
        session: SteeringSession,
        questions: list[str] | None = None,
        results_dir: str | Path | None = None,
    ):
        """`results_dir`: keep the results log (and baselines) there instead of in each
        vector source's steering directory (e.g. a search keeps its own)."""
        self.session = session
        self.questions = list(session.questions if questions is None else questions)
        if not self.questions:
            raise SteeropsError(f"trait {session.trait!r}: no steering questions to evaluate")
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.settings = session.settings(self.questions)
        self.settings_hash = settings_hash(self.settings)
        self._prompt_ids = session.encode(self.questions)
        self._baseline: ConfigResult | None = None

    # -- what the grid and the search call -------------------------------------------------

    def check(self, configs: list[Config]) -> None:
        """Fail with one line now, before any generation, if a config cannot be evaluated."""
        for config in configs:
            if not config.vectors:
                raise SteeropsError("a steering config needs at least one vector")
            self.session.weights(config)

    def vector_files(self, source: VectorSource) -> dict[str, str]:
        """The md5 of the vector files a config of `source` is evaluated with (what a logged
        result must match to stand for one evaluated now)."""
        return self.session.sources.file_hashes((source.at(0),))

    def baseline(self) -> ConfigResult:
        """The unsteered result, generated once per settings and then served from disk."""
        if self._baseline is not None:
            return self._baseline
        log = ResultsLog(self._baselines_path())
        entry = log.baseline(self.settings_hash)
        if entry is not None:
            r = entry["result"]
            self._baseline = ConfigResult(
                None,
                r["trait_mean"],
                r["coherence_mean"],
                r["n"],
                [],
                n_unscored=r.get("n_unscored", 0),
                cached=True,
            )
        else:
            ids = self.session.generate(self._prompt_ids, None, desc="steer: baseline")
            self._baseline = self.session.score(self.questions, [ids])[0]
            log.append([self._baseline_entry()])
        return self._baseline

    def evaluate(self, configs: list[Config]) -> list[ConfigResult]:
        """Results in `configs` order; uncached configs are generated together."""
        self.check(configs)
        base = self.baseline()
        weights = [self.session.weights(c) for c in configs]
        results: list[ConfigResult | None] = [None] * len(configs)
        todo: dict[str, list[int]] = {}  # config key -> positions (duplicates evaluated once)
        logs: dict[Path, ResultsLog] = {}
        for i, (config, w) in enumerate(zip(configs, weights, strict=True)):
            path = self._results_path(config)
            if path not in logs:
                logs[path] = ResultsLog(path)
            key = config_key(config, w)
            entry = logs[path].find(self.settings_hash, key, self._files(config))
            if entry is not None:
                results[i] = _cached_result(config, w, entry["result"], base)
            else:
                todo.setdefault(key, []).append(i)
        pending = [(configs[at[0]], weights[at[0]]) for at in todo.values()]
        per_chunk = max(
            1, _CHUNK_SUB_BATCHES * self.session.cfg.max_batch_rows // len(self.questions)
        )
        for start in range(0, len(pending), per_chunk):
            chunk = pending[start : start + per_chunk]
            for (config, w), result in zip(chunk, self._run_chunk(chunk, base), strict=True):
                for i in todo[config_key(config, w)]:
                    results[i] = result
        return results  # type: ignore[return-value]

    # -- inside ----------------------------------------------------------------------------

    def _files(self, config: Config) -> dict[str, str]:
        return self.session.sources.file_hashes(config.vectors)

    def _results_path(self, config: Config) -> Path:
        """The results log a config belongs to: its (first) vector's steering directory."""
        if self.results_dir is not None:
            return self.results_dir / RESULTS_FILE
        session = self.session
        return results_file(session.params.out, session.trait, session.variant, config.vectors[0])

    def _baselines_path(self) -> Path:
        if self.results_dir is not None:
            return self.results_dir / BASELINES_FILE
        session = self.session
        return baselines_file(session.params.out, session.trait, session.variant)

    def _baseline_entry(self) -> dict[str, Any]:
        base = self.baseline()
        return {
            "type": "baseline",
            "settings_hash": self.settings_hash,
            "settings": self.settings,
            "result": {
                "trait_mean": base.trait_mean,
                "coherence_mean": base.coherence_mean,
                "n": base.n,
                "n_unscored": base.n_unscored,
            },
        }

    def _run_chunk(
        self, chunk: list[tuple[Config, tuple[float, ...]]], base: ConfigResult
    ) -> list[ConfigResult]:
        started = time.perf_counter()
        ids = self.session.generate(self._prompt_ids, chunk, desc=f"steer: {len(chunk)} configs")
        seconds = time.perf_counter() - started
        n = len(self.questions)
        results = self.session.score(
            self.questions, [ids[k * n : (k + 1) * n] for k in range(len(chunk))]
        )
        by_file: dict[Path, list[dict]] = {}
        for (config, w), result in zip(chunk, results, strict=True):
            result.config, result.weights = config, w
            result.trait_delta = delta(result.trait_mean, base.trait_mean)
            by_file.setdefault(self._results_path(config), []).append(
                {
                    "type": "config",
                    "settings_hash": self.settings_hash,
                    "config": config_dict(config, w),
                    "vector_files": self._files(config),
                    "result": result_dict(result),
                    "timing": {"chunk_seconds": round(seconds, 3), "chunk_configs": len(chunk)},
                }
            )
        for path, entries in by_file.items():
            log = ResultsLog(path)
            if log.baseline(self.settings_hash) is None:
                entries = [self._baseline_entry(), *entries]
            log.append(entries)
        return results


def _cached_result(
    config: Config, weights: tuple[float, ...], r: dict[str, Any], base: ConfigResult
) -> ConfigResult:
    return ConfigResult(
        config,
        r["trait_mean"],
        r["coherence_mean"],
        r["n"],
        [],
        n_unscored=r.get("n_unscored", 0),
        trait_delta=delta(r["trait_mean"], base.trait_mean),
        cached=True,
        weights=weights,
    )
