"""The judge's disk cache: keys, round trips, concurrent writer processes, an unusable folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from steerops.errors import SteeropsError
from steerops.judges.cache import CACHE_FILE, JudgeCache, cache_key


def test_cache_round_trip_and_keys(tmp_path):
    cache = JudgeCache(tmp_path / "c")
    k1 = cache_key("openai:m:abc", "trait", "q", "r")
    assert k1 != cache_key("openai:m:abc", "coherence", "q", "r")
    assert k1 != cache_key("openai:m:abd", "trait", "q", "r")
    assert k1 != cache_key("openai:m:abc", "trait", "q ", "r")
    cache.put(k1, "openai:m:abc", "trait", (None, 0.0))
    k2 = cache_key("openai:m:abc", "trait", "q", "r2")
    cache.put(k2, "openai:m:abc", "trait", (42.5, 0.9))
    again = JudgeCache(tmp_path / "c")
    assert again.get_many([k1, k2, "missing", k1]) == {k1: (None, 0.0), k2: (42.5, 0.9)}
    assert len(again) == 2


def test_the_served_model_counts_only_beside_the_answer_it_came_with(tmp_path):
    """An older steerops replaces answers without touching the served-model table: such a
    row no longer names the model of the answer beside it, and is not counted."""
    import sqlite3

    cache = JudgeCache(tmp_path)
    keys = [cache_key("j", "trait", "q", str(i)) for i in range(3)]
    cache.put(keys[0], "j", "trait", (50.0, 1.0), "gpt-a")
    cache.put(keys[1], "j", "trait", (50.0, 1.0), "gpt-a")
    cache.put(keys[2], "j", "trait", (50.0, 1.0))
    assert cache.served_by(keys) == {keys[0]: "gpt-a", keys[1]: "gpt-a"}
    with sqlite3.connect(cache.path) as db:  # as the older code writes an answer again
        db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, 'j', 'trait', 60.0, 1.0, ?)",
            (keys[0], time.time() + 1),
        )
    assert cache.served_by(keys) == {keys[1]: "gpt-a"}
    cache.put(keys[1], "j", "trait", (50.0, 1.0))  # answered again, naming no model
    assert cache.served_by(keys) == {}
    assert cache.has_answers("j") and not cache.has_answers("other")


def test_cache_with_concurrent_writer_processes(tmp_path):
    # The processes start together and open the same fresh files one after another, so
    # some open a file while another switches it to WAL, and all write the same tables.
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from steerops.judges.cache import CACHE_FILE, JudgeCache, cache_key
        time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
        for folder in range(40):
            cache = JudgeCache(Path(sys.argv[1]) / str(folder))
            for i in range(5):
                cache.put(cache_key("j", "trait", sys.argv[2], str(i)), "j", "trait",
                          (float(i), 1.0))
            cache.close()
    """)
    start = str(time.time() + 3)
    names = "abcd"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name, start])
        for name in names
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(names)
    keys = [cache_key("j", "trait", n, str(i)) for n in names for i in range(5)]
    for folder in range(40):
        found = JudgeCache(tmp_path / str(folder)).get_many(keys)
        assert len(found) == 20 and found[keys[-1]] == (4.0, 1.0)


def test_cache_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SteeropsError, match="judge.cache_dir"):
        JudgeCache(tmp_path / "file" / "sub")


def test_a_row_that_is_not_a_number_is_a_miss_not_a_crash(tmp_path):
    import sqlite3

    cache = JudgeCache(tmp_path)
    keys = [cache_key("j", "trait", "q", str(i)) for i in range(4)]
    cache.put(keys[0], "j", "trait", (50.0, 0.9))
    with sqlite3.connect(cache.path) as db:  # written by hand or by another tool
        db.executemany(
            "INSERT INTO answers VALUES (?, 'j', 'trait', ?, ?, 0)",
            [(keys[1], "fifty", 0.9), (keys[2], 50.0, "x"), (keys[3], 50.0, float("inf"))],
        )
    assert cache.get_many(keys) == {keys[0]: (50.0, 0.9)}


def test_a_damaged_cache_file_is_read_as_far_as_it_can_be_and_the_run_goes_on(tmp_path, capsys):
    cache = JudgeCache(tmp_path)
    keys = [cache_key("j", "trait", "q" * 200, str(i)) for i in range(300)]
    for k in keys:
        cache.put(k, "j", "trait", (1.0, 1.0))
    cache.close()
    data = bytearray(cache.path.read_bytes())
    # one page of answers: a page holding a row's key and kind (the key's index holds no kind)
    page = next(
        p
        for p in range(len(data) // 4096)
        if keys[150].encode() in (chunk := data[p * 4096 : (p + 1) * 4096]) and b"trait" in chunk
    )
    data[page * 4096 : (page + 1) * 4096] = b"Z" * 4096
    cache.path.write_bytes(bytes(data))
    again = JudgeCache(tmp_path)
    found = again.get_many(keys)
    assert 0 < len(found) < len(keys) and set(found.values()) == {(1.0, 1.0)}
    for k in keys[:50]:
        again.put(k, "j", "trait", (2.0, 1.0))  # kept where the file allows it, else said
    new = cache_key("j", "trait", "new", "x")
    again.put(new, "j", "trait", (3.0, 1.0))
    assert again.get_many([new]) == {new: (3.0, 1.0)}
    err = capsys.readouterr().err
    assert err.count("warning: judge cache") == 1 and "malformed" in err


def test_a_cache_reads_the_one_below_and_writes_only_its_own(tmp_path):
    """A run of its own reads the pipeline's answers (read-only) and keeps its new ones in
    its folder: what it holds itself comes first, and the pipeline's file is untouched."""
    below = JudgeCache(tmp_path / "pipeline")
    keys = [cache_key("j", "trait", "q", str(i)) for i in range(4)]
    below.put(keys[0], "j", "trait", (10.0, 1.0), "gpt-a")
    below.put(keys[1], "j", "trait", (20.0, 1.0), "gpt-a")
    below.put(keys[2], "j", "trait", (30.0, 1.0))
    below.close()
    pipeline_answers = {keys[0]: (10.0, 1.0), keys[1]: (20.0, 1.0), keys[2]: (30.0, 1.0)}
    before = below.path.read_bytes()  # closed: every answer is in the file
    run = JudgeCache(tmp_path / "run", also_reads=tmp_path / "pipeline")
    assert run.below == below.path
    assert run.get_many(keys) == pipeline_answers
    assert run.has_answers("j") and not run.has_answers("other") and len(run) == 0
    # its own answer of a key comes first, its served model (or none) too
    run.put(keys[1], "j", "trait", (25.0, 1.0))
    run.put(keys[3], "j", "trait", (40.0, 1.0), "gpt-b")
    assert run.get_many(keys)[keys[1]] == (25.0, 1.0) and len(run) == 2
    assert run.served_by(keys) == {keys[0]: "gpt-a", keys[3]: "gpt-b"}
    # a judge found unreadable in either layer is refused; dropping touches only its own
    run.drop_judge("j", "digits one by one")
    assert run.unreadable("j") == "digits one by one"
    assert run.get_many(keys) == pipeline_answers
    run.close()
    assert below.path.read_bytes() == before
    # nothing made beside it (a -shm of this user's would block another's pipeline)
    assert sorted(p.name for p in below.path.parent.iterdir()) == [CACHE_FILE]
    fresh = JudgeCache(tmp_path / "pipeline")
    assert fresh.unreadable("j") is None and len(fresh) == 3
    fresh.drop_judge("k", "found by the pipeline")
    fresh.close()
    assert JudgeCache(tmp_path / "run2", also_reads=tmp_path / "pipeline").unreadable("k") == (
        "found by the pipeline"
    )


def test_a_missing_or_damaged_cache_below_is_no_layer(tmp_path, capsys):
    """No pipeline cache yet: nothing read and nothing created there. One that cannot be
    read: said once, and its answers are asked again."""
    run = JudgeCache(tmp_path / "run", also_reads=tmp_path / "none")
    key = cache_key("j", "trait", "q", "r")
    assert run.get_many([key]) == {} and not (tmp_path / "none").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CACHE_FILE).write_bytes(b"not a database" * 100)
    run = JudgeCache(tmp_path / "run", also_reads=tmp_path / "bad")
    assert run.get_many([key]) == {} and run.get_many([key]) == {} and not run.has_answers("j")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad/judge_cache.sqlite" in err[0], err
    assert "this run asks again" in err[0]


def test_an_older_cache_below_without_the_newer_tables_serves_its_answers(tmp_path, capsys):
    import sqlite3

    (tmp_path / "old").mkdir()
    with sqlite3.connect(tmp_path / "old" / CACHE_FILE) as db:  # as an older steerops made it
        db.execute(
            "CREATE TABLE answers (key TEXT PRIMARY KEY, judge TEXT, kind TEXT, mean REAL, "
            "mass REAL NOT NULL, created REAL)"
        )
        key = cache_key("j", "trait", "q", "r")
        db.execute("INSERT INTO answers VALUES (?, 'j', 'trait', 42.0, 1.0, 0)", (key,))
    db.close()
    run = JudgeCache(tmp_path / "run", also_reads=tmp_path / "old")
    assert run.get_many([key]) == {key: (42.0, 1.0)} and run.has_answers("j")
    assert run.served_by([key]) == {} and run.unreadable("j") is None
    assert capsys.readouterr().err == ""


def test_the_cache_below_is_seen_as_a_running_pipeline_writes_it(tmp_path):
    """A pipeline writing its cache while a scratch run reads it: the run sees what is only
    in the write-ahead log, and answers saved into the file after its first lookup (no
    stale view, no error), and it drops nothing beside a file whose log is empty."""
    pipeline = JudgeCache(tmp_path / "pipeline")
    keys = [cache_key("j", "trait", "q", str(i)) for i in range(600)]
    pipeline.put(keys[0], "j", "trait", (1.0, 1.0))
    run = JudgeCache(tmp_path / "run", also_reads=tmp_path / "pipeline")
    assert run.get_many(keys[:1]) == {keys[0]: (1.0, 1.0)}  # in the log, not yet saved
    for k in keys[1:]:
        pipeline.put(k, "j", "trait", (2.0, 1.0))
    pipeline._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # saved into the file
    found = run.get_many(keys)
    assert len(found) == 600 and found[keys[599]] == (2.0, 1.0)
    pipeline.drop_judge("j", "unreadable")
    assert run.unreadable("j") == "unreadable" and run.get_many(keys) == {}
    pipeline.close()
    listed = sorted(p.name for p in (tmp_path / "pipeline").iterdir())
    run.get_many(keys)
    assert sorted(p.name for p in (tmp_path / "pipeline").iterdir()) == listed


def _recorded_connections(monkeypatch) -> list:
    import sqlite3

    made, real = [], sqlite3.connect

    def connect(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sqlite3, "connect", connect)
    return made


def _closed(connection) -> bool:
    import sqlite3

    try:
        connection.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_every_connection_to_the_cache_below_is_closed_after_its_lookup(tmp_path, monkeypatch):
    """A lookup opens the pipeline's cache for itself alone: a long run doing thousands
    would otherwise hold a file descriptor (and a reader on the pipeline's WAL) for each.
    A file below that is not a database is closed too."""
    below = JudgeCache(tmp_path / "pipeline")
    keys = [cache_key("j", "trait", "q", str(i)) for i in range(3)]
    below.put(keys[0], "j", "trait", (10.0, 1.0), "gpt-a")
    below.close()
    made = _recorded_connections(monkeypatch)
    run = JudgeCache(tmp_path / "run", also_reads=tmp_path / "pipeline")
    assert run.get_many(keys) == {keys[0]: (10.0, 1.0)}
    assert run.served_by(keys) == {keys[0]: "gpt-a"}
    assert run.unreadable("j") is None and run.has_answers("j")
    own, lookups = made[0], made[1:]
    assert len(lookups) >= 4 and all(_closed(c) for c in lookups) and not _closed(own)
    (tmp_path / "pipeline" / CACHE_FILE).write_bytes(b"not a database" * 100)
    made.clear()
    assert run.get_many(keys) == {}
    assert made and all(_closed(c) for c in made)
    run.close()
    assert _closed(own)


def test_a_cache_that_cannot_be_set_up_is_closed_and_one_line(tmp_path, monkeypatch):
    import sqlite3

    made = _recorded_connections(monkeypatch)

    def locked(self, deadline):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(JudgeCache, "_set_up", locked)
    with pytest.raises(SteeropsError, match="judge.cache_dir: cannot open .*locked"):
        JudgeCache(tmp_path / "run")
    assert len(made) == 1 and _closed(made[0])
