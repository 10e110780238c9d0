"""Score steering configs on one question set, generating only what no results log has.

`SteeringEvaluator(session, questions)` evaluates configs in the user's units on the
session's model: `check(configs)` fails early on a missing vector or layer norm,
`baseline()` is the unsteered result, `served(configs)` says which configs a log already
has, and `evaluate(configs)` generates every uncached config
x question through the per-row engine in as few `generate` calls as
`steering.max_batch_rows` allows, judges them in one call per chunk (while the next chunk
generates), and appends each result,
with its per-question scores, to the `results.jsonl` of its vectors' steering directory (or of
`results_dir`, as a search keeps its own). Results carry their scores in question order.

A result is served instead of generated when a log holds the same config under the same
scope (the settings hash's inputs but for the questions; see `SteeringSession.settings`)
with scores on every asked question: the evaluator's own log, the config's steering cell
(where the grid logs; in a scratch run, `--out`, the pipeline's cell too) and any
`read_also` log. So a search on half of the questions reuses
the grid's scores on that half. Configs whose vectors are identical tensors (e.g. a cleaned
and a precleaned vector when the dims coincide) are generated once and logged under each
name. Several evaluators (a search's and its held-out questions) share one session and so
one model load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import text_md5
from steerops.models.generation import GenerationInterrupted
from steerops.steering.configs import (
    Config,
    ConfigResult,
    VectorRef,
    VectorSource,
    summarize,
    trait_delta,
)
from steerops.steering.in_flight import IN_FLIGHT_FILE, RowsInFlight, row_key
from steerops.steering.session import SteeringSession
from steerops.steering.store import (
    BASELINES_FILE,
    RESULTS_FILE,
    ResultsLog,
    Score,
    baselines_file,
    config_dict,
    config_key,
    refused,
    result_dict,
    results_file,
    scope_of,
    servable,
    unsteered_hash,
)

_CHUNK_SUB_BATCHES = 4  # configs per chunk fill about this many sub-batches
Chunked = tuple[Config, tuple[float, ...]] | None  # a config to generate, or the baseline


def settings_hash(settings: dict[str, Any]) -> str:
    return text_md5(json.dumps(settings, sort_keys=True))[:16]


class SteeringEvaluator:
    def __init__(
        self,
        session: SteeringSession,
        questions: list[str] | None = None,
        results_dir: str | Path | None = None,
        read_also: tuple[Path, ...] = (),
        overlap: bool | None = None,
        hold_rows: bool = False,
    ):
        """`results_dir`: keep the results log (and baselines) there instead of in each
        vector source's steering directory (e.g. a search keeps its own); `read_also`: more
        results logs to serve scores from; `overlap`: judge one chunk while the next one
        generates (False: one after the other, the reference; None: when the judge does not
        share the steered model's device, `session.judge_beside_generation`); `hold_rows`:
        logged rows stay in flight until `release_rows` (a caller that writes response files
        after the evaluation: a run stopped before it wrote them is served the rows, not
        generating them again)."""
        self.overlap = session.judge_beside_generation() if overlap is None else overlap
        if self.overlap and session.judge_reads_steered_model():
            raise SteeropsError(
                "the judge reads with the steered model itself: it cannot judge one chunk "
                "while the next generates (the steering hooks would steer it)"
            )
        self.session = session
        self.direction = session.params.steering.direction  # the sign of every delta
        self.questions = list(session.questions if questions is None else questions)
        if not self.questions:
            raise SteeropsError(f"trait {session.trait!r}: no steering questions to evaluate")
        self.results_dir = Path(results_dir) if results_dir is not None else None
        cell = baselines_file(session.params.out, session.trait, session.variant).parent
        folder = self.results_dir or cell
        self.in_flight = RowsInFlight(folder / IN_FLIGHT_FILE, session.params.root)
        self._held: list[str] | None = [] if hold_rows else None  # keys `release_rows` drops
        self.read_also = tuple(Path(p) for p in read_also)
        self.settings = session.settings(self.questions)
        self.settings_hash = settings_hash(self.settings)
        self.scope = scope_of(self.settings)
        self.baseline_scope = scope_of(self.settings, unsteered=True)
        self.unsteered_hash = unsteered_hash(self.settings)
        self._prompt_ids = session.encode(self.questions)
        self._baseline: ConfigResult | None = None
        self._baseline_texts: ConfigResult | None = None  # a served baseline, regenerated
        self._hashes: dict[VectorRef, str] = {}

    def run_params(self) -> dict[str, Any]:
        """The settings every config of this evaluator shares, as MLflow params: what the
        grid's and the search's runs are compared on side by side."""
        session, cfg = self.session, self.session.params.steering
        return {
            "trait": session.trait,
            "model_id": session.model["id"],
            "variant": session.variant,
            "vector_variant": session.vector_variant,
            "judge": session.judge.id,
            **judge_params(session.params.judge, self.settings),
            "scope": cfg.scope,
            "direction": cfg.direction,
            "coefficient_unit": cfg.coefficient_unit,
            "max_new_tokens": cfg.max_new_tokens,
            "n_questions": len(self.questions),
            "settings_hash": self.settings_hash,
        }

    # -- what the grid and the search call -------------------------------------------------

    def check(self, configs: list[Config]) -> None:
        """Fail with one line now, before any generation, if a config cannot be evaluated."""
        for config in configs:
            if not config.vectors:
                raise SteeropsError("a steering config needs at least one vector")
            self.session.weights(config)

    def all_logged(self, configs: list[Config]) -> bool:
        """Whether evaluating `configs` would generate and log nothing: the baseline and
        every config are in a log under these very settings."""
        base = self._logged_baseline()
        return base is not None and base.logged_here and all(self._where_logged(configs))

    def vector_files(self, source: VectorSource) -> dict[str, str]:
        """The md5 of the vector files a config of `source` is evaluated with (what a logged
        result must match to stand for one evaluated now)."""
        return self.session.sources.file_hashes((source.at(0),))

    def units_now(self, log: ResultsLog) -> dict[str, float]:
        """Each logged vector's weight per unit coefficient now (`ResultsLog.units_now`),
        from the session's vectors."""

        def layer_norm(ref: VectorRef) -> float | None:
            try:
                return self.session.sources.layer_norm(ref)
            except SteeropsError:  # gone, or no such layer: the md5 check leaves them out
                return None

        absolute = self.session.params.steering.coefficient_unit == "absolute"
        return log.units_now(self.settings_hash, absolute, layer_norm)

    def vector_hash(self, ref: VectorRef) -> str:
        """The md5 of one vector's values: equal for identical tensors under any name."""
        if ref not in self._hashes:
            values = self.session.sources.vector(ref).detach().float().cpu().contiguous()
            self._hashes[ref] = hashlib.md5(values.numpy().tobytes()).hexdigest()[:16]
        return self._hashes[ref]

    def baseline(self) -> ConfigResult:
        """The unsteered result, generated once per scope and questions, then served."""
        found = self._logged_baseline()
        if found is not None:
            return found
        ids, _, keys = self._generate_chunk([None], "steer: baseline")
        self._set_baseline(self.session.score(self.questions, [ids])[0])
        self._done_with(keys)
        return self._baseline  # type: ignore[return-value]

    def served(self, configs: list[Config]) -> list[bool]:
        """Whether a log already has each config, or it steers nothing (its rows are the
        baseline's), so evaluating it generates nothing."""
        return [
            here is not None or self.unsteered(config)
            for config, here in zip(configs, self._where_logged(configs), strict=True)
        ]

    def unsteered(self, config: Config) -> bool:
        """Whether `config` steers nothing (coefficient 0): its rows are the baseline's."""
        return steers_nothing(self.session.weights(config))

    def evaluate(self, configs: list[Config]) -> list[ConfigResult]:
        """Results in `configs` order; uncached configs are generated together, configs with
        identical vectors and weights once. A baseline no log has is generated and judged
        with the first chunk when no config is served (its rows fill the same batches and
        share the blocks below the steering), else first, on its own."""
        self.check(configs)
        weights = [self.session.weights(c) for c in configs]
        results: list[ConfigResult | None] = [None] * len(configs)
        todo: dict[str, list[int]] = {}  # content key -> positions (evaluated once)
        logs: dict[Path, ResultsLog] = {}
        served: dict[int, tuple[list[Score], bool]] = {}
        unsteered: list[int] = []
        for i, (config, w) in enumerate(zip(configs, weights, strict=True)):
            found = self._logged(config, w, logs)
            if found is not None:
                served[i] = found
            elif steers_nothing(w):  # the baseline's rows
                unsteered.append(i)
            else:
                todo.setdefault(self._content_key(config, w), []).append(i)
        base = self._logged_baseline()
        if base is None and (served or unsteered or not todo):
            base = self.baseline()
        copies: dict[str, tuple[Config, tuple[float, ...], ConfigResult]] = {}
        for i in unsteered:
            assert base is not None  # known or generated just above
            result = results[i] = _from_scores(
                configs[i], weights[i], base.scores, base, self.direction
            )
            # a refusal in the baseline is one here too: the entry is not served, and the
            # next run copies the baseline judged again
            result.n_refused = base.n_refused
            result.logged_here = False
            copies[config_key(configs[i], weights[i])] = (configs[i], weights[i], result)
        for i, (scores, here) in served.items():
            result = results[i] = _from_scores(configs[i], weights[i], scores, base, self.direction)
            result.logged_here = here
            if not here:  # served from other settings or another log: log it here too
                copies[config_key(configs[i], weights[i])] = (configs[i], weights[i], result)
        self._log(list(copies.values()))
        pending: list[Chunked] = [None] if base is None else []
        pending += [(configs[at[0]], weights[at[0]]) for at in todo.values()]
        rows = self.session.batch_rows
        per_chunk = max(1, _CHUNK_SUB_BATCHES * rows // len(self.questions))

        def judge_and_log(chunk, ids, seconds: float, keys: list[str]) -> None:
            generated = self._score_chunk(chunk, ids)
            done: dict[str, tuple[Config, tuple[float, ...], ConfigResult]] = {}
            chunk_configs = [entry for entry in chunk if entry is not None]
            for (config, w), result in zip(chunk_configs, generated, strict=True):
                for i in todo[self._content_key(config, w)]:
                    key = config_key(configs[i], weights[i])
                    if key not in done:  # an alias: the same rows under another name
                        twin = dataclasses.replace(result, config=configs[i], weights=weights[i])
                        done[key] = (configs[i], weights[i], twin)
                    results[i] = done[key][2]
            self._log(list(done.values()), seconds)
            self._done_with(keys)  # logged: no longer in flight

        # One chunk is judged and logged while the next one generates (the judge is its own
        # model or an endpoint, never the steered model); one at a time, in order, so the
        # log grows as without the overlap. An interrupt waits for the chunk being judged,
        # which is then logged, unless the judge can stop (an endpoint: its queued requests
        # would take minutes); its answers so far are cached, and the rows of every chunk
        # not logged are in flight on disk, so a rerun judges the rest.
        with ThreadPoolExecutor(1, thread_name_prefix="steer-judge") as judging:
            judged: Future | None = None
            try:
                for start in range(0, len(pending), per_chunk):
                    chunk = pending[start : start + per_chunk]
                    if judged is not None and judged.done():
                        judged.result()  # a judge that already failed stops before generating
                    ids, seconds, keys = self._generate_chunk(chunk)
                    if judged is not None:
                        judged.result()  # the previous chunk's errors surface here
                    if self.overlap:
                        judged = judging.submit(judge_and_log, chunk, ids, seconds, keys)
                    else:
                        judge_and_log(chunk, ids, seconds, keys)
                if judged is not None:
                    judged.result()
            except KeyboardInterrupt:
                self._stop_judging(judged)
                raise
        if self.in_flight.path.exists():  # rows logged just before an interrupt: served now
            self._done_with(self._row_keys([None, *((configs[i], weights[i]) for i in served)]))
        self._refresh_baselines(configs)
        return results  # type: ignore[return-value]

    def _done_with(self, keys: list[str]) -> None:
        """Rows logged: out of flight now, or at `release_rows` when they are held."""
        if self._held is None:
            self.in_flight.discard(keys)
        else:
            self._held.extend(keys)

    def release_rows(self) -> None:
        """Drop the held rows (`hold_rows`): the caller has written what it needed them for."""
        if self._held:
            self.in_flight.discard(self._held)
            self._held = []

    def _stop_judging(self, judged: Future | None) -> None:
        """On Ctrl-C, stop a judge still scoring a chunk beside generation if it can stop;
        otherwise say what the exit waits for."""
        if judged is None or judged.done():
            return
        interrupt = getattr(self.session.judge, "interrupt", None)
        said = "waiting for the judge to finish the chunk it scores"
        if interrupt is not None:
            interrupt()
            said = "the judge stops (its answers so far are cached)"
        print(f"steer: interrupted; {said}", file=sys.stderr)

    def _refresh_baselines(self, configs: list[Config]) -> None:
        """A cell log whose baseline entry holds answers the endpoint refused to judge gets
        the baseline judged since: its configs' deltas are paired with the latest one."""
        if self._baseline is None or self._baseline.n_refused:
            return
        for path in dict.fromkeys(self._results_path(c) for c in configs):
            log = ResultsLog(path)
            logged = log.baseline(self.settings_hash)
            if logged is not None and not servable(logged):
                log.append([self._baseline_entry()])

    def responses(self, results: list[ConfigResult]) -> list[ConfigResult]:
        """`results` served from a log carry no responses: generate them again (greedy, so
        the same text in float32; nothing is logged) for the files an interrupted run never
        wrote."""
        self.baseline()
        chunk: list[Chunked] = [(r.config, r.weights) for r in results if r.config is not None]
        if self.session.progress and chunk:
            print(
                f"steer: generating again the responses of {len(chunk)} served config"
                f"{'s' if len(chunk) != 1 else ''} for their files (the table keeps the "
                "logged scores)"
            )
        if not chunk:
            return []
        ids, _, keys = self._generate_chunk(chunk)
        results = self._score_chunk(chunk, ids)
        self.in_flight.discard(keys)  # scored for the caller's files; nothing is logged
        return results

    def _logged_baseline(self) -> ConfigResult | None:
        """The baseline already known: this evaluator's, or one a log holds."""
        if self._baseline is not None:
            return self._baseline
        paths = self._baseline_paths()
        for path in paths:
            log = ResultsLog(path)
            found = log.baseline_scores(self.baseline_scope, self.questions)
            if found is not None:
                logged_as, scores = found
                self._baseline = _from_scores(None, (), scores, None, self.direction)
                # logged under these settings (by a run that may have died before writing
                # its response files), not served from other settings' questions
                here = log.baseline(self.settings_hash) is not None
                # a scratch run keeps its own record of the baseline it was served; so does
                # a run whose steering-only settings (scope, unit...) differ from the log's
                # on the same questions: no steered row is in a baseline
                scratch = path == self._pipeline_baselines() and path != paths[0]
                restyled = path == paths[0] and log.questions(logged_as) == self.questions
                if scratch or (restyled and not here):
                    ResultsLog(paths[0]).append([self._baseline_entry()])
                    here = True
                self._baseline.logged_here = here
                return self._baseline
        return None

    def _pipeline_baselines(self) -> Path | None:
        """The pipeline's baselines file, when this is a scratch run (`--out`)."""
        params = self.session.params
        if params.out == params.inputs:
            return None
        return baselines_file(params.inputs, self.session.trait, self.session.variant)

    def _set_baseline(self, generated: ConfigResult) -> None:
        """Keep and log a freshly generated and judged baseline."""
        generated.scores = _scores(generated)
        generated.logged_here = True  # logged under these settings just below
        self._baseline = generated
        ResultsLog(self._baseline_paths()[0]).append([self._baseline_entry()])

    def baseline_responses(self) -> ConfigResult:
        """The baseline with its responses (generated again when it was served, once for
        all the cells that write them)."""
        base = self.baseline()
        if base.responses:
            return base
        if self._baseline_texts is None:
            ids, _, keys = self._generate_chunk([None], "steer: baseline responses")
            fresh = self.session.score(self.questions, [ids])[0]
            self.in_flight.discard(keys)
            fresh.scores = _scores(fresh)
            self._baseline_texts = fresh
        return self._baseline_texts

    # -- inside ----------------------------------------------------------------------------

    def _files(self, config: Config) -> dict[str, str]:
        return self.session.sources.file_hashes(config.vectors)

    def _content_key(self, config: Config, weights: tuple[float, ...]) -> str:
        """What the generated rows depend on: each vector's values, layer and weight."""
        return json.dumps(
            [
                [ref.layer, self.vector_hash(ref), float(w)]
                for ref, w in zip(config.vectors, weights, strict=True)
            ]
        )

    def _results_path(self, config: Config) -> Path:
        """The results log a config belongs to: its (first) vector's steering directory."""
        if self.results_dir is not None:
            return self.results_dir / RESULTS_FILE
        return self._cell_log(config)

    def _cell_log(self, config: Config, out: Path | None = None) -> Path:
        """The config's steering cell log under `out` (default: where this run writes)."""
        session = self.session
        out = session.params.out if out is None else out
        return results_file(out, session.trait, session.variant, config.vectors[0])

    def _where_logged(self, configs: list[Config]) -> Iterator[bool | None]:
        """For each config in turn (lazily, so a caller may stop at the first): None when
        no log has it, else whether its own log has it under these exact settings."""
        logs: dict[Path, ResultsLog] = {}
        for config in configs:
            found = self._logged(config, self.session.weights(config), logs)
            yield None if found is None else found[1]

    def _logged(
        self, config: Config, w: tuple[float, ...], logs: dict[Path, ResultsLog]
    ) -> tuple[list[Score], bool] | None:
        """(scores on these questions from the first log that has the config, whether that
        is its own log under these exact settings), or None."""
        key, files = config_key(config, w), self._files(config)
        own = self._results_path(config)
        cells = [self._cell_log(config), self._cell_log(config, self.session.params.inputs)]
        for path in dict.fromkeys([own, *cells, *self.read_also]):
            if path not in logs:
                logs[path] = ResultsLog(path)
            found = logs[path].config_match(self.scope, self.questions, key, files)
            if found is not None:
                return found[1], path == own and found[0] == self.settings_hash
        return None

    def _baseline_paths(self) -> list[Path]:
        """Where baselines are logged (first) and read from."""
        session = self.session
        shared = [
            baselines_file(out, session.trait, session.variant)
            for out in dict.fromkeys([session.params.out, session.params.inputs])
        ]
        if self.results_dir is None:
            return [*shared, *self.read_also]
        return [self.results_dir / BASELINES_FILE, *shared, *self.read_also]

    def _baseline_entry(self) -> dict[str, Any]:
        base = self.baseline()
        return {
            "type": "baseline",
            "settings_hash": self.settings_hash,
            "settings": self.settings,
            "questions": self.questions,
            "scores": [list(s) for s in base.scores],
            "result": {
                "trait_mean": base.trait_mean,
                "coherence_mean": base.coherence_mean,
                "n": base.n,
                "n_unscored": base.n_unscored,
                **refused(base),
            },
        }

    def _generate_chunk(
        self, chunk: list[Chunked], desc: str | None = None
    ) -> tuple[list[list[int]], float, list[str]]:
        """Every config (None: the baseline) x question of `chunk` generated, but rows in
        flight from an interrupted run; the seconds it took; the rows' keys, in flight until
        the caller has logged or written them (`in_flight`)."""
        started = time.perf_counter()
        prompts = self._prompt_ids
        rows = [(k, q) for k in range(len(chunk)) for q in range(len(prompts))]
        keys = self._row_keys(chunk)
        saved = self.in_flight.load()
        todo = [r for r, key in enumerate(keys) if key not in saved]
        if desc is None:
            configs = sum(entry is not None for entry in chunk)
            desc = f"steer: {configs} configs" + (" and the baseline" if None in chunk else "")
        if len(todo) < len(rows) and self.session.progress:
            print(f"steer: {len(rows) - len(todo)} rows kept from an interrupted run")
        try:
            new = (
                self.session.generate(prompts, chunk, desc, [rows[r] for r in todo]) if todo else []
            )
        except GenerationInterrupted as stop:
            self.in_flight.keep({keys[todo[i]]: ids for i, ids in stop.finished.items()})
            raise
        fresh = dict(zip(todo, new, strict=True))
        self.in_flight.keep({keys[r]: tokens for r, tokens in fresh.items()})
        ids = [fresh[r] if r in fresh else saved[key] for r, key in enumerate(keys)]
        return ids, time.perf_counter() - started, keys

    def _row_keys(self, chunk: list[Chunked]) -> list[str]:
        """The in-flight keys of every config (None: the baseline) x question of `chunk`."""
        keys = []
        for entry in chunk:
            content = "baseline" if entry is None else self._content_key(*entry)
            keys += [row_key(self.settings_hash, content, p) for p in self._prompt_ids]
        return keys

    def _score_chunk(self, chunk: list[Chunked], ids: list[list[int]]) -> list[ConfigResult]:
        """The chunk's configs judged, with their deltas to the baseline; a baseline in the
        chunk (judged in the same call) is kept and logged first."""
        n = len(self.questions)
        results = self.session.score(
            self.questions, [ids[k * n : (k + 1) * n] for k in range(len(chunk))]
        )
        if None in chunk:
            self._set_baseline(results.pop(chunk.index(None)))
        base = self.baseline()
        configs = [entry for entry in chunk if entry is not None]
        for (config, w), result in zip(configs, results, strict=True):
            result.config, result.weights = config, w
            result.scores = _scores(result)
            result.trait_delta = trait_delta(result.scores, base, self.direction)
        return results

    def _unit(self, config: Config) -> str:
        """The coefficient's unit as logged: absolute, or norm with what the norm is."""
        if self.session.params.steering.coefficient_unit != "norm":
            return "absolute"
        kinds = dict.fromkeys(self.session.sources.norm_unit(ref) for ref in config.vectors)
        return "norm:" + "+".join(kinds)

    def _log(
        self,
        done: list[tuple[Config, tuple[float, ...], ConfigResult]],
        seconds: float | None = None,
    ) -> None:
        """Append results to their logs (with the baseline entry their scores' question order
        refers to, the first time); generated ones carry their chunk's timing."""
        by_file: dict[Path, list[dict]] = {}
        for config, w, result in done:
            entry = {
                "type": "config",
                "settings_hash": self.settings_hash,
                "config": config_dict(config, w),
                "vector_files": self._files(config),
                "vector_hashes": [self.vector_hash(ref) for ref in config.vectors],
                "coefficient_unit": self._unit(config),
                "scores": [list(s) for s in result.scores],
                "result": result_dict(result),
            }
            if not result.cached and seconds is not None:
                entry["timing"] = {
                    "chunk_seconds": round(seconds, 3),
                    "chunk_configs": len(done),
                }
            by_file.setdefault(self._results_path(config), []).append(entry)
        for path, entries in by_file.items():
            log = ResultsLog(path)
            if log.baseline(self.settings_hash) is None:  # one judged in part: see evaluate
                entries = [self._baseline_entry(), *entries]
            log.append(entries)


def steers_nothing(weights: tuple[float, ...]) -> bool:
    """Every weight 0 (a coefficient of 0): the unsteered model, whose rows are the
    baseline's."""
    return not any(weights)


def _scores(result: ConfigResult) -> list[Score]:
    return [(r["trait"], r["coherence"]) for r in result.responses]


def _from_scores(
    config: Config | None,
    weights: tuple[float, ...],
    scores: list[Score],
    base: ConfigResult | None,
    direction: str,
) -> ConfigResult:
    """A result served from a log: its means recomputed from the scores on these questions."""
    summary = summarize(scores)
    return ConfigResult(
        config,
        summary["trait_mean"],
        summary["coherence_mean"],
        summary["n"],
        [],
        n_unscored=summary["n_unscored"],
        trait_delta=None if base is None else trait_delta(scores, base, direction),
        cached=True,
        weights=weights,
        scores=scores,
    )


def judge_params(judge, settings: dict[str, Any]) -> dict[str, Any]:
    """What the judge's id (hashes) does not spell out, as MLflow params: its kind, an
    endpoint's URL (credentials and queries are refused in it, so nothing secret) and model,
    the `version` label and the score threshold, so a number's judge reads from its run."""
    out: dict[str, Any] = {"judge_kind": judge.kind}
    if judge.kind == "openai":
        out |= {"judge_base_url": judge.base_url, "judge_model": judge.model}
    if judge.version:
        out["judge_version"] = judge.version
    if settings.get("judge_min_prob_mass") is not None:
        out["judge_min_prob_mass"] = settings["judge_min_prob_mass"]
    return out
