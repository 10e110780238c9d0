"""`steerops report` from results files: deterministic, one-line errors, search trials and held-
out numbers, the steering direction."""

from __future__ import annotations

import pandas as pd

from steerops.cli import main

COEFS = [0.5, 1.0, 1.5, 2.0]


# method -> (trait deltas, coherences) at COEFS, layer 2
SYNTHETIC = {
    "mean_diff": ([10, 40, 70, 90], [95, 90, 80, 50]),  # best feasible 70 @ 1.5
    "probe": ([5, 30, 60, 95], [99, 95, 85, 70]),  # best feasible 95 @ 2.0
    "mean_diff_top1": ([10, 50, 75, 95], [95, 90, 70, 40]),  # 75 @ 1.5
    "mean_diff_top2": ([20, 80, 85, 95], [95, 90, 60, 40]),  # 80 @ 1.0
    "mean_diff_top3": ([20, 60, 85, 95], [95, 90, 60, 40]),  # 60 @ 1.0
    "mean_diff_top5": ([20, 50, 85, 95], [95, 90, 60, 40]),  # 50 @ 1.0
    "mean_diff_cleaned": ([15, 65, 85, 95], [95, 90, 60, 40]),  # 65 @ 1.0
    "mean_diff_preclean": ([20, 70, 80, 95], [95, 30, 20, 10]),  # 20 @ 0.5 -> gap -45, flagged
    "probe_cleaned": ([10, 50, 70, 90], [95, 90, 80, 60]),  # 70 @ 1.5
    "probe_preclean": ([5, 20, 40, 90], [95, 90, 80, 60]),  # 40 @ 1.5 -> gap -30, no flag
    "random_baseline": ([0, 1, 2, 3], [60, 50, 40, 30]),  # never feasible; best coh 60
}


def synthetic_frame(model: str = "m", position: str = "prompt[-1]") -> pd.DataFrame:
    rows = []
    for method, (deltas, cohs) in SYNTHETIC.items():
        for coef, delta, coh in zip(COEFS, deltas, cohs, strict=True):
            rows.append(
                {
                    "model": model,
                    "trait": "toy/refusal",
                    "variant": "instruct",
                    "vector_variant": "base",
                    "position": position,
                    "component": "residual",
                    "method": method,
                    "layer": 2,
                    "coefficient": coef,
                    "weight": coef * 10.0,
                    "trait_mean": delta,
                    "coherence_mean": coh,
                    "trait_delta": delta,
                    "n": 20,
                    "source": "grid",
                }
            )
    # a worse layer that must never win
    rows.append({**rows[0], "layer": 1, "trait_delta": 5.0, "coherence_mean": 99.0})
    return pd.DataFrame(rows)


def _row(table, **keys):
    hit = table
    for k, v in keys.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, keys
    return hit.iloc[0]


def _write_results(out, frame):
    from steerops.steering.store import steering_dir

    for (position, method), rows in frame.groupby(["position", "method"]):
        folder = steering_dir(out, "toy/refusal", "instruct", position, "residual", method)
        folder.mkdir(parents=True)
        rows.drop(columns=["model", "source"]).to_csv(folder / "results.csv", index=False)


def test_report_command_is_deterministic(tmp_path):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "paths": {"out": "outputs"},
                "tracking": {"enabled": False},
                "models": {"instruct": {"id": "m"}, "base": {"id": "m"}},
            }
        )
    )
    _write_results(tmp_path / "outputs", synthetic_frame())
    assert main(["report", "--params", str(params)]) == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()}
    assert main(["report", "--params", str(params)]) == 0
    second = {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()}
    assert first == second
    assert {
        "report.md",
        "gap_analysis.csv",
        "cleaning_curve.csv",
        "coefficients.csv",
        "coefficient_curves.png",
        "cleaning_curve.png",
        "metrics.json",
    } <= set(first)
    text = first["report.md"].decode()
    assert "needs finer coefficients" in text and "likely implementation problem" in text


def test_report_without_results_is_one_line_error(tmp_path, capsys):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"out": "outputs"}, "tracking": {"enabled": False}}))
    assert main(["report", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no steering results" in err[0]


def _write_search(
    out, method: str, trials: list[tuple[float, float, float]], direction: str = "positive"
):
    """A search folder as `steerops search` writes it: trials.csv and best.json."""
    from steerops.io import write_json
    from steerops.search.results import choose_best
    from steerops.search.store import search_dir, write_trials_csv
    from steerops.search.study import TrialRecord

    folder = search_dir(out, "toy/refusal", "instruct", "prompt[-1]", "residual", method)
    records = [
        TrialRecord(i, 2, c, c * 10.0, d, coh, d, coh >= 68, "complete", "sampled", 10)
        for i, (c, d, coh) in enumerate(trials)
    ]
    records.append(
        TrialRecord(len(records), 2, 1.9, 19.0, None, None, None, None, "fail", "sampled", 0)
    )
    write_trials_csv(folder / "trials.csv", records)
    chosen, feasible = choose_best(records)
    write_json(
        folder / "best.json",
        {
            "trait": "toy/refusal",
            "variant": "instruct",
            "vector_variant": "base",
            "method": method,
            "position": "prompt[-1]",
            "component": "residual",
            "direction": direction,
            "feasible": feasible,
            "chosen": {
                "trial": chosen.number,
                "layer": chosen.layer,
                "coefficient": chosen.coefficient,
            },
            "search": {
                "trait_delta": chosen.trait_delta,
                "coherence_mean": chosen.coherence_mean,
                "n_questions": 10,
            },
            "heldout": {
                "trait_delta": chosen.trait_delta - 7.0,
                "coherence_mean": 81.0,
                "n_questions": 10,
            },
            "n_trials": len(trials),
            "n_generations": {"total": 10 * len(trials) + 30},
        },
    )


def test_search_trials_join_the_gap_analysis_and_held_out_numbers_are_reported(tmp_path):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "paths": {"out": "outputs"},
                "tracking": {"enabled": False},
                "models": {"instruct": {"id": "m"}, "base": {"id": "m"}},
            }
        )
    )
    _write_results(tmp_path / "outputs", synthetic_frame())
    # mean_diff's grid best is 70 @ 1.5; the search finds 78 @ 1.6 (feasible) and a larger,
    # infeasible 99 @ 2.2 that must not count
    _write_search(
        tmp_path / "outputs", "mean_diff", [(0.7, 30.0, 92.0), (1.6, 78.0, 74.0), (2.2, 99.0, 40.0)]
    )
    assert main(["report", "--params", str(params)]) == 0
    gap = pd.read_csv(tmp_path / "reports" / "gap_analysis.csv")
    md = _row(gap, method="mean_diff")
    assert md["best_delta"] == 78.0 and md["coefficient"] == 1.6
    assert md["n_configs"] == 4 + 1 + 3  # grid (two layers) + completed search trials
    searched = pd.read_csv(tmp_path / "reports" / "search_heldout.csv")
    assert len(searched) == 1
    row = searched.iloc[0]
    assert (row["coefficient"], row["search_trait_delta"], row["heldout_trait_delta"]) == (
        1.6,
        78.0,
        71.0,
    )
    assert bool(row["feasible"]) and row["n_generations"] == 60
    assert "held-out questions" in (tmp_path / "reports" / "report.md").read_text()


def test_negative_direction_measures_deltas_toward_suppression(tmp_path):
    """With steering.direction negative a grid stores trait - baseline (negative when it
    works) and a search stores its objective (positive when it works); the report puts both
    in the steering direction, so the largest suppression is the best."""
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "paths": {"out": "outputs"},
                "tracking": {"enabled": False},
                "steering": {"direction": "negative"},
                "models": {"instruct": {"id": "m"}, "base": {"id": "m"}},
            }
        )
    )
    frame = synthetic_frame()
    frame["trait_delta"] = -frame["trait_delta"]
    _write_results(tmp_path / "outputs", frame)
    _write_search(
        tmp_path / "outputs",
        "mean_diff",
        [(1.6, 78.0, 74.0), (2.2, 99.0, 40.0)],
        direction="negative",
    )
    assert main(["report", "--params", str(params)]) == 0
    gap = pd.read_csv(tmp_path / "reports" / "gap_analysis.csv")
    assert _row(gap, method="mean_diff")["best_delta"] == 78.0  # the search's, not the grid's
    assert _row(gap, method="probe")["best_delta"] == 95.0
    assert "steering direction" in (tmp_path / "reports" / "report.md").read_text()
