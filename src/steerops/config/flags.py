"""Command-line flags from params fields: a flag that overrides a params key takes its type,
choices, metavar and help from that key's pydantic field, so the two never disagree.

    bool            --flag / --no-flag
    Literal[...]    choices
    int, float      the number
    list[X]         comma-separated X (`--coefficients 0.5,1,2`, `--method mean_diff`)
    X | None        as X
    int | 'auto'    an integer or the literal
Spec fields (positions, layers, methods) take text; params parse it when they load.
"""

from __future__ import annotations

import argparse
import math
import re
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from steerops.config.finite import not_finite


def csv_list(cast: Callable[[str], Any] = str) -> Callable[[str], list]:
    """argparse type for comma-separated lists (`--coefficients 0.5,1,2`)."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",")] if text.strip() else []
        if "" in items:  # `a,,b` or `a,`: a typo, not a shorter list
            raise argparse.ArgumentTypeError(f"empty item in {text!r}")
        try:
            return [cast(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad list {text!r}") from None

    return parse


def field_of(key: str) -> FieldInfo:
    """The pydantic field of a dotted params key (`steering.layers`)."""
    from steerops.config import Params

    model: type[BaseModel] = Params
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            raise KeyError(f"{key}: no such params key")
        info = model.model_fields[part]
        if i == len(parts) - 1:
            return info
        nested = info.annotation
        if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
            raise KeyError(f"{key}: {'.'.join(parts[: i + 1])} is not a params block")
        model = nested
    raise KeyError(key)


def flag_kwargs(key: str, flag: str) -> dict[str, Any]:
    """argparse keyword arguments (type or action, choices, metavar, help) for a flag that
    sets params `key`."""
    info = field_of(key)
    help_text = f"{info.description} " if info.description else ""
    # argparse %-formats help text ("30%-60%" in a layer spec)
    kwargs: dict[str, Any] = {"help": f"{help_text}(params: {key})".replace("%", "%%")}
    annotation = _without_none(info.annotation)
    if annotation is bool:
        return {**kwargs, "action": argparse.BooleanOptionalAction}
    name = flag.lstrip("-").replace("-", "_").upper()
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return {**kwargs, "type": csv_list(_scalar(item)), "metavar": f"{name}[,..]"}
    literals = _literals(annotation)
    if literals and all(isinstance(v, str) for v in literals) and not _others(annotation):
        return {**kwargs, "choices": list(literals)}
    return {**kwargs, "type": _scalar(annotation), "metavar": name}


def _without_none(annotation: Any) -> Any:
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _literals(annotation: Any) -> tuple:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if _is_union(annotation):
        return tuple(
            v for a in get_args(annotation) if get_origin(a) is Literal for v in get_args(a)
        )
    return ()


def _others(annotation: Any) -> list[Any]:
    """The non-literal members of a union (or the annotation itself)."""
    if _is_union(annotation):
        return [a for a in get_args(annotation) if get_origin(a) is not Literal]
    return [] if get_origin(annotation) is Literal else [annotation]


# Numbers as typed in a shell: ASCII digits, no "_" separators (Python's int and float take
# "1_0" as 10 and full-width or Arabic-Indic digits as their values); the words inf and nan
# pass, for `not_finite` to name them.
_PLAIN = {
    int: re.compile(r"[+-]?[0-9]+"),
    float: re.compile(
        r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)",
        re.IGNORECASE,
    ),
}


def _scalar(annotation: Any) -> Callable[[str], Any]:
    """Parse one value: a number, text (specs and paths), or a number-or-literal union."""
    literals, others = _literals(annotation), _others(annotation)
    # constrained numbers (PositiveInt, ...) parse as their base type; pydantic checks the rest
    bases = [get_args(a)[0] if get_origin(a) is Annotated else a for a in others]
    casts = [c for c in bases if c in (int, float)]

    def parse(text: str) -> Any:
        if text in literals:
            return text
        for cast in casts:
            if not _PLAIN[cast].fullmatch(text.strip()):  # "1_0" and "１" would cast
                continue
            try:
                value = cast(text)
            except ValueError:
                continue
            if isinstance(value, float) and not math.isfinite(value):  # `1e400` is inf
                raise argparse.ArgumentTypeError(not_finite(text))
            return value
        if casts or literals:
            allowed = " or ".join([c.__name__ for c in casts] + [repr(v) for v in literals])
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return text

    parse.__name__ = "|".join([c.__name__ for c in casts] + [str(v) for v in literals]) or "str"
    return parse
