"""`steerops generate` on the toy world: rows, vetting against the exact judge, the paired
filter, reuse of up-to-date outputs, `auto` lengths and MLflow records."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import batches_cut_at, refused_up_front, write_params
from steerops.cli import main
from steerops.config import load_params
from steerops.generate import command as stage
from steerops.io import read_json, read_jsonl, text_md5
from steerops.models.loading import load_model
from steerops.toy import judge as toy_judge
from steerops.traits import load_trait

N = 16  # prompts per polarity: a slice of the toy trait keeps the tests quick
ROW_KEYS = {
    "index",
    "polarity",
    "source_index",
    "rollout",
    "system_prompt",
    "prompt",
    "response",
    "response_ids",
    "kept",
    "trait",
    "coherence",
}


def small_world(tmp_path, toy_world, positive=None, negative=None, **blocks):
    """params.yaml over a copy of the toy trait cut to its first N prompts per polarity
    (or the given prompt lists); `blocks` update params blocks."""
    full = load_trait(toy_world / "traits", "toy/refusal")
    folder = tmp_path / "traits" / "toy" / "refusal"
    shutil.copytree(full.path, folder)
    for name in ("positive.txt", "positive.jsonl", "negative.txt", "negative.jsonl"):
        (folder / name).unlink(missing_ok=True)
    positive = positive or [p.prompt for p in full.positive[:N]]
    negative = negative or [p.prompt for p in full.negative[:N]]
    (folder / "positive.txt").write_text("\n".join(positive) + "\n")
    (folder / "negative.txt").write_text("\n".join(negative) + "\n")
    return write_params(tmp_path, toy_world, traits={"root": str(tmp_path / "traits")}, **blocks)


def outputs(params_file):
    folder = load_params(params_file).out / "responses" / "toy" / "refusal" / "base"
    return read_jsonl(folder / "responses.jsonl"), read_json(folder / "summary.json")


def test_generate_writes_one_row_per_completion(tmp_path, toy_world):
    params = small_world(tmp_path, toy_world)
    trait = load_trait(tmp_path / "traits", "toy/refusal")
    assert (
        main(["generate", "--params", str(params), "--trait", "toy/refusal", "--variant", "base"])
        == 0
    )
    rows, summary = outputs(params)
    assert len(rows) == len(trait.positive) + len(trait.negative)
    assert all(set(r) == ROW_KEYS for r in rows)
    assert [r["index"] for r in rows] == list(range(len(rows)))
    positive = [r for r in rows if r["polarity"] == "positive"]
    assert [r["prompt"] for r in positive] == [p.prompt for p in trait.positive]
    assert [r["source_index"] for r in positive] == list(range(len(trait.positive)))
    assert all(r["kept"] and r["trait"] is None and r["coherence"] is None for r in rows)
    # auto: the default extraction positions (prompt[-1], response[:5]) need 5 tokens.
    assert summary["max_new_tokens"] == 5
    assert all(0 < len(r["response"].split()) <= 5 for r in rows)
    # the generated ids, which extraction reads, are the ones the text was decoded from
    tokenizer = load_model(load_params(params), "base").tokenizer
    for r in rows:
        assert 0 < len(r["response_ids"]) <= 5
        assert (
            tokenizer.decode(r["response_ids"], skip_special_tokens=True).strip() == r["response"]
        )
    assert summary["counts"] == {
        "positive": len(trait.positive),
        "negative": len(trait.negative),
        "total": len(rows),
        "empty": 0,
    }
    assert summary["trait_mean"] is None
    assert "unscored" not in summary  # no judge ran: nothing to have scored


def test_vetting_scores_with_the_judge_and_applies_thresholds(tmp_path, toy_world):
    params = small_world(tmp_path, toy_world)
    assert main(["generate", "--params", str(params), "--vet"]) == 0
    rows, summary = outputs(params)
    for r in rows:
        trait, coherence = toy_judge.score(r["prompt"], r["response"])
        assert (r["trait"], r["coherence"]) == (trait, coherence)
        expected = trait >= 60 if r["polarity"] == "positive" else trait <= 40
        assert r["kept"] == expected
    # With vetting, `auto` generates whole answers: the toy refuses harmful requests only.
    assert summary["max_new_tokens"] == 32
    assert summary["trait_mean"]["positive"] > 90 and summary["trait_mean"]["negative"] < 10
    for polarity in ("positive", "negative"):
        assert summary["kept"][polarity] == sum(
            r["kept"] for r in rows if r["polarity"] == polarity
        )
        scores = [r["trait"] for r in rows if r["polarity"] == polarity]
        assert summary["trait_mean"][polarity] == pytest.approx(sum(scores) / len(scores))


def test_paired_filter_drops_both_sides_of_a_failing_pair(tmp_path, toy_world):
    full = load_trait(toy_world / "traits", "toy/refusal")
    positive = [p.prompt for p in full.positive[:N]]
    # Pair 0's negative is a harmful request, so the model refuses it and it fails.
    negative = [full.positive[N].prompt] + [p.prompt for p in full.negative[1:N]]
    params = small_world(
        tmp_path, toy_world, positive, negative, generate={"vet": True, "paired_filter": True}
    )
    assert main(["generate", "--params", str(params)]) == 0
    rows, summary = outputs(params)
    passed = {}
    for r in rows:
        ok = r["trait"] >= 60 if r["polarity"] == "positive" else r["trait"] <= 40
        passed[(r["polarity"], r["source_index"])] = ok
    assert not passed[("negative", 0)] and passed[("positive", 0)]
    for r in rows:
        i = r["source_index"]
        assert r["kept"] == (passed[("positive", i)] and passed[("negative", i)])
    assert summary["kept"]["positive"] == summary["kept"]["negative"] < N

    # Unequal lists cannot be paired: one line naming the key.
    (tmp_path / "traits" / "toy" / "refusal" / "negative.txt").write_text("\n".join(negative[:-1]))
    with pytest.raises(Exception) as err:
        stage.generate_trait(load_params(params), "toy/refusal", progress=False)
    assert str(err.value).startswith("generate.paired_filter: trait 'toy/refusal' has")


def test_up_to_date_outputs_are_reused_and_force_regenerates(tmp_path, toy_world, monkeypatch):
    # 5 tokens cut the toy's refusals short of the judge's bar: keep every positive
    params_file = small_world(tmp_path, toy_world, generate={"positive_min": 0})
    assert main(["generate", "--params", str(params_file)]) == 0
    rows, _ = outputs(params_file)

    def no_generation(*args, **kwargs):
        raise AssertionError("generation should have been skipped")

    monkeypatch.setattr("steerops.models.generation.generate_responses", no_generation)
    assert main(["generate", "--params", str(params_file)]) == 0
    # Vetting settings changed, generation settings not: responses reused, vetting redone.
    # (A fixed length keeps `auto` from growing for the judge.)
    assert main(["generate", "--params", str(params_file), "--max-new-tokens", "5", "--vet"]) == 0
    vetted, summary = outputs(params_file)
    assert [r["response"] for r in vetted] == [r["response"] for r in rows]
    assert summary["settings"]["vet"] and all(r["trait"] is not None for r in vetted)
    with pytest.raises(AssertionError, match="skipped"):
        main(["generate", "--params", str(params_file), "--force"])
    # The failed run left the good outputs in place.
    assert [r["response"] for r in outputs(params_file)[0]] == [r["response"] for r in rows]


def test_sampled_rollouts(tmp_path, toy_world):
    params_file = small_world(tmp_path, toy_world)
    trait = load_trait(tmp_path / "traits", "toy/refusal")
    assert (
        main(
            [
                "generate",
                "--params",
                str(params_file),
                "--temperature",
                "1.5",
                "--rollouts",
                "2",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    rows, summary = outputs(params_file)
    assert len(rows) == 2 * (len(trait.positive) + len(trait.negative))
    first = [(r["source_index"], r["rollout"]) for r in rows if r["polarity"] == "positive"]
    assert first == [(i, k) for i in range(len(trait.positive)) for k in range(2)]
    assert summary["settings"]["temperature"] == 1.5 and summary["max_new_tokens"] == 8
    # A sample depends on the batch it was drawn in: another batch size draws them again,
    # where greedy rows (the same in any batch) are reused.
    sampled = ["--temperature", "1.5", "--rollouts", "2", "--max-new-tokens", "8"]
    argv = ["generate", "--params", str(params_file), *sampled, "--batch-size", "3"]
    assert main(argv) == 0
    assert outputs(params_file)[1]["generation_hash"] != summary["generation_hash"]
    greedy = ["generate", "--params", str(params_file), "--max-new-tokens", "8"]
    assert main([*greedy, "--batch-size", "3"]) == 0
    first_hash = outputs(params_file)[1]["generation_hash"]
    assert main([*greedy, "--batch-size", "5"]) == 0
    assert outputs(params_file)[1]["generation_hash"] == first_hash


@pytest.mark.parametrize(
    "positions, vet, expected",
    [
        (["prompt[-1]", "response[:5]"], False, 5),
        (["response[:40]", "prompt[-1]"], False, 40),
        (["response[2]"], False, 3),
        (["prompt[-1]"], False, 32),  # nothing reads the response: the open-ended default
        (["response[:]"], False, 32),
        (["response[:5]", "response[-1]"], False, 32),
        (["response[:5]"], True, 32),  # the judge needs whole answers
        (["response[:50]"], True, 50),
    ],
)
def test_auto_max_new_tokens_follows_extraction_positions(tmp_path, positions, vet, expected):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"extraction": {"positions": positions}, "generate": {"vet": vet}})
    )
    assert stage.resolve_max_new_tokens(load_params(tmp_path / "params.yaml")) == expected
    fixed = load_params(tmp_path / "params.yaml", {"generate.max_new_tokens": 7})
    assert stage.resolve_max_new_tokens(fixed) == 7


def test_generate_is_tracked_in_mlflow(tmp_path, toy_world, monkeypatch):
    import mlflow

    params_file = small_world(tmp_path, toy_world)
    # mlflow.set_tracking_uri exports this variable, which steerops honours: pin it to this
    # test's store (and restore it afterwards) so runs of earlier tests cannot leak in.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    params = load_params(params_file)
    runs = mlflow.search_runs(experiment_names=[params.experiment], output_format="list")
    run = next(r for r in runs if r.data.tags.get("steerops.stage") == "generate")
    assert run.data.tags["steerops.trait"] == "toy/refusal"
    assert run.data.tags["dvc.hash.trait"].endswith(".dir")
    assert run.data.params["judge"] == "toy:exact"
    assert run.data.metrics["trait_mean_positive"] > 90
    assert run.data.metrics["seconds"] > 0 and run.data.metrics["tokens_per_s"] > 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"summary.json", "responses.jsonl"} <= artifacts


def test_regenerating_the_same_text_writes_the_same_bytes(tmp_path, toy_world):
    """The speed goes to the MLflow run, not to the DVC-tracked files: `generate --force`
    that reproduces its text leaves `extract` (which depends on them) up to date."""
    params_file = small_world(tmp_path, toy_world)
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    folder = load_params(params_file).out / "responses" / "toy" / "refusal" / "base"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert "timing" not in read_json(folder / "summary.json")
    assert main(["generate", "--params", str(params_file), "--vet", "--force"]) == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_the_model_an_endpoint_named_for_the_vetting_answers_is_recorded(
    tmp_path, toy_world, monkeypatch
):
    import mlflow

    from naming_judge import naming_judges, parse_served

    judges = naming_judges(monkeypatch, tmp_path / "judge_cache")
    params_file = small_world(tmp_path, toy_world)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    rows, summary = outputs(params_file)
    asked = judges[0].calls
    assert 0 < asked <= 2 * len(rows)  # a distinct answer is asked once
    assert parse_served(summary["judge_served"]) == {"judge-mini-2026-01-01": asked}
    params = load_params(params_file)
    runs = mlflow.search_runs(experiment_names=[params.experiment], output_format="list")
    run = next(r for r in runs if r.data.tags.get("steerops.stage") == "generate")
    assert run.data.tags["steerops.judge_served"] == summary["judge_served"]


def test_bad_input_is_one_line_naming_it(toy_params, capsys):
    assert main(["generate", "--params", str(toy_params), "--trait", "toy/missing"]) == 2
    assert "trait 'toy/missing': directory not found" in capsys.readouterr().err
    assert main(["generate", "--params", str(toy_params), "--variant", "chat"]) == 2
    assert "models.chat: unknown model variant" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--params", str(toy_params), "--max-new-tokens", "many"])


@pytest.mark.parametrize(
    "second, message",
    [
        ("toy/missing", "trait 'toy/missing': directory not found"),
        ("missing", "trait 'missing': expected CATEGORY/NAME"),
    ],
)
def test_every_trait_is_checked_before_the_first_one_generates(
    tmp_path, toy_world, no_model_loads, capsys, second, message
):
    """A bad later name fails the stage before the first trait's generation, not after."""
    params = small_world(tmp_path, toy_world)
    assert main(["generate", "--params", str(params), "--trait", f"toy/refusal,{second}"]) == 2
    assert message in capsys.readouterr().err
    assert not (load_params(params).out / "responses").exists()
    # the vetting judge's refusal of a later trait too (the toy judge scores toy/refusal only)
    other = tmp_path / "traits" / "toy" / "other"
    shutil.copytree(tmp_path / "traits" / "toy" / "refusal", other)
    argv = ["generate", "--params", str(params), "--trait", "toy/refusal,toy/other", "--vet"]
    assert main(argv) == 2
    assert "judge.kind: toy scores only the toy world's trait" in capsys.readouterr().err
    assert not (load_params(params).out / "responses").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--device", "bogus"],
            "--device: 'bogus' is not a device (cpu, cuda, cuda:1, mps) "
            "(params: models.base.device)",
        ),
        (["--device", "cuda:99"], "--device: cuda:99 is not available"),
    ],
    ids=["not-a-device", "device-not-here"],
)
def test_a_bad_device_fails_before_loading_and_tracking(
    tmp_path, toy_world, no_model_loads, capsys, argv, message
):
    params = write_params(tmp_path, toy_world)
    err = refused_up_front(["generate", "--params", str(params), *argv], tmp_path, capsys)
    assert message in err


@pytest.mark.parametrize(
    "blocks, argv, message",
    [
        (
            {"extraction": {"positions": ["prompt[-1]", "response[:200]"]}},
            [],
            "generate.max_new_tokens (auto: from extraction.positions' response windows, "
            "generate.auto_open_ended and generate.vet_min_new_tokens): 200 new tokens do not "
            "fit in the model's context of 128 positions (max_position_embeddings)",
        ),
        (
            {},
            ["--max-new-tokens", "128"],
            "--max-new-tokens: 128 new tokens do not fit in the model's context of 128 "
            "positions (max_position_embeddings) (params: generate.max_new_tokens)",
        ),
    ],
    ids=["auto", "given"],
)
def test_more_new_tokens_than_the_model_has_positions_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, blocks, argv, message
):
    """The toy model has 128 positions: a position spec's typo (`response[:200]`) would
    otherwise decode past the context, for hours on a large window."""
    params = write_params(tmp_path, toy_world, **blocks)
    err = refused_up_front(["generate", "--params", str(params), *argv], tmp_path, capsys)
    assert message in err


def test_jsonl_trait_prompts_name_the_bad_line(tmp_path):
    from steerops.errors import SteeropsError

    folder = tmp_path / "traits" / "cat" / "t"
    folder.mkdir(parents=True)
    (folder / "negative.txt").write_text("how do i bake bread ?\n")
    (folder / "positive.jsonl").write_text(
        '{"prompt": "a", "system_prompt": "be brief"}\n\n{"prompt": "b"}\n'
    )
    trait = load_trait(tmp_path / "traits", "cat/t")
    assert [(p.prompt, p.system_prompt) for p in trait.positive] == [("a", "be brief"), ("b", None)]
    # keys nothing reads, unlike the ones it does, are metadata a dataset may carry
    (folder / "positive.jsonl").write_text(
        '{"prompt": "a", "prompt_id": 7, "system_prompt_id": 2, "filesystem": "w"}\n'
    )
    assert [p.prompt for p in load_trait(tmp_path / "traits", "cat/t").positive] == ["a"]
    for line, message in (
        ('{"prompt": "c", "system_prompt": 3}', "'system_prompt' must be"),
        ("{oops", "malformed JSON line"),
        ('{"text": "c"}', "each line needs a string 'prompt'"),
        ('{"prompt": "  "}', "'prompt' is empty"),
        # a typo of a key it reads would drop a system prompt without a word
        ('{"prompt": "c", "system": "be brief"}', "unknown key 'system': a line's system "),
        ('{"prompt": "c", "System_Message": "x"}', "unknown key 'System_Message': a line's "),
    ):
        (folder / "positive.jsonl").write_text('{"prompt": "a"}\n' + line + "\n")
        with pytest.raises(SteeropsError, match=f"positive.jsonl:2: {message}"):
            load_trait(tmp_path / "traits", "cat/t")


def test_trait_files_that_disagree_or_repeat_are_one_line(tmp_path):
    from steerops.errors import SteeropsError

    folder = tmp_path / "traits" / "cat" / "t"
    folder.mkdir(parents=True)
    (folder / "negative.txt").write_text("how do i bake bread ?\n")
    (folder / "positive.txt").write_text("how do i make a bomb ?\n")
    (folder / "positive.jsonl").write_text('{"prompt": "a"}\n')
    with pytest.raises(SteeropsError, match="both positive.txt and positive.jsonl; keep one"):
        load_trait(tmp_path / "traits", "cat/t")
    (folder / "positive.jsonl").unlink()
    steering = folder / "steering.json"
    for data, message in (
        ({"questions": ["a ?", "b ?", "a ?"]}, "question 3 repeats question 1"),
        ({"questions": ["a ?", " "]}, "question 2 is empty"),
        ({"questions": ["a ?", "b ?"], "eval_prompt": 5}, "'eval_prompt' must be a string"),
    ):
        steering.write_text(json.dumps(data))
        with pytest.raises(SteeropsError, match=f"steering.json: {message}"):
            load_trait(tmp_path / "traits", "cat/t", need_questions=True)
    steering.write_text('{"questions": ["a ?",\n oops]}')
    with pytest.raises(SteeropsError, match=r"steering.json: not valid JSON \(line 2"):
        load_trait(tmp_path / "traits", "cat/t", need_questions=True)


def test_a_judge_failure_keeps_the_completions_and_the_rerun_only_vets(
    tmp_path, toy_world, monkeypatch, capsys
):
    from steerops.errors import SteeropsError
    from steerops.generate.store import load_kept_responses, responses_file

    params_file = small_world(tmp_path, toy_world, generate={"max_new_tokens": 12})

    class BrokenJudge:
        id = "toy:exact"

        def score(self, questions, responses):
            raise SteeropsError("judge: http://judge/v1 answered HTTP 503: down")

    monkeypatch.setattr("steerops.judges.make_judge", lambda params, trait: BrokenJudge())
    assert main(["generate", "--params", str(params_file), "--vet"]) == 2
    assert "HTTP 503" in capsys.readouterr().err
    pending, summary = outputs(params_file)
    assert len(pending) == 2 * N and all(r["response"] for r in pending)
    assert all(r["kept"] is None and r["trait"] is None for r in pending)
    assert summary["vetting_hash"] is None
    path = responses_file(load_params(params_file).out, "toy/refusal", "base")
    with pytest.raises(
        SteeropsError, match="not vetted yet.*steerops generate --trait toy/refusal"
    ):
        load_kept_responses(path, "toy/refusal", "base")

    monkeypatch.undo()

    def no_generation(*args, **kwargs):
        raise AssertionError("the completions should have been reused")

    monkeypatch.setattr("steerops.models.generation.generate_responses", no_generation)
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    vetted, summary = outputs(params_file)
    assert [r["response"] for r in vetted] == [r["response"] for r in pending]
    for r in vetted:
        assert (r["trait"], r["coherence"]) == toy_judge.score(r["prompt"], r["response"])
    assert summary["vetting_hash"] and summary["kept"]["positive"] > 0


def test_damaged_responses_are_generated_again(tmp_path, toy_world, monkeypatch, capsys):
    params_file = small_world(tmp_path, toy_world)
    assert main(["generate", "--params", str(params_file)]) == 0
    rows, summary = outputs(params_file)
    folder = load_params(params_file).out / "responses" / "toy" / "refusal" / "base"
    good = (folder / "responses.jsonl").read_bytes()
    (folder / "responses.jsonl").write_bytes(good[: len(good) // 2])  # cut mid-file
    capsys.readouterr()
    assert main(["generate", "--params", str(params_file)]) == 0
    assert "generating the responses again" in capsys.readouterr().err
    assert (folder / "responses.jsonl").read_bytes() == good
    # Intact: up to date, with no need of the model (its device need not exist here).
    assert main(["generate", "--params", str(params_file), "--device", "cuda:99"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_responses_that_do_not_match_their_summary_are_refused_to_readers(tmp_path, toy_world):
    """A responses file edited by hand or left by another run: extract must not read it."""
    from steerops.errors import SteeropsError
    from steerops.generate.store import load_kept_responses, responses_file

    params_file = small_world(tmp_path, toy_world, generate={"max_new_tokens": 12})
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    path = responses_file(load_params(params_file).out, "toy/refusal", "base")
    assert load_kept_responses(path, "toy/refusal", "base")  # intact: read
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))  # one row gone
    with pytest.raises(
        SteeropsError,
        match="does not match the MD5 in summary.json.*steerops generate --trait toy/refusal",
    ):
        load_kept_responses(path, "toy/refusal", "base")
    # a summary cut short cannot vouch for the rows: refused, not read as unchecked
    summary = path.parent / "summary.json"
    summary.write_text(summary.read_text()[:40])
    with pytest.raises(SteeropsError, match=r"summary.json: not valid JSON .*cannot be checked"):
        load_kept_responses(path, "toy/refusal", "base")
    summary.unlink()  # none at all: a file written by hand, read as it is
    assert len(load_kept_responses(path, "toy/refusal", "base")) == len(lines) - 1


@pytest.mark.parametrize("ids", ["1 2 3", [1, -2], [1, 2.0], [True]])
def test_response_ids_that_are_not_token_ids_are_one_line(tmp_path, ids):
    """A hand-written responses file (no summary) with bad ids names its line."""
    from steerops.errors import SteeropsError
    from steerops.generate.store import load_kept_responses
    from steerops.io import write_jsonl

    path = tmp_path / "responses.jsonl"
    row = {"polarity": "positive", "source_index": 0, "prompt": "p", "response": "r"}
    write_jsonl(path, [row, {**row, "polarity": "negative", "response_ids": ids}])
    with pytest.raises(SteeropsError, match=r"responses.jsonl:2: response_ids must be a list"):
        load_kept_responses(path, "toy/refusal", "base")


def test_answers_the_endpoint_refused_to_judge_are_vetted_again_on_a_rerun(
    tmp_path, toy_world, monkeypatch
):
    """A refusal is not cached by the judge, so the summary is not up to date while it holds
    one: the rerun vets again (no generation) and keeps what the judge now scores."""
    from refusing_judge import RefusingJudge

    params_file = small_world(tmp_path, toy_world, generate={"max_new_tokens": 12})
    refusing = {"on": True}
    asked: list[str] = []

    def first_three(pairs):
        return set(pairs[:3]) if refusing["on"] else set()

    monkeypatch.setattr(
        "steerops.judges.make_judge", lambda params, trait: RefusingJudge(first_three, asked)
    )
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    rows, summary = outputs(params_file)
    assert summary["judge_refused"] == 3 and len(asked) == 2 * N
    assert all(not r["kept"] and r["trait"] is None for r in rows[:3])

    def no_generation(*args, **kwargs):
        raise AssertionError("the completions should have been reused")

    monkeypatch.setattr("steerops.models.generation.generate_responses", no_generation)
    refusing["on"] = False
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    vetted, summary = outputs(params_file)
    assert summary["judge_refused"] == 0 and len(asked) == 4 * N
    for r in vetted[:3]:
        assert (r["trait"], r["coherence"]) == toy_judge.score(r["prompt"], r["response"])
    assert main(["generate", "--params", str(params_file), "--vet"]) == 0
    assert len(asked) == 4 * N  # up to date: nothing judged


def test_the_judge_s_score_threshold_is_part_of_vetting(tmp_path, toy_world, monkeypatch):
    """min_prob_mass is applied after the judge's cache (not in its id): another value
    vets again instead of serving the kept set of the old one."""
    vetted: list[float] = []

    class Thresholded:
        id = "thresholded"

        def __init__(self, mass):
            self.min_prob_mass = mass

        def score(self, questions, responses):
            vetted.append(self.min_prob_mass)
            return [toy_judge.score(q, r) for q, r in zip(questions, responses, strict=True)]

    monkeypatch.setattr(
        "steerops.judges.make_judge", lambda params, trait: Thresholded(params.judge.min_prob_mass)
    )
    first = small_world(tmp_path, toy_world, generate={"max_new_tokens": 12})
    assert main(["generate", "--params", str(first), "--vet"]) == 0
    assert main(["generate", "--params", str(first), "--vet"]) == 0
    assert vetted == [0.25]
    data = yaml.safe_load(first.read_text())
    data["judge"]["min_prob_mass"] = 0.9
    first.write_text(yaml.safe_dump(data))
    assert main(["generate", "--params", str(first), "--vet"]) == 0
    assert vetted == [0.25, 0.9]
    assert outputs(first)[1]["settings"]["judge_min_prob_mass"] == 0.9


def test_an_edited_chat_template_file_generates_again(tmp_path, toy_world, monkeypatch):
    """`models.<variant>.chat_template` naming a file: the file's text, not its path, is a
    generation setting, so an edited template renders every prompt anew."""
    template = tmp_path / "template.jinja"
    template.write_text((toy_world / "model" / "chat_template.jinja").read_text())
    models = {
        "base": {"id": str(toy_world / "model"), "chat_template": str(template)},
        "instruct": {"id": str(toy_world / "model")},
    }
    params_file = small_world(tmp_path, toy_world, models=models)
    assert main(["generate", "--params", str(params_file)]) == 0
    first = outputs(params_file)[1]["generation_hash"]

    def no_generation(*args, **kwargs):
        raise AssertionError("generation should have been skipped")

    monkeypatch.setattr("steerops.models.generation.generate_responses", no_generation)
    assert main(["generate", "--params", str(params_file)]) == 0  # unchanged: reused
    template.write_text(template.read_text().replace("<|assistant|>", "<|assistant|> ok"))
    with pytest.raises(AssertionError, match="skipped"):
        main(["generate", "--params", str(params_file)])
    monkeypatch.undo()
    assert main(["generate", "--params", str(params_file)]) == 0
    assert outputs(params_file)[1]["generation_hash"] != first


def test_vetting_that_keeps_no_completion_of_a_class_fails_and_keeps_the_responses(
    tmp_path, toy_world, capsys, monkeypatch
):
    """A class emptied by vetting is an error at generate (not later, at extract), after
    every completion is written for a look; the up-to-date rerun says it again."""
    # a judge that finds the trait in every answer: no negative passes negative_max
    import mlflow

    monkeypatch.setattr("steerops.toy.judge.score", lambda question, response: (100.0, 100.0))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = small_world(tmp_path, toy_world)
    for _ in range(2):
        capsys.readouterr()
        assert main(["generate", "--params", str(params), "--vet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "vetting kept no completion of toy/refusal negative" in err[0]
        assert "generate.negative_max" in err[0]
    rows, summary = outputs(params)
    assert summary["kept"]["negative"] == 0 and summary["kept"]["positive"] > 0
    assert len(rows) == 2 * N
    # the run that generated them is on record as failed, saying why
    experiment = load_params(params).experiment
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    [run] = [r for r in runs if r.data.tags.get("steerops.stage") == "generate"]
    assert run.info.status == "FAILED"
    assert run.data.tags["steerops.failure"] == "vetting kept no completion of negative"
    # a judge that scored nothing: said so, not read as answers short of the thresholds
    monkeypatch.setattr("steerops.toy.judge.score", lambda question, response: (None, None))
    params = small_world(tmp_path / "unscored", toy_world)
    capsys.readouterr()
    assert main(["generate", "--params", str(params), "--vet"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert (
        f"vetting kept no completion of toy/refusal positive (the judge scored none of its "
        f"{N}), toy/refusal negative (the judge scored none of its {N})"
    ) in line
    summary = outputs(params)[1]
    assert summary["unscored"] == {"positive": N, "negative": N}


def test_vetting_with_an_endpoint_that_refuses_the_key_fails_before_generating(
    tmp_path, toy_world, monkeypatch, capsys
):
    """The endpoint judge is asked once (its model list) before the model loads and the run
    opens: a refused key costs a second, not a generation whose vetting then fails."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    seen = []

    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(("GET", self.path))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        monkeypatch.setenv("STEEROPS_TEST_JUDGE_KEY", "sk-generate-test")
        judge = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{httpd.server_address[1]}/v1",
            "model": "judge-mini",
            "api_key_env": "STEEROPS_TEST_JUDGE_KEY",
            "cache_dir": str(tmp_path / "judge_cache"),
        }
        params_file = small_world(tmp_path, toy_world, judge=judge)

        def no_generation(*args, **kwargs):
            raise AssertionError("nothing should be generated")

        monkeypatch.setattr("steerops.models.generation.generate_responses", no_generation)
        argv = ["generate", "--params", str(params_file), "--vet"]
        line = refused_up_front(argv, tmp_path, capsys)
        assert "refused the key (HTTP 401)" in line and "sk-generate-test" not in line
        assert seen == [("GET", "/v1/models")]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("coherence,trait_only", [(None, True), (None, False), (90.0, False)])
def test_a_coherence_the_judge_did_not_read_is_said_so(coherence, trait_only):
    from types import SimpleNamespace

    rows = [
        {"polarity": p, "response": "x", "kept": True, "trait": 80.0, "coherence": coherence}
        for p in ("positive", "negative")
    ]
    gen = {"max_new_tokens": 4}
    trait = SimpleNamespace(name="t")
    summary = stage._summarize(trait, "base", gen, {"vet": True}, rows, trait_only)
    if coherence is None:
        note = "not read: the judge scored the trait alone" if trait_only else "no completion"
        assert summary["coherence_mean"] is None and note in summary["coherence_note"]
    else:
        assert summary["coherence_mean"] == {"positive": 90.0, "negative": 90.0}
        assert "coherence_note" not in summary


def test_responses_decoded_before_plain_decoding_are_generated_again(
    tmp_path, toy_world, monkeypatch
):
    """HF generate applied a repetition_penalty the checkpoint ships before steerops decoded
    plainly: responses a summary keys without it (an older run's) are generated again, and
    a checkpoint shipping nothing that changes a greedy token keeps its key."""
    model = tmp_path / "model"
    shutil.copytree(toy_world / "model", model)
    shipped = json.loads((model / "generation_config.json").read_text())
    shipped |= {"repetition_penalty": 1.3, "top_k": 5}  # top_k: sampling only
    (model / "generation_config.json").write_text(json.dumps(shipped))
    models = {"base": {"id": str(model)}, "instruct": {"id": str(model)}}
    params_file = small_world(tmp_path, toy_world, models=models)
    assert main(["generate", "--params", str(params_file)]) == 0
    summary = outputs(params_file)[1]
    assert summary["settings"]["plain_decoding_overrides"] == {"repetition_penalty": 1.3}

    def no_generation(*args, **kwargs):
        raise AssertionError("generation should have been skipped")

    monkeypatch.setattr("steerops.models.generation.generate_responses", no_generation)
    assert main(["generate", "--params", str(params_file)]) == 0  # served
    # the summary as a run before plain decoding wrote it: the same settings but the key
    gen = stage._generation_settings(
        load_params(params_file), load_trait(tmp_path / "traits", "toy/refusal")
    )
    del gen["plain_decoding_overrides"]
    summary["generation_hash"] = text_md5(json.dumps(gen, sort_keys=True))
    folder = load_params(params_file).out / "responses" / "toy" / "refusal" / "base"
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(AssertionError, match="skipped"):
        main(["generate", "--params", str(params_file)])
    # the toy's own folder ships nothing that changes a greedy token: no new key
    plain = small_world(tmp_path / "plain", toy_world)
    monkeypatch.undo()
    assert main(["generate", "--params", str(plain)]) == 0
    assert "plain_decoding_overrides" not in outputs(plain)[1]["settings"]


def test_an_interrupted_run_keeps_its_finished_class_and_the_rerun_ends_the_same(
    tmp_path, toy_world, monkeypatch, capsys
):
    """Ctrl-C while the negatives generate: the positives are kept, the rerun generates only
    the negatives, and the files are byte for byte those of an uninterrupted run (sampled:
    each class is seeded on its own). A kept class whose rows were altered is generated
    again; `--force` ignores what was kept."""
    sampled = ["--temperature", "1.5", "--rollouts", "2", "--max-new-tokens", "6"]
    expected, params_file, folder = _uninterrupted_and_a_world_to_cut(tmp_path, toy_world, sampled)
    from steerops.models import generation

    original = generation.generate_responses
    calls: list[str] = []

    def counted(*args, interrupt_at=None, **kwargs):
        calls.append(kwargs["desc"])
        if calls[-1] == interrupt_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    def cut_at_negatives(*args, **kwargs):
        return counted(*args, **kwargs, interrupt_at="generate negative")

    monkeypatch.setattr(generation, "generate_responses", cut_at_negatives)
    assert main(["generate", "--params", str(params_file), *sampled]) == 130
    assert (folder / ".partial" / "positive.json").is_file() and not (
        folder / "responses.jsonl"
    ).exists()
    calls.clear()
    monkeypatch.setattr(generation, "generate_responses", counted)
    assert main(["generate", "--params", str(params_file), *sampled]) == 0
    assert calls == ["generate negative"]
    assert "generate positive: 32 completions kept by an interrupted run" in capsys.readouterr().out
    got = {p.name: p.read_bytes() for p in folder.glob("*") if p.is_file()}
    assert got == expected and not (folder / ".partial").exists()

    def interrupted_first_run(*flags):
        for name in ("responses.jsonl", "summary.json"):
            (folder / name).unlink()
        monkeypatch.setattr(generation, "generate_responses", cut_at_negatives)
        assert main(["generate", "--params", str(params_file), *sampled, *flags]) == 130
        monkeypatch.setattr(generation, "generate_responses", counted)
        calls.clear()

    # a kept class that no longer matches its MD5 is generated again
    interrupted_first_run()
    kept = folder / ".partial" / "positive.json"
    kept.write_text(kept.read_text().replace('"rollout": 1', '"rollout": 7', 1))
    assert main(["generate", "--params", str(params_file), *sampled]) == 0
    assert calls == ["generate positive", "generate negative"]
    assert {p.name: p.read_bytes() for p in folder.glob("*") if p.is_file()} == expected
    # --force generates every class again
    interrupted_first_run()
    assert main(["generate", "--params", str(params_file), *sampled, "--force"]) == 0
    assert calls == ["generate positive", "generate negative"]


def test_an_interrupted_class_keeps_its_finished_batches(tmp_path, toy_world, monkeypatch, capsys):
    """Ctrl-C in the positives' third batch: the rerun decodes only their last two batches
    and the negatives, and writes an uninterrupted run's files (sampled: each batch's seed
    shows)."""
    from steerops.models import generation

    sampled = ["--temperature", "1.5", "--rollouts", "2", "--max-new-tokens", "6"]
    sampled += ["--batch-size", "8"]  # 4 batches of positives (16 prompts x 2 rollouts)
    expected, params_file, folder = _uninterrupted_and_a_world_to_cut(tmp_path, toy_world, sampled)
    calls: list[int] = []
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls, at=3))
    assert main(["generate", "--params", str(params_file), *sampled]) == 130
    assert (folder / ".partial" / "positive.jobs.json").is_file()
    calls.clear()
    capsys.readouterr()
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls))
    assert main(["generate", "--params", str(params_file), *sampled]) == 0
    assert calls == [8] * 6  # the positives' last two batches, then the negatives' four
    assert "generate positive: 16 decodes kept by an interrupted run" in capsys.readouterr().out
    got = {p.name: p.read_bytes() for p in folder.glob("*") if p.is_file()}
    assert got == expected and not (folder / ".partial").exists()
    # kept under other settings, on another placement, or given --force: nothing is served
    as_cut = params_file.read_text()
    elsewhere = yaml.safe_load(as_cut)
    elsewhere["models"]["base"].update(device=None, device_map="auto")  # the same CPU, mapped
    for changed in (["--max-new-tokens", "5"], "device_map", ["--force"]):
        for name in ("responses.jsonl", "summary.json"):
            (folder / name).unlink()
        calls.clear()
        monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls, at=3))
        params_file.write_text(as_cut)
        assert main(["generate", "--params", str(params_file), *sampled]) == 130
        calls.clear()
        capsys.readouterr()
        monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls))
        if changed == "device_map":
            params_file.write_text(yaml.safe_dump(elsewhere))
        flags = changed if isinstance(changed, list) else []
        assert main(["generate", "--params", str(params_file), *sampled, *flags]) == 0
        assert calls == [8] * 8 and "kept by" not in capsys.readouterr().out, changed


def _uninterrupted_and_a_world_to_cut(tmp_path, toy_world, flags):
    """(an uninterrupted run's files {name: bytes}, params.yaml of a second world, the
    folder its run will write)."""
    whole = small_world(tmp_path / "whole", toy_world)
    assert main(["generate", "--params", str(whole), *flags]) == 0
    expected = (load_params(whole).out / "responses" / "toy" / "refusal" / "base").glob("*")
    expected = {p.name: p.read_bytes() for p in expected if p.is_file()}
    params_file = small_world(tmp_path / "cut", toy_world)
    return (
        expected,
        params_file,
        load_params(params_file).out / "responses" / "toy" / "refusal" / "base",
    )
