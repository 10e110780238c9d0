"""`steerops calibrate` refuses a device it cannot use, or more new tokens than the model has
positions, before the model loads or an MLflow run opens: one error line, exit code 2, no
FAILED run."""

from __future__ import annotations

import pytest
import yaml

from conftest import batches_cut_at, refused_up_front, write_params


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--device", "bogus"],
            "--device: 'bogus' is not a device (cpu, cuda, cuda:1, mps) "
            "(params: models.instruct.device)",
        ),
        (["--device", "cuda:99"], "--device: cuda:99 is not available"),
        (
            ["--max-new-tokens", "500"],
            "--max-new-tokens: 500 new tokens do not fit in the model's context of 128 "
            "positions (max_position_embeddings) (params: calibration.max_new_tokens)",
        ),
    ],
    ids=["not-a-device", "device-not-here", "past-the-context"],
)
def test_a_bad_device_fails_before_loading_and_tracking(
    tmp_path, toy_world, no_model_loads, capsys, argv, message
):
    params = write_params(tmp_path, toy_world)
    err = refused_up_front(["calibrate", "--params", str(params), *argv], tmp_path, capsys)
    assert message in err


def test_the_run_keeps_the_count_of_massive_dims_apart_from_each_layers(tmp_path):
    """The run's `n_massive_dims` is the calibration's massive dims (507 on SmolLM2), not
    overwritten by a layer's count: each layer's count is a series of its own."""
    from steerops.calibration.command import _log

    class Recorder:
        def __init__(self):
            self.metrics: list[tuple[str, float, int | None]] = []

        def log_params(self, params):
            pass

        def log_metrics(self, metrics, step=None):
            self.metrics += [(k, v, step) for k, v in metrics.items()]

        def set_tags(self, tags):
            pass

        def log_artifact(self, path, artifact_path=None):
            pass

    def layer(massive):
        return {"norm": 1.0, "median_abs": 1.0, "max_median_ratio": 1.0, "massive_dims": massive}

    record = {
        "variant": "instruct",
        "model": {"id": "m"},
        "n_prompts": 2,
        "settings": {},
        "n_tokens": 10,
        "aggregate": {"global_dims": [507, 100], "massive_dims": [507]},
        "layers": {"0": layer([]), "1": layer([{"dim": 507}]), "2": layer([])},
    }
    tracker = Recorder()
    _log(tracker, record, tmp_path / "c.json", tmp_path / "h.png", 1.0)
    by_key: dict[str, list] = {}
    for key, value, step in tracker.metrics:
        by_key.setdefault(key, []).append((step, value))
    assert by_key["n_massive_dims"] == [(None, 1)]
    assert sorted(by_key["layer_n_massive_dims"]) == [(0, 0), (1, 1), (2, 0)]


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_activations_are_one_line_not_a_massive_dim(
    tmp_path, toy_world, monkeypatch, bad
):
    """A model that overflows (fp16) gives inf or NaN: counted, an inf reads as a massive dim
    of infinite ratio and NaN as the lowest magnitude; refused, naming block and sequence."""
    from steerops.calibration.command import token_stats
    from steerops.config import load_params
    from steerops.errors import SteeropsError
    from steerops.models import capture
    from steerops.models.loading import load_model

    loaded = load_model(load_params(write_params(tmp_path, toy_world)), "instruct")
    seqs = [[5, 6, 7, 8], [5, 6, 7], [9, 10, 11, 12, 13]]
    plain = token_stats(loaded, seqs, batch_size=8, progress=False)
    assert plain[1].n_tokens == 12  # finite: counted as before
    real = capture.forward_capture

    def overflowing(model, layout, ids, mask, layers):
        store = real(model, layout, ids, mask, layers)
        store[1] = store[1].clone()
        row = int((ids == 9).any(-1).nonzero()[0])  # sequence 2's row, wherever it sits
        store[1][row, -1, 3] = bad
        return store

    monkeypatch.setattr(capture, "forward_capture", overflowing)
    with pytest.raises(
        SteeropsError,
        match=r"block 1 gave non-finite activations \(torch.float32\) on calibration sequence "
        r"2: check the model's weights",
    ):
        token_stats(loaded, seqs, batch_size=8, progress=False)


def test_a_prompt_whose_response_is_empty_still_counts(tmp_path, toy_world, monkeypatch):
    """Its template tokens are where massive activations live; dropped, every later
    prompt's `sequence` index in the record named the prompt before it."""
    import dataclasses

    from steerops.calibration.command import calibrate
    from steerops.config import load_params
    from steerops.models import generation

    params = load_params(write_params(tmp_path, toy_world, tracking={"enabled": False}))
    real = generation.generate_responses

    def first_silent(*args, **kwargs):
        done = real(*args, **kwargs)
        return [dataclasses.replace(done[0], response="", response_ids=[]), *done[1:]]

    monkeypatch.setattr(generation, "generate_responses", first_silent)
    record = calibrate(params, progress=False)
    completions = first_silent(
        *_calibration_inputs(params), max_new_tokens=params.calibration.max_new_tokens
    )
    expected = sum(len(c.prompt_ids) + len(c.response_ids) for c in completions)
    assert record["n_prompts"] == len(completions) and record["n_tokens"] == expected


def _calibration_inputs(params):
    from steerops.calibration.command import load_calibration_prompts
    from steerops.models.loading import load_model

    loaded = load_model(params, params.calibration.variant, padding_side="left")
    prompts = load_calibration_prompts(params.path(params.calibration.prompts))
    return loaded.model, loaded.tokenizer, prompts


def test_an_interrupted_calibration_generates_only_what_it_had_not(
    tmp_path, toy_world, monkeypatch, capsys
):
    """Ctrl-C in the third batch of responses: the rerun generates only the last two
    batches, and writes the uninterrupted run's calibration.json; what it kept then goes.
    Kept under other settings (another length), nothing is served."""
    from steerops.cli import main
    from steerops.config import load_params
    from steerops.models import generation

    def params_in(name):
        (tmp_path / name).mkdir()
        return write_params(tmp_path / name, toy_world, calibration={"batch_size": 16})

    whole = params_in("whole")
    assert main(["calibrate", "--params", str(whole)]) == 0
    expected = (tmp_path / "whole" / "outputs" / "calibration" / "instruct").iterdir()
    expected = {p.name: p.read_bytes() for p in expected if p.suffix == ".json"}

    cut = params_in("cut")
    folder = tmp_path / "cut" / "outputs" / "calibration" / "instruct"
    calls: list[int] = []
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls, at=3))
    assert main(["calibrate", "--params", str(cut)]) == 130
    assert (folder / ".partial" / "responses.json").is_file()
    assert not (folder / "calibration.json").exists()
    calls.clear()
    capsys.readouterr()
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls))
    other = int(load_params(cut).calibration.max_new_tokens) + 1
    assert main(["calibrate", "--params", str(cut), "--max-new-tokens", str(other)]) == 0
    assert calls == [16] * 4 and "kept by an interrupted run" not in capsys.readouterr().out
    # nor on another placement: the same CPU through accelerate's map (kernels may differ)
    (folder / "calibration.json").unlink()
    as_cut = cut.read_text()
    calls.clear()
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls, at=3))
    assert main(["calibrate", "--params", str(cut)]) == 130
    calls.clear()
    mapped = yaml.safe_load(as_cut)
    mapped["models"]["instruct"].update(device=None, device_map="auto")
    cut.write_text(yaml.safe_dump(mapped))
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls))
    assert main(["calibrate", "--params", str(cut)]) == 0
    assert calls == [16] * 4 and "kept by an interrupted run" not in capsys.readouterr().out
    cut.write_text(as_cut)
    (folder / "calibration.json").unlink()
    calls.clear()
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls, at=3))
    assert main(["calibrate", "--params", str(cut)]) == 130
    calls.clear()
    monkeypatch.setattr(generation, "generate_batch", batches_cut_at(calls))
    assert main(["calibrate", "--params", str(cut)]) == 0
    assert calls == [16, 16]
    assert "calibrate: 32 responses kept by an interrupted run" in capsys.readouterr().out
    got = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".json"}
    assert got == expected and not (folder / ".partial").exists()
