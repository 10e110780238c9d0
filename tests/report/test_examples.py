"""The results page's held-out answers of the selection half's choice: chosen by rule from
the cell's saved responses, beside the unsteered model's, and only under the settings its
scores were logged with."""

from __future__ import annotations

import pandas as pd

from report_data import synthetic_grid, write_params
from steering_data import COMPONENT, TRAIT
from steerops.cli import main
from steerops.config import load_params
from steerops.io import write_json
from steerops.report import tables
from steerops.report.examples import examples
from steerops.report.load import load_results
from steerops.steering.store import RESPONSES_DIR, steering_dir

POSITION = "prompt[-1]"


def _world(tmp_path):
    synthetic_grid(tmp_path)
    params = load_params(write_params(tmp_path))
    frame = load_results(params)
    choice = tables.selection_choice(tables.gap_analysis(frame, 68))
    row = frame[(frame["method"] == choice["method"]) & (frame["layer"] == choice["layer"])]
    row = row[row["coefficient"] == choice["coefficient"]].iloc[0]
    return params, frame, choice, row


def _save(folder, name, settings, questions, answer, config=None):
    responses = [
        {"question": q, "response": answer(q)[0], "trait": answer(q)[1], "coherence": answer(q)[2]}
        for q in questions
    ]
    saved = {"settings_hash": settings, "responses": responses}
    write_json(folder / name, saved | ({"config": config} if config else {}))


def test_the_examples_follow_the_rule_in_the_split_s_order(tmp_path):
    params, frame, choice, row = _world(tmp_path)
    folder = (
        steering_dir(params.out, TRAIT, "instruct", POSITION, COMPONENT, choice["method"])
        / RESPONSES_DIR
    )
    deltas = row["heldout_deltas"]
    moved = [q for q, d in deltas.items() if d > 0]
    still = [q for q, d in deltas.items() if d == 0]
    broken = moved[1]  # the second mover scores under the bar: the rule skips it for "along"
    against = moved[3]  # one the steering moves the other way instead
    mine = (frame["method"] == choice["method"]) & (frame["layer"] == row["layer"])
    mine &= frame["coefficient"] == choice["coefficient"]
    [at] = frame.index[mine]
    frame.at[at, "heldout_coherences"] = row["heldout_coherences"] | {broken: 40.0}
    frame.at[at, "heldout_deltas"] = deltas | {against: -100.0}

    def steered(q):
        # the file's coherences are not what counts: the row's, as `under_bar` counts them
        return (f"steered  answer to {q} " + "x" * 200, 100.0 if q in moved else 0.0, 90.0)

    config = {"coefficient": choice["coefficient"], "vectors": [{"layer": int(row["layer"])}]}
    name = f"L{int(row['layer'])}_c{choice['coefficient']:g}.json"
    questions = list(frame["heldout_deltas"].iloc[0]) + ["a selection question"]
    _save(folder, name, row["settings"], questions, steered, config)
    _save(folder, "baseline.json", row["settings"], questions, lambda q: (f"plain {q}", 0.0, 99.0))
    # another config's file (another coefficient) is never read for this one
    other = config | {"coefficient": 99.0}
    _save(folder, "L2_c99.json", row["settings"], questions, lambda q: ("wrong", 0.0, 0.0), other)

    table = examples(params, frame, choice, 68.0)
    want = [(moved[0], "along"), (moved[2], "along"), (broken, "along, under 68")]
    want += [(against, "against"), (still[0], "not at all")]
    assert list(zip(table["question"], table["moved"], strict=True)) == want
    first = table.iloc[0]
    assert first["unsteered"] == f"“plain {moved[0]}” (trait 0, coherence 99.0)"
    # one line, cut to 160 characters with an ellipsis, then its scores
    text = f"steered answer to {moved[0]} " + "x" * 200
    assert first["steered"] == f"“{text[:159]}…” (trait 100, coherence 90.0)"
    assert "wrong" not in table.to_string()
    # the results page shows them under the answer, the steered answers in full rows
    page = write_params(tmp_path, report={"results": "docs/results.md"})
    assert main(["report", "--params", str(page)]) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    section = text.split("## Held-out answers: ", 1)[1].split("\n## ", 1)[0]
    assert section.startswith(f"{TRAIT} on `m`, `{choice['method']}` at {POSITION}, layer 2")
    assert f"| {moved[0]} | along | “plain {moved[0]}” (trait 0, coherence 99.0) |" in section

    # responses written under other settings are not these scores' answers: no examples
    _save(folder, name, "another-settings", questions, steered, config)
    assert examples(params, frame, choice, 68.0).empty
    assert examples(params, frame, None, 68.0).empty
    assert examples(params, pd.DataFrame(), choice, 68.0).empty


def test_the_baseline_answers_are_taken_by_their_scores_and_a_bad_file_shows_none(tmp_path):
    """baseline.json serves every sweep that differs only in steering settings, so it is
    taken when its trait scores are the ones the deltas were measured against, whatever
    settings wrote it; a file that is not a responses file shows no examples, no error."""
    params, frame, choice, row = _world(tmp_path)
    folder = (
        steering_dir(params.out, TRAIT, "instruct", POSITION, COMPONENT, choice["method"])
        / RESPONSES_DIR
    )
    config = {"coefficient": choice["coefficient"], "vectors": [{"layer": int(row["layer"])}]}
    name = f"L{int(row['layer'])}_c{choice['coefficient']:g}.json"
    questions = list(row["heldout_deltas"])
    _save(folder, name, row["settings"], questions, lambda q: ("s", 100.0, 90.0), config)
    # the synthetic baseline scores 0 on every question: these are its answers
    _save(folder, "baseline.json", "other", questions, lambda q: ("plain", 0.0, 99.0))
    assert len(examples(params, frame, choice, 68.0)) > 0
    # another baseline's scores: not the one these deltas were measured against
    _save(folder, "baseline.json", "other", questions, lambda q: ("plain", 100.0, 99.0))
    assert examples(params, frame, choice, 68.0).empty
    for bad in ([], {"responses": ["text"]}, {"responses": None}):
        write_json(folder / "baseline.json", bad)
        assert examples(params, frame, choice, 68.0).empty
    (folder / "baseline.json").write_text("{not json")
    assert examples(params, frame, choice, 68.0).empty


def test_a_multi_vector_choice_reads_the_file_of_all_its_layers():
    """A config steering at layers 4 and 8 is "4+8" in the frame; its file names each
    vector, and only the file of both is its own."""
    from steerops.report.examples import _config_is

    row = pd.Series({"layer": "4+8", "coefficient": 0.2})
    both = {"coefficient": 0.2, "vectors": [{"layer": 4}, {"layer": 8}]}
    assert _config_is({"config": both}, row)
    assert not _config_is({"config": both | {"coefficient": 0.3}}, row)
    assert not _config_is({"config": {"coefficient": 0.2, "vectors": [{"layer": 4}]}}, row)
    assert not _config_is({"config": both}, pd.Series({"layer": 4, "coefficient": 0.2}))
    # two vectors at one layer (two positions) are that layer, as the frame joins them
    twice = {"coefficient": 0.2, "vectors": [{"layer": 4}, {"layer": 4}]}
    assert _config_is({"config": twice}, pd.Series({"layer": 4, "coefficient": 0.2}))
    assert not _config_is({"config": {"coefficient": 0.2, "vectors": ["4"]}}, row)
    assert not _config_is({"config": {"coefficient": 0.2, "vectors": []}}, row)


def test_a_graded_judge_s_small_moves_come_after_the_real_ones_and_say_their_size():
    from steerops.report.examples import _pick

    deltas = {"a": 2.0, "b": 40.0, "c": 0.5, "d": 35.0, "e": -3.0, "f": 0.0, "g": -60.0}
    coherences = dict.fromkeys(deltas, 90.0)
    steered = dict.fromkeys(deltas, {})
    assert _pick(deltas, coherences, steered, 68.0) == [
        ("b", "along"),
        ("d", "along"),
        ("g", "against"),
        ("f", "not at all"),
    ]
    # only small moves: shown, with their size
    small = {"a": 2.0, "c": 0.5, "e": -3.0}
    assert _pick(small, coherences, steered, 68.0) == [
        ("a", "along, by 2"),
        ("c", "along, by 0.5"),
        ("e", "against, by 3"),
    ]
    # a 0/100 judge: the split's order, as before
    flat = {"a": 100.0, "b": 100.0, "c": 100.0, "e": -100.0}
    assert [q for q, _ in _pick(flat, coherences, steered, 68.0)] == ["a", "b", "e"]


def test_an_answer_with_no_coherence_score_is_no_coherent_example():
    """The credited delta counts it as unmoved: it is shown beside those under the bar."""
    from steerops.report.examples import _pick

    deltas = {"a": 100.0, "b": 100.0, "c": 50.0}
    coherences = {"a": 90.0, "b": None, "c": 90.0}
    picked = _pick(deltas, coherences, dict.fromkeys(deltas, True), 68.0)
    assert picked == [("a", "along"), ("c", "along"), ("b", "along, not scored for coherence")]
