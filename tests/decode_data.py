"""Prompts, steering directions and the two-way run the decode-loop tests share: HF
generate's tokens against the static loop's, with the same steering hooks."""

from __future__ import annotations

import contextlib

import pytest
import torch
import transformers as T

from steerops.models import decode, decode_run
from steerops.steering.engine import generate_steered
from tiny import CONFIGS

PAD = 0
EAGER = decode.StaticLoop(backend=None)  # the step uncompiled: same code, fast to run
# Prompts share a 9-token head (a chat template's, say) and differ in length (left padding).
HEAD = [1, 30, 31, 32, 33, 34, 35, 36, 37]
PROMPTS = [
    HEAD + tail
    for tail in (
        [5, 9, 14, 22, 31, 40],
        [7, 8],
        [11, 12, 13, 50],
        [60, 61, 62, 63],
        [44],
        [70, 71, 72, 73, 74, 75, 76, 77],
    )
]


def unit(seed: int, hidden: int) -> torch.Tensor:
    v = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def windowed(arch: str) -> torch.nn.Module:
    """A tiny gemma2/gemma3_text model (seed 0) whose sliding layers see 4 tokens, fewer
    than the prompts hold."""
    config = CONFIGS[arch]()
    config.sliding_window = 4
    config.layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(config).eval()


def both(
    model,
    layout,
    prompts,
    table,
    stats=None,
    options=EAGER,
    slots=32,
    around=contextlib.nullcontext,
    **kwargs,
):
    """HF generate's tokens, then the static loop's (run inside `around()`)."""
    kwargs = {"pad_token_id": PAD, "max_new_tokens": 10, **kwargs}
    reference = generate_steered(
        model, layout, prompts, table, loop="hf", max_batch_rows=7, **kwargs
    )
    with around():
        loop = generate_steered(
            model,
            layout,
            prompts,
            table,
            loop="static",
            max_batch_rows=slots,
            loop_options=options,
            stats=stats,
            **kwargs,
        )
    return reference, loop


@contextlib.contextmanager
def ctrl_c_once_finished(rows: int):
    """Within the block, the static loop is interrupted (as by Ctrl-C) at its first check
    of the done mask after `rows` rows of the call have finished."""
    harvest = decode_run.Run.harvest

    def pressed(self):
        out = harvest(self)
        if len(self.results) >= rows:
            raise KeyboardInterrupt
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode_run.Run, "harvest", pressed)
        yield
