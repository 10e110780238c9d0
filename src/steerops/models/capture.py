"""Read a component's output at chosen layers in one forward pass, and stop early.

The forward is cut short by raising `StopForward` from the hook of the deepest requested
layer, so later blocks and the LM head (a [batch, seq, vocab] tensor) never run. Hooks are
removed on every exit path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from steerops.errors import SteeropsError
from steerops.models.resolver import ModelLayout

_KEYS = {"attn_out": "attn_path", "mlp_out": "mlp_path"}


class StopForward(Exception):
    """Raised inside a hook once every requested activation has been read."""


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    # Positions count real tokens only, so a left-padded row sees the same positions as
    # the unpadded sequence (matters for absolute position embeddings such as GPT-2's).
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def capture(
    layout: ModelLayout,
    layers: list[int],
    component: str = "residual",
    stop_early: bool = True,
    on_output: Callable[[int, torch.Tensor], None] | None = None,
    keep: bool = True,
) -> Iterator[dict[int, torch.Tensor | None]]:
    """Hook `component` at `layers`; yields a dict filled with [batch, seq, hidden] outputs
    (None with `keep` False), each also handed to `on_output(layer, output)` as it comes."""
    store: dict[int, torch.Tensor | None] = {}
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(module, args, output):
            out = _first(output)
            if out.dim() != 3:
                raise SteeropsError(
                    f"component {component} at layer {layer}: the module outputs shape "
                    f"{list(out.shape)}, not [batch, seq, hidden]; set "
                    f"models.{layout.variant}.{_KEYS.get(component, 'layers_path')} to a "
                    "module whose output is"
                )
            if on_output is not None:
                on_output(layer, out)
            store[layer] = out if keep else None
            if stop_early and layer == deepest and len(store) == len(layers):
                raise StopForward

        return hook

    try:
        for layer in sorted(set(layers)):
            module = layout.component_module(layer, component)
            handles.append(module.register_forward_hook(make_hook(layer)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def forward_capture(
    model: torch.nn.Module,
    layout: ModelLayout,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: list[int],
    component: str = "residual",
    on_residual: Callable[[int, torch.Tensor], None] | None = None,
) -> dict[int, torch.Tensor]:
    """Run `model` up to the deepest of `layers`; return {layer: [batch, seq, hidden]}.
    `on_residual(layer, output)`: called with the residual (block output) at each of
    `layers` as it is computed, whatever `component` is; it keeps what it needs, never the
    tensor (with another component the forward then stops after the deepest block)."""
    with contextlib.ExitStack() as stack:
        both = on_residual is not None and component != "residual"
        store = stack.enter_context(
            capture(
                layout,
                layers,
                component,
                stop_early=not both,
                on_output=None if both else on_residual,
            )
        )
        if both:
            stack.enter_context(capture(layout, layers, on_output=on_residual, keep=False))
        try:
            model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_for(attention_mask),
                use_cache=False,
            )
        except StopForward:
            pass
    return {layer: out for layer, out in store.items() if out is not None}
