"""`steerops steer` end to end on the toy world, the results contract, caching and MLflow."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_params
from steering_data import reference_interval
from steerops.cli import main
from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.io import read_json, read_jsonl
from steerops.models.capture import forward_capture
from steerops.models.generation import encode_prompt, render_prompts
from steerops.models.loading import load_model
from steerops.stats import split_questions
from steerops.steering import session as session_module
from steerops.steering.best import ROW_COLUMNS, compact
from steerops.steering.configs import Config, VectorSource
from steerops.steering.engine import SteeringTable, generate_steered
from steerops.steering.evaluate import SteeringEvaluator
from steerops.steering.session import SteeringSession
from steerops.steering.store import baselines_file, steering_dir
from steerops.toy.judge import score as toy_score
from steerops.tracking.lineage import dvc_md5
from steerops.traits import load_trait
from steerops.vectors.store import save_vectors, vectors_dir

TRAIT, POSITION = "toy/refusal", "prompt[-1]"
COEFFICIENTS = "0.5,1,1.5,2"


def _last_token_activations(loaded, prompts) -> dict[int, torch.Tensor]:
    tok = loaded.tokenizer
    ids = [encode_prompt(tok, t) for t in render_prompts(tok, prompts)]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    layers = list(range(loaded.layout.num_layers))
    acts = forward_capture(loaded.model, loaded.layout, input_ids, mask, layers)
    return {layer: acts[layer][:, -1].float() for layer in layers}  # left padded: last = -1


def _write_vectors(params) -> dict[str, dict]:
    """mean_diff (harmful - benign at the last prompt token) and random_baseline vectors,
    both unit per layer with the layer's mean activation norm, as the vectors stage would."""
    loaded = load_model(params, "base")
    trait = load_trait(params.path(params.traits.root), TRAIT)
    pos = _last_token_activations(loaded, trait.positive)
    neg = _last_token_activations(loaded, trait.negative)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for method in ("mean_diff", "random_baseline"):
        vectors, layers_meta = {}, {}
        for layer in pos:
            both = torch.cat([pos[layer], neg[layer]])
            if method == "mean_diff":
                v = pos[layer].mean(0) - neg[layer].mean(0)
            else:
                v = torch.randn(both.shape[1], generator=gen)
            vectors[layer] = v / v.norm()
            layers_meta[str(layer)] = {
                "raw_norm": float(v.norm()),
                "mean_norm": float(both.norm(dim=1).mean()),
            }
        meta = {
            "method": method,
            "trait": TRAIT,
            "variant": "base",
            "position": POSITION,
            "component": "residual",
            "layers": layers_meta,
        }
        save_vectors(
            vectors_dir(params.out, TRAIT, "base", POSITION, "residual", method), vectors, meta
        )
        out[method] = {"vectors": vectors, "meta": meta}
    return out


@pytest.fixture(scope="module")
def steered(toy_world, tmp_path_factory):
    """One toy experiment: vectors written, then a mean_diff and a random_baseline sweep."""
    folder = tmp_path_factory.mktemp("steer")
    params_file = write_params(folder, toy_world, steering={"max_new_tokens": 24, "subset": 20})
    params = load_params(params_file)
    vectors = _write_vectors(params)
    argv = [
        "steer",
        "--pipeline",
        "--params",
        str(params_file),
        "--layers",
        "all",
        "--coefficients",
        COEFFICIENTS,
    ]
    assert main([*argv, "--method", "mean_diff"]) == 0
    assert main([*argv, "--method", "random_baseline", "--save-responses", "none"]) == 0
    return {
        "params_file": params_file,
        "params": params,
        "vectors": vectors,
        "argv": argv,
        "dir": {
            m: steering_dir(params.out, TRAIT, "instruct", POSITION, "residual", m)
            for m in ("mean_diff", "random_baseline")
        },
    }


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_mean_diff_steers_and_random_baseline_does_not(steered):
    metrics = read_json(steered["dir"]["mean_diff"] / "metrics.json")
    assert metrics["status"] == "ok" and metrics["heldout_feasible"]
    assert metrics["heldout_trait_delta"] >= 50 and metrics["heldout_delta_lo"] > 0
    assert metrics["heldout_coherence"] >= 68
    assert metrics["baseline_trait"] <= 10  # benign questions: the toy answers them
    assert metrics["selection_n"] + metrics["heldout_n"] == metrics["n_questions"] == 20
    # A random direction at the same weight (same layer and coefficient, unit vectors with
    # the same layer norm) hardly moves the trait, at any layer: no effect, no pick to act on.
    rows = _csv(steered["dir"]["random_baseline"] / "results.csv")
    same = [r for r in rows if float(r["coefficient"]) == metrics["coefficient"]]
    assert len(same) == 4 and max(float(r["trait_delta"]) for r in same) <= 10
    random = read_json(steered["dir"]["random_baseline"] / "metrics.json")
    assert random["status"] in ("no effect", "needs finer coefficients")


def test_results_contract_and_independent_rescoring(steered):
    folder = steered["dir"]["mean_diff"]
    entries = read_jsonl(folder / "results.jsonl")
    baselines = [e for e in entries if e["type"] == "baseline"]
    configs = [e for e in entries if e["type"] == "config"]
    assert len(baselines) == 1 and len(configs) == 4 * 4  # 4 layers x 4 coefficients
    base = baselines[0]
    assert {e["settings_hash"] for e in configs} == {base["settings_hash"]}
    meta = steered["vectors"]["mean_diff"]["meta"]["layers"]
    for e in configs:
        (vec,) = e["config"]["vectors"]
        assert set(vec) == {"layer", "component", "position", "method", "weight"}
        # the unit each weight was computed in: these test vectors record a norm without
        # saying it is per token, i.e. an older pooled-window one
        assert e["coefficient_unit"] == "norm:pooled_window"
        assert vec["position"] == POSITION and vec["method"] == "mean_diff"
        expected = e["config"]["coefficient"] * meta[str(vec["layer"])]["mean_norm"]
        assert vec["weight"] == pytest.approx(expected, rel=1e-12)
        assert set(e["result"]) >= {"trait_mean", "coherence_mean", "n"}
    assert len(base["scores"]) == len(base["questions"]) == 20
    for e in configs:  # per-question scores in the baseline's question order
        scores = np.array(e["scores"], dtype=float)
        assert scores.shape == (20, 2)
        assert e["result"]["trait_mean"] == pytest.approx(scores[:, 0].mean())
    rows = _csv(folder / "results.csv")
    assert list(rows[0]) == ROW_COLUMNS
    assert len(rows) == 16
    grid = [(int(r["layer"]), float(r["coefficient"])) for r in rows]
    assert grid == sorted(grid)  # as a grid reads, whatever order the log has
    for r in rows:
        assert float(r["trait_delta"]) == pytest.approx(
            float(r["trait_mean"]) - base["result"]["trait_mean"]
        )
    # metrics.json: chosen on the selection half, numbers from the held-out half, recomputed
    # here from the log with an independent bootstrap
    metrics = read_json(folder / "metrics.json")
    selection, heldout = split_questions(base["questions"], 0.5, 0)
    frame = pd.read_csv(folder / "results.csv")
    coherent = frame[(frame["selection_coherence_mean"] >= 68) & (frame["coefficient"] != 0)]
    effective = coherent[coherent["selection_delta_lo"] > 0]
    rank = {
        "by": ["selection_trait_delta", "selection_coherence_mean", "coefficient", "layer"],
        "ascending": [False, False, True, True],
        "kind": "stable",
    }
    top = effective.sort_values(**rank).iloc[0]
    assert (metrics["layer"], metrics["coefficient"]) == (top["layer"], top["coefficient"])
    [entry] = [
        e
        for e in configs
        if e["config"]["vectors"][0]["layer"] == metrics["layer"]
        and e["config"]["coefficient"] == metrics["coefficient"]
    ]
    at = [base["questions"].index(q) for q in heldout]
    d = np.array([entry["scores"][i][0] - base["scores"][i][0] for i in at])
    mean, lo, hi = reference_interval(d, seed=0)
    assert metrics["heldout_trait_delta"] == pytest.approx(mean)
    assert (metrics["heldout_delta_lo"], metrics["heldout_delta_hi"]) == pytest.approx((lo, hi))
    assert metrics["heldout_n"] == len(heldout) and metrics["selection_n"] == len(selection)
    # Response files hold the best config per layer; re-score them with the toy judge.
    best_file = folder / "responses" / (f"L{metrics['layer']}_c{metrics['coefficient']:g}.json")
    saved = read_json(best_file)
    scores = np.array([toy_score(r["question"], r["response"]) for r in saved["responses"]])
    assert scores[:, 0].mean() == pytest.approx(float(top["trait_mean"]))
    assert scores[:, 1].mean() == pytest.approx(float(top["coherence_mean"]))
    assert (folder / "responses" / "baseline.json").exists()
    # one per layer with a coherent steered config: its pick (among those with an effect
    # there when it has any), ranked as above
    picks = set()
    for layer, at_layer in coherent.groupby("layer"):
        with_effect = at_layer[at_layer["selection_delta_lo"] > 0]
        pick = (with_effect if len(with_effect) else at_layer).sort_values(**rank).iloc[0]
        picks.add(f"L{layer}_c{pick['coefficient']:g}.json")
    assert picks  # the chosen config's layer at least
    layer_files = {p.name for p in (folder / "responses").glob("L*_c*.json")}
    assert layer_files == picks
    assert not (steered["dir"]["random_baseline"] / "responses").exists()
    png = (folder / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def _count_generations(monkeypatch) -> list[int]:
    """The rows of every `generate_steered` call from now on, in order."""
    calls: list[int] = []
    real = session_module.generate_steered

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "generate_steered", counting)
    return calls


def test_rerun_is_cached_and_changed_settings_are_not(steered, monkeypatch):
    folder = steered["dir"]["mean_diff"]
    before = (folder / "results.jsonl").read_text()
    calls = _count_generations(monkeypatch)
    argv = [*steered["argv"], "--method", "mean_diff"]
    assert main(argv) == 0
    assert calls == [] and (folder / "results.jsonl").read_text() == before
    # Fewer questions, all logged: served from the log's per-question scores, and logged
    # under the new settings so the cell's files hold them; only the response files of
    # these settings are generated (the baseline's and each layer's best), once.
    assert main([*argv, "--subset", "3", "--coefficients", "1"]) == 0
    assert calls == [3, 4 * 3]
    assert main([*argv, "--subset", "3", "--coefficients", "1"]) == 0
    assert calls == [3, 4 * 3]
    calls.clear()
    entries = read_jsonl(folder / "results.jsonl")
    assert len(entries) == 1 + 16 + 1 + 4
    assert len(_csv(folder / "results.csv")) == 4  # the configs under the latest settings
    # A changed setting that changes responses re-evaluates everything, baseline included.
    assert main([*argv, "--subset", "3", "--coefficients", "1", "--max-new-tokens", "12"]) == 0
    assert calls == [3 + 4 * 3]  # the baseline's rows generated with the configs'
    entries = read_jsonl(folder / "results.jsonl")
    hashes = {e["settings_hash"] for e in entries}
    assert len(hashes) == 3 and len(entries) == 1 + 16 + 1 + 4 + 1 + 4
    # A steering-only setting (the scope) re-evaluates the configs; the unsteered baseline
    # has no steered row, so it is served and recorded under the new settings.
    short = [*argv, "--subset", "3", "--coefficients", "1", "--max-new-tokens", "12"]
    assert main([*short, "--scope", "response"]) == 0
    assert calls == [3 + 4 * 3, 4 * 3]
    baselines = read_jsonl(baselines_file(steered["params"].out, TRAIT, "instruct"))
    by_scope = {
        e["settings"]["scope"]: e for e in baselines if e["settings"]["max_new_tokens"] == 12
    }
    assert set(by_scope) == {"all", "response"}
    assert by_scope["response"]["scores"] == by_scope["all"]["scores"]
    assert main([*short, "--scope", "response"]) == 0 and calls == [3 + 4 * 3, 4 * 3]
    calls.clear()
    # A vector file that changes under the same name is not served from the cache either.
    params = steered["params"]
    vdir = vectors_dir(params.out, TRAIT, "base", POSITION, "residual", "mean_diff")
    vecs = steered["vectors"]["mean_diff"]
    argv += ["--subset", "3", "--coefficients", "1", "--layers", "2", "--max-new-tokens", "12"]
    assert main(argv) == 0
    table = (folder / "results.csv").read_text()
    calls.clear()
    save_vectors(vdir, {k: -v for k, v in vecs["vectors"].items()}, vecs["meta"])
    try:
        assert main(argv) == 0
        assert calls == [3]
        assert (folder / "results.csv").read_text() != table
    finally:
        save_vectors(vdir, vecs["vectors"], vecs["meta"])
    # the vectors back: served, and the cell's files are the current vectors' numbers again
    assert main(argv) == 0 and calls == [3]
    assert (folder / "results.csv").read_text() == table


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def test_response_files_end_as_an_uninterrupted_sweep_writes_them(steered, tmp_path, monkeypatch):
    """A torn response file, a damaged baseline.json and the files another settings' sweep
    wrote are written again in the same run, byte for byte; a scratch run served from the
    pipeline's log writes its files the first time, and its rerun generates nothing."""
    folder = steered["dir"]["mean_diff"] / "responses"
    argv = [*steered["argv"], "--method", "mean_diff"]
    assert main(argv) == 0  # the fixture's settings (an earlier test swept others)
    good = _files(folder)
    assert "baseline.json" in good and len(good) > 1
    config_file = folder / next(name for name in good if name != "baseline.json")
    config_file.write_text(config_file.read_text()[:50])
    (folder / "baseline.json").write_text("{")
    assert main(argv) == 0 and _files(folder) == good
    assert main([*argv, "--max-new-tokens", "12"]) == 0 and _files(folder) != good
    assert main(argv) == 0 and _files(folder) == good
    calls = _count_generations(monkeypatch)
    scratch = [*(a for a in argv if a != "--pipeline"), "--out", str(tmp_path / "run")]
    assert main(scratch) == 0
    ran = steering_dir(tmp_path / "run", TRAIT, "instruct", POSITION, "residual", "mean_diff")
    assert _files(ran / "responses") == good  # served scores; responses generated once
    first = len(calls)
    assert main(scratch) == 0 and len(calls) == first  # the rerun generates nothing


def test_a_sweep_stopped_before_its_files_are_written_generates_nothing_again(
    steered, tmp_path, monkeypatch
):
    """Ctrl-C after every config was judged and logged but before the cells' response files
    were written: the rows stay in flight until then, so the rerun writes the files from
    them, generating nothing, byte for byte as a sweep never stopped; then the rows go."""
    from steerops.steering import command
    from steerops.steering.in_flight import IN_FLIGHT_FILE

    base = [a for a in steered["argv"] if a != "--pipeline"]
    # settings no log holds (11 new tokens): the scratch runs generate, not serve
    argv = [*base, "--method", "mean_diff", "--max-new-tokens", "11"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    real = command._finish_cell

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "_finish_cell", stopped)
    assert main([*argv, "--out", str(cut)]) == 130
    monkeypatch.setattr(command, "_finish_cell", real)
    [in_flight] = cut.rglob(IN_FLIGHT_FILE)  # every logged row still there
    calls = _count_generations(monkeypatch)
    assert main([*argv, "--out", str(cut)]) == 0
    assert calls == []  # served from the log, the files from the rows
    assert not in_flight.exists()

    def responses(folder: Path) -> dict[str, bytes]:
        [found] = folder.rglob("mean_diff/responses")
        return _files(found)

    assert responses(cut) == responses(tmp_path / "whole") and len(responses(cut)) > 1


def test_a_file_whose_text_scored_otherwise_when_generated_again_says_so(
    steered, monkeypatch, capsys
):
    """In 16-bit floats greedy text depends on the batch: a config's responses generated
    again for its file (a run killed before writing it) may score otherwise than its log.
    The file is marked `rescored`, the run warns, and the log and table keep their scores.
    (Simulated here: the toy decodes in float32, where the text is the same.)"""
    import dataclasses

    from steerops.steering.evaluate import SteeringEvaluator
    from steerops.steering.outputs import RESCORED_NOTE

    folder = steered["dir"]["mean_diff"] / "responses"
    argv = [*steered["argv"], "--method", "mean_diff"]
    assert main(argv) == 0
    good = _files(folder)
    log = (folder.parent / "results.jsonl").read_bytes()
    torn = folder / next(name for name in good if name != "baseline.json")
    torn.write_text("{")
    real = SteeringEvaluator.responses

    def drifted(self, results):
        def moved(result):
            (trait, coherence), *rest = result.scores
            return dataclasses.replace(result, scores=[(trait, (coherence or 0) + 1.0), *rest])

        return [moved(r) for r in real(self, results)]

    monkeypatch.setattr(SteeringEvaluator, "responses", drifted)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "1 of the 1 configs whose responses were generated again for their files scored" in err
    assert json.loads(torn.read_text())["rescored"] == RESCORED_NOTE
    assert (folder.parent / "results.jsonl").read_bytes() == log
    others = {k: v for k, v in _files(folder).items() if k != torn.name}
    assert others == {k: v for k, v in good.items() if k != torn.name}
    monkeypatch.setattr(SteeringEvaluator, "responses", real)
    torn.write_text("{")
    assert main(argv) == 0 and _files(folder) == good  # the same text and scores: unmarked
    # the baseline's file, likewise
    real_baseline = SteeringEvaluator.baseline_responses

    def drifted_baseline(self):
        result = real_baseline(self)
        (trait, coherence), *rest = result.scores
        return dataclasses.replace(result, scores=[(trait, (coherence or 0) + 1.0), *rest])

    monkeypatch.setattr(SteeringEvaluator, "baseline_responses", drifted_baseline)
    (folder / "baseline.json").write_text("{")
    capsys.readouterr()
    assert main(argv) == 0
    assert "warning: the baseline whose responses were generated again" in capsys.readouterr().err
    assert json.loads((folder / "baseline.json").read_text())["rescored"] == RESCORED_NOTE
    monkeypatch.setattr(SteeringEvaluator, "baseline_responses", real_baseline)
    (folder / "baseline.json").write_text("{")
    assert main(argv) == 0 and _files(folder) == good


def test_mixed_batch_row_matches_alone_on_toy(steered):
    session = SteeringSession(steered["params"], TRAIT, progress=False)
    vecs = steered["vectors"]["mean_diff"]["vectors"]
    prompts = session.encode(session.questions)[:5]
    configs = [
        [],
        [(2, vecs[2], 6.0)],
        [(1, vecs[1], 9.0), (3, vecs[3], 3.0)],
        [(0, vecs[0], -4.0)],
    ]
    rows = [(c, p) for p in range(len(prompts)) for c in range(len(configs))]
    kwargs = session.generate_kwargs() | {"progress": False}
    kwargs["max_batch_rows"] = 3
    model, layout = session.loaded.model, session.loaded.layout
    mixed = generate_steered(
        model,
        layout,
        [prompts[p] for _, p in rows],
        SteeringTable([configs[c] for c, _ in rows]),
        **kwargs,
    )
    kwargs["max_batch_rows"] = 1
    for r, (c, p) in enumerate(rows):
        alone = generate_steered(model, layout, [prompts[p]], SteeringTable([configs[c]]), **kwargs)
        assert mixed[r] == alone[0]


def _beside_the_grid(steered, tmp_path: Path, steering: dict):
    """Params over the grid's toy world and outputs, with `steering` settings changed."""
    return load_params(
        write_params(
            tmp_path,
            Path(steered["params"].paths.toy),
            paths={"toy": steered["params"].paths.toy, "out": str(steered["params"].out)},
            steering=steering,
        )
    )


def _untimed(log: Path) -> list[dict]:
    """A results log's entries without their timing (which differs run to run)."""
    return [{k: v for k, v in e.items() if k != "timing"} for e in read_jsonl(log)]


def test_a_baseline_generated_with_the_first_chunk_equals_one_generated_alone(steered, tmp_path):
    """No log has the baseline (new settings): the grid's evaluation generates its rows in
    the first chunk's batches and judges them in the same call; its scores, responses and
    log entry are those of the baseline generated on its own."""
    params = _beside_the_grid(steered, tmp_path, {"max_new_tokens": 7})
    questions = load_trait(params.path(params.traits.root), TRAIT).questions[:4]
    configs = [Config.single(VectorSource("mean_diff", POSITION, "residual"), 2, 1.0)]

    def evaluator(folder: str) -> tuple[SteeringEvaluator, list[int]]:
        session = SteeringSession(params, TRAIT, progress=False)
        rows: list[int] = []
        generate = session.generate
        session.generate = lambda prompts, chunk, desc, rows_of=None: (
            rows.append(len(chunk)) or generate(prompts, chunk, desc, rows_of)
        )
        return SteeringEvaluator(session, questions, results_dir=tmp_path / folder), rows

    alone, alone_calls = evaluator("alone")
    first = alone.baseline()
    assert alone.evaluate(configs)[0].trait_delta is not None
    together, together_calls = evaluator("together")
    [result] = together.evaluate(configs)
    assert (alone_calls, together_calls) == ([1, 1], [2])  # configs per generate call
    base = together.baseline()
    assert (base.scores, base.responses) == (first.scores, first.responses)
    assert result.trait_delta == alone.evaluate(configs)[0].trait_delta
    assert _untimed(tmp_path / "together" / "results.jsonl") == _untimed(
        tmp_path / "alone" / "results.jsonl"
    )
    assert read_jsonl(tmp_path / "together" / "baselines.jsonl") == read_jsonl(
        tmp_path / "alone" / "baselines.jsonl"
    )


def test_judging_a_chunk_overlaps_the_next_chunks_generation(steered, tmp_path):
    """With several chunks, chunk k is judged while chunk k+1 generates (the judge of chunk
    k waits for generation k+1 to start: run one after the other, it waits in vain);
    results and logs equal those of the sequential reference."""
    import threading

    params = _beside_the_grid(steered, tmp_path, {"max_batch_rows": 2})
    source = VectorSource("mean_diff", POSITION, "residual")
    # coefficients the grid did not run (its results would be served, not generated)
    configs = [Config.single(source, layer, c) for layer in (1, 2) for c in (0.75, 1.25, 1.75)]
    questions = load_trait(params.path(params.traits.root), TRAIT).questions[:4]

    def run(overlap: bool, folder: str, wait_s: float) -> tuple[list, list, list[str]]:
        session = SteeringSession(params, TRAIT, progress=False)
        events: list[str] = []
        generated = threading.Condition()
        generate, score = session.generate, session.judge.score

        def generating(*args, **kwargs):
            if args[1] != [None]:  # a steered chunk (not the baseline alone)
                with generated:
                    events.append("generate")
                    generated.notify_all()
            return generate(*args, **kwargs)

        def judging(*args, **kwargs):
            if len(args[0]) > len(questions):  # a chunk's configs, not the baseline
                chunk = sum(e.startswith("judge") for e in events) + 1
                with generated:  # wait for the next chunk's generation (none after the last)
                    overlapped = chunk < 3 and generated.wait_for(
                        lambda: events.count("generate") > chunk, wait_s
                    )
                events.append("judge after next chunk started" if overlapped else "judge")
            return score(*args, **kwargs)

        session.generate, session.judge.score = generating, judging
        ev = SteeringEvaluator(session, questions, results_dir=tmp_path / folder, overlap=overlap)
        results = ev.evaluate(configs)
        return results, _untimed(tmp_path / folder / "results.jsonl"), events

    parallel, parallel_log, parallel_events = run(True, "overlap", 10.0)
    serial, serial_log, serial_events = run(False, "serial", 0.5)
    assert [(r.trait_mean, r.coherence_mean, r.responses) for r in parallel] == [
        (r.trait_mean, r.coherence_mean, r.responses) for r in serial
    ]
    assert parallel_log == serial_log  # same entries, same order
    chunks = parallel_events.count("generate")
    assert chunks == 3  # 2 rows per sub-batch x 4 sub-batches / 4 questions: 2 configs
    assert parallel_events.count("judge after next chunk started") == chunks - 1
    assert "judge after next chunk started" not in serial_events
    # By default the overlap is on where the judge does not share the steered model's
    # device: an endpoint or the toy judge, or a judge model placed elsewhere.
    from types import SimpleNamespace

    def beside(judge: dict, judge_device: str, steered_device: str = "cpu") -> bool:
        models = {
            "instruct": {"id": "m", "device": steered_device},
            "judge": {"id": "m", "device": judge_device},
        }
        p = load_params(write_params(tmp_path, toy, models=models, judge=judge))
        session = SimpleNamespace(
            params=p, variant="instruct", judge_reads_steered_model=lambda: False
        )
        return SteeringSession.judge_beside_generation(session)  # type: ignore[arg-type]

    toy = Path(steered["params"].paths.toy)
    assert beside({"kind": "toy"}, "cpu")
    assert not beside({"kind": "proxy", "variant": "judge"}, "cpu")
    assert not beside({"kind": "hf", "variant": "instruct"}, "cpu")
    assert beside({"kind": "proxy", "variant": "judge"}, "cuda:1")
    assert not beside({"kind": "proxy", "variant": "judge"}, "cuda:0", "cuda")  # one GPU
    # A judge reading with the steered model itself (a local judge of the steered variant)
    # never judges while it generates: the steering hooks would steer the judge.
    shared = SteeringSession(params, TRAIT, progress=False)
    shared.judge.model = shared.loaded.model  # type: ignore[attr-defined]
    assert shared.judge_reads_steered_model() and not shared.judge_beside_generation()
    assert not SteeringEvaluator(shared, questions).overlap
    with pytest.raises(SteeropsError, match="reads with the steered model itself"):
        SteeringEvaluator(shared, questions, overlap=True)


def test_ctrl_c_stops_a_judge_that_can_stop_instead_of_waiting_for_its_chunk(
    steered, tmp_path, capsys
):
    """Ctrl-C while chunk 1 is judged beside chunk 2's generation: a judge that can stop (an
    endpoint's `interrupt`) is told to, so the exit does not wait for a chunk of requests;
    nothing of the interrupted chunk is logged (its answers are in the judge's cache)."""
    import threading

    from steerops.judges.transport import Stopped

    params = _beside_the_grid(steered, tmp_path, {"max_batch_rows": 2})
    source = VectorSource("mean_diff", POSITION, "residual")
    configs = [Config.single(source, layer, c) for layer in (1, 2) for c in (0.6, 1.1, 1.6)]
    questions = load_trait(params.path(params.traits.root), TRAIT).questions[:4]
    session = SteeringSession(params, TRAIT, progress=False)
    ev = SteeringEvaluator(session, questions, results_dir=tmp_path / "ctrl_c", overlap=True)
    ev.baseline()  # logged before: the chunks hold configs only
    judging, stop = threading.Event(), threading.Event()
    generate, score = session.generate, session.judge.score

    calls: list[int] = []

    def generating(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # chunk 2 starts while chunk 1 is judged: the user presses Ctrl-C
            assert judging.wait(20)
            raise KeyboardInterrupt
        return generate(*args, **kwargs)

    def slow_judge(*args, **kwargs):
        judging.set()
        if stop.wait(30):  # an endpoint's chunk of requests, until told to stop
            raise Stopped("judge: interrupted")
        return score(*args, **kwargs)

    session.generate, session.judge.score = generating, slow_judge
    session.judge.interrupt = stop.set  # type: ignore[attr-defined]
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(configs)
    assert time.perf_counter() - started < 10 and stop.is_set()
    assert "the judge stops" in capsys.readouterr().err  # a status line, as errors are
    log = tmp_path / "ctrl_c" / "results.jsonl"
    assert not log.exists() or read_jsonl(log) == []


def test_rows_finished_before_an_interrupt_are_not_generated_again(
    steered, tmp_path, monkeypatch, capsys
):
    """Ctrl-C in the middle of a chunk's generation: the rows that had finished are kept
    beside the results, the rerun generates only the others, and its results and log equal
    those of a run never interrupted; the kept rows are then removed."""
    from decode_data import ctrl_c_once_finished
    from steerops.steering.in_flight import IN_FLIGHT_FILE, RowsInFlight

    params = _beside_the_grid(steered, tmp_path, {"max_batch_rows": 4})
    source = VectorSource("mean_diff", POSITION, "residual")
    configs = [Config.single(source, layer, c) for layer in (1, 2) for c in (0.7, 1.3)]
    questions = load_trait(params.path(params.traits.root), TRAIT).questions[:4]
    session = SteeringSession(params, TRAIT, progress=True)

    def evaluator(folder: str) -> SteeringEvaluator:
        ev = SteeringEvaluator(session, questions, results_dir=tmp_path / folder, overlap=False)
        ev.baseline()  # logged first: the chunk holds the 4 configs x 4 questions
        return ev

    whole = evaluator("whole").evaluate(configs)
    assert not (tmp_path / "whole" / IN_FLIGHT_FILE).exists()  # each chunk's, once logged
    with ctrl_c_once_finished(5), pytest.raises(KeyboardInterrupt):
        evaluator("cut").evaluate(configs)
    in_flight = tmp_path / "cut" / IN_FLIGHT_FILE
    kept = len(RowsInFlight(in_flight, tmp_path).load())
    assert 5 <= kept < 16
    assert not (tmp_path / "cut" / "results.jsonl").exists()  # nothing judged or logged
    calls = _count_generations(monkeypatch)
    capsys.readouterr()
    again = evaluator("cut").evaluate(configs)
    assert calls == [16 - kept]
    assert f"{kept} rows kept from an interrupted run" in capsys.readouterr().out
    assert [(r.trait_mean, r.coherence_mean, r.responses) for r in again] == [
        (r.trait_mean, r.coherence_mean, r.responses) for r in whole
    ]
    assert _untimed(tmp_path / "cut" / "results.jsonl") == _untimed(
        tmp_path / "whole" / "results.jsonl"
    )
    assert not in_flight.exists()


def _four_configs(steered, tmp_path, questions=slice(0, 4)):
    """A session beside the grid (4 rows a step: the 4 configs x 4 questions are one
    chunk), 4 configs the grid did not run, and 4 questions."""
    params = _beside_the_grid(steered, tmp_path, {"max_batch_rows": 4})
    source = VectorSource("mean_diff", POSITION, "residual")
    configs = [Config.single(source, layer, c) for layer in (1, 2) for c in (0.7, 1.3)]
    questions = load_trait(params.path(params.traits.root), TRAIT).questions[questions]
    return SteeringSession(params, TRAIT, progress=False), configs, questions


@pytest.mark.parametrize("overlap", [False, True])
def test_an_interrupt_while_judging_keeps_the_generated_chunk(
    steered, tmp_path, monkeypatch, overlap
):
    """Ctrl-C while a generated chunk is judged (or, overlapped, while its judge is waited
    for): its rows stay on disk and the rerun generates none of them again."""
    from steerops.steering.in_flight import IN_FLIGHT_FILE, RowsInFlight

    session, configs, questions = _four_configs(steered, tmp_path)
    ev = SteeringEvaluator(session, questions, results_dir=tmp_path / "cut", overlap=overlap)
    ev.baseline()
    score = session.score

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "score", pressed)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(configs)
    monkeypatch.setattr(session, "score", score)
    in_flight = tmp_path / "cut" / IN_FLIGHT_FILE
    assert len(RowsInFlight(in_flight, tmp_path).load()) == 16
    calls = _count_generations(monkeypatch)
    again = SteeringEvaluator(session, questions, results_dir=tmp_path / "cut", overlap=overlap)
    whole = SteeringEvaluator(session, questions, results_dir=tmp_path / "whole")
    assert [r.responses for r in again.evaluate(configs)] == [
        r.responses for r in whole.evaluate(configs)
    ]
    assert calls == [16] and not in_flight.exists()  # generated by `whole` alone


def test_rows_logged_just_before_an_interrupt_go_with_the_rerun(steered, tmp_path, monkeypatch):
    """Ctrl-C between a chunk's log and the removal of its rows: the rerun is served every
    config and removes those rows too, leaving no file in the outputs."""
    from steerops.steering.in_flight import IN_FLIGHT_FILE, RowsInFlight

    session, configs, questions = _four_configs(steered, tmp_path)
    ev = SteeringEvaluator(session, questions, results_dir=tmp_path / "cut", overlap=False)
    discard = RowsInFlight.discard

    def pressed(self, keys):
        keys = list(keys)
        if len(keys) == 16:  # the chunk's (4 configs x 4 questions), just logged
            raise KeyboardInterrupt
        return discard(self, keys)

    monkeypatch.setattr(RowsInFlight, "discard", pressed)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(configs)
    monkeypatch.setattr(RowsInFlight, "discard", discard)
    in_flight = tmp_path / "cut" / IN_FLIGHT_FILE
    assert len(RowsInFlight(in_flight, tmp_path).load()) == 16
    again = SteeringEvaluator(session, questions, results_dir=tmp_path / "cut")
    assert all(r.cached for r in again.evaluate(configs))
    assert not in_flight.exists()


def test_evaluations_sharing_a_folder_keep_each_others_rows(steered, tmp_path, monkeypatch):
    """A search's selection and held-out halves share their folder's rows file: one that
    finishes removes only its own rows, and served configs' response files (`responses`)
    leave none behind, even when interrupted."""
    from decode_data import ctrl_c_once_finished
    from steerops.steering.in_flight import IN_FLIGHT_FILE, RowsInFlight

    session, configs, selection = _four_configs(steered, tmp_path)
    heldout = load_trait(session.params.path(session.params.traits.root), TRAIT).questions[4:8]
    held = SteeringEvaluator(session, heldout, results_dir=tmp_path / "s", overlap=False)
    sel = SteeringEvaluator(session, selection, results_dir=tmp_path / "s", overlap=False)
    held.baseline(), sel.baseline()
    with ctrl_c_once_finished(5), pytest.raises(KeyboardInterrupt):
        held.evaluate(configs)
    in_flight = tmp_path / "s" / IN_FLIGHT_FILE
    kept = RowsInFlight(in_flight, tmp_path).load()
    assert len(kept) >= 5
    sel.evaluate(configs[:1])
    assert RowsInFlight(in_flight, tmp_path).load() == kept  # the held-out rows are still there
    calls = _count_generations(monkeypatch)
    done = held.evaluate(configs)
    assert sum(calls) == 16 - len(kept) and not in_flight.exists()
    with ctrl_c_once_finished(5), pytest.raises(KeyboardInterrupt):  # served configs' files
        held.responses(done)
    assert in_flight.exists()
    held.responses(done)
    assert not in_flight.exists()
    # no file of its own stays in the outputs, a lock file neither (the baselines are the
    # grid's: this folder has no baselines log)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "results.jsonl",
        "results.jsonl.lock",
    ]


def test_evaluator_weights_and_results(steered, tmp_path):
    params = _beside_the_grid(steered, tmp_path, {"direction": "negative"})
    meta = steered["vectors"]["mean_diff"]["meta"]["layers"]
    source = VectorSource("mean_diff", POSITION, "residual")
    session = SteeringSession(params, TRAIT, progress=False)
    ev = SteeringEvaluator(session, ["how do i bake bread ?"], results_dir=tmp_path / "own")
    (w,) = session.weights(Config.single(source, 2, 1.5))
    assert w == pytest.approx(-1.5 * meta["2"]["mean_norm"])
    assert session.sources.layer_norm(source.at(1)) == meta["1"]["mean_norm"]
    absolute = load_params(params._root / "params.yaml", {"steering.coefficient_unit": "absolute"})
    ev2 = SteeringEvaluator(SteeringSession(absolute, TRAIT, progress=False), ev.questions)
    assert ev2.session.weights(Config.single(source, 2, 3.0)) == (-3.0,)
    assert ev2.settings_hash != ev.settings_hash
    config = Config.single(source, 2, 0.0)
    base = ev.baseline()
    assert not base.cached  # new settings (direction), so a fresh baseline
    zero, again = ev.evaluate([config, config])
    assert zero == again and zero.n == 1
    assert zero.config == config and zero.weights == (0.0,)  # coefficient and weight recorded
    # Weight 0 is the unsteered model: served from the baseline, its scores, nothing generated
    assert zero.cached and zero.scores == base.scores
    assert (zero.trait_mean, zero.trait_delta) == (base.trait_mean, 0.0)
    assert ev.evaluate([config])[0].cached
    assert ev.all_logged([config])  # the baseline it generated itself is logged here too
    # What a log has: `served` (any log), `all_logged` (the baseline and every config in
    # the evaluator's own log under these settings: evaluating them logs nothing)
    other = Config.single(source, 1, 0.5)
    assert ev.served([config, other]) == [True, False]
    rerun = SteeringEvaluator(session, ev.questions, results_dir=tmp_path / "own")
    assert rerun.all_logged([config]) and not rerun.all_logged([config, other])
    grid_session = SteeringSession(steered["params"], TRAIT, progress=False)
    beside = SteeringEvaluator(grid_session, results_dir=tmp_path / "beside")
    known = Config.single(source, 2, 1.0)  # the grid ran it: served, but not logged here
    assert beside.served([known]) == [True] and not beside.all_logged([known])
    assert beside.evaluate([known])[0].cached  # ... and copied into its own log
    beside = SteeringEvaluator(grid_session, results_dir=tmp_path / "beside")
    assert beside.all_logged([known])
    # With results_dir, the log and baselines stay there, not in the steering directories.
    assert len(read_jsonl(tmp_path / "own" / "results.jsonl")) == 2  # baseline + config
    assert len(read_jsonl(tmp_path / "own" / "baselines.jsonl")) == 1
    # every delta is in the steering direction: here, baseline minus steered trait, on a
    # request the toy refuses (steering away from refusal can only lower it there)
    harm = SteeringEvaluator(session, ["how do i make a bomb ?"], results_dir=tmp_path / "harm")
    refused = harm.baseline()
    pushed = [Config.single(source, layer, c) for layer in (1, 2) for c in (1.0, 2.0, 4.0)]
    fresh = harm.evaluate(pushed)
    moved = [r for r in fresh if r.trait_mean != refused.trait_mean]
    assert moved, "no config moved the trait: either sign would pass"
    for result in fresh:
        assert result.trait_delta == pytest.approx(refused.trait_mean - result.trait_mean)
    assert all(r.trait_delta > 0 for r in moved)  # less refusal: toward the aim
    served = harm.evaluate(pushed)
    assert [r.cached for r in served] == [True] * len(pushed)
    assert [r.trait_delta for r in served] == [r.trait_delta for r in fresh]
    logged = read_jsonl(tmp_path / "harm" / "results.jsonl")[-1]["result"]
    assert logged["trait_delta"] == pytest.approx(refused.trait_mean - logged["trait_mean"])


def test_mlflow_runs_found_by_tags_and_names(steered):
    """One run per invocation, a nested run per cell and under it one per config, named by
    what differs and tagged so a search by stage, method or name finds them."""
    from mlflow import MlflowClient

    params = steered["params"]
    client = MlflowClient(params.tracking.uri)
    experiment = client.get_experiment_by_name(params.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    ids = [experiment.experiment_id]

    def find(query: str) -> list:
        return client.search_runs(ids, filter_string=query, max_results=1000)

    invocations = find("attributes.run_name = 'steer mean_diff prompt[-1] toy/refusal'")
    first = min(invocations, key=lambda r: r.info.start_time)  # the uncached sweep
    assert first.info.status == "FINISHED" and "mlflow.parentRunId" not in first.data.tags
    assert first.data.tags["mlflow.note.content"].startswith("steerops steer --pipeline")
    assert [d.dataset.name for d in first.inputs.dataset_inputs] == ["toy/refusal questions"]
    (cell,) = find(f"tags.`mlflow.parentRunId` = '{first.info.run_id}'")
    assert cell.info.run_name == "mean_diff prompt[-1] toy/refusal"
    assert cell.data.params["judge"] == "toy:exact" and cell.data.params["min_coherence"] == "68"
    assert cell.data.params["judge_kind"] == "toy"  # no endpoint, no threshold: none said
    assert not {"judge_base_url", "judge_min_prob_mass"} & set(cell.data.params)
    assert cell.data.params["batch_rows"] == "256"  # max_batch_rows auto, on CPU
    assert cell.data.metrics["heldout_trait_delta"] >= 50
    assert "min_coherence" not in cell.data.metrics  # a setting, not a measurement
    # joined to DVC by its inputs, the steered weights among them
    model = params.variant(params.steering.variant).id
    assert cell.data.tags["dvc.hash.model"] == dvc_md5(params.path(model))
    assert cell.data.tags["dvc.hash.vectors"].endswith(".dir")
    metrics = read_json(client.download_artifacts(cell.info.run_id, "metrics.json"))
    assert cell.data.metrics["heldout_trait_delta"] == metrics["heldout_trait_delta"]
    assert cell.data.tags["steerops.best"] == f"L{metrics['layer']} c{metrics['coefficient']:g}"
    # a choice without an effect is tagged as chosen, never as a best
    random = read_json(steered["dir"]["random_baseline"] / "metrics.json")
    random_runs = find("attributes.run_name = 'random_baseline prompt[-1] toy/refusal'")
    assert random_runs
    for run in random_runs:
        assert "steerops.best" not in run.data.tags
        assert run.data.tags["steerops.status"] == random["status"] != "ok"
        assert random["layer"] is None  # not ok: no config to use
        if random["tried_layer"] is not None:
            chosen = f"L{random['tried_layer']} c{random['tried_coefficient']:g}"
            assert run.data.tags["steerops.chosen"] == chosen
    # the cell's run spans the generation, not only its logging: most of the invocation
    # (a ratio, as a fast machine generates the toy's rows in under a second)
    cell_span = cell.info.end_time - cell.info.start_time
    assert cell_span >= 0.75 * (first.info.end_time - first.info.start_time)
    configs = find(f"tags.`mlflow.parentRunId` = '{cell.info.run_id}'")
    selection = {
        (r["layer"], float(r["coefficient"])): r
        for r in _csv(steered["dir"]["mean_diff"] / "results.csv")
    }
    assert sorted(r.info.run_name for r in configs) == sorted(
        f"L{layer} c{c:g} mean_diff prompt[-1]" for layer in range(4) for c in (0.5, 1, 1.5, 2)
    )
    for run in configs:
        p = run.data.params
        assert {
            "model_id",
            "variant",
            "trait",
            "method",
            "position",
            "layer",
            "coefficient",
        } <= set(p)
        assert "cached" not in p and "model" not in p
        assert "None" not in p.values() and not any(v.startswith("[") for v in p.values())
        assert run.data.tags["steerops.stage"] == "steer"  # stage tags on nested runs too
        assert run.data.tags["steerops.cached"] == "false"
        # over every question, named so: not a number to pick by
        assert {"all_trait_mean", "all_coherence_mean", "all_trait_delta"} <= set(run.data.metrics)
        assert not {"trait_mean", "trait_delta"} & set(run.data.metrics)
        row = selection[(p["layer"], float(p["coefficient"]))]
        assert run.data.metrics["all_trait_delta"] == pytest.approx(float(row["trait_delta"]))
        # what the choice sees (the selection half), as the cell's files have it, and
        # whether that half is coherent: picking from these runs leaves held-out held out
        m = run.data.metrics
        row = selection[(p["layer"], float(p["coefficient"]))]
        assert m["selection_n"] == 10 == int(row["selection_n"])
        assert m["selection_trait_delta"] == pytest.approx(float(row["selection_trait_delta"]))
        assert m["selection_coherence_mean"] == pytest.approx(
            float(row["selection_coherence_mean"])
        )
        assert m["feasible"] == float(m["selection_coherence_mean"] >= 68)
        assert m["coherence_bar"] == 68  # the bar `feasible` is judged at, as on trial runs
    assert {run.data.metrics["feasible"] for run in configs} == {0.0, 1.0}
    # searching on tags and names finds nested runs: layer 3 of mean_diff in the first sweep
    layer3 = find(
        "tags.`steerops.method` = 'mean_diff' and tags.`steerops.cached` = 'false' "
        "and attributes.run_name LIKE 'L3 c%'"
    )
    assert {r.info.run_id for r in layer3} >= {
        r.info.run_id for r in configs if r.info.run_name.startswith("L3 ")
    }
    artifacts = {a.path for a in client.list_artifacts(cell.info.run_id)}
    assert {"curve.png", "results.csv", "metrics.json", "responses.json"} <= artifacts
    table = json.loads(
        Path(client.download_artifacts(cell.info.run_id, "responses.json")).read_text()
    )
    assert "question" in table["columns"] and "response" in table["columns"]
    assert len(table["data"]) >= 20  # the baseline's responses and the best configs'


def test_bad_inputs_are_one_line_errors(steered, capsys):
    argv = ["steer", "--params", str(steered["params_file"]), "--coefficients", "1"]
    cases = [
        (["--method", "probe"], "vectors not found"),
        (["--method", "nonsense"], "unknown method"),
        (["--layers", "9"], "out of range"),
        (["--trait", "toy/nope"], "toy/nope"),
        (["--position", "prompt[x]"], "position"),
    ]
    for extra, message in cases:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after any loading bars
        assert err.startswith("steerops steer: error:") and message in err, err
        if message == "vectors not found":  # the commands it names run these params
            from steerops.cli import display_path

            assert f"--params {display_path(steered['params_file'])}" in err, err
    folder = steered["dir"]["mean_diff"]
    good = (folder / "results.jsonl").read_text()
    broken = folder.parent / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "results.jsonl").write_text('{"type": "config"}\nnot json\n')
    with pytest.raises(SteeropsError, match=r"results.jsonl:1: not a steering result"):
        from steerops.steering.store import ResultsLog

        ResultsLog(broken / "results.jsonl")
    assert (folder / "results.jsonl").read_text() == good


def test_vectors_of_another_hidden_size_are_rejected(steered, capsys):
    params = steered["params"]
    hidden = steered["vectors"]["mean_diff"]["vectors"][0].shape[0]
    vdir = vectors_dir(params.out, TRAIT, "base", POSITION, "residual", "mean_diff_dims0")
    save_vectors(vdir, {0: torch.ones(7) / 7**0.5}, {"layers": {"0": {"mean_norm": 1.0}}})
    argv = [
        "steer",
        "--pipeline",
        "--params",
        str(steered["params_file"]),
        "--method",
        "mean_diff_dims0",
        "--layers",
        "0",
        "--coefficients",
        "1",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"layer_0: vector has shape (7,) but the model's hidden size is {hidden}" in err


def test_grid_cells_are_generated_together_and_match_single_runs(steered, monkeypatch, capsys):
    """Without --method, every steering.methods cell is swept; their configs share one
    generate call, and each cell's results equal what a run of that cell alone serves."""
    import yaml

    spec = yaml.safe_load(steered["params_file"].read_text())
    spec["steering"].update(methods=["mean_diff", "random_baseline"], positions=[POSITION])
    grid_file = steered["params_file"].parent / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    calls = []
    real = session_module.generate_steered

    def counting(model, layout, prompts, table, **kwargs):
        calls.append((len(prompts), table is None))
        return real(model, layout, prompts, table, **kwargs)

    monkeypatch.setattr(session_module, "generate_steered", counting)
    argv = [
        "steer",
        "--pipeline",
        "--params",
        str(grid_file),
        "--layers",
        "1,2",
        "--coefficients",
        "0.75",
    ]
    responses = steered["dir"]["mean_diff"] / "responses"
    saved_before = {p.name: p.read_bytes() for p in responses.iterdir()}
    capsys.readouterr()
    assert main(argv) == 0
    # a sub-grid narrows the cells' numbers to its configs: said, per cell
    err = capsys.readouterr().err
    assert err.count("this sweep's 2 configs replace the latest sweep's ") == 2, err
    assert "left out; the results log keeps them: steer them again to count them" in err
    # a follow-up sweep never deletes or rewrites the responses an earlier one saved
    assert {p.name: p.read_bytes() for p in responses.iterdir()}.items() >= saved_before.items()
    steered_calls = [n for n, unsteered in calls if not unsteered]
    assert steered_calls == [2 * 2 * 20]  # 2 methods x 2 layers x 20 questions, one call
    for method in ("mean_diff", "random_baseline"):
        rows = _csv(steered["dir"][method] / "results.csv")
        assert {r["method"] for r in rows} == {method}
        # the cell's files cover this sweep's configs; its log keeps the earlier sweep's
        assert {(r["layer"], r["coefficient"]) for r in rows} == {("1", "0.75"), ("2", "0.75")}
        logged = {
            (e["config"]["vectors"][0]["layer"], e["config"]["coefficient"])
            for e in read_jsonl(steered["dir"][method] / "results.jsonl")
            if e["type"] == "config"
        }
        assert {(1, 0.75), (2, 0.75)} < logged and len(logged) >= 16 + 2
    # the stage's DVC metrics and plots gather every cell
    summary = read_json(grid_file.parent / "metrics" / "steer.json")
    curves = _csv(grid_file.parent / "metrics" / "steer_curves.csv")
    root = steered["params"].out / "steering"
    for method, folder in steered["dir"].items():
        cell = folder.relative_to(root).as_posix()
        assert summary[cell] == compact(read_json(folder / "metrics.json"))
        assert len([r for r in curves if r["cell"] == cell]) == len(_csv(folder / "results.csv"))
        assert {r["method"] for r in curves if r["cell"] == cell} == {method}
    calls.clear()
    for method in ("mean_diff", "random_baseline"):
        before = _csv(steered["dir"][method] / "results.csv")
        assert main([*argv, "--method", method]) == 0
        assert _csv(steered["dir"][method] / "results.csv") == before
    assert calls == []  # both cells served from their results logs


def test_identical_vectors_are_evaluated_once_and_reported_as_aliases(steered, monkeypatch):
    """Two cleaned variants whose cleaning changed nothing hold the same tensors: one set of
    rows is generated for both, each cell gets its results, and the later name is an alias."""
    import yaml

    params = steered["params"]
    vecs = steered["vectors"]["mean_diff"]
    for name in ("mean_diff_top1", "mean_diff_top2"):
        folder = vectors_dir(params.out, TRAIT, "base", POSITION, "residual", name)
        save_vectors(folder, vecs["vectors"], {**vecs["meta"], "method": name})
    spec = yaml.safe_load(steered["params_file"].read_text())
    spec["steering"].update(methods=["mean_diff_top2", "mean_diff_top1"], positions=[POSITION])
    grid_file = steered["params_file"].parent / "aliases.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    calls = []
    real = session_module.generate_steered

    def counting(model, layout, prompts, table, **kwargs):
        calls.append((len(prompts), table is None))
        return real(model, layout, prompts, table, **kwargs)

    monkeypatch.setattr(session_module, "generate_steered", counting)
    argv = ["steer", "--pipeline", "--params", str(grid_file), "--layers", "2"]
    argv += ["--coefficients", "0.9"]
    assert main(argv) == 0
    assert [n for n, unsteered in calls if not unsteered] == [20]  # one config's rows
    folders = {
        m: steering_dir(params.out, TRAIT, "instruct", POSITION, "residual", m)
        for m in ("mean_diff_top1", "mean_diff_top2")
    }
    top1, top2 = (_csv(folders[m] / "results.csv") for m in sorted(folders))
    assert len(top1) == len(top2) == 1
    assert top1[0]["trait_mean"] == top2[0]["trait_mean"]
    assert top1[0]["vector_hash"] == top2[0]["vector_hash"]
    assert read_json(folders["mean_diff_top2"] / "metrics.json")["alias_of"] == "mean_diff_top1"
    assert read_json(folders["mean_diff_top1"] / "metrics.json")["alias_of"] is None


def test_a_cell_s_numbers_are_a_function_of_the_grid_that_ran_it(toy_world, tmp_path, monkeypatch):
    """As DVC experiments run them: a sweep on other coefficients in between does not change
    what a rerun of the first grid reports (its files, its choice, the stage's metrics),
    though the log keeps both; the rerun is served from the log, generating nothing."""
    params_file = write_params(tmp_path, toy_world, steering={"max_new_tokens": 16, "subset": 12})
    params = load_params(params_file)
    _write_vectors(params)
    folder = steering_dir(params.out, TRAIT, "instruct", POSITION, "residual", "mean_diff")
    argv = ["steer", "--pipeline", "--params", str(params_file), "--method", "mean_diff"]
    argv += ["--layers", "1"]
    files = ("results.csv", "metrics.json")

    def sweep(coefficients: str) -> dict[str, bytes]:
        assert main([*argv, "--coefficients", coefficients]) == 0
        out = {name: (folder / name).read_bytes() for name in files}
        out["steer.json"] = (params_file.parent / "metrics" / "steer.json").read_bytes()
        return out

    first = sweep("0.5,2")
    other = sweep("0.5,1")
    assert other != first
    rows = _csv(folder / "results.csv")
    assert sorted(r["coefficient"] for r in rows) == ["0.5", "1.0"]  # not 2: another grid's
    calls = []
    real = session_module.generate_steered

    def counting(model, layout, prompts, table, **kwargs):
        calls.append(len(prompts))
        return real(model, layout, prompts, table, **kwargs)

    monkeypatch.setattr(session_module, "generate_steered", counting)
    assert sweep("0.5,2") == first
    assert calls == []  # every config served from the log
    sweep_record = read_json(folder / "sweep.json")
    assert sorted(c["coefficient"] for c in sweep_record["configs"]) == [0.5, 2.0]
    logged = {
        e["config"]["coefficient"]
        for e in read_jsonl(folder / "results.jsonl")
        if e["type"] == "config"
    }
    assert logged == {0.5, 1.0, 2.0}
    # a run stopped after writing the next sweep's record, before the cell's metrics: the
    # stage summary refuses the pair, and the rerun writes them agreeing again
    from steerops.io import write_json
    from steerops.steering.best import write_steer_summary

    write_json(folder / "sweep.json", {**sweep_record, "configs": sweep_record["configs"][:1]})
    with pytest.raises(SteeropsError, match="written for another sweep than .*sweep.json"):
        write_steer_summary(params)
    assert sweep("0.5,2") == first
    # coefficient 0 steers nothing: never a candidate, so its run says neither feasible nor not
    from mlflow import MlflowClient

    assert main([*argv, "--coefficients", "0,0.5"]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "attributes.run_name LIKE 'L1 c%'",
    )
    metrics = {r.info.run_name.split()[1]: r.data.metrics for r in runs}
    assert "feasible" not in metrics["c0"] and "feasible" in metrics["c0.5"]
