"""The probe stage's input readers name the bad line."""

from __future__ import annotations

import pytest

from steerops.errors import SteeropsError
from steerops.probes.data import (
    read_comparisons,
    read_confounds,
    read_groups,
    read_rates,
    read_scores,
)


def test_input_readers_name_the_bad_line(tmp_path):
    bad = tmp_path / "scores.csv"
    bad.write_text("task_id,mu\na,1\nb,nan\n")
    with pytest.raises(SteeropsError, match=r"scores.csv:3: column 'mu'"):
        read_scores(bad)
    bad.write_text("task_id,mu\na,1\na,2\n")
    with pytest.raises(SteeropsError, match="duplicate task_id 'a'"):
        read_scores(bad)
    bad.write_text("id,mu\n")
    with pytest.raises(SteeropsError, match="missing column 'task_id'"):
        read_scores(bad)
    comps = tmp_path / "c.jsonl"
    comps.write_text(
        '{"task_a": "a", "task_b": "b", "winner": "a"}\n'
        '{"task_a": "a", "task_b": "b", "winner": "c"}\n'
    )
    with pytest.raises(SteeropsError, match=r"c.jsonl:2: winner 'c'"):
        read_comparisons(comps)
    confounds = tmp_path / "confounds.csv"
    confounds.write_text("task_id,topic\na,x\n ,y\n")  # a row for no task
    with pytest.raises(SteeropsError, match=r"confounds.csv:3: empty task_id"):
        read_confounds(confounds)


@pytest.mark.parametrize("pointer", ['{"run_id": ', "{}", '["r1"]'])
def test_a_damaged_latest_run_pointer_is_one_line(tmp_path, pointer):
    from steerops.errors import SteeropsError
    from steerops.probes.store import resolve_run, runs_dir

    runs_dir(tmp_path).mkdir(parents=True)
    (runs_dir(tmp_path) / "latest.json").write_text(pointer)
    with pytest.raises(SteeropsError, match=r"latest\.json: (not valid JSON|names no run_id)"):
        resolve_run(tmp_path)


def test_empty_ids_are_refused_with_their_line(tmp_path):
    comps = tmp_path / "c.jsonl"
    good = '{"task_a": "a", "task_b": "b", "winner": "a"}\n'
    for row, key in [
        ('{"task_a": "", "task_b": "b", "winner": "b"}', "task_a"),
        ('{"task_a": "a", "task_b": "  ", "winner": "a"}', "task_b"),
        ('{"task_a": "a", "task_b": "b", "winner": null}', "winner"),
    ]:
        comps.write_text(good + row + "\n")
        with pytest.raises(SteeropsError, match=rf"c.jsonl:2: empty {key} ") as err:
            read_comparisons(comps)
        assert "\n" not in str(err.value)
    rates = tmp_path / "rates.csv"
    for text, col in [
        ("condition_id,task_id,rate\nbase,a,0.5\n,a,0.5\n", "condition_id"),
        ("condition_id,task_id,rate\nbase,a,0.5\nbase, ,0.5\n", "task_id"),
    ]:
        rates.write_text(text)
        with pytest.raises(SteeropsError, match=rf"rates.csv:3: empty {col}$"):
            read_rates(rates)


def test_ids_that_are_not_strings_are_refused_with_their_line(tmp_path):
    """1 and 1.0 would be fitted as two tasks, ["a"] as the task "['a']"; none of them
    matches a task id, so their scores would drop out later without a reason."""
    comps = tmp_path / "c.jsonl"
    good = '{"task_a": "a", "task_b": "b", "winner": "a"}\n'
    for row, key in [
        ('{"task_a": 1, "task_b": 1.0, "winner": 1}', "task_b"),
        ('{"task_a": ["a"], "task_b": "b", "winner": "b"}', "task_a"),
        ('{"task_a": "a", "task_b": true, "winner": "a"}', "task_b"),
    ]:
        comps.write_text(good + row + "\n")
        with pytest.raises(SteeropsError, match=rf"c.jsonl:2: {key} must be a string"):
            read_comparisons(comps)
    comps.write_text(good + '{"task_a": 7, "task_b": "b", "winner": 7}\n')  # integer ids read
    assert read_comparisons(comps)[1] == ("7", "b", "7")


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "inf", "nan"])
def test_a_rate_outside_zero_to_one_or_not_finite_is_refused_naming_line_and_value(tmp_path, rate):
    rates = tmp_path / "rates.csv"
    rates.write_text(f"condition_id,task_id,rate\nbase,a,0\nbase,b,1\nbase,c,{rate}\n")
    with pytest.raises(SteeropsError, match=rf"rates.csv:4: .*'{rate}'") as err:
        read_rates(rates)
    assert "\n" not in str(err.value)
    rates.write_text("condition_id,task_id,rate\nbase,a,0\nbase,b,1\n")  # the bounds are rates
    assert read_rates(rates) == {"base": {"a": 0.0, "b": 1.0}}


@pytest.mark.parametrize(
    "reader, text",
    [
        (read_scores, "task_id,mu\na,1.25\nb,0.7"),  # 0.7108 cut short mid-write
        (read_rates, "condition_id,task_id,rate\nbase,a,0.5\nbase,b,0.7"),
    ],
)
def test_a_csv_whose_last_line_has_no_newline_is_read_with_a_warning(
    tmp_path, reader, text, capsys
):
    """A file written whole ends with a newline; one cut short may end in a truncated number
    that still parses, but hand-written files often lack it: read, with the file and line
    said; whole files (LF or CRLF) read without a word."""
    path = tmp_path / "input.csv"
    path.write_text(text)
    assert reader(path)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: {path}:3: the last line has no newline")
    for whole in (text + "\n", (text + "\n").replace("\n", "\r\n")):
        path.write_bytes(whole.encode())
        assert reader(path) and capsys.readouterr().err == ""


def test_the_probe_csvs_the_toy_world_writes_are_read(tmp_path):
    """The toy world's scores and rates end with their newline and hold rates in [0, 1]."""
    from steerops.probes.toy_data import write_toy_probe_data

    data = write_toy_probe_data(tmp_path)
    assert len(read_scores(data / "scores.csv")) == 400
    rates = read_rates(data / "rates.csv")
    assert all(0 <= r <= 1 for per in rates.values() for r in per.values())


def test_group_labels_are_text_and_numbers_alike_and_nothing_else(tmp_path):
    """A group label is a string or a finite number (1 and 1.0 one group); a task without
    one, or with a list, boolean or NaN, is refused naming it."""
    path = tmp_path / "tasks.jsonl"
    rows = ['{"task_id": "a", "topic": "x"}', '{"task_id": "b", "topic": 1}']
    rows += ['{"task_id": "c", "topic": 1.0}', '{"task_id": 7, "topic": 2.5}']
    path.write_text("\n".join(rows) + "\n")
    assert read_groups(path, "topic", {"a", "b", "c", "7"}) == {
        "a": "x",
        "b": "1",
        "c": "1",
        "7": "2.5",
    }
    for value in ("NaN", "true", "[1]"):
        path.write_text('{"task_id": "a", "topic": ' + value + "}\n")
        with pytest.raises(SteeropsError, match="tasks.jsonl:1: topic: .* is no group label"):
            read_groups(path, "topic", {"a"})
    path.write_text('{"task_id": "a", "topic": ""}\n{"task_id": "b"}\n')
    with pytest.raises(SteeropsError, match="2 of the 2 scored tasks .* have no 'topic'"):
        read_groups(path, "topic", {"a", "b"})


def test_files_not_in_utf8_are_one_line_and_a_spreadsheet_s_byte_order_mark_is_read(tmp_path):
    """Every probe input is read as UTF-8: other bytes are an error naming file and line (not
    a traceback), and the byte-order mark a spreadsheet export starts with is dropped (it
    read as part of the first column's name: "missing column 'task_id'")."""
    from steerops.extract.conditions import read_conditions

    bad = {
        "scores.csv": (read_scores, b"task_id,mu\n\xe9t,1\n"),
        "rates.csv": (read_rates, b"condition_id,task_id,rate\nbaseline,\xe9,0.5\n"),
        "confounds.csv": (read_confounds, b"task_id,topic\na,x\nb,\xff\n"),
        "conditions.json": (
            read_conditions,
            b'{"baseline": {"id": "b", "system_prompt": "\xe9"}, "conditions": []}',
        ),
    }
    for name, (reader, data) in bad.items():
        path = tmp_path / name
        path.write_bytes(data)
        line = 3 if name == "confounds.csv" else (1 if name.endswith(".json") else 2)
        with pytest.raises(SteeropsError, match=rf"{name}:{line}: not UTF-8 text"):
            reader(path)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftask_id,mu\na,1.5\nb,-2\n".encode())
    assert read_scores(bom) == {"a": (1.5, None), "b": (-2.0, None)}
    conditions = tmp_path / "bom.json"
    conditions.write_bytes(
        '\ufeff{"baseline": {"id": "b", "system_prompt": null}, '
        '"conditions": [{"id": "x", "system_prompt": "hi"}]}'.encode()
    )
    comparisons = tmp_path / "bom.jsonl"
    rows = '{"task_a": "a", "task_b": "b", "winner": "a"}\n' * 2
    comparisons.write_bytes(("\ufeff" + rows).encode())
    assert read_comparisons(comparisons) == [("a", "b", "a")] * 2
    comparisons.write_bytes(rows.encode() + "\ufeff".encode() + rows.encode())
    with pytest.raises(SteeropsError, match=r"bom.jsonl:3: malformed JSON line"):
        read_comparisons(comparisons)  # only a first line starts with one
    baseline, (other,) = read_conditions(conditions)
    assert (baseline.id, baseline.system_prompt, other.id, other.system_prompt) == (
        "b",
        None,
        "x",
        "hi",
    )
