"""The main job's pipeline on the real model at reduced size: SmolLM2 completes a subset of
the refusal trait's prompts (vetted by the proxy judge), activations are extracted, a
mean-difference vector and a random one of equal norm are steered at layer 12, and the
config chosen on the selection half is read on the held-out half."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from steerops.cli import main
from steerops.io import read_json

REPO = Path(__file__).resolve().parents[2]
TRAIT = "behavior/refusal"
N_PROMPTS = 48  # per polarity
CELL = "outputs/steering/behavior/refusal/instruct/response_to5/residual"


def _trait_subset(root: Path) -> Path:
    """The repo's refusal trait with its first N_PROMPTS prompts of each polarity."""
    source = REPO / "traits" / TRAIT
    target = root / TRAIT
    shutil.copytree(source, target)
    for polarity in ("positive", "negative"):
        lines = (source / f"{polarity}.jsonl").read_text().splitlines()[:N_PROMPTS]
        (target / f"{polarity}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory, smollm2_dir) -> Path:
    folder = tmp_path_factory.mktemp("smollm2_job")
    model = {"id": str(smollm2_dir), "dtype": "float32", "device": "cpu"}
    params = {
        "experiment": "smollm2-e2e",
        "paths": {"out": "outputs"},
        "models": {"base": model, "instruct": model},
        "traits": {"root": str(_trait_subset(folder / "traits")), "names": [TRAIT]},
        "generate": {"vet": True, "vet_min_new_tokens": 12},
        "extraction": {"positions": ["response[:5]"], "layers": "12"},
        "vectors": {"methods": ["mean_diff", "random_baseline"]},
        "steering": {
            "methods": ["mean_diff", "random_baseline"],
            "positions": ["response[:5]"],
            "layers": "12",
            "coefficients": [0.175, 0.2],
            "subset": 40,
            "max_new_tokens": 24,
        },
        "judge": {"kind": "proxy", "variant": "instruct", "batch_size": 32},
        "tracking": {"enabled": False},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in (["generate"], ["extract"], ["vectors"], ["steer", "--pipeline"]):
        assert main([*stage, "--params", str(path)]) == 0, stage
    return folder


def test_vetting_keeps_the_refusal_contrast(project):
    summary = read_json(project / "outputs/responses" / TRAIT / "base" / "summary.json")
    # the model refuses the harmful requests it is told to refuse and answers the benign ones
    assert summary["kept"]["positive"] >= 0.8 * N_PROMPTS, summary["kept"]
    assert summary["kept"]["negative"] >= 0.8 * N_PROMPTS, summary["kept"]
    assert summary["trait_mean"]["positive"] - summary["trait_mean"]["negative"] >= 70


def test_mean_diff_raises_refusal_held_out_and_random_does_not(project):
    steered = read_json(project / CELL / "mean_diff" / "metrics.json")
    random = read_json(project / CELL / "random_baseline" / "metrics.json")
    assert steered["status"] == "ok", json.dumps(steered, indent=1)
    assert steered["heldout_trait_delta"] >= 40
    assert steered["heldout_coherence"] >= 68
    assert steered["heldout_n"] == 20 and steered["selection_n"] == 20
    # random_baseline: same layer, coefficients and norm unit, no effect
    best_random = random["heldout_trait_delta"]
    assert best_random is None or best_random <= 10, json.dumps(random, indent=1)
    assert random["status"] != "ok"


def test_the_judge_reads_on_from_what_steered_generation_kept(project, monkeypatch):
    """The proxy judge reads with the steered model: generation keeps the unsteered states
    below each row's steering (`models.unsteered`), the judge's scores are those of a
    reading from block 0, and nothing is kept once they are given."""
    from steerops.config import load_params
    from steerops.judges import fluency
    from steerops.models import unsteered
    from steerops.steering.configs import Config, VectorSource
    from steerops.steering.session import SteeringSession

    session = SteeringSession(load_params(project / "params.yaml"), TRAIT, progress=False)
    store = unsteered.kept(session.loaded.model)
    assert store is not None and session.judge_reads_steered_model()
    questions = session.questions[:8]
    config = Config.single(VectorSource("mean_diff", "response[:5]", "residual"), 12, 0.2)
    entries = [None, (config, session.weights(config))]
    ids = session.generate(session.encode(questions), entries, desc="kept")
    n = len(questions)
    generated = [ids[:n], ids[n:]]
    assert {kept.depth for kept in store.values()} == {13, 30}  # steered after block 12; none
    assert len(store) >= n
    started: list[int] = []  # rows per reading that started from kept states
    starting_at = fluency.starting_at

    def counted(blocks, depth, hidden):
        started.append(hidden.shape[0])
        return starting_at(blocks, depth, hidden)

    monkeypatch.setattr(fluency, "starting_at", counted)
    tokenizer = session.loaded.tokenizer
    # a response is looked up by the ids its text tokenizes to (an ending may merge)
    responses = [list(response) for _, response in store]
    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]
    readable = sum(
        tokenizer(text, add_special_tokens=False)["input_ids"] == response
        for text, response in zip(texts, responses, strict=True)
    )
    assert readable >= 0.75 * len(store)
    scored = session.score(questions, generated)
    assert sum(started) == readable  # each read from its states, once
    assert len(store) == 0
    whole = session.score(questions, generated)  # nothing kept now: read from block 0
    for mine, theirs in zip(scored, whole, strict=True):
        assert [r["trait"] for r in mine.responses] == [r["trait"] for r in theirs.responses]
        for a, b in zip(mine.responses, theirs.responses, strict=True):
            assert a["coherence"] == pytest.approx(b["coherence"], abs=0.01)
