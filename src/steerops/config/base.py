"""Base class for every params block (unknown keys are errors, not silently ignored) and
the field types blocks share."""

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _layers_as_text(value):
    # YAML reads `layers: 15` as an int and `[5, 10]` as a list; keep the spec as text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, int | str) for v in value):
        return ",".join(str(v) for v in value)
    return value


# A layer spec (`all`, `15`, `5,10,15`, `5-20`, `0-30:5`, `30%-60%`, mixtures), kept as text.
LayerSpec = Annotated[str, BeforeValidator(_layers_as_text)]
