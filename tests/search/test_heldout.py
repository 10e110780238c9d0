"""The held-out protocol: its question split, and the responses of a served choice."""

from __future__ import annotations

import dataclasses
import json

import pytest


class ServedHeldout:
    """A held-out evaluator whose chosen config is served from a log: the search's own
    (`logged_here`, a run killed before writing its responses) or another one (the grid's)."""

    def __init__(self, logged_here: bool):
        from synthetic import Result

        self.questions, self.settings_hash, self.regenerated = ["h1", "h2"], "held", 0
        self.result = Result(None, 80.0, 90.0, 2, cached=True, logged_here=logged_here)
        self.base = Result(None, 10.0, 95.0, 2, cached=True)

    def baseline(self):
        return self.base

    def evaluate(self, configs):
        return [self.result]

    def responses(self, results):
        self.regenerated += 1
        rows = [{"question": q, "response": "again", "trait": 80.0} for q in self.questions]
        return [dataclasses.replace(self.result, responses=rows)]


def test_heldout_responses_a_killed_finaliser_never_wrote_are_written_after_all(tmp_path):
    from synthetic import SOURCE

    from steerops.search.heldout import evaluate_heldout
    from steerops.search.store import write_best, written_heldout_responses
    from steerops.steering.configs import Config

    config = Config.single(SOURCE, 2, 1.5)
    # logged by this search, no responses file for it yet: generated again, and counted
    own = ServedHeldout(logged_here=True)
    held = evaluate_heldout(own, config, "positive", 0, min_coherence=68.0)
    assert (held["coherence_scored"], held["under_bar"]) == (2, 0)  # both answers at 90
    strict = evaluate_heldout(ServedHeldout(True), config, "positive", 0, min_coherence=95.0)
    assert (strict["coherence_scored"], strict["under_bar"]) == (2, 2)
    # each answer moved the trait 80 - 10 = 70: credited in full when coherent, as no move
    # when under the bar
    assert [held[k] for k in ("credited_delta", "credited_lo", "credited_hi")] == [70.0] * 3
    assert [strict[k] for k in ("credited_delta", "credited_lo", "credited_hi")] == [0.0] * 3
    assert (held["under_bar_moved"], strict["under_bar_moved"]) == (0, 2)
    assert held["trait_delta"] == strict["trait_delta"] == pytest.approx(70.0)
    # answers the judge's endpoint refused, the config's and the baseline's, are said
    assert held["n_refused"] == 0
    refusing = ServedHeldout(True)
    refusing.result = dataclasses.replace(refusing.result, n_refused=1)
    refusing.base = dataclasses.replace(refusing.base, n_refused=2)
    assert evaluate_heldout(refusing, config, "positive", 0, min_coherence=68.0)["n_refused"] == 3
    assert [r["response"] for r in held["responses"]] == ["again", "again"]
    assert held["rows_generated"] == 2 and own.regenerated == 1
    # written by an earlier finalisation of the same choice (a rerun): kept, nothing generated
    (tmp_path / "heldout_responses.jsonl").write_text(
        "".join(f'{{"question": "{q}", "response": "kept"}}\n' for q in own.questions)
    )
    assert written_heldout_responses(tmp_path, 2, 1.5, "held", own.questions) is None  # no best
    best = {"chosen": {"layer": 2, "coefficient": 1.5}, "heldout": {"settings_hash": "held"}}
    write_best(tmp_path, {**best, **_best_row_keys()})
    written = written_heldout_responses(tmp_path, 2, 1.5, "held", own.questions)
    assert written is not None and {r["response"] for r in written} == {"kept"}
    assert written_heldout_responses(tmp_path, 2, 1.25, "held", own.questions) is None
    kept = (tmp_path / "heldout_responses.jsonl").read_bytes()
    (tmp_path / "heldout_responses.jsonl").write_bytes(kept[:20] + b"\n")  # damaged: again
    assert written_heldout_responses(tmp_path, 2, 1.5, "held", own.questions) is None
    (tmp_path / "heldout_responses.jsonl").write_bytes(kept)
    held = evaluate_heldout(own, config, "positive", 0, written, min_coherence=68.0)
    assert held["responses"] == written and held["rows_generated"] == 0
    # served from another log (the grid's): generated, so the choice's responses are readable
    other = ServedHeldout(logged_here=False)
    held = evaluate_heldout(other, config, "positive", 0, min_coherence=68.0)
    assert [r["response"] for r in held["responses"]] == ["again", "again"]
    assert held["rows_generated"] == 2 and other.regenerated == 1


class CopyingHeldout(ServedHeldout):
    """The chosen config served from the grid's log: the first evaluation copies it into the
    search's own log under the held-out settings, so every later one finds it there."""

    def __init__(self):
        super().__init__(logged_here=False)
        self.evaluated = 0

    def evaluate(self, configs):
        self.evaluated += 1
        return [dataclasses.replace(self.result, logged_here=self.evaluated > 1)]


def _finalise(folder, held_eval, config) -> str:
    """What `runner.finish` does with the held-out half: the file it leaves."""
    from steerops.search.heldout import evaluate_heldout
    from steerops.search.store import (
        HELDOUT_FILE,
        write_best,
        write_heldout_responses,
        written_heldout_responses,
    )

    args = (config.vectors[0].layer, 1.5, held_eval.settings_hash, held_eval.questions)
    written = written_heldout_responses(folder, *args)
    held = evaluate_heldout(held_eval, config, "positive", 0, written, min_coherence=68.0)
    write_heldout_responses(folder, held)
    best = {"chosen": {"layer": args[0], "coefficient": 1.5}, "heldout": {"settings_hash": "held"}}
    write_best(folder, {**best, **_best_row_keys()})
    return (folder / HELDOUT_FILE).read_text()


def test_heldout_responses_of_a_known_winner_are_the_same_on_a_rerun(tmp_path):
    """A known (grid) trial wins: the first run writes its held-out responses, and a rerun
    (or a resume after a kill), which finds the copied entry in the search's own log, keeps
    that file as it is: a no-op `dvc repro` changes no DVC output."""
    from synthetic import SOURCE

    from steerops.steering.configs import Config

    config = Config.single(SOURCE, 2, 1.5)
    held_eval = CopyingHeldout()
    first = _finalise(tmp_path, held_eval, config)
    assert [json.loads(line)["question"] for line in first.splitlines()] == ["h1", "h2"]
    assert held_eval.regenerated == 1
    assert _finalise(tmp_path, held_eval, config) == first
    assert held_eval.evaluated == 2 and held_eval.regenerated == 1  # nothing generated again


def _best_row_keys() -> dict:
    """The rest of what best.csv reads from best.json."""
    keys = "trait variant method position component".split()
    return {
        **dict.fromkeys(keys, ""),
        "n_trials": 0,
        "feasible": True,
        "n_generations": {"total": 0},
    }


def test_heldout_responses_of_another_choice_left_by_a_killed_finaliser_are_not_reused(
    tmp_path,
):
    """A finalisation of another choice (another study writing to the same folder) killed
    between its held-out responses and its best.json leaves them beside the best.json of
    the earlier choice: a rerun of that choice generates its own again instead of reporting
    the other config's responses as its own."""
    from synthetic import SOURCE

    from steerops.search.heldout import evaluate_heldout
    from steerops.search.store import HELDOUT_FILE, write_heldout_responses
    from steerops.steering.configs import Config

    config = Config.single(SOURCE, 2, 1.5)
    held_eval = CopyingHeldout()
    first = _finalise(tmp_path, held_eval, config)  # choice L2 c1.5: responses, best.json
    other = ServedHeldout(logged_here=True)
    other.responses = lambda results: [  # the other choice's (L2 c1.25) responses
        dataclasses.replace(
            other.result,
            responses=[{"question": q, "response": "other", "trait": 5.0} for q in ["h1", "h2"]],
        )
    ]
    held = evaluate_heldout(
        other, Config.single(SOURCE, 2, 1.25), "positive", 0, min_coherence=68.0
    )
    write_heldout_responses(tmp_path, held)  # ... SIGKILL before its best.json
    assert "other" in (tmp_path / HELDOUT_FILE).read_text()
    assert _finalise(tmp_path, held_eval, config) == first
    assert "other" not in (tmp_path / HELDOUT_FILE).read_text()
    assert held_eval.regenerated == 2  # generated again, not taken from the other choice


def _recipe(d: list[float], seed: int) -> tuple[float, float, float]:
    """The paired bootstrap of `steerops.stats`' docstring, written out with numpy/scipy."""
    import math
    from statistics import NormalDist

    import numpy as np
    import scipy.stats

    from steerops.stats import RESAMPLES

    x = np.array(d, dtype=float)
    n = len(x)
    means = x[np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))].mean(axis=1)
    tail = NormalDist().cdf(-math.sqrt(n / (n - 1)) * scipy.stats.t.ppf(0.975, n - 1))
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(x.mean()), float(lo), float(hi)


def test_a_suppression_search_reports_held_out_deltas_toward_less_of_the_trait():
    """`steering.direction: negative`: a trait that falls is a positive delta, with its
    interval and credited delta signed the same way, per question against the baseline."""
    from types import SimpleNamespace

    from synthetic import SOURCE

    from steerops.search.heldout import evaluate_heldout
    from steerops.steering.configs import Config

    base_traits = [80.0, 90.0, 70.0, 100.0, 60.0, 90.0, 85.0, 75.0]
    steered_traits = [20.0, 30.0, 70.0, 10.0, 60.0, 40.0, 95.0, 5.0]
    coherences = [90.0, 90.0, 90.0, 40.0, 90.0, 90.0, 90.0, 50.0]  # 2 answers under 68
    questions = [f"h{i}" for i in range(len(base_traits))]
    responses = [{"question": q, "response": "r"} for q in questions]

    def scored(traits, coherence):
        scores = list(zip(traits, coherence, strict=True))
        return SimpleNamespace(
            scores=scores,
            trait_mean=sum(traits) / len(traits),
            coherence_mean=sum(coherence) / len(coherence),
            responses=responses,
            cached=True,
        )

    evaluator = SimpleNamespace(
        questions=questions,
        settings_hash="held",
        baseline=lambda: scored(base_traits, [95.0] * len(base_traits)),
        evaluate=lambda configs: [scored(steered_traits, coherences)],
    )
    config = Config.single(SOURCE, 2, 1.5)
    held = evaluate_heldout(evaluator, config, "negative", 5, min_coherence=68.0)
    d = [b - s for b, s in zip(base_traits, steered_traits, strict=True)]
    mid, lo, hi = _recipe(d, seed=5)
    assert mid > 0
    assert (held["trait_delta"], held["delta_lo"], held["delta_hi"]) == pytest.approx((mid, lo, hi))
    credited = [x if c >= 68.0 else min(x, 0.0) for x, c in zip(d, coherences, strict=True)]
    assert (held["credited_delta"], held["credited_lo"], held["credited_hi"]) == pytest.approx(
        _recipe(credited, seed=5)
    )
    assert (held["coherence_scored"], held["under_bar"], held["n"]) == (8, 2, 8)
    assert held["under_bar_moved"] == 2  # both moved toward less of the trait
    # the held-out coherence's interval: the same bootstrap over the answers' coherences
    _, lo, hi = _recipe(coherences, seed=5)
    assert (held["coherence_lo"], held["coherence_hi"]) == pytest.approx((lo, hi))
    assert lo < held["coherence_mean"] < hi
    positive = evaluate_heldout(evaluator, config, "positive", 5, min_coherence=68.0)
    assert positive["trait_delta"] == pytest.approx(-mid)


def test_earlier_choices_read_on_the_held_out_half_are_found_in_the_search_s_log(tmp_path):
    """Configs the search's own log holds under the held-out half's settings, other than
    the choice now (its 6-decimal entry too): each once, its latest scores; the search
    half's entries and other settings are not held-out reads."""
    from steerops.search.heldout import earlier_reads
    from steerops.search.store import read_before_text

    def entry(settings, layer, coefficient, delta, coherence):
        vector = {"layer": layer, "weight": 30.0, "method": "m", "position": "p", "component": "c"}
        return {
            "type": "config",
            "settings_hash": settings,
            "config": {"coefficient": coefficient, "vectors": [vector]},
            "result": {"trait_delta": delta, "coherence_mean": coherence},
        }

    log = tmp_path / "results.jsonl"
    entries = [
        entry("search-half", 12, 0.3, 70.0, 50.0),  # a trial: the search half
        entry("held", 12, 0.233333, 55.0, 65.1715),  # an earlier study's choice
        entry("held", 16, 0.233333, 10.0, 99.0),  # same coefficient, another layer
        entry("held", 12, 0.22006684876053967, 55.0, 76.1415),  # the choice now, as drawn
        entry("held", 12, 0.220067, 56.0, 70.0),  # another config, 3e-7 away: a read too
        entry("held", 12, 0.233333, 60.0, 64.0),  # read again (a rescoring): latest wins
        entry("other-held", 12, 0.1, 5.0, 99.0),  # other generation settings
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    reads = earlier_reads(log, "held", 12, 0.22006684876053967)
    assert reads == [
        {"layer": 12, "coefficient": 0.233333, "trait_delta": 60.0, "coherence_mean": 64.0},
        {"layer": 16, "coefficient": 0.233333, "trait_delta": 10.0, "coherence_mean": 99.0},
        {"layer": 12, "coefficient": 0.220067, "trait_delta": 56.0, "coherence_mean": 70.0},
    ]
    assert read_before_text(reads[:2]) == (
        "layer 12 coefficient 0.2333 (delta +60.0, coherence 64.00); "
        "layer 16 coefficient 0.2333 (delta +10.0, coherence 99.00)"
    )
    assert earlier_reads(log, "held", 12, 0.233333)[0]["layer"] == 16
    assert earlier_reads(tmp_path / "none.jsonl", "held", 12, 0.2) == []
    assert read_before_text(None) == read_before_text([]) == ""
