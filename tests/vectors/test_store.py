"""The vectors store: round trip, damaged files, vectors of another hidden size."""

from __future__ import annotations

import pytest
import torch

from steerops.errors import SteeropsError
from steerops.vectors import check_hidden_size, load_vectors, save_vectors

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


def test_store_round_trip_and_errors(tmp_path):
    vectors = {3: torch.tensor([0.6, 0.8]), 1: torch.tensor([1.0, 0.0], dtype=torch.bfloat16)}
    save_vectors(tmp_path / "v", vectors, {"method": "mean_diff"})
    loaded, meta = load_vectors(tmp_path / "v")
    assert list(loaded) == [1, 3] and loaded[1].dtype == torch.float32
    assert torch.equal(loaded[3], vectors[3]) and meta["method"] == "mean_diff"

    with pytest.raises(
        SteeropsError,
        match=r"vectors not found: .*probe_top1.*"
        r"steerops clean --variants probe_top1",
    ):
        load_vectors(tmp_path / "probe_top1")
    with pytest.raises(SteeropsError, match=r"steerops vectors --methods pca"):
        load_vectors(tmp_path / "pca")
    # tensors replaced but metadata from another write: detected, not silently paired
    save_vectors(tmp_path / "w", {0: torch.ones(2)}, {})
    (tmp_path / "v" / "vectors.safetensors").write_bytes(
        (tmp_path / "w" / "vectors.safetensors").read_bytes()
    )
    with pytest.raises(SteeropsError, match="does not match metadata.json"):
        load_vectors(tmp_path / "v")
    # cut short (a copy interrupted outside steerops): named with the command that rebuilds it
    save_vectors(tmp_path / "mean_diff", vectors, {"method": "mean_diff"})
    tensors = tmp_path / "mean_diff" / "vectors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:20])
    with pytest.raises(SteeropsError, match=r"unreadable vectors .*steerops vectors --methods "):
        load_vectors(tmp_path / "mean_diff")
    # in a run's folder: the command that rebuilds that folder's vectors, not the pipeline's
    with pytest.raises(
        SteeropsError, match=r"run `steerops vectors --methods mean_diff --out RUN` again"
    ):
        load_vectors(tmp_path / "mean_diff", " --out RUN")


def test_hidden_size_mismatch_is_one_line():
    check_hidden_size(torch.zeros(96), 96, "layer 2")
    with pytest.raises(SteeropsError) as err:
        check_hidden_size(torch.zeros(64), 96, "vectors toy/refusal mean_diff layer 2")
    assert str(err.value) == (
        "vectors toy/refusal mean_diff layer 2: vector has shape (64,) "
        "but the model's hidden size is 96"
    )
    with pytest.raises(SteeropsError, match="shape"):
        check_hidden_size(torch.zeros(1, 96), 96, "x")


def test_missing_vectors_name_the_commands_that_make_them(tmp_path):
    from steerops.extract.store import activations_dir
    from steerops.vectors.store import vectors_for

    args = (tmp_path, "toy/refusal", "base", "response[:5]", "residual")
    where = "--trait toy/refusal --variant base --position 'response[:5]'"
    with pytest.raises(SteeropsError) as err:
        vectors_for(*args, "mean_diff")
    assert (
        f"(no activations there either: run `steerops extract {where}`, then "
        f"`steerops vectors --methods mean_diff {where}`)"
    ) in str(err.value)
    folder = activations_dir(*args)
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text("{}")
    with pytest.raises(SteeropsError) as err:
        vectors_for(*args, "mean_diff_top1")
    assert str(err.value).endswith(
        f"(run `steerops clean --variants mean_diff_top1 {where}` first)"
    )
