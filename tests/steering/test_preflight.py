"""Bad judge and device settings fail `steerops steer` (and `search`, which shares the
preflight) with one error line and exit code 2 before the model loads or an MLflow run
opens: no FAILED run is left in the tracking store."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import refused_up_front
from steer_world import steer_params
from steerops.cli import main

SMALL = ["--subset", "4", "--max-new-tokens", "6", "--layers", "1", "--coefficients", "0.5"]
OPENAI = {"kind": "openai", "base_url": "https://judge.invalid/v1", "model": "m"}


def _params(tmp_path, toy_world, judge=None, device=None):
    path = steer_params(tmp_path, toy_world)
    data = yaml.safe_load(path.read_text())
    data["judge"].update(judge or {})
    if device:
        for spec in data["models"].values():
            spec["device"] = device
    path.write_text(yaml.safe_dump(data))
    return path


CASES = [
    pytest.param(
        {**OPENAI, "api_key_env": "NO_SUCH_KEY_XYZ"},
        None,
        [],
        "judge.api_key_env: environment variable NO_SUCH_KEY_XYZ is not set",
        id="openai-key-unset",
    ),
    pytest.param(
        {**OPENAI, "base_url": None},
        None,
        [],
        "judge.base_url: required for judge.kind openai",
        id="openai-no-base-url",
    ),
    pytest.param(
        {"kind": "hf", "variant": "nosuch"},
        None,
        [],
        "judge.variant: models.nosuch: unknown model variant",
        id="hf-unknown-variant",
    ),
    pytest.param(
        {"kind": "proxy", "variant": "nosuch"},
        None,
        [],
        "judge.variant: models.nosuch: unknown model variant",
        id="proxy-unknown-variant",
    ),
    pytest.param(
        None, None, ["--device", "bogus"], "'bogus' is not a device", id="device-flag-bogus"
    ),
    pytest.param(
        None,
        "cuda:99",
        [],
        "models.instruct.device: cuda:99 is not available",
        id="device-not-available",
    ),
]


@pytest.mark.parametrize("stage", ["steer", "search"])
@pytest.mark.parametrize("judge, device, extra, message", CASES)
def test_bad_judge_or_device_fails_before_loading_and_tracking(
    tmp_path, toy_world, monkeypatch, no_model_loads, capsys, stage, judge, device, extra, message
):
    monkeypatch.delenv("NO_SUCH_KEY_XYZ", raising=False)
    params = _params(tmp_path, toy_world, judge, device)
    flags = SMALL if stage == "steer" else ["--max-new-tokens", "6", "--layers", "1"]
    argv = [stage, "--params", str(params), "--out", str(tmp_path / "run"), *flags, *extra]
    assert message in refused_up_front(argv, tmp_path, capsys, outputs="run")


def test_a_device_this_machine_lacks_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys
):
    """The first CUDA index past this machine's devices (cuda:0 without CUDA), on any
    machine: the one just past the last device is refused too."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    params = _params(tmp_path, toy_world, device=f"cuda:{count}")
    argv = ["steer", "--params", str(params), "--out", str(tmp_path / "run"), *SMALL]
    err = refused_up_front(argv, tmp_path, capsys, outputs="run")
    assert f"models.instruct.device: cuda:{count} is not available ({count} CUDA devices)" in err


def test_the_judge_key_is_read_not_kept_or_written(
    tmp_path, toy_world, monkeypatch, no_model_loads, capsys
):
    """With the key set, the preflight passes the judge (the endpoint, asked once, sees the
    key and answers) and keeps nothing of the key: the run goes on to load the model
    (refused here), and no file holds the key."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    secret = "sk-preflight-secret-1234"
    monkeypatch.setenv("STEEROPS_TEST_JUDGE_KEY", secret)
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/v1"
    judge = {**OPENAI, "base_url": url, "api_key_env": "STEEROPS_TEST_JUDGE_KEY"}
    params = _params(tmp_path, toy_world, judge)
    try:
        with pytest.raises(AssertionError, match="a model was loaded"):
            main(["steer", "--params", str(params), "--out", str(tmp_path / "run"), *SMALL])
    finally:
        endpoint.shutdown()
        endpoint.server_close()
    assert seen == [("/v1/models", f"Bearer {secret}")]
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert not any(secret.encode() in f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())


def test_a_judge_that_scores_nothing_fails_the_run(tmp_path, toy_world, monkeypatch, capsys):
    """Every verdict would read as if nothing steered, when nothing was measured: one error
    line, a non-zero exit (`dvc repro` stops there) and no cell's files written."""

    class Mute:
        id = "mute"

        def score(self, questions, responses):
            return [(None, None) for _ in responses]

    monkeypatch.setattr("steerops.judges.make_judge", lambda *args, **kwargs: Mute())
    params = _params(tmp_path, toy_world)
    argv = ["steer", "--params", str(params), "--out", str(tmp_path / "run"), *SMALL]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the judge scored none of the 8 answers" in err[0], err  # + baseline
    assert not list((tmp_path / "run").rglob("metrics.json"))


@pytest.mark.parametrize("changed", ["activations", "calibration", "prompts", "model"])
def test_vectors_older_than_their_inputs_are_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, changed
):
    """Activations extracted again (or a calibration redone) after the vectors were built,
    or the trait's prompts edited (params' model changed) after the activations were
    extracted: steering would use an old direction under today's inputs. The same files
    unchanged pass the preflight (the run goes on to load the model, refused here)."""
    import json

    from steer_world import POSITION, TRAIT
    from steerops.calibration.store import calibration_file
    from steerops.config import load_params
    from steerops.extract import store as acts_store
    from steerops.io import file_md5
    from steerops.models.fingerprint import model_fingerprint
    from steerops.traits import load_trait
    from steerops.vectors.store import save_vectors, vectors_dir, vectors_for

    path = steer_params(tmp_path, toy_world)
    params = load_params(path)
    acts = acts_store.activations_dir(params.inputs, TRAIT, "base", POSITION, "residual")
    acts.mkdir(parents=True)
    (acts / acts_store.TENSORS_FILE).write_bytes(b"activations")
    (acts / acts_store.METADATA_FILE).write_text(json.dumps({"tensors_md5": "md5-of-today"}))
    calibration = calibration_file(params.inputs, "instruct")
    calibration.parent.mkdir(parents=True)
    calibration.write_text('{"layers": {}}')
    folder = vectors_dir(params.inputs, TRAIT, "base", POSITION, "residual", "mean_diff")
    vectors, meta = vectors_for(params.inputs, TRAIT, "base", POSITION, "residual", "mean_diff")
    meta["source_hash"] = "md5-of-today"
    meta["calibration"] = {"variant": "instruct", "md5": file_md5(calibration)}
    save_vectors(folder, vectors, meta)
    argv = ["steer", "--params", str(path), "--out", str(tmp_path / "run"), *SMALL]
    if changed == "activations":
        (acts / acts_store.METADATA_FILE).write_text(json.dumps({"tensors_md5": "md5-later"}))
        expected = "were built from other activations than"
    elif changed == "prompts":
        earlier = {"tensors_md5": "md5-of-today", "prompts_md5": "md5-of-other-prompts"}
        (acts / acts_store.METADATA_FILE).write_text(json.dumps(earlier))
        expected = f"were extracted from other prompts than trait '{TRAIT}'"
    elif changed == "model":
        earlier = {"tensors_md5": "md5-of-today", "model": {"weights": "0" * 32}}
        (acts / acts_store.METADATA_FILE).write_text(json.dumps(earlier))
        now = params.variant("base").id
        expected = f"extracted from other weights (content 000000000000) than {now} holds for"
    else:
        # cut short, it is named as damaged, not as calibrated again (a rerun of clean
        # would only fail on it)
        calibration.write_text('{"layers": {"1"')
        err = refused_up_front(argv, tmp_path, capsys, outputs="run")
        assert f"{calibration}: not valid JSON" in err
        calibration.write_text('{"layers": {"1": {}}}')
        expected = "removed the dims of another calibration than"
    err = refused_up_front(argv, tmp_path, capsys, outputs="run")
    # the command carries the params file (not ./params.yaml) it is to run with
    assert expected in err and f"`steerops vectors --methods mean_diff --params {path}`" in err
    if changed in ("prompts", "model"):
        extract = (
            f"`steerops extract --trait {TRAIT} --variant base --position '{POSITION}' "
            f"--params {path}`"
        )
        assert f"rerun {extract}, then" in err
        trait = load_trait(params.path(params.traits.root), TRAIT)
        today = {"tensors_md5": "md5-of-today", "prompts_md5": acts_store.prompts_md5(trait)}
        base = params.path(params.variant("base").id)
        today["model"] = {"weights": model_fingerprint(str(base))}
        (acts / acts_store.METADATA_FILE).write_text(json.dumps(today))

    meta["source_hash"] = "md5-later" if changed == "activations" else "md5-of-today"
    meta["calibration"]["md5"] = file_md5(calibration)
    save_vectors(folder, vectors, meta)
    with pytest.raises(AssertionError, match="a model was loaded"):
        main(argv)


@pytest.mark.parametrize("stage", ["steer", "search"])
def test_new_tokens_past_the_context_are_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, stage
):
    """More new tokens than the model has positions (max_position_embeddings) is one line
    before any load, not an out-of-memory kill or text generated past the context."""
    import json

    context = json.loads((toy_world / "model" / "config.json").read_text())[
        "max_position_embeddings"
    ]
    params = _params(tmp_path, toy_world)
    flags = ["--layers", "1", "--max-new-tokens", str(context)]
    flags += ["--subset", "4", "--coefficients", "0.5"] if stage == "steer" else []
    argv = [stage, "--params", str(params), "--out", str(tmp_path / "run"), *flags]
    err = refused_up_front(argv, tmp_path, capsys, outputs="run")
    assert f"--max-new-tokens: {context} new tokens do not fit" in err  # the flag that set it
    assert "(params: steering.max_new_tokens)" in err


@pytest.mark.parametrize("stage", ["steer", "search"])
def test_an_endpoint_judge_that_does_not_answer_is_refused_before_generating(
    tmp_path, toy_world, monkeypatch, no_model_loads, capsys, stage
):
    """The endpoint is asked once in the preflight: one that does not answer costs one line
    before the model loads or a run opens, not a generated chunk and a FAILED run."""
    import socket

    with socket.socket() as probe:  # a free port, closed again: nothing answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KEY_XYZ", "sk-test")
    judge = {**OPENAI, "base_url": f"http://127.0.0.1:{port}/v1", "api_key_env": "KEY_XYZ"}
    params = _params(tmp_path, toy_world, judge)
    flags = SMALL if stage == "steer" else ["--max-new-tokens", "6", "--layers", "1"]
    argv = [stage, "--params", str(params), "--out", str(tmp_path / "run"), *flags]
    err = refused_up_front(argv, tmp_path, capsys, outputs="run")
    assert f"judge: http://127.0.0.1:{port}/v1/models cannot be reached" in err


@pytest.mark.parametrize("stage", ["steer", "search"])
def test_a_question_too_long_for_the_new_tokens_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, stage
):
    """The context must hold the prompted question and the new tokens: the longest question
    is named; one token fewer passes on to loading the model."""
    import json

    from transformers import AutoTokenizer

    context = json.loads((toy_world / "model" / "config.json").read_text())[
        "max_position_embeddings"
    ]
    tokenizer = AutoTokenizer.from_pretrained(toy_world / "model")
    questions = json.loads((toy_world / "traits/toy/refusal/steering.json").read_text())
    lengths = [
        len(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
            )["input_ids"]
        )
        for q in questions["questions"]
    ]
    longest = max(lengths)
    params = _params(tmp_path, toy_world)
    flags = ["--layers", "1"] + (["--coefficients", "0.5"] if stage == "steer" else [])
    argv = [stage, "--params", str(params), "--out", str(tmp_path / "run"), *flags]
    too_many = str(context - longest + 1)
    err = refused_up_front([*argv, "--max-new-tokens", too_many], tmp_path, capsys, "run")
    assert f"question {lengths.index(longest) + 1} (steering.json) is {longest} tokens" in err
    assert f"at most {context - longest} new tokens fit" in err
    assert f"with {too_many} new tokens it runs past the model's context of {context}" in err
    with pytest.raises(AssertionError, match="a model was loaded"):
        main([*argv, "--max-new-tokens", str(context - longest)])


@pytest.mark.parametrize(
    "stage, log",
    [(stage, log) for stage in ("steer", "search") for log in ("cell", "baselines")]
    + [("search", "search"), ("search", "search baselines")],
)
def test_a_damaged_line_in_a_results_log_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, stage, log
):
    """A results log is append-only: a damaged line in its middle is refused, and now before
    the model loads and a run opens (it ended a FAILED run); a torn last line, what a kill
    leaves, is still dropped as the log is read. A search's own logs, in its folder, too."""
    from steer_world import POSITION, TRAIT
    from steerops.config import load_params
    from steerops.search.store import search_dir
    from steerops.specs import parse_position
    from steerops.steering.configs import VectorSource
    from steerops.steering.store import baselines_file, results_file

    path = _params(tmp_path, toy_world)
    params = load_params(path)
    variant = params.steering.variant
    folder = search_dir(
        params.out, TRAIT, variant, parse_position(POSITION), "residual", "mean_diff"
    )
    file = {
        "cell": results_file(
            params.out, TRAIT, variant, VectorSource("mean_diff", POSITION, "residual").at(1)
        ),
        "baselines": baselines_file(params.out, TRAIT, variant),
        "search": folder / "results.jsonl",
        "search baselines": folder / "baselines.jsonl",
    }[log]
    file.parent.mkdir(parents=True, exist_ok=True)
    entry = '{"type": "baseline", "result": {}}\n'
    file.write_text(entry + '{"type": "conf\n' + entry)
    flags = SMALL if stage == "steer" else ["--max-new-tokens", "6", "--layers", "1"]
    # a search's own logs: those of the pipeline's search (a scratch one starts its own)
    out = ["--pipeline"] if log.startswith("search") else ["--out", str(tmp_path / "run")]
    argv = [stage, "--params", str(path), *out, *flags]
    err = refused_up_front(argv, tmp_path, capsys, outputs="run")
    assert f"{file.name}:2: malformed JSON line" in err


def test_a_subset_larger_than_the_trait_s_questions_is_said(capsys):
    from steerops.steering.preflight import say_short_subset

    say_short_subset("steer", "toy/refusal", 100_000, 40)
    assert capsys.readouterr().err == (
        "steerops steer: note: steering.subset 100000: toy/refusal has 40 questions, all steered\n"
    )
    for subset in (None, 0, 40, 12):  # unset, or within the questions: nothing to say
        say_short_subset("search", "toy/refusal", subset, 40)
    assert capsys.readouterr().err == ""


def test_a_layer_the_vectors_lack_names_the_extraction_that_adds_it(
    tmp_path, toy_world, no_model_loads, capsys, monkeypatch
):
    """Vectors built from fewer layers than a steer asks for: refused before the model loads,
    with the extraction of the layers there plus the one asked for (another set replaces the
    folder's activations), then the rebuild."""
    from steer_world import POSITION, TRAIT
    from steerops.config import load_params
    from steerops.vectors.store import save_vectors, vectors_dir, vectors_for

    path = steer_params(tmp_path, toy_world)
    params = load_params(path)
    args = (params.inputs, TRAIT, "base", POSITION, "residual", "mean_diff")
    vectors, meta = vectors_for(*args)
    assert {1, 2} <= set(vectors)
    save_vectors(vectors_dir(*args), {k: v for k, v in vectors.items() if k != 2}, meta)
    kept = ", ".join(str(k) for k in sorted(vectors) if k != 2)
    argv = ["steer", "--params", str(path), "--out", str(tmp_path / "run")]
    err = refused_up_front([*argv, "--layers", "2", "--coefficients", "1"], tmp_path, capsys, "run")
    wanted = ",".join(map(str, sorted(vectors)))
    assert f"vectors mean_diff at {POSITION}/residual: no layer 2 (layers: {kept}): extract" in err
    assert (
        f"(`steerops extract --trait {TRAIT} --variant base --position '{POSITION}' "
        f"--layers '{wanted}' --params {path}`), then rerun `steerops vectors --methods "
        f"mean_diff --params {path}`"
    ) in err
    assert "dvc repro" not in err  # another file than params.yaml: not what `dvc repro` reads
    # the project's params.yaml, run from its folder: the pipeline's way is named too
    monkeypatch.chdir(tmp_path)
    argv = ["steer", "--out", "run", "--layers", "2", "--coefficients", "1"]
    err = refused_up_front(argv, tmp_path, capsys, "run")
    assert err.endswith(
        "; or, on the pipeline, list 2 in params.yaml's extraction.layers and run `dvc repro`"
    )


def test_a_norm_unit_that_is_not_finite_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys
):
    """Activations that overflowed at a prompt token leave a NaN `norm` unit: steering in
    `norm` units would weigh every row by NaN, so the layer is refused before anything runs."""
    from steer_world import POSITION, TRAIT
    from steerops.config import load_params
    from steerops.vectors.store import save_vectors, vectors_dir, vectors_for

    path = steer_params(tmp_path, toy_world)
    args = (load_params(path).inputs, TRAIT, "base", POSITION, "residual", "mean_diff")
    vectors, meta = vectors_for(*args)
    meta["layers"]["2"]["mean_norm"] = float("nan")  # stored as null, as JSON holds it
    meta["layers"]["2"]["norm_unit"] = "token"
    save_vectors(vectors_dir(*args), vectors, meta)
    argv = ["steer", "--params", str(path), "--out", str(tmp_path / "run")]
    err = refused_up_front([*argv, "--layers", "2", "--coefficients", "1"], tmp_path, capsys, "run")
    assert (
        f"vectors mean_diff at {POSITION}/residual: the `norm` unit at layer 2 is nan (no "
        "finite activation at a kept prompt token when extracted: the model overflowed in its "
        "dtype, or no prompt token was kept): load the model in bfloat16 or float32" in err
    )


@pytest.mark.parametrize("stage", ["steer", "search"])
def test_a_judge_writing_numbers_digit_by_digit_is_refused_before_generating(
    tmp_path, toy_world, monkeypatch, no_model_loads, capsys, stage
):
    """Its scores would read 85 as 8: found by one short request in the preflight, not
    after the model loads and a chunk's answers come back."""
    from fake_endpoint import FakeServer

    server = FakeServer()
    try:
        server.number = ["5", "7"]
        monkeypatch.setenv("KEY_XYZ", "sk-test")
        judge = {**OPENAI, "base_url": server.url, "api_key_env": "KEY_XYZ"}
        params = _params(tmp_path, toy_world, judge)
        flags = SMALL if stage == "steer" else ["--max-new-tokens", "6", "--layers", "1"]
        argv = [stage, "--params", str(params), "--out", str(tmp_path / "run"), *flags]
        err = refused_up_front(argv, tmp_path, capsys, outputs="run")
        assert len(server.requests) == 1  # the probe, and nothing judged
    finally:
        server.close()
    assert err.endswith(
        "judge: model 'm' wrote 57 as '5' then '7' when asked for it: its tokenizer writes "
        "numbers digit by digit, so a one-token score reads 85 as 8; use a judge model with "
        "whole-number tokens (GPT-4o/4.1, Llama 3) or judge.kind hf"
    )
