"""The results log: appends from concurrent writers are all kept, a torn line is closed, and
scores are served on any covered subset of the questions, never across scopes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pathspec
import pytest

from steering_data import (
    baseline_entry,
    config_entry,
    settings_for,
    settings_hash_of,
    write_log,
)
from steerops.errors import SteeropsError
from steerops.io import read_json, read_jsonl
from steerops.steering.in_flight import IN_FLIGHT_FILE
from steerops.steering.store import ResultsLog, entry_key, scope_of, vector_identity

QUESTIONS = [f"q{i}" for i in range(6)]


VECTOR = {"layer": 1, "weight": 1.0, "method": "m", "position": "p", "component": "residual"}


ROOT = Path(__file__).resolve().parents[2]


def _append_many(path, writer: int, count: int) -> None:
    for i in range(count):
        ResultsLog(path).append(
            [
                {
                    "type": "config",
                    "config": {"coefficient": i, "vectors": [VECTOR]},
                    "result": {"w": writer},
                }
            ]
        )


def test_concurrent_writers_lose_no_entry(tmp_path):
    path = tmp_path / "cell" / "results.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
        assert p.exitcode == 0
    entries = read_jsonl(path)
    assert len(entries) == 4 * 40
    for w in range(4):
        got = [e["config"]["coefficient"] for e in entries if e["result"]["w"] == w]
        assert got == list(range(40))  # each writer's entries, in its order
    # the lock stays beside the log (every writer, on any node, finds it there) and is not
    # part of the DVC output: the project's .dvcignore leaves it out of the output's hash,
    # as it does the rows in flight
    locks = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.lock")]
    ignored = pathspec.GitIgnoreSpec.from_lines((ROOT / ".dvcignore").read_text().splitlines())
    assert locks == ["cell/results.jsonl.lock"] and all(ignored.match_file(p) for p in locks)
    assert ignored.match_file(f"cell/{IN_FLIGHT_FILE}")  # a resume's hint, not an output
    assert not ignored.match_file("cell/results.jsonl")


def test_a_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    settings = settings_for(QUESTIONS)
    good = baseline_entry(settings, QUESTIONS, [(0.0, 100.0)] * 6)
    path.write_text(__import__("json").dumps(good) + '\n{"type": "config", "sett')
    log = ResultsLog(path)
    assert len(log.entries) == 1  # the torn write is ignored
    entry = config_entry(settings, "mean_diff", "prompt[-1]", 1, 1.0, [(50.0, 90.0)] * 6)
    log.append([entry])
    again = ResultsLog(path)
    assert [e["type"] for e in again.entries] == ["baseline", "config"]
    path.write_text('{"type": "config"\n{"type": "baseline"}\n')
    with pytest.raises(SteeropsError, match=r"results.jsonl:1: malformed JSON line"):
        ResultsLog(path)


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda c: c["config"]["vectors"][0].pop("weight"), "config.vectors"),
        (lambda c: c["config"].update(vectors=[]), "config.vectors"),
        (lambda c: c["config"]["vectors"][0].update(layer="1"), "config.vectors"),
        (lambda c: c["config"].update(coefficient="1.0"), "config.coefficient"),
        (lambda c: c["scores"].__setitem__(2, None), "scores"),
        (lambda c: c["scores"].__setitem__(2, [50.0, "90"]), "scores"),
        (lambda c: c["scores"].__setitem__(2, [True, 90.0]), "scores"),
        (lambda c: c["scores"].__setitem__(2, [50.0, float("inf")]), "scores"),
        (lambda c: c["config"]["vectors"][0].update(weight=float("nan")), "config.vectors"),
        (lambda c: c.update(scores={"q": 1}), "scores"),
    ],
)
def test_an_entry_of_the_wrong_shape_is_one_line_naming_it(tmp_path, damage, named):
    """A log given as input (`search.known_results`, a copied cell) is read by the search
    and the report after a model load; an entry they cannot read is refused when the log
    is opened, naming the file, the line and the field."""
    import json

    path = tmp_path / "results.jsonl"
    settings = settings_for(QUESTIONS)
    good = baseline_entry(settings, QUESTIONS, [(0.0, 100.0)] * 6)
    entry = config_entry(settings, "mean_diff", "prompt[-1]", 1, 1.0, [(50.0, 90.0)] * 6)
    entry = json.loads(json.dumps(entry))
    path.write_text(json.dumps(good) + "\n" + json.dumps(entry) + "\n")
    assert len(ResultsLog(path).entries) == 2
    damage(entry)
    path.write_text(json.dumps(good) + "\n" + json.dumps(entry) + "\n")
    with pytest.raises(SteeropsError) as err:
        ResultsLog(path)
    assert f"results.jsonl:2: {named}" in str(err.value) and "\n" not in str(err.value)


def test_scores_are_served_on_a_covered_subset_in_its_order(tmp_path):
    settings = settings_for(QUESTIONS)
    base = [(float(i), 100.0 - i) for i in range(6)]
    scores = [(10.0 * i, 90.0) for i in range(6)]
    entry = config_entry(settings, "mean_diff", "prompt[-1]", 2, 1.5, scores)
    legacy = config_entry(settings, "mean_diff", "prompt[-1]", 2, 0.5, scores)
    del legacy["scores"]  # written before scores were logged
    path = write_log(
        tmp_path / "results.jsonl", [baseline_entry(settings, QUESTIONS, base), entry, legacy]
    )
    log = ResultsLog(path)
    subset = ["q4", "q1", "q3"]
    scope = scope_of(settings_for(subset))
    assert scope == scope_of(settings)  # the questions are not part of the scope
    key, files = entry_key(entry["config"]), entry["vector_files"]
    assert log.config_scores(scope, subset, key, files) == [
        (40.0, 90.0),
        (10.0, 90.0),
        (30.0, 90.0),
    ]
    unsteered = scope_of(settings_for(subset), unsteered=True)
    logged_as = settings_hash_of(settings)
    assert log.baseline_scores(unsteered, subset) == (logged_as, [base[4], base[1], base[3]])
    # the baseline has no steered row: another scope, unit or direction serves it; a
    # setting that changes unsteered responses or scores does not
    for change in (
        {"scope": "response"},
        {"coefficient_unit": "absolute"},
        {"direction": "negative"},
    ):
        restyled = settings_for(subset, **change)
        assert scope_of(restyled) != scope
        assert log.baseline_scores(scope_of(restyled, unsteered=True), subset)[0] == logged_as
    for change in ({"max_new_tokens": 48}, {"judge": "toy:other"}):
        assert log.baseline_scores(scope_of(settings_for(subset, **change), True), subset) is None
    # a question the log never saw, another scope, other vector files, a legacy entry: none
    assert log.config_scores(scope, ["q1", "q9"], key, files) is None
    other = scope_of(settings_for(subset, max_new_tokens=48))
    assert log.config_scores(other, subset, key, files) is None
    assert log.config_scores(scope, subset, key, {"x": "other md5"}) is None
    assert log.config_scores(scope, subset, entry_key(legacy["config"]), files) is None
    assert log.questions(settings_hash_of(settings)) == QUESTIONS


def test_configs_measured_at_another_unit_are_left_out(tmp_path):
    """The layer's norm unit changed (re-extracted activations) while the vector file did
    not: the sweep measures its coefficients again at the new weight; the old entries, a
    coefficient the sweep did not run among them, steered with another strength than their
    coefficient now means and are no longer configs of the cell."""
    settings = settings_for(QUESTIONS)
    scores = [(10.0, 90.0)] * len(QUESTIONS)

    def entry(coef, unit, trait, layer=2):
        e = config_entry(
            settings, "mean_diff", "prompt[-1]", layer, coef, scores, weight_per_unit=unit
        )
        e["scores"] = [[trait, 90.0]] * len(QUESTIONS)
        return e

    path = write_log(
        tmp_path / "results.jsonl",
        [
            baseline_entry(settings, QUESTIONS, scores),
            entry(0.2, 14.3, 100.0),
            entry(0.3, 14.3, 100.0),
            entry(0.0, 14.3, 10.0),  # unsteered: no unit to disagree with
            entry(0.2, 14.3, 50.0, layer=4),  # another layer's unit did not change
            entry(0.2, 28.7, 60.0),
        ],
    )
    kept = ResultsLog(path).configs(settings_hash_of(settings))
    got = [(e["config"]["vectors"][0]["layer"], e["config"]["coefficient"]) for e in kept]
    assert got == [(2, 0.0), (4, 0.2), (2, 0.2)]
    assert kept[-1]["config"]["vectors"][0]["weight"] == pytest.approx(0.2 * 28.7)
    # The log alone cannot tell layer 4's unit unchanged from changed but not measured
    # again (a sweep of layer 2 only): the units now, from the vectors' metadata, can.
    log = ResultsLog(path)
    vectors = {
        v["layer"]: vector_identity(v) for v in log.logged_vectors(settings_hash_of(settings))
    }
    assert sorted(vectors) == [2, 4]
    now = {vectors[2]: 28.7, vectors[4]: 15.5}
    kept = log.configs(settings_hash_of(settings), units=now)
    got = [(e["config"]["vectors"][0]["layer"], e["config"]["coefficient"]) for e in kept]
    assert got == [(2, 0.0), (2, 0.2)]
    assert [
        e["config"]["coefficient"]
        for e in log.configs(settings_hash_of(settings), units={vectors[2]: 14.3})
    ] == [0.2, 0.3, 0.0, 0.2]


def test_configs_measured_with_replaced_vectors_are_left_out(tmp_path):
    """Vectors extracted again change their file md5: a config the next sweep did not
    evaluate again keeps the old vectors' numbers and is no longer a config of the cell,
    while one evaluated again is, with its new numbers; other vector files are unaffected."""
    settings = settings_for(QUESTIONS)
    scores = [(10.0, 90.0)] * len(QUESTIONS)
    method_files = {"mean_diff|prompt[-1]|residual": "old"}

    def entry(coef, files, trait=10.0):
        e = config_entry(settings, "mean_diff", "prompt[-1]", 2, coef, scores, vector_files=files)
        e["scores"] = [[trait, 90.0]] * len(QUESTIONS)
        return e

    pair = {**method_files, "probe|prompt[-1]|residual": "p1"}
    path = write_log(
        tmp_path / "results.jsonl",
        [
            baseline_entry(settings, QUESTIONS, scores),
            entry(1.0, method_files, 90.0),
            entry(2.0, method_files, 95.0),
            entry(3.0, pair),
            entry(1.0, {"mean_diff|prompt[-1]|residual": "new"}, 30.0),
        ],
    )
    kept = ResultsLog(path).configs(settings_hash_of(settings))
    assert [(e["config"]["coefficient"], e["scores"][0][0]) for e in kept] == [(1.0, 30.0)]
    # the probe file alone changing leaves out only the config that reads it
    write_log(path, [entry(2.0, {"mean_diff|prompt[-1]|residual": "new"}, 40.0)])
    write_log(
        path,
        [
            entry(
                3.0, {"mean_diff|prompt[-1]|residual": "new", **{"probe|prompt[-1]|residual": "p1"}}
            )
        ],
    )
    write_log(path, [entry(4.0, {"probe|prompt[-1]|residual": "p2"})])
    coefs = [
        e["config"]["coefficient"] for e in ResultsLog(path).configs(settings_hash_of(settings))
    ]
    assert coefs == [1.0, 2.0, 4.0]
    # the vectors back as they were (the files on disk name "new" again after "p2"...): the
    # latest entry measured with them stands, not the latest entry of any vectors
    write_log(path, [entry(1.0, {"mean_diff|prompt[-1]|residual": "newer"}, 70.0)])
    log = ResultsLog(path)
    back = log.configs(settings_hash_of(settings), {"mean_diff|prompt[-1]|residual": "new"})
    assert [(e["config"]["coefficient"], e["scores"][0][0]) for e in back][:2] == [
        (1.0, 30.0),
        (2.0, 40.0),
    ]
    assert sorted(e["config"]["coefficient"] for e in log.configs(settings_hash_of(settings))) == [
        1.0,
        4.0,
    ]


def _steer_refused(tmp_path, toy_world, monkeypatch, refuse, coefficients: str, **blocks):
    """`run()`: a scratch `steerops steer` (4 questions, 6 new tokens, layer 1) judged by
    a `RefusingJudge` that refuses `refuse(pairs)` of each call; with the questions asked
    and the cell's results log (after the first run)."""
    from refusing_judge import RefusingJudge
    from steer_world import steer_params
    from steerops.cli import main

    asked: list[str] = []
    monkeypatch.setattr(
        "steerops.judges.make_judge", lambda *args, **kwargs: RefusingJudge(refuse, asked)
    )
    path = steer_params(tmp_path, toy_world, **blocks)
    argv = ["steer", "--params", str(path), "--out", str(tmp_path / "run")]
    argv += ["--subset", "4", "--max-new-tokens", "6", "--layers", "1"]
    argv += ["--coefficients", coefficients]

    def run() -> Path:
        assert main(argv) == 0
        (log,) = (tmp_path / "run").rglob("results.jsonl")
        return log

    return run, asked


def test_answers_the_endpoint_refused_to_judge_are_judged_again_on_a_rerun(
    tmp_path, toy_world, monkeypatch
):
    """A refusal (e.g. a content filter) is not cached by the judge: a log entry holding one
    is not served, so the rerun generates and judges that config and the baseline again,
    and once every answer is judged the next run serves them."""
    refusing = {"on": True}

    def first_question(pairs):  # every config's answer to the call's first question
        return {p for p in pairs if p[0] == pairs[0][0]} if refusing["on"] else set()

    run, asked = _steer_refused(tmp_path, toy_world, monkeypatch, first_question, "0.5")
    log = run()
    entries = read_jsonl(log)
    assert {e["type"]: e["result"]["n_refused"] for e in entries} == {
        "baseline": 1,
        "config": 1,
    }
    assert len(asked) == 8  # the baseline and the config, 4 questions each
    refusing["on"] = False
    run()
    assert len(asked) == 16  # both evaluated and judged again
    latest = {e["type"]: e for e in read_jsonl(log)}
    assert all("n_refused" not in e["result"] for e in latest.values())
    assert all(s[0] is not None for e in latest.values() for s in e["scores"])
    run()
    assert len(asked) == 16  # every answer judged: served


def test_a_cell_whose_baseline_alone_was_refused_gets_the_baseline_judged_since(
    tmp_path, toy_world, monkeypatch
):
    """The configs were all judged (served on the rerun) but the cell's baseline entry holds
    a refusal: the rerun judges the baseline again and the cell log gets it, so the
    configs' paired deltas use every question."""
    refusing = {"on": True}

    def first_pair(pairs):
        return set(pairs[:1]) if refusing["on"] else set()

    # steered hard enough that its answers differ from the baseline's
    run, asked = _steer_refused(tmp_path, toy_world, monkeypatch, first_pair, "8")
    log = run()  # one call: the baseline's first answer refused, the config's not
    entries = read_jsonl(log)
    assert [e["result"].get("n_refused") for e in entries] == [1, None]
    refusing["on"] = False
    run()
    assert len(asked) == 12  # the baseline's 4 answers again; the config served
    baseline = ResultsLog(log).baseline(entries[0]["settings_hash"])
    assert "n_refused" not in baseline["result"] and None not in baseline["scores"][0]


def test_a_baseline_that_keeps_a_refusal_is_logged_once_not_with_every_chunk(
    tmp_path, toy_world, monkeypatch
):
    """Several chunks append to the cell log; a baseline whose refusal this run could not
    resolve is logged once, not again beside each chunk's configs."""

    def first_pair(pairs):  # each call's first answer: the baseline's, in the first chunk
        return set(pairs[:1])

    run, _ = _steer_refused(
        tmp_path, toy_world, monkeypatch, first_pair, "4,6,8", steering={"max_batch_rows": 1}
    )
    kinds = [e["type"] for e in read_jsonl(run())]
    assert kinds.count("baseline") == 1 and kinds.count("config") == 3


def test_a_coefficient_of_zero_is_the_baseline_and_generates_nothing(
    tmp_path, toy_world, monkeypatch
):
    """Coefficient 0 steers nothing (a grid's 0, or a search's sampler at coef_min 0): its
    rows are the baseline's, served from it with a delta of 0, not generated and judged
    again."""
    run, asked = _steer_refused(tmp_path, toy_world, monkeypatch, lambda pairs: set(), "0,8")
    entries = read_jsonl(run())
    assert len(asked) == 8  # the baseline and coefficient 8, 4 questions each
    base = next(e for e in entries if e["type"] == "baseline")
    zero, eight = (
        next(e for e in entries if e["type"] == "config" and e["config"]["coefficient"] == c)
        for c in (0, 8)
    )
    assert zero["scores"] == base["scores"] and zero["result"]["trait_delta"] == 0
    assert "timing" not in zero and "timing" in eight


def test_a_coefficient_of_zero_keeps_the_baselines_responses_in_its_file(
    tmp_path, toy_world, monkeypatch
):
    """Under `save_responses: all` coefficient 0's file holds the baseline's texts and
    scores, copied, not generated and judged again."""
    blocks = {"steering": {"save_responses": "all"}}
    run, asked = _steer_refused(tmp_path, toy_world, monkeypatch, lambda p: set(), "0,8", **blocks)
    log = run()
    assert len(asked) == 8  # the baseline and coefficient 8, 4 questions each
    folder = log.parent / "responses"
    base = read_json(folder / "baseline.json")["responses"]
    assert len(base) == 4 and read_json(folder / "L1_c0.json")["responses"] == base
    assert read_json(folder / "L1_c8.json")["responses"] != base
    del asked[:]
    run()  # served: no file is missing, nothing is asked
    assert asked == []


def test_a_coefficient_of_zero_copied_from_a_baseline_with_a_refusal_is_not_served_later(
    tmp_path, toy_world, monkeypatch
):
    """The copy holds the baseline's refused answer, so it is logged as refused: the next
    run, with the baseline judged again, copies that one instead of serving the gap."""
    refusing = {"on": True}

    def first_question(pairs):  # the baseline's answer to the first question (and c8's)
        return {p for p in pairs if p[0] == pairs[0][0]} if refusing["on"] else set()

    run, _ = _steer_refused(tmp_path, toy_world, monkeypatch, first_question, "0,8")
    first = [e for e in read_jsonl(run()) if e["type"] == "config"]
    zero = next(e for e in first if e["config"]["coefficient"] == 0)
    assert zero["result"]["n_refused"] == 1 and zero["scores"][0] == [None, None]
    refusing["on"] = False
    entries = read_jsonl(run())
    base = [e for e in entries if e["type"] == "baseline"][-1]
    zero = [e for e in entries if e["type"] == "config" and e["config"]["coefficient"] == 0][-1]
    assert None not in base["scores"][0] and zero["scores"] == base["scores"]
    assert "n_refused" not in zero["result"]
