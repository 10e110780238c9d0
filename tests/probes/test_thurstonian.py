"""Thurstonian utilities: recovery of planted utilities, the choice probability, the
analytic gradient, and the `probe thurstonian` command."""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import norm, spearmanr

from steerops.cli import main
from steerops.errors import SteeropsError
from steerops.probes.thurstonian import (
    _objective,
    fit_thurstonian,
    heldout_accuracy,
    sample_comparisons,
    split_half,
)


def _planted(n_tasks: int, n_comparisons: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tasks = [f"task{i}" for i in range(n_tasks)]
    mu = rng.normal(size=n_tasks)
    sigma = np.exp(rng.normal(0, 0.3, n_tasks))
    return tasks, mu, sigma, sample_comparisons(rng, tasks, mu, sigma, n_comparisons)


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_recovers_planted_utilities(seed):
    tasks, mu, _, comparisons = _planted(60, 3000, seed)
    fit = fit_thurstonian(comparisons)
    scores = fit.scores()
    fitted = np.array([scores[t][0] for t in tasks])
    assert fit.converged
    assert spearmanr(fitted, mu)[0] >= 0.95
    assert abs(fitted.mean()) < 1e-6  # origin fixed at mean 0
    assert all(s > 0 for _, s in scores.values())


def test_choice_probability_is_the_thurstonian_one():
    # 2 tasks, 700 vs 300 wins: with sigma pinned near 1 by the prior, the fit must satisfy
    # Phi((mu_a - mu_b) / sqrt(sigma_a^2 + sigma_b^2)) = 0.7 up to the weak priors.
    comparisons = [("a", "b", "a")] * 700 + [("a", "b", "b")] * 300
    fit = fit_thurstonian(comparisons)
    (mu_a, s_a), (mu_b, s_b) = fit.scores()["a"], fit.scores()["b"]
    assert norm.cdf((mu_a - mu_b) / np.hypot(s_a, s_b)) == pytest.approx(0.7, abs=0.01)
    assert fit.accuracy == pytest.approx(0.7)
    expected_nll = -(0.7 * np.log(0.7) + 0.3 * np.log(0.3))
    assert fit.nll == pytest.approx(expected_nll, abs=1e-3)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    n = 7
    winners = rng.integers(0, n, 40)
    losers = (winners + rng.integers(1, n, 40)) % n
    counts = rng.integers(1, 5, 40).astype(float)
    theta = rng.normal(size=2 * n)

    def value(t):
        return _objective(t, winners, losers, counts, 2.0, 0.7)[0]

    numeric = approx_fprime(theta, value, 1e-6)
    analytic = _objective(theta, winners, losers, counts, 2.0, 0.7)[1]
    np.testing.assert_allclose(analytic, numeric, atol=1e-4)


def test_disconnected_comparisons_are_refused():
    # Two groups never compared with each other: the priors centre each at 0, so a planted
    # offset of 3 between them would vanish without a word.
    rng = np.random.default_rng(0)
    left = sample_comparisons(rng, ["a0", "a1", "a2"], np.zeros(3), np.ones(3), 300)
    right = sample_comparisons(rng, ["b0", "b1"], np.full(2, 3.0), np.ones(2), 200)
    with pytest.raises(SteeropsError, match=r"into 2 groups .*sizes \[3, 2\].*'a0' and 'b0'"):
        fit_thurstonian(left + right)
    fit_thurstonian(left + right + [("a0", "b0", "b0")])  # one link makes one scale


def test_heldout_accuracy_is_chance_on_coin_flips_where_in_sample_is_not():
    # 600 tasks with 4 coin-flip comparisons each: the in-sample accuracy looks like a fit
    rng = np.random.default_rng(3)
    tasks = [f"t{i}" for i in range(600)]
    comparisons = sample_comparisons(rng, tasks, np.zeros(600), np.ones(600), 2400)
    assert fit_thurstonian(comparisons, 10.0, 0.5).accuracy > 0.6
    held = heldout_accuracy(comparisons, 10.0, 0.5, fraction=0.2, seed=3)
    assert held["n"] == 480 and held["ci"][0] < 0.5 < held["ci"][1]
    planted, mu, _, planted_comps = _planted(60, 3000)
    good = heldout_accuracy(planted_comps, fraction=0.2, seed=0)
    assert good["ci"][0] > 0.6 and "unconverged" not in good
    # a fit stopped before converging measures the optimiser, not the model: no accuracy
    assert not fit_thurstonian(planted_comps, max_iter=3).converged
    stopped = heldout_accuracy(planted_comps, fraction=0.2, seed=0, max_iter=3)
    assert stopped["accuracy"] is None and stopped["ci"] == [None, None]
    assert stopped["n"] == 600 and stopped["unconverged"]


def test_heldout_accuracy_counts_ties_half_against_a_refit_on_the_same_split():
    """Tasks compared only in held-out comparisons keep the prior mean, so a held-out
    comparison of two of them is a tie and counts half a hit: the accuracy is a numpy count
    of the held-out comparisons against `fit_thurstonian` on the same seeded split's other
    comparisons (ties at 0.5)."""
    _, _, _, planted = _planted(30, 600)
    fraction, seed, n_orphans = 0.2, 4, 12
    n = len(planted) + n_orphans
    # the documented split: a seeded permutation, its first round(fraction * n) held out
    order = np.random.default_rng(seed).permutation(n)
    held = np.zeros(n, dtype=bool)
    held[order[: round(fraction * n)]] = True
    # each orphan pair is compared once, at a row the split holds out
    spots = np.flatnonzero(held)[:n_orphans].tolist()
    orphans = iter(
        [(f"new{2 * k}", f"new{2 * k + 1}", f"new{2 * k + k % 2}") for k in range(n_orphans)]
    )
    rest = iter(planted)
    comparisons = [next(orphans) if i in spots else next(rest) for i in range(n)]

    result = heldout_accuracy(comparisons, fraction=fraction, seed=seed)

    fit = fit_thurstonian([c for c, h in zip(comparisons, held, strict=True) if not h])
    assert fit.converged and not any(t.startswith("new") for t in fit.tasks)
    mu = {t: m for t, (m, _) in fit.scores().items()}
    heldout = [c for c, h in zip(comparisons, held, strict=True) if h]
    # a task the fit never saw is at the prior mean, 0
    won, lost = np.array(
        [(mu.get(w, 0.0), mu.get(b if w == a else a, 0.0)) for a, b, w in heldout]
    ).T
    hits = np.select([won > lost, won == lost], [1.0, 0.5], 0.0)
    # the orphans' comparisons tie, and only they
    assert np.array_equal(won == lost, [a.startswith("new") for a, _, _ in heldout])
    assert result["n"] == held.sum() and "unconverged" not in result
    assert result["accuracy"] == pytest.approx(hits.mean(), abs=1e-12)


@pytest.mark.parametrize(("n_tasks", "per_task", "seed"), [(100, 30, 0), (300, 6, 2)])
def test_the_noise_ceiling_estimates_how_far_the_full_fit_is_from_the_planted_utilities(
    n_tasks, per_task, seed
):
    """The split-half ceiling is an estimate of what no one can see on real scores: the r
    of the full fit's utilities with the true ones. Planted, that r is known: it lies in the
    ceiling's interval, dense or sparse. The r is the two halves' fits' Pearson r, refitted
    here on the documented split (a seeded permutation, its first half and the rest)."""
    tasks, mu, _, comparisons = _planted(n_tasks, n_tasks * per_task // 2, seed)
    result = split_half(comparisons, seed=seed)
    fit = fit_thurstonian(comparisons)
    truth = dict(zip(tasks, mu, strict=True))
    r_true = np.corrcoef(fit.mu, [truth[t] for t in fit.tasks])[0, 1]
    low, high = result["ceiling_ci"]
    assert low < r_true < high and low < result["ceiling"] < high
    assert result["reliability"] == pytest.approx(2 * result["r"] / (1 + result["r"]))
    assert result["ceiling"] == pytest.approx(result["reliability"] ** 0.5)
    order = np.random.default_rng(seed).permutation(len(comparisons))
    halves = [order[: len(order) // 2], order[len(order) // 2 :]]
    if n_tasks == 100:  # dense: each half links every task, so the fits are the plain ones
        fits = [fit_thurstonian([comparisons[i] for i in half]) for half in halves]
        a, b = (dict(zip(f.tasks, f.mu, strict=True)) for f in fits)
        assert set(a) == set(b) == set(tasks) and result["n_tasks"] == 100
        assert result["r"] == pytest.approx(
            np.corrcoef([a[t] for t in tasks], [b[t] for t in tasks])[0, 1], abs=1e-6
        )


def test_each_half_is_fitted_on_its_largest_linked_group():
    """Tasks a half links only among themselves share no scale with the rest: left out of
    that half's fit, and of the r, which is the one of the planted set alone."""
    tasks, _, _, comparisons = _planted(100, 1500, 0)
    apart = [("x", "y", "x")] * 6 + [("y", "z", "y")] * 6  # never compared with the 100
    result = split_half(comparisons + apart, seed=0)
    assert result["tasks_total"] == 103 and result["n_tasks"] == 100
    alone = split_half(comparisons, seed=0)
    assert result["r"] != alone["r"]  # another split of other comparisons: only the set is equal
    order = np.random.default_rng(0).permutation(len(comparisons) + len(apart))
    both = comparisons + apart
    halves = [
        [both[i] for i in order[: len(order) // 2]],
        [both[i] for i in order[len(order) // 2 :]],
    ]
    fits = [fit_thurstonian([c for c in half if c[0] not in "xyz"]).scores() for half in halves]
    assert result["r"] == pytest.approx(
        np.corrcoef([fits[0][t][0] for t in tasks], [fits[1][t][0] for t in tasks])[0, 1],
        abs=1e-6,
    )


@pytest.mark.parametrize("confounded", [False, True])
def test_the_train_line_gives_the_share_of_the_ceiling_only_of_scores_it_bounds(confounded):
    from steerops.probes.command import ceiling_line

    ceiling = {"ceiling": 0.9, "ceiling_ci": [0.85, 0.93], "n_tasks": 280, "tasks_total": 300}
    line = ceiling_line(ceiling, "final r", 0.63, confounded)
    assert line.startswith(
        "the scores' noise ceiling 0.900 [0.850, 0.930]: about the largest r a probe of them "
        "can expect (`probe thurstonian`'s split-half, over 280 of 300 tasks)"
    )
    if confounded:  # the r is of what the confounds leave: no share of the raw ceiling
        assert "70%" not in line and "whose ceiling is lower (not measured)" in line
    else:
        assert line.endswith("; the final r is 70% of it")
    assert ceiling_line(None, "final r", 0.63, confounded) == ""
    assert ceiling_line(ceiling | {"ceiling": None}, "final r", 0.6, confounded) == ""
    # a record older than `tasks_total` says the tasks it holds; no r, no share
    older = {k: v for k, v in ceiling.items() if k != "tasks_total"}
    line = ceiling_line(older, "final r", None, confounded)
    assert "split-half, over 280 tasks)" in line and "%" not in line


def test_coin_flips_have_a_noise_ceiling_whose_interval_reaches_zero():
    rng = np.random.default_rng(3)
    tasks = [f"t{i}" for i in range(300)]
    comparisons = sample_comparisons(rng, tasks, np.zeros(300), np.ones(300), 3000)
    result = split_half(comparisons, seed=1)
    assert result["r_ci"][0] < 0 < result["r_ci"][1] and result["ceiling_ci"][0] == 0.0
    # too few comparisons to split: no r, and why
    few = split_half(comparisons[:3], seed=0)
    assert few["r"] is None and few["ceiling"] is None and "too few" in few["why"]


def test_a_half_fit_that_scores_every_task_alike_has_no_ceiling_and_says_why(monkeypatch):
    from steerops.probes import thurstonian

    monkeypatch.setattr(thurstonian, "_half_fit", lambda n, *_: (np.full(n, 0.1), True, ""))
    tasks = [f"t{i}" for i in range(20)]
    comparisons = [(a, b, a) for a, b in zip(tasks, tasks[1:] + tasks[:1], strict=True)]
    result = split_half(comparisons, seed=0)
    assert result["r"] is None and result["ceiling"] is None and result["n_tasks"] == 20
    assert result["why"] == "a half's fit gives every task the same score"


def test_sampled_comparisons_follow_the_model():
    rng = np.random.default_rng(0)
    tasks = ["x", "y"]
    comps = sample_comparisons(rng, tasks, np.array([0.5, 0.0]), np.array([1.0, 0.5]), 20000)
    wins_x = np.mean([w == "x" for _, _, w in comps])
    assert wins_x == pytest.approx(norm.cdf(0.5 / np.hypot(1.0, 0.5)), abs=0.01)
    assert all(a != b for a, b, _ in comps)


def test_command_writes_scores_csv_and_keeps_it_on_bad_input(tmp_path, capsys):
    tasks, mu, _, comparisons = _planted(30, 1500)
    path = tmp_path / "comparisons.jsonl"
    path.write_text(
        "".join(
            json.dumps({"task_a": a, "task_b": b, "winner": w}) + "\n" for a, b, w in comparisons
        )
    )
    out = tmp_path / "scores.csv"
    params = tmp_path / "params.yaml"
    params.write_text("tracking:\n  enabled: false\n")
    assert (
        main(
            [
                "probe",
                "thurstonian",
                "--params",
                str(params),
                "--comparisons",
                str(path),
                "--out-csv",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["task_id", "mu", "sigma"] and len(rows) == 30
    fitted = {r["task_id"]: float(r["mu"]) for r in rows}
    assert spearmanr([fitted[t] for t in tasks], mu)[0] >= 0.9
    summary = json.loads(out.with_suffix(".fit.json").read_text())
    assert summary["n_comparisons"] == 1500 and summary["heldout_n"] == 300
    assert summary["comparisons_md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    low, high = summary["heldout_accuracy_ci"]
    assert 0.5 < low < summary["heldout_accuracy"] < high
    printed = capsys.readouterr().out
    assert f"held-out accuracy {summary['heldout_accuracy']:.3f} [{low:.3f}, {high:.3f}]" in printed
    assert "(n 300 comparisons, chance 0.5)" in printed
    # the noise ceiling: the split the summary records, and the line that says it
    halves = summary["split_half"]
    assert halves == json.loads(
        json.dumps(
            split_half(
                comparisons, summary["prior_mu"], summary["prior_log_sigma"], seed=summary["seed"]
            )
        )
    )
    assert 0 < halves["ceiling_ci"][0] < halves["ceiling"] < halves["ceiling_ci"][1] <= 1
    assert f"noise ceiling {halves['ceiling']:.3f} [" in printed
    assert f"agree at r {halves['r']:.3f} [" in printed and "over 30 of 30 tasks" in printed

    before = out.read_bytes()
    path.write_text('{"task_a": "a", "task_b": "b", "winner": "c"}\n')
    assert (
        main(
            [
                "probe",
                "thurstonian",
                "--params",
                str(params),
                "--comparisons",
                str(path),
                "--out-csv",
                str(out),
            ]
        )
        == 2
    )
    assert "winner 'c'" in capsys.readouterr().err
    assert out.read_bytes() == before


def _write_comparisons(path, comparisons):
    path.write_text(
        "".join(
            json.dumps({"task_a": a, "task_b": b, "winner": w}) + "\n" for a, b, w in comparisons
        )
    )


def _fitted_once(tmp_path):
    """A `probe thurstonian` run that fitted 30 planted tasks: (comparisons file, scores
    csv, params file, the argv that ran it)."""
    comps, out, params = tmp_path / "c.jsonl", tmp_path / "scores.csv", tmp_path / "params.yaml"
    params.write_text("tracking:\n  enabled: false\n")
    argv = ["probe", "thurstonian", "--params", str(params), "--comparisons", str(comps)]
    argv += ["--out-csv", str(out)]
    _write_comparisons(comps, _planted(30, 1500)[3])
    assert main(argv) == 0
    return comps, out, params, argv


def test_an_interrupted_write_leaves_a_pair_that_train_refuses_and_a_rerun_redoes(
    tmp_path, capsys, monkeypatch
):
    """scores.csv and its .fit.json are two files: a fit killed between the two writes must
    not leave new scores beside an old summary (or the reverse) that nothing notices."""
    from steerops import io
    from steerops.probes.data import fit_summary_path, scores_out_of_step

    comps, out, params, argv = _fitted_once(tmp_path)
    summary = json.loads(fit_summary_path(out).read_text())
    assert summary["scores_md5"] == io.file_md5(out) and scores_out_of_step(out) is None

    _write_comparisons(comps, _planted(30, 1500, seed=1)[3])  # new choices, new fit
    write_text = io.write_text

    def killed_at_scores(path, text):
        if path == out:
            raise KeyboardInterrupt  # killed after the summary was written
        write_text(path, text)

    monkeypatch.setattr(io, "write_text", killed_at_scores)
    assert main(argv) == 130
    monkeypatch.undo()
    assert "is not the fit" in scores_out_of_step(out)
    capsys.readouterr()
    assert main(["probe", "train", "--params", str(params), "--scores", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "scores.csv is not the fit" in err
    hint = f"run `steerops probe thurstonian --params {params} --out-csv {out}` again"
    assert f"{hint} with the comparisons it was fitted from" in err

    assert main(argv) == 0  # the rerun notices the pair and writes both again
    assert "writing both again" in capsys.readouterr().err
    summary = json.loads(fit_summary_path(out).read_text())
    assert summary["scores_md5"] == io.file_md5(out) and scores_out_of_step(out) is None


def test_a_fit_that_does_not_converge_is_refused_and_keeps_earlier_scores(tmp_path, capsys):
    from steerops.probes.thurstonian import fit_thurstonian

    comps, out, params, argv = _fitted_once(tmp_path)
    before = out.read_bytes(), out.with_suffix(".fit.json").read_bytes()
    assert not fit_thurstonian(_planted(30, 1500)[3], 10.0, 0.5, max_iter=3).converged
    params.write_text("tracking:\n  enabled: false\nprobes:\n  thurstonian_max_iter: 3\n")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did not converge" in err and "max_iter 3" in err
    assert "raise probes.thurstonian_max_iter" in err
    assert "probes.prior_mu / probes.prior_log_sigma" in err
    assert (out.read_bytes(), out.with_suffix(".fit.json").read_bytes()) == before

    params.write_text("tracking:\n  enabled: false\nprobes:\n  thurstonian_max_iter: 5000\n")
    assert main(argv) == 0  # enough iterations: the fit and its summary say so
    assert json.loads(out.with_suffix(".fit.json").read_text())["max_iter"] == 5000


@pytest.mark.parametrize("target", ["README.md", "c.jsonl"])
def test_scores_are_never_written_over_a_file_the_fit_did_not_write(tmp_path, capsys, target):
    """--out-csv naming another file (or the fit's own comparisons) is refused with one line
    before the fit; scores an earlier fit wrote (their .fit.json beside them) are replaced."""
    comps, out, params, argv = _fitted_once(tmp_path)
    assert main(argv) == 0  # its own scores: written again
    (tmp_path / "README.md").write_text("keep me")
    before = (tmp_path / target).read_bytes()
    argv = argv[:-1] + [str(tmp_path / target)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out-csv" in err[0], err
    assert (tmp_path / target).read_bytes() == before
    assert not (tmp_path / target).with_suffix(".fit.json").exists()


def test_a_comparison_of_a_task_the_tasks_file_lacks_is_refused(tmp_path, capsys):
    """A typo'd id would be fitted as an extra utility no activation row can match."""
    comps, out, params, argv = _fitted_once(tmp_path)
    tasks = tmp_path / "tasks.jsonl"
    known = sorted({t for a, b, _ in _planted(30, 1500)[3] for t in (a, b)})
    tasks.write_text("".join(json.dumps({"task_id": t, "prompt": "p"}) + "\n" for t in known))
    params.write_text(f"tracking:\n  enabled: false\nprobes:\n  tasks: {tasks}\n")
    assert main(argv) == 0  # every compared task is in the file

    before = out.read_bytes()
    rows = comps.read_text().splitlines()
    typo = json.loads(rows[3])
    typo["task_a"] = typo["winner"] = "nope.f1"
    comps.write_text("\n".join([*rows, json.dumps(typo), json.dumps(typo)]) + "\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "task 'nope.f1' (2 comparisons) is not in probes.tasks" in err
    assert str(tasks) in err and out.read_bytes() == before
    # comparisons of another task set entirely: refused against a tasks file the params name
    comps.write_text(re.sub(r'"task(\d+)"', r'"other\1"', "".join(f"{r}\n" for r in rows)))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "none of its 30 compared tasks is in probes.tasks" in err and "another task set" in err
    # ... but not against the default one (the toy's), which does not describe them
    params.write_text("tracking:\n  enabled: false\n")
    default = tmp_path / "data" / "toy" / "probes" / "tasks.jsonl"
    default.parent.mkdir(parents=True)
    default.write_text(tasks.read_text())
    assert main(argv) == 0
    # named in the params file as the default is spelled (the main job does): refused, and
    # the scores the last fit wrote are kept
    params.write_text(
        "tracking:\n  enabled: false\nprobes:\n  tasks: data/toy/probes/tasks.jsonl\n"
    )
    kept = out.read_bytes()
    assert main(argv) == 2
    assert "none of its 30 compared tasks is in probes.tasks" in capsys.readouterr().err
    assert out.read_bytes() == kept
    # a tasks file that is not there (a typo) cannot check them: said, and the fit runs
    params.write_text(
        f"tracking:\n  enabled: false\nprobes:\n  tasks: {tmp_path / 'taskz.jsonl'}\n"
    )
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"warning: probes.tasks: file not found: {tmp_path / 'taskz.jsonl'}; the compared" in err
