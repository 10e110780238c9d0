"""The LM head fed a contiguous input: the same logits, the hook gone afterwards."""

from __future__ import annotations

import pytest
import torch

from steerops.models.head import contiguous_head_input
from tiny import tiny_model


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_the_head_reads_a_contiguous_slice_and_the_logits_do_not_change(arch):
    model = tiny_model(arch).eval()
    ids = torch.randint(3, 90, (4, 7))
    seen: list[bool] = []
    head = model.get_output_embeddings()
    watch = head.register_forward_hook(
        lambda module, args, out: seen.append(args[0].is_contiguous())
    )
    with torch.inference_mode():
        plain = model(input_ids=ids, logits_to_keep=1).logits
        with contiguous_head_input(model):
            read = model(input_ids=ids, logits_to_keep=1).logits
        after = model(input_ids=ids, logits_to_keep=1).logits
    watch.remove()
    assert seen == [False, True, False]  # HF slices the last position, a strided view
    torch.testing.assert_close(read, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(after, plain, rtol=0, atol=0)


def test_the_hook_is_removed_when_the_forward_fails():
    model = tiny_model("llama").eval()
    head = model.get_output_embeddings()
    with pytest.raises(IndexError), contiguous_head_input(model):
        model(input_ids=torch.tensor([[1000]]))  # outside the vocabulary
    assert not head._forward_pre_hooks
