"""Where every stage reads and writes its artifacts, in one place.

    <out>/responses/<cat>/<trait>/<variant>/responses.jsonl
    <out>/activations/<cat>/<trait>/<variant>/<position>/<component>/
    <out>/tasks/<tasks>/<variant>/<position>/<component>/<condition>/
    <out>/vectors/<cat>/<trait>/<variant>/<position>/<component>/<method>/
    <out>/calibration/<variant>/calibration.json
    <out>/steering/<cat>/<trait>/<variant>/<position>/<component>/<method>/
    <out>/search/<cat>/<trait>/<variant>/<position>/<component>/<method>/
"""

from __future__ import annotations

import re
from pathlib import Path


def position_slug(position: str) -> str:
    """A filesystem-safe, readable name for a position spec: `response[:5]` -> `response_to5`."""
    slug = position.replace(" ", "").replace("]", "").replace("[", "_")
    slug = slug.replace(":", "to").replace("-", "m")
    return re.sub(r"[^A-Za-z0-9_.]", "_", slug)


def responses_dir(out: Path, trait: str, variant: str) -> Path:
    return Path(out) / "responses" / trait / variant


def activations_dir(out: Path, trait: str, variant: str, position: str,
                    component: str = "residual") -> Path:
    return Path(out) / "activations" / trait / variant / position_slug(position) / component


def task_activations_dir(out: Path, tasks: str, variant: str, position: str, component: str,
                         condition: str) -> Path:
    return (Path(out) / "tasks" / tasks / variant / position_slug(position) / component
            / condition)


def vectors_dir(out: Path, trait: str, variant: str, position: str, component: str,
                method: str) -> Path:
    return (Path(out) / "vectors" / trait / variant / position_slug(position) / component
            / method)


def calibration_file(out: Path, variant: str) -> Path:
    return Path(out) / "calibration" / variant / "calibration.json"


def steering_dir(out: Path, trait: str, variant: str, position: str, component: str,
                 method: str) -> Path:
    return (Path(out) / "steering" / trait / variant / position_slug(position) / component
            / method)


def search_dir(out: Path, trait: str, variant: str, position: str, component: str,
               method: str) -> Path:
    return (Path(out) / "search" / trait / variant / position_slug(position) / component
            / method)
