"""The best layer of a method's vectors: chosen on one seeded half of val, reported on the
other with n and a Wilson interval (against numpy and scipy), and no number where the val
split cannot give one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binomtest
from scipy.stats import t as student_t

from steerops.cli import main
from steerops.vectors import load_vectors
from steerops.vectors.activations import TraitActivations, _split_rows
from steerops.vectors.store import vectors_dir
from vector_data import POSITION, TRAIT, params_file, write_activations

N_LAYERS, N_POS, N_VAL = 30, 40, 12


def noise(seed: int = 0) -> dict[int, np.ndarray]:
    """Activations with no class signal at any layer: every accuracy is chance plus luck."""
    rng = np.random.default_rng(seed)
    return {layer: rng.normal(size=(2 * N_POS, 8)) for layer in range(N_LAYERS)}


def run_vectors(tmp_path: Path) -> tuple[dict, object]:
    """`steerops vectors --methods mean_diff` with tracking: (metadata, the method's run)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = params_file(tmp_path, tracking={"enabled": True, "uri": uri})
    assert main(["vectors", "--params", str(path), "--methods", "mean_diff"]) == 0
    folder = vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual", "mean_diff")
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("toy-refusal").experiment_id])
    [child] = [r for r in runs if r.data.params.get("method") == "mean_diff"]
    return load_vectors(folder)[1], child


def accuracy(x: np.ndarray, unit: np.ndarray, mid: float, pos: list[int], neg: list[int]):
    return ((x[pos] @ unit > mid).sum() + (x[neg] @ unit <= mid).sum()) / (len(pos) + len(neg))


def test_best_layer_is_chosen_on_one_half_of_val_and_reported_on_the_other(tmp_path):
    """On classes with no signal the max over 30 layers of the val accuracy is well above
    chance; the reported number is the chosen layer's accuracy on val examples that played
    no part in choosing it (numpy reference), with a Wilson interval (scipy)."""
    data = noise()
    write_activations(tmp_path / "outputs", data, N_POS, n_val=N_VAL)
    meta, run = run_vectors(tmp_path)
    best = meta["best"]
    train_pos, val_pos = list(range(N_POS - N_VAL)), list(range(N_POS - N_VAL, N_POS))
    train_neg = list(range(N_POS, 2 * N_POS - N_VAL))
    val_neg = list(range(2 * N_POS - N_VAL, 2 * N_POS))
    # the halves: disjoint, all of val, both classes split evenly
    selection, heldout = best["split"]["selection"], best["split"]["heldout"]
    assert not set(selection) & set(heldout)
    assert sorted(selection + heldout) == val_pos + val_neg
    for half in (selection, heldout):
        assert len(set(half) & set(val_pos)) == len(set(half) & set(val_neg)) == N_VAL // 2
    halves = {
        name: ([r for r in rows if r < N_POS], [r for r in rows if r >= N_POS])
        for name, rows in (("selection", selection), ("heldout", heldout))
    }
    ref = {}
    for layer, x in data.items():
        gap = x[train_pos].mean(0) - x[train_neg].mean(0)
        unit = gap / np.linalg.norm(gap)
        mid = 0.5 * ((x[train_pos] @ unit).mean() + (x[train_neg] @ unit).mean())
        ref[layer] = {
            "val": accuracy(x, unit, mid, val_pos, val_neg),
            "train": accuracy(x, unit, mid, train_pos, train_neg),
            **{name: accuracy(x, unit, mid, *rows) for name, rows in halves.items()},
        }
        got = meta["layers"][str(layer)]
        assert got["selection_acc"] == pytest.approx(ref[layer]["selection"])
        assert got["heldout_acc"] == pytest.approx(ref[layer]["heldout"])
    chosen = max(ref, key=lambda k: (ref[k]["selection"], ref[k]["train"], -k))
    hits = round(ref[chosen]["heldout"] * len(heldout))
    ci = binomtest(hits, len(heldout)).proportion_ci(0.95, method="wilson")
    expected = {
        "layer": chosen,
        "selection_acc": ref[chosen]["selection"],
        "selection_n": len(selection),
        "heldout_acc": ref[chosen]["heldout"],
        "heldout_n": len(heldout),
        "heldout_lo": ci.low,
        "heldout_hi": ci.high,
        "train_acc": ref[chosen]["train"],
    }
    assert {k: best[k] for k in expected} == pytest.approx(expected, abs=1e-9)
    assert best["reason"] is None and best["split"]["seed"] == 0
    metrics = run.data.metrics
    assert {k: metrics[f"best_{k}"] for k in expected} == pytest.approx(expected, abs=1e-9)
    assert "best_val_acc" not in metrics  # the number chosen and reported on the same examples
    # what the same-split number claimed, and what the other half says
    same_split = max(r["val"] for r in ref.values())
    assert same_split >= 0.7 and same_split > best["heldout_acc"]
    assert best["selection_acc"] >= 0.7
    assert best["heldout_lo"] < 0.5 < best["heldout_hi"]


def test_layers_no_accuracy_tells_apart_are_recorded_as_a_tie(tmp_path, capsys):
    """Classes apart at every layer (every accuracy 1.0, as on an easy real trait): the
    lowest layer is recorded, with every tied layer, and the run says so."""
    rng = np.random.default_rng(0)
    data = {}
    for layer in range(N_LAYERS):
        x = rng.normal(size=(2 * N_POS, 8))
        x[:N_POS, 0] += 20.0
        data[layer] = x
    write_activations(tmp_path / "outputs", data, N_POS, n_val=N_VAL)
    meta, run = run_vectors(tmp_path)
    assert {v["selection_acc"] for v in meta["layers"].values()} == {1.0}
    assert meta["best"]["layer"] == 0 and meta["best"]["tied_layers"] == list(range(N_LAYERS))
    assert run.data.tags["steerops.best_layer_tied"] == f"{N_LAYERS} layers tie"
    # and the console says the tie is no layer preference
    printed = capsys.readouterr().out
    assert "best layer 0 by selection accuracy 1.000; held-out accuracy 1.000 [" in printed
    assert f"{N_LAYERS} layers tie, so accuracy gives no layer preference" in printed
    # on noise no two layers tie on both accuracies: no tie recorded
    (tmp_path / "noise").mkdir()
    write_activations(tmp_path / "noise" / "outputs", noise(), N_POS, n_val=N_VAL)
    meta, run = run_vectors(tmp_path / "noise")
    assert meta["best"]["tied_layers"] == [] and "steerops.best_layer_tied" not in run.data.tags
    printed = capsys.readouterr().out
    assert f"best layer {meta['best']['layer']} by selection" in printed
    assert "layers tie" not in printed


def activations(examples: list[dict], paired: bool | None) -> TraitActivations:
    train, val = _split_rows(examples, Path("metadata.json"))
    meta = {"examples": examples, "paired": paired}
    return TraitActivations(Path("."), meta, [0], 4, "md5", train, val)


def examples_of(sources: int, rollouts: int, val: set[int]) -> list[dict]:
    return [
        {"polarity": p, "source_index": s, "rollout": r, "split": "val" if s in val else "train"}
        for p in ("positive", "negative")
        for s in range(sources)
        for r in range(rollouts)
    ]


@pytest.mark.parametrize("paired", [True, False, None])
def test_the_split_keeps_sources_and_pairs_whole_and_is_seeded(paired):
    from steerops.vectors.heldout import split_val

    examples = examples_of(sources=14, rollouts=3, val=set(range(2, 13)))
    acts = activations(examples, paired)
    halves = split_val(acts, seed=5)
    assert halves.reason is None
    side = {}
    for name, rows in (("selection", halves.selection), ("heldout", halves.heldout)):
        for row in rows.pos.tolist() + rows.neg.tolist():
            ex = examples[row]
            key = ex["source_index"] if paired else (ex["polarity"], ex["source_index"])
            assert side.setdefault(key, name) == name  # rollouts (and pairs) stay together
    # 11 val sources per class: 6 and 5 (rows: 3 rollouts each)
    sizes = sorted(len(h.pos) for h in (halves.selection, halves.heldout))
    assert sizes == [15, 18]
    again = split_val(acts, seed=5)
    assert torch.equal(again.heldout.pos, halves.heldout.pos)
    others = [split_val(acts, seed=s).heldout.pos for s in range(6, 12)]
    assert any(not torch.equal(o, halves.heldout.pos) for o in others)


@pytest.mark.parametrize("higher_trains_better", [True, False])
def test_a_tie_on_selection_accuracy_goes_to_the_higher_train_accuracy(higher_trains_better):
    """Two layers tied on selection accuracy: the one with the higher train accuracy is
    chosen, whether it is the higher layer or the lower, and reported with its own held-out
    hits; a layer with a better train accuracy but a worse selection accuracy is not."""
    from steerops.vectors.heldout import choose, split_val

    halves = split_val(activations(examples_of(14, 1, set(range(2, 13))), False), seed=0)
    low, high = (0.8, 0.9) if higher_trains_better else (0.9, 0.8)
    layers = {
        "3": {"selection_acc": 0.5, "train_acc": 1.0},
        "9": {"selection_acc": 0.75, "train_acc": low},
        "12": {"selection_acc": 0.75, "train_acc": high},
    }
    winner = 12 if higher_trains_better else 9
    n_heldout = len(halves.heldout.pos) + len(halves.heldout.neg)
    asked = []

    def heldout_hits(layer: int) -> list[float]:
        asked.append(layer)
        return [1.0] * n_heldout if layer == winner else [0.0] * n_heldout

    best = choose(layers, halves, 0, heldout_hits)
    assert best["layer"] == winner and asked == [winner]
    assert (best["selection_acc"], best["train_acc"]) == (0.75, max(low, high))
    assert best["heldout_acc"] == 1.0 and best["tied_layers"] == []


def test_no_best_layer_without_val_or_with_a_class_in_one_half_only(tmp_path, capsys):
    """No val split, or a class with one source prompt in val: the best is None with the
    reason (in metadata.json, as an MLflow tag and on the console), never a number."""
    write_activations(tmp_path / "none" / "outputs", noise(), N_POS, n_val=0)
    meta, run = run_vectors(tmp_path / "none")
    best = meta["best"]
    assert best["layer"] is None and "no val examples" in best["reason"]
    assert f"  no best layer: {best['reason']}\n" in capsys.readouterr().out
    numbers = ("selection_acc", "heldout_acc", "heldout_lo", "heldout_hi", "train_acc")
    assert all(best[k] is None for k in numbers)
    assert all(v["selection_acc"] is None is v["heldout_acc"] for v in meta["layers"].values())
    assert not [k for k in run.data.metrics if k.startswith("best_")]
    assert run.data.tags["steerops.no_best"] == best["reason"]

    # one positive source in val: whichever half it lands in, the other has no positive
    acts_dir = write_activations(tmp_path / "one" / "outputs", noise(1), N_POS, n_val=N_VAL)
    saved = json.loads((acts_dir / "metadata.json").read_text())
    for ex in saved["examples"][: N_POS - 1]:
        ex["split"] = "train"
    (acts_dir / "metadata.json").write_text(json.dumps(saved))
    meta, run = run_vectors(tmp_path / "one")
    best = meta["best"]
    assert best["layer"] is None and "cannot give both halves both classes" in best["reason"]
    assert "1 positive, 12 negative" in best["reason"]
    assert all(best[k] is None for k in numbers)
    assert not [k for k in run.data.metrics if k.startswith("best_")]
    assert run.data.tags["steerops.no_best"] == best["reason"]


def test_a_sources_rollouts_count_once_in_the_interval(tmp_path):
    """Three rollouts of a source with the same activations are right or wrong together:
    the interval is at least as wide as the Wilson interval of the held-out source prompts
    (scipy; wider, as their variance is estimated from 6 prompts), never the rows', which
    claimed three times the evidence."""
    rollouts, n_pos, n_val = 3, 42, 18  # 14 sources a class, 6 of them in val
    rng = np.random.default_rng(3)
    data = {
        layer: np.repeat(rng.normal(size=(2 * n_pos // rollouts, 8)), rollouts, axis=0)
        for layer in range(N_LAYERS)
    }
    acts_dir = write_activations(tmp_path / "outputs", data, n_pos, n_val=n_val)
    saved = json.loads((acts_dir / "metadata.json").read_text())
    for ex in saved["examples"]:
        k = ex["index"] % n_pos
        ex["source_index"], ex["rollout"] = k // rollouts, k % rollouts
    (acts_dir / "metadata.json").write_text(json.dumps(saved))
    best = run_vectors(tmp_path)[0]["best"]
    assert best["heldout_n"] == 18 and best["heldout_sources"] == 6
    right = round(best["heldout_acc"] * 6)
    assert best["heldout_acc"] == pytest.approx(right / 6)
    per_source = binomtest(right, 6).proportion_ci(0.95, method="wilson")
    assert best["heldout_lo"] < per_source.low and best["heldout_hi"] > per_source.high
    # exactly: the score interval at the 6 sources' effective size (5 after k / (k - 1))
    # and Student's t on 5 degrees of freedom, solved numerically
    share, critical = right / 6, student_t.ppf(0.975, 5)

    def gap(p0: float) -> float:
        return abs(share - p0) - critical * (p0 * (1 - p0) / 5) ** 0.5

    want = (brentq(gap, 1e-12, share), brentq(gap, share, 1 - 1e-12))
    assert (best["heldout_lo"], best["heldout_hi"]) == pytest.approx(want, abs=1e-9)
    assert 0 < right < 6  # (this seed) so the rows' interval is narrower
    per_row = binomtest(3 * right, 18).proportion_ci(0.95, method="wilson")
    assert per_row.high - per_row.low < best["heldout_hi"] - best["heldout_lo"]


def test_a_random_baseline_inside_the_interval_is_said_to_separate_the_classes_too(tmp_path):
    """On SmolLM2's refusal trait at response[:5], mean_diff's held-out accuracy is 1.000
    [0.796, 1.000] and random_baseline's 0.964: the classes part along almost any direction,
    so the accuracy does not single mean_diff out, and its line says so."""
    import json

    from steerops.vectors.command import best_layer_line
    from steerops.vectors.store import METADATA_FILE

    def write(method: str, acc: float, lo: float, layer: int) -> Path:
        folder = tmp_path / method
        folder.mkdir(exist_ok=True)
        best = {"layer": layer, "selection_acc": acc, "heldout_acc": acc, "heldout_lo": lo}
        best |= {"heldout_hi": 1.0, "heldout_n": 28}
        (folder / METADATA_FILE).write_text(json.dumps({"best": best}))
        return folder

    mean_diff = write("mean_diff", 1.0, 0.796, 0)
    assert "random_baseline" not in best_layer_line(mean_diff)  # none beside it
    random = write("random_baseline", 0.964, 0.80, 18)
    line = best_layer_line(mean_diff)
    assert line.endswith(
        "; random_baseline reaches 0.964 held out (layer 18), inside this interval: the "
        "classes part along random directions too, so this accuracy does not single the "
        "direction out (steering tells)"
    )
    assert "reaches" not in best_layer_line(random)  # not said of itself
    write("random_baseline", 0.6, 0.4, 18)  # under the interval: the direction is special
    assert "random_baseline" not in best_layer_line(mean_diff)
