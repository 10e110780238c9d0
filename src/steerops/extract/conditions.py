"""The conditions file of task-set extraction and the OOD analysis: a baseline system-prompt
policy plus conditions, each a system prompt with the labels `probe ood` groups by.

    {"baseline": {"id": "baseline", "system_prompt": null},
     "conditions": [{"id": "A1", "system_prompt": "...", "target": "t1", "version": "v1",
                     "role": "A"}, ...]}

`system_prompt: null` keeps each task's own system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import read_json


@dataclass(frozen=True)
class OodCondition:
    id: str
    system_prompt: str | None
    target: str | None = None
    version: str = "v1"
    role: str | None = None


def read_conditions(path: Path) -> tuple[OodCondition, list[OodCondition]]:
    """The OOD conditions file -> (baseline, conditions). The baseline must say its system
    prompt explicitly (`null` = keep each task's own), so the policy is never implicit."""
    path = Path(path)
    if not path.is_file():
        raise SteeropsError(f"file not found: {path}")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("baseline"), dict):
        raise SteeropsError(f"{path}: missing key 'baseline' (an object with id, system_prompt)")
    base = data["baseline"]
    if "system_prompt" not in base:
        raise SteeropsError(
            f"{path}: baseline.system_prompt: required (null keeps each task's own system prompt)"
        )
    if base["system_prompt"] is not None and not isinstance(base["system_prompt"], str):
        raise SteeropsError(f"{path}: baseline.system_prompt: must be a string or null")
    baseline = OodCondition(str(base.get("id", "baseline")), base["system_prompt"])
    conditions, seen = [], {baseline.id}
    for i, row in enumerate(data.get("conditions") or []):
        where = f"{path}: conditions[{i}]"
        if not isinstance(row, dict):
            raise SteeropsError(f"{where}: expected an object")
        for key in ("id", "system_prompt"):
            if key not in row:
                raise SteeropsError(f"{where}.{key}: required")
        cid = str(row["id"])
        if cid in seen:
            raise SteeropsError(f"{where}.id: duplicate condition id {cid!r}")
        seen.add(cid)
        prompt = row["system_prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise SteeropsError(f"{where}.system_prompt: must be a string or null")
        conditions.append(
            OodCondition(
                cid,
                prompt,
                None if row.get("target") is None else str(row["target"]),
                str(row.get("version", "v1")),
                None if row.get("role") is None else str(row["role"]),
            )
        )
    if not conditions:
        raise SteeropsError(f"{path}: conditions: empty")
    return baseline, conditions
