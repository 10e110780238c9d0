"""The judge's disk cache: keys, round trips, concurrent writer processes, an unusable folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from steerops.errors import SteeropsError
from steerops.judges.cache import JudgeCache, cache_key


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


def test_cache_with_concurrent_writer_processes(tmp_path):
    script = textwrap.dedent("""
        import sys
        from steerops.judges.cache import JudgeCache, cache_key
        cache = JudgeCache(sys.argv[1])
        for i in range(150):
            cache.put(cache_key("j", "trait", sys.argv[2], str(i)), "j", "trait",
                      (float(i), 1.0))
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name])
        for name in ("a", "b", "c")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    cache = JudgeCache(tmp_path)
    keys = [cache_key("j", "trait", n, str(i)) for n in "abc" for i in range(150)]
    found = cache.get_many(keys)
    assert len(found) == 450 and found[keys[-1]] == (149.0, 1.0)


def test_cache_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SteeropsError, match="judge.cache_dir"):
        JudgeCache(tmp_path / "file" / "sub")
