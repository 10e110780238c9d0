"""Numbers that are not finite, or that YAML reads in another base, said as written.

NaN and infinity are never a setting, and a number too large for a float (`1e400`) reads as
infinity: the error would then quote `inf`, which nobody typed. So a flag's value and a
params file's number are refused with their own text: `'1e400' is out of range`.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

_SPELLED = ("inf", "infinity", "nan")  # how infinity and NaN are written on purpose


def not_finite(text: str) -> str:
    """Why the number written `text` (not finite as a float) is refused."""
    if text.strip().lstrip("+-.").lower() in _SPELLED:
        return f"{text!r} is not a finite number"
    return f"{text!r} is out of range (beyond 1.8e308, the largest float)"


class WrittenFloat(float):
    """A non-finite float read from a params file, keeping the text it was written as."""

    text: str


def written_text(value: Any) -> str:
    """The text a refused number was written as (its repr when it did not come from YAML)."""
    return getattr(value, "text", value if isinstance(value, str) else repr(value))


class ParamsLoader(yaml.SafeLoader):
    """YAML's safe loader, with non-finite floats remembering their text."""


def _float(loader: ParamsLoader, node: yaml.ScalarNode) -> float:
    value = loader.construct_yaml_float(node)
    if math.isfinite(value):
        return value
    written = WrittenFloat(value)
    written.text = str(node.value)
    return written


ParamsLoader.add_constructor("tag:yaml.org,2002:float", _float)


class ReadOtherwise(yaml.YAMLError):
    """An integer YAML 1.1 reads in another base than the one it looks written in: `010`
    is octal 8, `1:30` base 60 (90). A layer or count written so would be another one."""

    def __init__(self, text: str, value: int, line: int):
        base = "base 60" if ":" in text else "octal"
        super().__init__(
            f"line {line}: {text} reads as {value} ({base} in YAML): write the number "
            f"without {'the colon' if ':' in text else 'its leading zero'}, or quote it"
        )


def _int(loader: ParamsLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_yaml_int(node)
    text = str(node.value)
    digits = text.lstrip("+-").replace("_", "")
    if ":" in digits or (len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()):
        raise ReadOtherwise(text, value, node.start_mark.line + 1)
    return value


ParamsLoader.add_constructor("tag:yaml.org,2002:int", _int)


class DuplicateKey(yaml.YAMLError):
    """A key written twice in one mapping (YAML itself would keep the last silently)."""

    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"{key}: duplicate key (lines {first_line} and {line})")


def _mapping(loader: ParamsLoader, node: yaml.MappingNode) -> dict:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges a mapping in; keys written here override it
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise DuplicateKey(key, lines[key], line)
        lines[key] = line
    return loader.construct_mapping(node, deep=True)


ParamsLoader.add_constructor("tag:yaml.org,2002:map", _mapping)
