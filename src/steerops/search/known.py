"""Known results: configs already evaluated under the same settings become study trials.

They come from a steering results log (`results.jsonl`, the steer stage's contract). Only
single-vector configs of the searched vector source, on a searched layer, evaluated under the
search evaluator's settings hash (same model, questions, generation and judge settings) and
with the same vector files are comparable; everything else is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steerops.errors import SteeropsError


@dataclass(frozen=True)
class KnownResult:
    layer: int
    coefficient: float
    weight: float
    trait_mean: float
    coherence_mean: float
    n: int


def load_known(
    path: Path,
    settings_hash: str,
    method: str,
    position: str,
    component: str,
    layers: list[int],
    vector_files: dict[str, str] | None = None,
    required: bool = False,
) -> list[KnownResult]:
    """The comparable results in a results log (none if it does not exist, unless required)."""
    from steerops.steering.store import ResultsLog

    path = Path(path)
    if not path.is_file():
        if required:
            raise SteeropsError(f"search.known_results: file not found: {path}")
        return []
    found = []
    for entry in ResultsLog(path).configs(settings_hash):
        config, result = entry.get("config") or {}, entry.get("result") or {}
        vectors = config.get("vectors") or []
        if len(vectors) != 1 or config.get("coefficient") is None:
            continue
        vec = vectors[0]
        if (vec.get("method"), vec.get("position"), vec.get("component")) != (
            method,
            position,
            component,
        ) or vec.get("layer") not in layers:
            continue
        if vector_files is not None and entry.get("vector_files") != vector_files:
            continue  # evaluated with other vector files (re-extracted since)
        if result.get("trait_mean") is None or result.get("coherence_mean") is None:
            continue
        found.append(
            KnownResult(
                int(vec["layer"]),
                float(config["coefficient"]),
                float(vec["weight"]),
                float(result["trait_mean"]),
                float(result["coherence_mean"]),
                int(result.get("n", 0)),
            )
        )
    return found
