"""Base class for every params block (unknown keys are errors, not silently ignored) and
the field types blocks share.

Spec fields hold typed values (`steerops.specs`), parsed when params load, so a bad spec
fails there naming its params key; they serialise back to the text they were parsed from.
"""

from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from steerops.errors import SteeropsError
from steerops.specs import Layers, MethodName, Position, layers_spec, parse_method, parse_position

SPEC_ERROR = "spec"  # pydantic error type of a spec that does not parse


class Strict(BaseModel):
    # NaN and infinity are never a setting (and JSON cannot write them).
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_default=True, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`true` where a number goes (pydantic would read 1): a slip, not a setting."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _boolean_for_number(value, field.annotation):
            raise ValueError("expected a number, not true/false")
        return value


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (through unions, Annotated and Optional)."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_kinds(a) for a in get_args(annotation)))
    return {annotation}


def _boolean_for_number(value: Any, annotation: Any) -> bool:
    """A boolean (or a list holding one) given for a field of numbers that takes none."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(value, list) and get_origin(annotation) is list:
        (item,) = get_args(annotation) or (Any,)
        return any(_boolean_for_number(v, item) for v in value)
    if not isinstance(value, bool):
        return False
    kinds = _kinds(annotation)
    return bool(kinds & {int, float}) and not kinds & {bool, Any}


def _parsed_by(parse: Callable[[Any], Any]) -> PlainValidator:
    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except SteeropsError as exc:
            raise PydanticCustomError(SPEC_ERROR, "{message}", {"message": str(exc)}) from None

    return PlainValidator(validate)


_AS_TEXT = PlainSerializer(str, return_type=str)

# `prompt[-1]`, `response[:5]`, `all[:]`...
PositionSpec = Annotated[Position, _parsed_by(parse_position), _AS_TEXT]
# a list's items each once, in their first order (a repeated name would run twice)
Once = AfterValidator(lambda items: list(dict.fromkeys(items)))
# a list of positions, each once: two spellings of one selection are one position
Positions = Annotated[list[PositionSpec], Once]
# `all`, `15`, `5,10,15`, `5-20`, `0-30:5`, `30%-60%`, mixtures (YAML ints and lists too)
LayerSpec = Annotated[Layers, _parsed_by(layers_spec), _AS_TEXT]
# `mean_diff`, `probe_top2`, `mean_diff_preclean`... (see steerops.specs.methods)
MethodSpec = Annotated[MethodName, _parsed_by(parse_method), _AS_TEXT]
# a list of methods, each once: two spellings of one cleaning are one method
Methods = Annotated[list[MethodSpec], Once]
