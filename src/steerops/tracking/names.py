"""One naming scheme for what every stage logs to MLflow.

Params are settings (what was asked), metrics are measurements (what came out), tags say
where a run belongs (stage, trait, method, lineage). Every value goes through `text`: no
Python reprs of lists, no 'None' strings (a missing value is not logged), booleans as
true/false, numbers without float noise, paths relative to the project when inside it.
Names pass through `canonical`, so a stage that says `model` still lands in the shared
column (`model_id`), and a metric called `coherence` or `best_coherence` is the mean it is
(`coherence_mean`, `best_coherence_mean`), as `trait_mean` is.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# spelled differently by different stages once; the right-hand names are the ones kept
ALIASES = {"model": "model_id", "revision": "model_revision"}
MEANS = ("trait", "coherence")  # scores a metric reports as means over responses
MAX_PARAM = 6000  # MLflow's limit on a param value
MAX_TAG = 8000
MAX_KEY = 250  # MLflow's limit on a param, metric or tag name
_BAD_KEY_CHARACTERS = re.compile(r"[^/\w.\- ]")  # MLflow's key characters (as on Windows)


def canonical(name: str, metric: bool = False) -> str:
    head, dot, last = name.rpartition(".")
    last = ALIASES.get(last, last)
    if metric and any(last == m or last.endswith("_" + m) for m in MEANS):
        last += "_mean"
    return key(head + dot + last)


def key(name: str) -> str:
    """A name MLflow takes as a key: its characters (letters, digits, `_ - . / ` and space;
    any other, such as a trait name's `+`, becomes `_`), its length, and a path that
    resolves to itself. A key MLflow refuses fails the run's whole batch."""
    out = _BAD_KEY_CHARACTERS.sub("_", name)[:MAX_KEY]
    if _resolves_to_itself(out):
        return out
    out = out.replace("/", "_")
    return out if _resolves_to_itself(out) else "_" + out[1:]


def _resolves_to_itself(name: str) -> bool:
    norm = posixpath.normpath(name)
    return norm == name and norm != "." and not norm.startswith(("..", "/"))


def text(value: Any, root: Path | None = None, limit: int = MAX_PARAM) -> str | None:
    """A param or tag value as MLflow shows it; None when there is nothing to log."""
    if value is None:
        return None
    if isinstance(value, bool):
        out = "true" if value else "false"
    elif isinstance(value, float):
        out = number(value)
    elif isinstance(value, Path):
        out = relative(value, root)
    elif isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        parts = [text(v, root, limit) for v in items]
        out = ",".join(p for p in parts if p is not None)
    elif isinstance(value, Mapping):
        out = json.dumps(value, sort_keys=True, default=str)
    else:
        out = str(value)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.10g}"


def metric(value: Any) -> float | None:
    """A finite float, or None (not logged)."""
    if value is None or isinstance(value, str):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted names (`vectors.seed`)."""
    out: dict[str, Any] = {}
    for part, value in values.items():
        name = f"{prefix}{part}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def params(values: Mapping[str, Any], root: Path | None = None) -> dict[str, str]:
    """Flat, canonical, printable params (missing values dropped)."""
    out = {}
    for name, value in flatten(values).items():
        shown = text(value, root)
        if shown is not None:
            out[canonical(name)] = shown
    return out


def tags(values: Mapping[str, Any], root: Path | None = None) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        shown = text(value, root, MAX_TAG)
        if shown is not None:
            out[key(name)] = shown
    return out


def metrics(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in flatten(values).items():
        number_ = metric(value)
        if number_ is not None:
            out[canonical(name, metric=True)] = number_
    return out


def relative(path: str | Path, root: Path | None) -> str:
    """`path` relative to `root` (posix) when it lies inside it, else absolute."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix() or "."
        except ValueError:
            pass
    return str(path)
