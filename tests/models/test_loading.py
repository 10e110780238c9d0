"""Loading a model variant (dtype, device, device_map, local paths) and rendering prompts through
the chat template."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.models.generation import format_prompt
from steerops.models.loading import load_model
from steerops.toy.tokenizer import build_tokenizer
from tiny import VOCAB, tiny_model

WORDS = ["hello", "world", "how", "do", "i", "bake", "bread", "?", "be", "kind"]


def _save_tiny(folder, arch="llama"):
    model = tiny_model(arch)
    model.save_pretrained(folder)
    tok = build_tokenizer(WORDS)
    assert len(tok) <= VOCAB
    tok.save_pretrained(folder)
    return model


def _params(tmp_path, **variant):
    spec = {"id": str(tmp_path / "model"), **variant}
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"models": {"base": spec}, "tracking": {"enabled": False}})
    )
    return load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    "dtype, torch_dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)]
)
def test_load_saved_model_from_local_path(tmp_path, dtype, torch_dtype):
    original = _save_tiny(tmp_path / "model")
    loaded = load_model(_params(tmp_path, dtype=dtype), "base", padding_side="right")
    assert loaded.name == "base" and loaded.source == str(tmp_path / "model")
    assert next(loaded.model.parameters()).dtype == torch_dtype
    assert loaded.layout.num_layers == 3 and loaded.layout.model_type == "llama"
    assert loaded.tokenizer.padding_side == "right"
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        want = original(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits.float()
    tol = 1e-5 if dtype == "float32" else 0.1
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "device_map",
    [
        "auto",
        {"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "lm_head": "cpu"},
    ],
)
def test_load_with_device_map(tmp_path, device_map):
    """The multi-GPU path (accelerate placement) on the devices this machine has: the model
    loads through the map and computes the same as the original, captures included."""
    from steerops.models.capture import forward_capture

    original = _save_tiny(tmp_path / "model")
    loaded = load_model(_params(tmp_path, device=None, device_map=device_map), "base")
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert loaded.input_device == torch.device("cpu")
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        want = original(input_ids=ids, output_hidden_states=True)
        got = loaded.model(input_ids=ids).logits
    torch.testing.assert_close(got, want.logits, rtol=1e-5, atol=1e-5)
    acts = forward_capture(loaded.model, loaded.layout, ids, torch.ones_like(ids), [1])
    torch.testing.assert_close(acts[1], want.hidden_states[2], rtol=1e-5, atol=1e-5)


def test_device_and_device_map_together_is_one_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"models": {"base": {"id": "x", "device": "cuda", "device_map": "auto"}}})
    )
    with pytest.raises(SteeropsError, match="device_map"):
        load_params(tmp_path / "params.yaml")


def test_missing_local_model_names_the_key(tmp_path):
    params = _params(tmp_path)
    with pytest.raises(SteeropsError, match=r"models\.base\.id"):
        load_model(params, "base")


def test_a_revision_for_a_local_folder_is_one_line_not_ignored(tmp_path):
    """A local folder holds one version of the weights: a revision asked of it cannot be
    honoured, so it is refused instead of loading whatever the folder holds."""
    from steerops.models.loading import model_source

    _save_tiny(tmp_path / "model")
    with pytest.raises(SteeropsError, match=r"models\.base\.revision: 'v2'.*local folder") as err:
        model_source(_params(tmp_path, revision="v2"), "base")
    assert "\n" not in str(err.value)
    assert model_source(_params(tmp_path), "base") == str(tmp_path / "model")


def test_format_prompt_with_system_prompt():
    tok = build_tokenizer(WORDS)
    text = format_prompt(tok, "how do i bake bread ?", "be kind")
    assert text == (
        "<bos> <|system|> be kind <eos> <|user|> how do i bake bread ? <eos> <|assistant|>"
    )
    no_gen = format_prompt(tok, "hello", None, add_generation_prompt=False)
    assert no_gen == "<bos> <|user|> hello <eos>"
    # A message list keeps its own system message; the argument does not add a second one.
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}]
    assert format_prompt(tok, messages, "ignored") == format_prompt(tok, "hello", "be kind")


def test_format_prompt_without_system_role_or_template():
    tok = build_tokenizer(WORDS)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}[model]{% endif %}"
    )
    assert format_prompt(tok, "hello", "be kind") == "[user] be kind\n\nhello [model]"
    tok.chat_template = None
    assert format_prompt(tok, "hello", "be kind") == "be kind\n\nhello"


def test_a_template_that_fails_on_a_system_turn_in_its_own_words_folds_it_or_says_so():
    """Mistral v0.1's template refuses a system turn with "roles must alternate", not with
    the word "system": the prompt is folded all the same; a template that cannot render
    even then is one line naming the setting, not a jinja traceback."""
    tok = build_tokenizer(WORDS)
    tok.chat_template = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/...') }}"
        "{% endif %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    )
    assert format_prompt(tok, "hello", "be kind") == "[user] be kind\n\nhello "
    tok.chat_template = "{{ raise_exception('no chat for you') }}"
    with pytest.raises(SteeropsError, match=r"cannot render a prompt \(no chat for you\).*"):
        format_prompt(tok, "hello", None)
    with pytest.raises(SteeropsError, match=r"models\.<variant>\.chat_template"):
        format_prompt(tok, "hello", "be kind")


def _strip_template(folder) -> str:
    """Save the tokenizer's chat template nowhere it reads it from (a base model's folder,
    or a processor checkpoint's, whose template lies elsewhere); returns the template."""
    jinja = folder / "chat_template.jinja"
    template = jinja.read_text()
    jinja.unlink()
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    return template


def test_a_processor_chat_template_json_is_the_template_when_the_tokenizer_has_none(
    tmp_path, caplog
):
    """A multimodal checkpoint saved through its processor keeps its template in
    chat_template.json only, which AutoTokenizer does not read: it is taken from there (it
    ran on the bare text, silently), and the settings hash and fingerprint record it."""
    from steerops.extract.provenance import model_settings
    from steerops.io import text_md5
    from steerops.models.fingerprint import model_fingerprint

    _save_tiny(tmp_path / "model")
    template = _strip_template(tmp_path / "model")
    processor_file = tmp_path / "model" / "chat_template.json"
    processor_file.write_text(json.dumps({"chat_template": template}))
    with caplog.at_level(logging.WARNING, logger="steerops.models.loading"):
        loaded = load_model(_params(tmp_path), "base")
    assert caplog.records == []
    reference = format_prompt(build_tokenizer(WORDS), "how do i bake bread ?", "be kind")
    assert reference.startswith("<bos> <|system|> be kind")  # the template, not bare text
    assert format_prompt(loaded.tokenizer, "how do i bake bread ?", "be kind") == reference
    settings = model_settings(loaded.spec, loaded.source, loaded.tokenizer)
    assert settings["chat_template"] == text_md5(template)
    before = model_fingerprint(loaded.source)
    processor_file.write_text(json.dumps({"chat_template": template + " "}))
    assert model_fingerprint(loaded.source) != before
    processor_file.write_text(json.dumps({"chat_template": "{{ messages[0].content | no }}"}))
    with pytest.raises(SteeropsError, match=r"chat_template\.json: not a Jinja template"):
        load_model(_params(tmp_path), "base")


def test_a_model_without_any_chat_template_warns_once_that_prompts_are_bare(tmp_path, caplog):
    """No template in the tokenizer nor beside it: one warning line naming the variant and
    the model (check stage and load together), the prompts the bare text; a template from
    params silences it and is the one used."""
    from steerops.models.loading import check_variant

    _save_tiny(tmp_path / "model")
    template = _strip_template(tmp_path / "model")
    (tmp_path / "chat.jinja").write_text(template)
    with caplog.at_level(logging.WARNING, logger="steerops.models.loading"):
        given = load_model(_params(tmp_path, chat_template="chat.jinja"), "base")
        assert caplog.records == []
        check_variant(_params(tmp_path), "base")
        loaded = load_model(_params(tmp_path), "base")
    assert given.tokenizer.chat_template == template
    assert [r.getMessage() for r in caplog.records] == [
        f"models.base: {str(tmp_path / 'model')!r} has no chat template (not in its tokenizer, "
        "no chat_template.jinja / chat_template.json): prompts are the bare text; an "
        "instruction-tuned model's numbers depend on its template (models.base.chat_template "
        "gives one)"
    ]
    assert format_prompt(loaded.tokenizer, "hello", "be kind") == "be kind\n\nhello"


def test_folder_template_prefers_chat_template_jinja_and_skips_an_empty_one(tmp_path):
    from steerops.models.chat_template import folder_chat_template

    assert folder_chat_template(str(tmp_path)) is None
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "json {{ 1 }}"}))
    assert folder_chat_template(str(tmp_path)) == "json {{ 1 }}"
    (tmp_path / "chat_template.jinja").write_text("jinja {{ 1 }}")
    assert folder_chat_template(str(tmp_path)) == "jinja {{ 1 }}"
    (tmp_path / "chat_template.jinja").write_text("")
    assert folder_chat_template(str(tmp_path)) == "json {{ 1 }}"
    (tmp_path / "chat_template.json").write_text(json.dumps({"processor_class": "X"}))
    assert folder_chat_template(str(tmp_path)) is None


def test_a_checkpoint_automodelforcausallm_cannot_build_is_one_line_not_layers_path(tmp_path):
    """LLaVA (a multimodal model AutoModelForCausalLM has no class for) said `unknown
    architecture ... set layers_path`, and with layers_path a second error: now one line
    from its config, with or without layers_path, before anything else is read."""
    import transformers as T

    from steerops.models.loading import check_variant

    text = T.LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2)
    llava = T.LlavaConfig(text_config=text, architectures=["LlavaForConditionalGeneration"])
    llava.save_pretrained(tmp_path / "model")  # the config alone: nothing else is read
    line = (
        f"models.base.id: {str(tmp_path / 'model')!r} is not a causal LM that "
        "AutoModelForCausalLM can load (LlavaConfig, for LlavaForConditionalGeneration); "
        "steerops steers causal language models only, whatever layers_path says"
    )
    for paths in ({}, {"layers_path": "model.language_model.layers"}):
        with pytest.raises(SteeropsError) as err:
            check_variant(_params(tmp_path, **paths), "base")
        assert str(err.value) == line


def test_an_architecture_outside_the_table_is_one_line_before_the_weights_load(
    tmp_path, monkeypatch
):
    """Without `layers_path` an unlisted architecture (Granite here) cannot be steered: the
    check stages say so from its config, before a run opens and its weights load."""
    from transformers import AutoModelForCausalLM

    from steerops.models.loading import check_variant
    from tiny import UNLISTED

    _save_tiny(tmp_path / "model", "granite")

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(SteeropsError, match=r"unknown architecture 'granite': .*models\.base"):
        check_variant(_params(tmp_path), "base")
    layers_path = UNLISTED["granite"][1][0]
    assert check_variant(_params(tmp_path, layers_path=layers_path), "base")


def test_weights_missing_a_tensor_or_shaped_otherwise_are_one_line(tmp_path):
    """A checkpoint without one block's tensor would load with that layer at random (and
    steer it): refused, naming the tensor; a tensor the config gives another shape is one
    line too, not a traceback."""
    import json

    from safetensors.torch import load_file, save_file

    _save_tiny(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    whole = load_file(weights)
    cut = {k: v for k, v in whole.items() if k != "model.layers.1.mlp.down_proj.weight"}
    save_file(cut, weights, metadata={"format": "pt"})
    with pytest.raises(SteeropsError, match=r"lack 1 of .*model\.layers\.1\.mlp\.down_proj"):
        load_model(_params(tmp_path), "base")
    save_file(whole, weights, metadata={"format": "pt"})
    config = tmp_path / "model" / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "intermediate_size": data["intermediate_size"] * 2}))
    with pytest.raises(SteeropsError, match=r"models\.base\.id: cannot load .*"):
        load_model(_params(tmp_path), "base")
    config.write_text(json.dumps(data))
    assert load_model(_params(tmp_path), "base").layout.num_layers == 3


def test_a_pickle_only_model_folder_is_refused_in_one_line(tmp_path):
    from safetensors.torch import load_file

    _save_tiny(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    torch.save(load_file(weights), tmp_path / "model" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(SteeropsError, match=r"models\.base\.id: .*pytorch_model\.bin.*safetensors"):
        load_model(_params(tmp_path), "base")
    # Beside safetensors weights a pickle is never read: the safetensors ones load.
    _save_tiny(tmp_path / "model")
    loaded = load_model(_params(tmp_path), "base")
    assert loaded.layout.num_layers == 3


def test_a_folder_that_is_no_model_or_holds_damaged_weights_is_one_line(tmp_path):
    from steerops.models.loading import check_variant

    (tmp_path / "model").mkdir()  # e.g. the parent of the model folder, by a typo
    (tmp_path / "model" / "notes.txt").write_text("x")
    with pytest.raises(SteeropsError, match=r"models\.base\.id: .* is not a model folder"):
        check_variant(_params(tmp_path), "base")  # before any run opens
    _save_tiny(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # cut short: told before any run opens
    with pytest.raises(SteeropsError, match=r"models\.base\.id: .*model.safetensors is not a com"):
        check_variant(_params(tmp_path), "base")
    weights.write_bytes(b"\xff" * 16 + whole[16:])  # a header that is no header
    with pytest.raises(SteeropsError, match=r"not a complete safetensors file"):
        load_model(_params(tmp_path), "base")
    weights.write_bytes(whole)
    assert check_variant(_params(tmp_path), "base")  # the intact file passes


@pytest.mark.parametrize(
    "device, message",
    [("cuda:7", r"cuda:7 is not available \(\d+ CUDA devices\)"), ("gpu0", "is not a device")],
)
def test_an_unusable_device_is_one_line_before_loading(tmp_path, device, message):
    _save_tiny(tmp_path / "model")
    with pytest.raises(SteeropsError, match=rf"models\.base\.device: .*{message}"):
        load_model(_params(tmp_path, device=device), "base")


@pytest.mark.parametrize(
    "device_map, message",
    [
        ("autoo", r"models\.base\.device_map: 'autoo' is not a device \(auto, balanced"),
        ("cuda:7", r"models\.base\.device_map: cuda:7 is not available"),
        ({"": "gpu"}, r"models\.base\.device_map\.\(whole model\): 'gpu' is not a device"),
        ({"model.layers": 7}, r"models\.base\.device_map\.model\.layers: device 7 is not avail"),
        ({"lm_head": "cuda:7"}, r"models\.base\.device_map\.lm_head: cuda:7 is not available"),
    ],
)
def test_an_unusable_device_map_is_one_line_before_any_run_opens(tmp_path, device_map, message):
    """A device_map naming a device this machine lacks, or no device at all, is refused by
    the check stages run before their MLflow run opens, on its own key (it was a transformers
    message blamed on models.base.id, or a CUDA assertion, after loading began)."""
    from steerops.models.loading import check_variant

    _save_tiny(tmp_path / "model")
    params = _params(tmp_path, device=None, device_map=device_map)
    with pytest.raises(SteeropsError, match=message):
        check_variant(params, "base")
    for fine in ("auto", "sequential", "cpu", {"model": "cpu", "lm_head": "disk"}):
        assert check_variant(_params(tmp_path, device=None, device_map=fine), "base")


@pytest.mark.parametrize(
    "template, message",
    [
        ("{% for m in messages %}{{ m.content }", r"\(line 1\): unexpected '}'$"),
        ("{{ messages[0].content | nosuch }}", r"No filter named 'nosuch'"),
        ("no_such_template.jinja", r"file not found: .*no_such_template\.jinja$"),
    ],
)
def test_a_broken_chat_template_is_one_line_before_any_run_opens(tmp_path, template, message):
    """models.<variant>.chat_template that does not compile is refused by the check stages
    run before their MLflow run, naming the key (it was a Jinja traceback at the first prompt,
    inside the run)."""
    from steerops.models.loading import check_variant

    _save_tiny(tmp_path / "model")
    with pytest.raises(SteeropsError, match=r"^models\.base\.chat_template: .*" + message):
        check_variant(_params(tmp_path, chat_template=template), "base")
    (tmp_path / "chat.jinja").write_text("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    loaded = load_model(_params(tmp_path, chat_template="chat.jinja"), "base")
    assert format_prompt(loaded.tokenizer, "hello", "be kind") == "be kind hello "


@pytest.mark.parametrize(
    "paths, message",
    [
        ({"layers_path": "model.blocks"}, r"layers_path: LlamaForCausalLM has no submodule"),
        ({"attn_path": "attention"}, r"attn_path: block LlamaDecoderLayer has no submodule"),
    ],
)
def test_a_wrong_module_path_is_one_line_before_any_run_opens(tmp_path, paths, message):
    """layers_path / attn_path / mlp_path are resolved on the model built from its config on
    the meta device by the check stages run before their MLflow run (they were resolved
    only after the weights loaded, inside the run, which then ended FAILED)."""
    from steerops.models.loading import check_variant

    _save_tiny(tmp_path / "model")
    with pytest.raises(SteeropsError, match=rf"^models\.base\.{message}"):
        check_variant(_params(tmp_path, **paths), "base")
    fine = {"layers_path": "model.layers", "attn_path": "self_attn", "mlp_path": "mlp"}
    assert check_variant(_params(tmp_path, **fine), "base")


def test_a_model_folder_without_tokenizer_or_with_a_damaged_config_is_one_line_early(tmp_path):
    """What load_model reads besides the weights is read by the check stages run before
    their MLflow run (a folder saved without its tokenizer ended a run FAILED at load)."""
    from steerops.models.loading import check_variant

    tiny_model("llama").save_pretrained(tmp_path / "model")  # the tokenizer not saved
    with pytest.raises(SteeropsError) as err:
        check_variant(_params(tmp_path), "base")
    assert str(err.value) == (
        f"models.base.id: no tokenizer in {tmp_path / 'model'} (tokenizer.json, or "
        "tokenizer_config.json with its vocabulary files)"
    )
    # a tokenizer file transformers cannot read: its own message, on one line
    (tmp_path / "model" / "tokenizer_config.json").write_text('{"tokenizer_class": "Nope"}')
    with pytest.raises(SteeropsError, match=r"^models\.base\.id: cannot load tokenizer: ") as err:
        check_variant(_params(tmp_path), "base")
    assert "\n" not in str(err.value)
    _save_tiny(tmp_path / "model")
    assert check_variant(_params(tmp_path), "base")
    (tmp_path / "model" / "config.json").write_text("{not json")
    with pytest.raises(SteeropsError, match=r"^models\.base\.id: cannot read the model's config"):
        check_variant(_params(tmp_path), "base")


def test_pin_device_overrides_every_variant_for_the_run(tmp_path):
    from steerops.config.models import pin_device

    _save_tiny(tmp_path / "model")
    params = _params(tmp_path, device=None, device_map="auto")
    pin_device(params, "cpu")
    assert params.models["base"].device == "cpu" and params.models["base"].device_map is None
    loaded = load_model(params, "base")
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert not hasattr(loaded.model, "hf_device_map")
    pin_device(params, "cuda:3")
    with pytest.raises(SteeropsError, match=r"models\.base\.device: cuda:3"):
        load_model(params, "base")


def _gemma3_checkpoint(folder, layout: str):
    """A tiny random multimodal Gemma 3 (sliding window 4, shorter than the prompts) saved
    with its keys in `layout`: as transformers 5 saves it (and the hub's gemma-3-*-it
    hold it), or as transformers 4.52-4.x did."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    config = tiny_model("gemma3").config
    config.text_config.sliding_window = 4
    config.text_config.layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    import transformers as T

    model = T.Gemma3ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    build_tokenizer(WORDS).save_pretrained(folder)
    if layout == "4.52":
        path = folder / "model.safetensors"
        tensors = load_file(path)
        renamed = {
            "model." + k.replace("language_model.model.", "language_model.", 1): v
            for k, v in tensors.items()
        }
        save_file(renamed, path, metadata={"format": "pt"})
    return model


@pytest.mark.parametrize("layout", ["transformers-5", "4.52"])
def test_a_multimodal_gemma3_checkpoint_loads_its_text_decoder_alone(tmp_path, layout, capfd):
    """gemma-3-*-it: the vision tower stays on disk, quietly, and the decoder computes what
    the whole model computes on text (left padding, prompts past the sliding window)."""
    from safetensors import safe_open

    full = _gemma3_checkpoint(tmp_path / "model", layout)
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:
        stored = list(f.keys())
    assert any(k.startswith("language_model." if layout != "4.52" else "model.") for k in stored)
    loaded = load_model(_params(tmp_path), "base")
    model = loaded.model
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert loaded.layout.model_type == "gemma3_text" and loaded.layout.num_layers == 3
    names = [n for n, _ in model.named_parameters()]
    assert not any("vision" in n or "multi_modal" in n for n in names)
    text_params = sum(p.numel() for p in full.model.language_model.parameters())
    assert sum(p.numel() for p in model.parameters()) == text_params
    assert "UNEXPECTED" not in capfd.readouterr().err  # no 400-line report on a real one
    ids = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 4]])
    mask = (torch.arange(11) >= torch.tensor([[3], [0]])).long()
    with torch.no_grad():
        want = full(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], want.logits[real], rtol=0, atol=0)
    for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(a[real], b[real], rtol=0, atol=0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


WHOLE_MODEL_MAP = {
    "model.language_model": "cpu",
    "model.vision_tower": "cpu",
    "model.multi_modal_projector": "cpu",
    "lm_head": "cpu",
}


@pytest.mark.parametrize(
    "spec",
    [
        {"layers_path": "model.language_model.layers"},
        {"device": None, "device_map": WHOLE_MODEL_MAP},
    ],
)
def test_module_names_written_for_the_whole_multimodal_model_still_load_it(tmp_path, spec):
    _gemma3_checkpoint(tmp_path / "model", "transformers-5")
    loaded = load_model(_params(tmp_path, **spec), "base")
    assert type(loaded.model).__name__ == "Gemma3ForConditionalGeneration"
    assert loaded.layout.num_layers == 3


def test_only_a_multimodal_config_with_its_usual_text_part_loads_as_text():
    import transformers as T

    from steerops.models.text_only import text_config
    from tiny import CONFIGS

    assert text_config(CONFIGS["llama"]()) is None
    assert text_config(CONFIGS["gemma3_text"]()) is None
    config = CONFIGS["gemma3"]()
    text = text_config(config)
    assert isinstance(text, T.Gemma3TextConfig) and text is not config.text_config
    config.dtype = torch.bfloat16  # the whole model's, which `dtype: auto` loads
    assert text_config(config).dtype == torch.bfloat16
    config.quantization_config = {"quant_method": "fp8"}  # scales laid out for the whole
    assert text_config(config) is None
    config = CONFIGS["gemma3"]()
    config.text_config.final_logit_softcapping = 30.0  # the two classes would differ
    assert text_config(config) is None
