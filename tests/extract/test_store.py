"""The activations store: the streamed writer writes a valid safetensors file."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from steerops.errors import SteeropsError
from steerops.extract.store import write_streamed


def test_streamed_writer_is_a_valid_safetensors_file(tmp_path):
    tensors = {
        "layer_3": torch.randn(5, 7),
        "b": torch.randn(3, 2).to(torch.bfloat16),
        "rows": torch.arange(4),
        "empty": torch.zeros(0, 4),
    }
    specs = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    produced = []

    def produce(name):
        produced.append(name)
        return tensors[name]

    path = tmp_path / "x.safetensors"
    write_streamed(path, specs, produce, metadata={"format": "pt", "n": 3})
    assert produced == list(tensors)  # produced lazily, in order
    loaded = load_file(path)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "n": "3"}
    before = path.read_bytes()
    with pytest.raises(ValueError, match="layer_3"):
        write_streamed(path, [("layer_3", (5, 8), torch.float32)], lambda n: tensors[n])
    assert path.read_bytes() == before  # a failed write leaves the old file
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def _trait(root, positives=("why is the sky blue?", "how do magnets work?")):
    folder = root / "toy" / "t"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "positive.txt").write_text("\n".join(positives) + "\n")
    (folder / "negative.txt").write_text("tell me a secret\nhelp me cheat\n")
    return folder


def test_activations_from_edited_prompts_or_regenerated_responses_are_told_apart(tmp_path):
    """Extracted from prompts the trait no longer has, or responses generated again since:
    said. The trait's other files (steering questions) change nothing; a source that is gone
    or unrecorded is not compared."""
    from steerops.extract.store import changed_source, prompts_md5
    from steerops.generate.store import responses_file
    from steerops.io import file_md5
    from steerops.traits import load_trait

    root, out = tmp_path / "traits", tmp_path / "outputs"
    folder = _trait(root)
    meta = {"prompts_md5": prompts_md5(load_trait(root, "toy/t"))}
    assert changed_source(meta, out, root, "toy/t", "base", "prompt[-1]") is None
    (folder / "steering.json").write_text('{"questions": ["q?"]}')  # not read by extraction
    assert changed_source(meta, out, root, "toy/t", "base", "prompt[-1]") is None
    _trait(root, positives=("why is the sky blue?", "how do tides work?"))
    said = changed_source(meta, out, root, "toy/t", "base", "prompt[-1]")
    assert said is not None and "other prompts than trait 'toy/t'" in said
    assert changed_source({}, out, root, "toy/t", "base", "prompt[-1]") is None  # older
    assert changed_source(meta, out, root, "toy/other", "base", "prompt[-1]") is None  # gone
    # the trait is there, its prompts do not load: that error alone (an extract fails on it
    # too, so it is what to fix), not a suggestion to extract again
    for broken, message in (
        ("", "positive prompts are empty"),
        (None, "missing positive.txt or positive.jsonl"),
    ):
        (folder / "positive.txt").unlink(missing_ok=True)
        if broken is not None:
            (folder / "positive.txt").write_text(broken)
        with pytest.raises(SteeropsError, match=message):
            changed_source(meta, out, root, "toy/t", "base", "prompt[-1]")
    (folder / "positive.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(SteeropsError, match="positive.jsonl:2: malformed JSON line"):
        changed_source(meta, out, root, "toy/t", "base", "prompt[-1]")
    (folder / "positive.jsonl").unlink()

    responses = responses_file(out, "toy/t", "base")
    responses.parent.mkdir(parents=True)
    responses.write_text('{"response": "no"}\n')
    meta = {"source_hash": file_md5(responses)}
    assert changed_source(meta, out, root, "toy/t", "base", "response[:5]") is None
    responses.write_text('{"response": "sure"}\n')
    said = changed_source(meta, out, root, "toy/t", "base", "response[:5]")
    assert said is not None and f"other responses than {responses}" in said
    responses.unlink()
    assert changed_source(meta, out, root, "toy/t", "base", "response[:5]") is None
