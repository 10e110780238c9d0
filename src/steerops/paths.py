"""The folder scheme of the per-cell artifacts vectors, steering results and searches share:

<out>/<kind>/<cat>/<trait>/<variant>/<position>/<component>/<method>/
"""

from __future__ import annotations

from pathlib import Path

from steerops.errors import SteeropsError
from steerops.specs import MethodName, Position, position_slug

PositionLike = str | Position
MethodLike = str | MethodName


def cell_dir(
    kind: str,
    out: Path,
    trait: str,
    variant: str,
    position: PositionLike,
    component: str,
    method: MethodLike,
) -> Path:
    check_trait_name(trait)
    check_folder_name(variant, "variant")
    return Path(out) / kind / trait / variant / position_slug(position) / component / str(method)


def check_folder_name(value: str, what: str) -> str:
    """`value` if it names one folder inside its parent (outputs never escape the out root)."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or any(c in value for c in "/\\\0")
        or value.startswith("~")
    ):
        raise SteeropsError(
            f"{what}: {value!r} is not a plain folder name (no '/', '\\', '~' or '..')"
        )
    return value


def check_trait_name(name: str) -> list[str]:
    """The two folder names of a trait `CATEGORY/NAME`; anything that could leave the
    dataset or outputs root (`..`, an absolute path) is one clear error."""
    if isinstance(name, str) and name.startswith(("/", "~")):
        raise SteeropsError(f"trait {name!r}: an absolute path, expected CATEGORY/NAME")
    parts = name.removesuffix("/").split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(parts):
        raise SteeropsError(f"trait {name!r}: expected CATEGORY/NAME (e.g. toy/refusal)")
    for part in parts:
        check_folder_name(part, f"trait {name!r}")
    return parts
