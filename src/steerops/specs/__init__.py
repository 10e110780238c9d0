"""The small grammars users write in params and on the command line, parsed into typed
values when params load: token positions (`position`), layer specs (`layers`) and method
names with cleaning suffixes (`methods`); plus the model components steerops reads.

Each value prints as its spec text (`str(spec)`), which is also what params serialise back
to: the text it was parsed from, except positions, which print their one canonical spelling
(`prompt[+1]` and `prompt[1:2]` are `prompt[1]`; see `steerops.specs.position`).
"""

from typing import Literal, get_args

from steerops.specs.layers import Layers, check_layers, layers_spec, parse_layers
from steerops.specs.methods import BASE_METHODS, Cleaning, MethodName, parse_method
from steerops.specs.position import (
    FRAMES,
    Position,
    max_response_tokens,
    parse_position,
    position_slug,
)
from steerops.specs.spelling import canonical_method, canonical_position

# The block output (`residual`) or what its attention / MLP part adds back to it.
Component = Literal["residual", "attn_out", "mlp_out"]
COMPONENTS: tuple[str, ...] = get_args(Component)
# Which tokens steering changes: prompt and generated ones, or generated ones only.
Scope = Literal["all", "response"]
SCOPES: tuple[str, ...] = get_args(Scope)

__all__ = [
    "BASE_METHODS",
    "COMPONENTS",
    "FRAMES",
    "Cleaning",
    "Component",
    "Layers",
    "MethodName",
    "Position",
    "SCOPES",
    "Scope",
    "canonical_method",
    "canonical_position",
    "check_layers",
    "layers_spec",
    "max_response_tokens",
    "parse_layers",
    "parse_method",
    "parse_position",
    "position_slug",
]
