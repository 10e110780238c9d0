"""The bf16-screened head against the float32 head's argmax, and in the decode loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decode_data import both, windowed
from steerops.models import decode
from steerops.models.head_screen import MIN_VOCAB, ScreenedHead, screened_head
from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable
from tiny import ARCHS, tiny_model

SCREENED = decode.StaticLoop(backend=None, head_screen=True)


def _head(vocab=20000, hidden=64, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, hidden, generator=g) / hidden**0.5
    return weight, (torch.randn(vocab, generator=g) if bias else None)


def _reference(hidden, weight, bias=None):
    return F.linear(hidden, weight, bias).argmax(-1)


@pytest.mark.parametrize("bias", [False, True])
def test_random_rows_match_the_float32_argmax_and_most_are_settled_by_the_screen(bias):
    weight, b = _head(bias=bias)
    hidden = torch.randn(300, 64, generator=torch.Generator().manual_seed(1)) * 8
    head = ScreenedHead(weight, b)
    assert torch.equal(head.argmax(hidden), _reference(hidden, weight, b))
    assert head.rows == 300 and head.fallback_rows < 30, head.fallback_rows


def test_ties_go_to_the_first_index_as_torch_argmax():
    weight, _ = _head()
    # words 17000 and 523 (also 9000) carry the same row: their logits are equal
    weight[17000] = weight[523] = weight[9000] = weight[523] * 40
    hidden = torch.randn(20, 64, generator=torch.Generator().manual_seed(2)).abs()
    hidden = hidden * weight[523].sign()  # those words win every row
    head = ScreenedHead(weight)
    tokens = head.argmax(hidden)
    assert torch.equal(tokens, _reference(hidden, weight))
    assert set(tokens.tolist()) == {523}


def test_rows_the_bound_cannot_settle_get_the_float32_product():
    """A zero row ties every word (first word wins), a NaN row reads as torch's argmax of
    NaN logits, and two words nearly equal stay apart although bf16 cannot tell them."""
    weight, _ = _head()
    weight[4000] = weight[100] * 30
    weight[4001] = weight[100] * 30 * (1 + 2**-20)
    hidden = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    hidden[0] = 0
    hidden[1, 5] = float("nan")
    hidden[2] = hidden[3] = weight[100].sign()
    hidden[3] = -hidden[3]
    head = ScreenedHead(weight)
    tokens = head.argmax(hidden)
    assert torch.equal(tokens, _reference(hidden, weight))
    assert tokens[0] == 0 and tokens[2] == 4001
    assert head.fallback_rows >= 2


def test_the_bound_covers_the_bf16_error_on_large_values():
    """The screen's error bound holds where logits are large (a massive-activation-sized
    hidden state): the bf16 logits' error stays within half of it."""
    weight, _ = _head(vocab=5000, hidden=576)
    hidden = torch.randn(64, 576, generator=torch.Generator().manual_seed(4)) * 50
    hidden[:, 7] = 3000.0
    approx = F.linear(hidden.bfloat16(), weight.bfloat16()).float()
    exact = F.linear(hidden.double(), weight.double()).float()
    from steerops.models.head_screen import ERROR

    bound = ERROR * (approx.abs() + hidden.norm(dim=-1, keepdim=True) * weight.norm(dim=-1))
    assert ((approx - exact).abs() <= bound / 2).all()
    assert torch.equal(ScreenedHead(weight).argmax(hidden), _reference(hidden, weight))


def test_which_heads_are_screened():
    small = tiny_model("llama")
    assert screened_head(small) is None  # too small to pay
    assert screened_head(small, force=False) is None
    assert isinstance(screened_head(small, force=True), ScreenedHead)
    assert screened_head(small, force=True) is screened_head(small, force=True)  # kept
    assert screened_head(windowed("gemma2"), force=True) is None  # soft-capped logits
    assert screened_head(small.to(torch.bfloat16), force=True) is None
    assert small.config.vocab_size < MIN_VOCAB


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "gemma2"])
def test_screened_loop_matches_hf_generate(arch):
    """Every covered architecture's eager loop with the screened head gives HF generate's
    tokens under mixed steering (gemma2 soft-caps its logits: never screened)."""
    model = tiny_model(arch, seed=1)
    layout = resolve_layout(model)
    a = torch.randn(layout.hidden_size, generator=torch.Generator().manual_seed(5))
    configs = [[], [(1, a, 4.0)], [(2, a, -6.0)]]
    prompts = [[1, 30, 31, 5, 9], [1, 30, 7], [1, 30, 31, 32, 33, 34, 44]]
    rows = [(c, p) for c in configs for p in prompts]
    table = SteeringTable([c for c, _ in rows])
    head = screened_head(model, force=True)
    assert head is not None
    before = head.rows
    reference, loop = both(
        model, layout, [p for _, p in rows], table, options=SCREENED, stop_ids=[2]
    )
    assert loop == reference
    assert head.rows > before  # the steps went through the screen
