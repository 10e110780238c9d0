"""Response files of a steering cell: a file is listed for a served config only when it
holds these settings' responses whole; a damaged one never crashes a rerun."""

from __future__ import annotations

from steerops.io import read_json
from steerops.steering.configs import Config, ConfigResult, VectorSource
from steerops.steering.outputs import save_responses

SOURCE = VectorSource.of("mean_diff", "prompt[-1]", "residual")
ANSWER = [{"question": "q", "response": "r", "trait": 50.0, "coherence": 80.0}]


def _result(coefficient: float, responses: list[dict]) -> ConfigResult:
    config = Config.single(SOURCE, 2, coefficient)
    return ConfigResult(config, 50.0, 80.0, 1, responses, weights=(coefficient,))


def test_only_a_whole_file_of_these_settings_stands_for_a_served_config(tmp_path, capsys):
    baseline = ConfigResult(None, 5.0, 99.0, 1, ANSWER)
    best = {("2", 1.0)}
    base, first = save_responses(
        tmp_path, "best", "h", "u", 1, baseline, [_result(1.0, ANSWER)], best
    )
    assert read_json(first)["responses"] == ANSWER and base.name == "baseline.json"
    served = ConfigResult(None, 5.0, 99.0, 1, [])
    # served from the log (no responses) under the same settings: the kept files stand
    assert save_responses(tmp_path, "best", "h", "u", 1, served, [_result(1.0, [])], best) == [
        base,
        first,
    ]
    # under other settings the config's file is not these responses; the baseline's is
    # when only steering settings differ (the same unsteered hash), and not otherwise
    other = save_responses(tmp_path, "best", "other", "u", 1, served, [_result(1.0, [])], best)
    assert other == [base]
    assert save_responses(tmp_path, "best", "other", "v", 1, served, [_result(1.0, [])], best) == []
    assert save_responses(tmp_path, "best", "h", "u", 2, served, [_result(1.0, [])], best) == []
    first.write_text(first.read_text()[:20])  # a torn write: listed no more, no crash
    assert save_responses(tmp_path, "best", "h", "u", 1, served, [_result(1.0, [])], best) == [base]
    assert "no responses for L2_c1 under these settings" in capsys.readouterr().out
