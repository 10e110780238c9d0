"""Reading trait activations: files that break the extract contract are named."""

from __future__ import annotations

import pytest

from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.io import read_json, write_json
from vector_data import params_file, stacked, write_activations

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


def test_activations_that_break_the_contract_are_named(tmp_path):
    data, n_pos = stacked()
    directory = write_activations(tmp_path / "outputs", data, n_pos, hidden_size=13)
    params = load_params(params_file(tmp_path))
    from steerops.vectors.activations import load_activations

    with pytest.raises(
        SteeropsError,
        match=r"layer_0 has shape \[60, 12\], metadata says "
        r"\[60, 13\]",
    ):
        load_activations(params.out, TRAIT, "base", POSITION, "residual")
    meta = read_json(directory / "metadata.json")
    meta["hidden_size"] = 12
    meta["examples"][5]["polarity"] = "neutral"
    write_json(directory / "metadata.json", meta)
    with pytest.raises(SteeropsError, match=r"examples\[5\]\.polarity"):
        load_activations(params.out, TRAIT, "base", POSITION, "residual")


def test_activations_of_prompts_the_trait_no_longer_has_are_refused(tmp_path):
    """The trait's prompts edited after extraction: vectors would be built from rows that
    are not the trait's any more; the command it suggests extracts them again."""
    from steerops.extract.store import prompts_md5
    from steerops.traits import load_trait
    from steerops.vectors.activations import load_activations

    data, n_pos = stacked()
    directory = write_activations(tmp_path / "outputs", data, n_pos)
    params = load_params(params_file(tmp_path))
    root = tmp_path / "traits"
    trait = root / TRAIT
    trait.mkdir(parents=True)
    (trait / "positive.txt").write_text("a\nb\n")
    (trait / "negative.txt").write_text("c\nd\n")
    meta = read_json(directory / "metadata.json")
    meta["prompts_md5"] = prompts_md5(load_trait(root, TRAIT))
    write_json(directory / "metadata.json", meta)
    args = (params.out, TRAIT, "base", POSITION, "residual", " --out run")
    assert load_activations(*args, root).layers  # as extracted
    (trait / "positive.txt").write_text("a\nb, edited\n")
    with pytest.raises(SteeropsError, match=r"extracted from other prompts than trait") as err:
        load_activations(*args, root)
    assert "rerun `steerops extract --trait toy/refusal --variant base" in str(err.value)
    assert "--out run`" in str(err.value)


def test_activations_of_another_model_than_params_name_are_refused(tmp_path):
    """params name another model for the variant since extraction (other weights, another
    hub id or revision), run by hand without extracting again: vectors would be fitted on
    the old model's rows. Weights are told by content, as extraction tells them: the same
    folder spelled another way, or a copy of it, is the same model."""
    from steerops.models.fingerprint import model_fingerprint
    from steerops.vectors.activations import load_activations

    data, n_pos = stacked()
    directory = write_activations(tmp_path / "outputs", data, n_pos)
    for name, weights in (("a", b"a"), ("b", b"b"), ("copy_of_a", b"a")):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model.safetensors").write_bytes(weights)
    args = (TRAIT, "base", POSITION, "residual", "", None)

    def extracted_from(model: dict) -> None:
        meta = read_json(directory / "metadata.json")
        meta["model"] = model
        write_json(directory / "metadata.json", meta)

    def load(model_id: str, revision: str | None = None):
        spec = {"id": model_id, **({"revision": revision} if revision else {})}
        params = load_params(params_file(tmp_path, models={"base": spec}))
        return load_activations(params.out, *args, params)

    weights = model_fingerprint(str(tmp_path / "models" / "a"))
    extracted_from({"id": "models/a", "revision": None, "weights": weights})
    for same in ("models/a", str(tmp_path / "models" / "a"), "models/copy_of_a"):
        assert load(same).layers
    with pytest.raises(SteeropsError) as err:
        load("models/b")
    said = f"extracted from other weights (content {weights[:12]}) than models/b holds for 'base'"
    assert said in str(err.value) and "rerun `steerops extract --trait toy/refusal" in str(
        err.value
    )
    extracted_from({"id": "models/a", "weights": weights, "dtype": "bfloat16"})
    with pytest.raises(SteeropsError, match="model dtype bfloat16, params name float32 for"):
        load("models/a")  # the same weights read in another dtype: other activations
    extracted_from({"id": "models/a", "weights": weights, "dtype": "float32"})
    assert load("models/a").layers
    (tmp_path / "models" / "a" / "model.safetensors").write_bytes(b"fine-tuned over it")
    with pytest.raises(SteeropsError, match="other weights"):
        load("models/a")

    # a hub id the cache does not hold: its id and revision
    extracted_from({"id": "org/model", "revision": "v1", "weights": "hub"})
    assert load("org/model", "v1").layers
    others = (("org/model", "v2", "org/model@v2"), ("org/other", None, "org/other (no revision)"))
    for model_id, revision, now in others:
        with pytest.raises(SteeropsError) as err:
            load(model_id, revision)
        assert f"extracted from model org/model@v1, params name {now} for 'base'" in str(err.value)
    extracted_from({"id": "org/model", "revision": "v1", "weights": weights})  # not here now
    assert load("org/model", "v1").layers
    extracted_from({"id": "models/a"})  # older, of a local folder too: a path is no identity
    assert load("models/b").layers
    extracted_from({"id": "org/model", "revision": "v1"})  # older, of a hub id: not a folder
    with pytest.raises(SteeropsError, match="model org/model@v1, params name models/b"):
        load("models/b")
