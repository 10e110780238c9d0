"""Response files of a steering cell: kept from earlier runs, damaged ones never crash a rerun."""

from __future__ import annotations

from steerops.io import read_json
from steerops.steering.configs import Config, ConfigResult, VectorSource
from steerops.steering.outputs import save_responses

SOURCE = VectorSource.of("mean_diff", "prompt[-1]", "residual")


def _result(coefficient: float, responses: list[dict]) -> ConfigResult:
    config = Config.single(SOURCE, 2, coefficient)
    return ConfigResult(config, 50.0, 80.0, 1, responses, weights=(coefficient,))


def test_a_damaged_kept_response_file_is_dropped_not_a_crash(tmp_path, capsys):
    baseline = ConfigResult(None, 5.0, 99.0, 1, [])
    answer = [{"question": "q", "response": "r", "trait": 50.0, "coherence": 80.0}]
    best = {("2", 1.0)}
    [first] = save_responses(tmp_path, "best", "h", baseline, [_result(1.0, answer)], best)
    assert read_json(first)["responses"] == answer
    # served from the log (no responses) under the same settings: the kept file stands
    assert save_responses(tmp_path, "best", "h", baseline, [_result(1.0, [])], best) == [first]
    first.write_text(first.read_text()[:20])  # a torn write
    assert save_responses(tmp_path, "best", "h", baseline, [_result(1.0, [])], best) == []
    assert "damaged file, now removed" in capsys.readouterr().out
    assert not first.exists()


def test_a_config_served_from_another_log_is_not_said_to_have_lost_its_responses(tmp_path, capsys):
    """A scratch run served a config from the pipeline's log (or from other questions)
    writes no response file for it; the note says so, not that a run failed to keep one."""
    baseline = ConfigResult(None, 5.0, 99.0, 1, [])
    served = _result(1.0, [])
    served.cached = True  # logged_here False: copied from another log or other settings
    assert save_responses(tmp_path, "best", "h", baseline, [served], {("2", 1.0)}) == []
    out = capsys.readouterr().out
    assert "served from" in out and "without keeping them" not in out
