"""What the calibrate command and the report say of a calibration record: the dims just
under the massive bar, by layer, beside the set itself."""

from __future__ import annotations

from steerops.calibration.reading import layer_span, near_line, near_misses, rare_line
from steerops.report.calibrated import dims_line


def _record() -> dict:
    def peak(dim, value, ratio):
        return {"dim": dim, "value": value, "ratio": ratio, "position": 0, "token": "<s>"}

    layers = {
        # massive 507; 247 at 967x is near; 14 at 485x is under half the ratio bar
        "11": {
            "massive_dims": [507],
            "top_max": [
                peak(507, 24926.2, 13204.6),
                peak(247, 1825.0, 966.8),
                peak(14, 915.6, 485.1),
            ],
        },
        "12": {
            "massive_dims": [507],
            "top_max": [peak(507, 24917.4, 12839.7), peak(247, -1800.0, 944.0)],
        },
        # 507 not massive here but near: a dim of the set can be near at other layers
        "3": {
            "massive_dims": [],
            "top_max": [peak(507, 860.0, 740.7) | {"token": " ", "position": 46}],
        },
        # a high ratio on a small value (under half the peak bar) is not near
        "5": {"massive_dims": [], "top_max": [peak(99, 40.0, 990.0)]},
    }
    return {
        "n_tokens": 3645,
        "layers": layers,
        "aggregate": {
            "massive_dims": [507],
            "massive_layers": {"507": [11, 12]},
            "massive_rule": {"threshold": 100.0, "ratio": 1000.0},
            "global_dims": [507, 100],
            "rule": {"top_n": 5, "min_layers": 10},
        },
    }


def test_peaks_within_twice_of_the_bar_are_near_misses_strongest_first():
    misses = near_misses(_record())
    assert list(misses) == [247, 507]
    on_first = {"'<s>'@0": [11, 12]}
    assert misses[247] == {
        "layers": [11, 12],
        "ratio": 966.8,
        "peak": 1825.0,
        "under": ["ratio"],
        "tokens": on_first,
        "peak_layer": 11,
        "ratio_layer": 11,
    }
    assert misses[507]["layers"] == [3] and misses[507]["tokens"] == {"' '@46": [3]}
    assert near_line(_record()) == (
        "247 at layers 11-12 (peak up to 1,825 at layer 11, ratio up to 967x at layer 11: "
        "under the ratio bar; largest on '<s>'@0); 507 at layer 3 (peak up to 860, ratio up "
        "to 741x: under the ratio bar; largest on ' '@46)"
    )
    assert near_misses(_record(), within=1.01) == {}  # none within 1% of the bar
    assert near_line({"layers": {}, "aggregate": {}}) == "none"  # an older record: no rule


def test_the_report_names_the_near_misses_under_the_massive_set():
    line = dims_line(_record())
    assert "- Massive dims (peak |x| > 100 and > 1000x" in line
    assert "507 at layers 11-12" in line
    assert (
        "- Near the bar, where the cut falls (not massive at these layers, but over 1/2 of "
        "each bar: peak |x| > 50 and > 500x): 247 at layers 11-12 (peak up to 1,825 at" in line
    )


def test_a_near_miss_says_which_bar_it_fell_under_at_every_layer():
    """Under the peak bar at one layer and the ratio bar at another: neither at every one."""

    def layer(value, ratio):
        return {"massive_dims": [], "top_max": [{"dim": 7, "value": value, "ratio": ratio}]}

    record = _record()
    record["layers"] = {"1": layer(90.0, 1500.0), "2": layer(80.0, 2000.0)}
    assert near_misses(record)[7]["under"] == ["peak"]
    # the largest peak and the largest ratio come from different layers: each says which
    line = near_line(record)
    assert "(peak up to 90 at layer 1, ratio up to 2,000x at layer 2: under the peak bar)" in line
    record["layers"] = {"1": layer(90.0, 900.0)}
    assert near_line(record).endswith("under both bars)")
    # exactly at a bar is under it: massive needs more than each
    record["layers"] = {"1": layer(100.0, 1500.0)}
    assert near_misses(record)[7]["under"] == ["peak"]
    record["layers"] = {"1": layer(150.0, 1000.0)}
    assert near_misses(record)[7]["under"] == ["ratio"]
    record["layers"] = {"1": layer(90.0, 1500.0), "2": layer(300.0, 900.0)}
    assert near_misses(record)[7]["under"] == []
    assert near_line(record) == (
        "7 at layers 1-2 (peak up to 300 at layer 2, ratio up to 1,500x at layer 1: under one "
        "bar or the other at each layer)"
    )


def test_a_dim_over_the_bars_in_too_few_sequences_is_named_apart_from_the_set_and_near_misses():
    """A dim over both bars on fewer sequences than the rule asks is not massive: the report
    names it with its token, sequence and its ratio in the sequence the rule ranks, and it is
    no near miss (it passed both bars)."""
    record = _record()
    record["aggregate"]["massive_rule"]["min_sequences"] = 2
    peak = {"dim": 99, "value": -4000.0, "ratio": 2100.0, "sequence": 7, "position": 130}
    peak |= {"token": " x", "recurring_ratio": 40.0}
    record["layers"]["5"] = {"massive_dims": [], "top_max": [peak], "massive_rare": {"99": peak}}
    assert 99 not in near_misses(record)
    assert rare_line(record) == (
        "99 at layer 5 (peak 4,000 on ' x'@130 of sequence 7; 40x in its 2nd sequence by peak)"
    )
    line = dims_line(record)
    assert (
        "- Massive dims (peak |x| > 100 and > 1000x the layer's median |x|, in at least 2 "
        "calibration sequences, over all 3645" in line
    )
    assert (
        "- Over both bars in fewer than 2 calibration sequences (not massive by the rule: "
        "left out of the massive set, and of cleaning that set): 99 at layer 5" in line
    )
    # a rule of 3 sequences, the dim over the bars at two layers: its 3rd sequence, and the
    # layer of its largest peak
    record["aggregate"]["massive_rule"]["min_sequences"] = 3
    larger = peak | {"value": 5000.0, "sequence": 1, "recurring_ratio": 7.0}
    record["layers"]["6"] = {"massive_dims": [], "top_max": [], "massive_rare": {"99": larger}}
    assert rare_line(record) == (
        "99 at layers 5-6 (peak 5,000 on ' x'@130 of sequence 1 at layer 6; 7x in its 3rd "
        "sequence by peak)"
    )
    assert "fewer than 3 calibration sequences" in dims_line(record)
    # an older record has no sequence rule: the lines say none
    assert rare_line(_record()) == "" and "fewer than" not in dims_line(_record())
    assert "calibration sequences" not in dims_line(_record())


def test_layer_spans():
    assert layer_span([20, 11, 12, 13]) == "11-13, 20"
    assert layer_span([]) == "none"
