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


def test_coefficients_that_print_alike_keep_files_of_their_own(tmp_path):
    """1.5000001 and 1.5000002 both print as 1.5 with %g: each config gets its own file,
    a served config never takes the other's file, and the grid names them apart."""
    from types import SimpleNamespace

    from steerops.steering.terminal import cell_table

    near = (1.5000001, 1.5000002)
    baseline = ConfigResult(None, 5.0, 99.0, 1, ANSWER)
    results = [_result(c, [{**ANSWER[0], "response": str(c)}]) for c in near]
    every = {("2", c) for c in near}
    saved = save_responses(tmp_path, "all", "h", "u", 1, baseline, results, every)
    assert len({p.name for p in saved}) == 3
    assert [read_json(p)["responses"][0]["response"] for p in saved[1:]] == [str(c) for c in near]
    assert saved[1].name == "L2_c1.5000001.json" and saved[2].name == "L2_c1.5000002.json"
    # a config whose file holds another config (same settings): not its responses
    saved[2].write_text(saved[1].read_text())
    served = ConfigResult(None, 5.0, 99.0, 1, [])
    again = save_responses(
        tmp_path, "all", "h", "u", 1, served, [_result(c, []) for c in near], every
    )
    assert [p.name for p in again] == ["baseline.json", "L2_c1.5000001.json"]
    nothing = {"status": "needs finer coefficients", "tried_layer": None, "min_coherence": 68.0}
    unsteered = SimpleNamespace(trait_mean=5.0, coherence_mean=99.0)
    grid = cell_table("cell", unsteered, results, nothing, "f")
    assert "c=1.5000001" in grid and "c=1.5000002" in grid
    # a coefficient %g prints exactly keeps its short name
    assert (
        save_responses(tmp_path, "all", "h", "u", 1, baseline, [_result(0.2, ANSWER)], {})[1].name
        == "L2_c0.2.json"
    )


def test_a_response_file_named_before_exact_names_is_still_found(tmp_path):
    """A run before exact names saved 0.1 + 0.2 as `L2_c0.3.json`: a rerun serving that
    config from the log takes that file under its exact name, and never takes the file of
    the config that is 0.3 exactly."""
    near = 0.1 + 0.2
    baseline = ConfigResult(None, 5.0, 99.0, 1, ANSWER)
    every = {("2", near), ("2", 0.3)}
    [_, exact] = save_responses(
        tmp_path, "all", "h", "u", 1, baseline, [_result(near, ANSWER)], every
    )
    assert exact.name == "L2_c0.30000000000000004.json"
    exact.rename(tmp_path / "L2_c0.3.json")  # as the older run named it
    served = ConfigResult(None, 5.0, 99.0, 1, [])
    again = save_responses(tmp_path, "all", "h", "u", 1, served, [_result(near, [])], every)
    assert [p.name for p in again] == ["baseline.json", exact.name]
    assert not (tmp_path / "L2_c0.3.json").exists()
    # the 0.3 config's own file is not the near one's
    save_responses(tmp_path, "all", "h", "u", 1, baseline, [_result(0.3, ANSWER)], every)
    exact.unlink()
    assert save_responses(tmp_path, "all", "h", "u", 1, served, [_result(near, [])], every) == [
        tmp_path / "baseline.json"
    ]
    assert (tmp_path / "L2_c0.3.json").exists()
