"""The steering results contract: configs, the append-only results log and the tidy table.

`results.jsonl` holds one `{"type": "baseline", settings_hash, settings, result}` entry per
settings and one `{"type": "config", settings_hash, config: {coefficient, vectors: [{layer,
component, position, method, weight}]}, vector_files, result: {trait_mean, coherence_mean,
trait_delta, n, n_unscored}}` entry per evaluated config. Entries are only ever added (the
whole file is rewritten atomically), and a config is served from the log only when its
settings hash, its config and the md5 of the vector files it used all match.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import atomic_path, iter_jsonl, text_md5, write_jsonl

RESULTS_FILE = "results.jsonl"
CSV_FILE = "results.csv"
CSV_COLUMNS = ["trait", "variant", "vector_variant", "method", "position", "component", "layer",
               "coefficient", "weight", "trait_mean", "coherence_mean", "trait_delta", "n",
               "n_unscored"]


@dataclass(frozen=True)
class VectorRef:
    layer: int
    component: str
    position: str
    method: str
    weight: float  # absolute weight on the unit vector (sign included)


@dataclass(frozen=True)
class ConfigSpec:
    vectors: tuple[VectorRef, ...]
    coefficient: float | None = None  # as the user gave it (see steering.coefficient_unit)


@dataclass
class ConfigResult:
    config: ConfigSpec | None  # None for the baseline
    trait_mean: float | None
    coherence_mean: float | None
    n: int
    responses: list[dict]  # [{question, response, trait, coherence}]; empty when cached
    n_unscored: int = 0  # responses the judge could not score (excluded from the means)
    trait_delta: float | None = None
    cached: bool = False  # served from the results log


def settings_hash(settings: dict[str, Any]) -> str:
    return text_md5(json.dumps(settings, sort_keys=True))[:16]


def config_dict(config: ConfigSpec) -> dict[str, Any]:
    return {"coefficient": config.coefficient,
            "vectors": [{"layer": v.layer, "component": v.component, "position": v.position,
                         "method": v.method, "weight": v.weight} for v in config.vectors]}


def config_from_dict(data: dict[str, Any]) -> ConfigSpec:
    refs = tuple(VectorRef(int(v["layer"]), v["component"], v["position"], v["method"],
                           float(v["weight"])) for v in data["vectors"])
    return ConfigSpec(refs, data.get("coefficient"))


def config_key(config: ConfigSpec) -> str:
    return json.dumps(config_dict(config), sort_keys=True)


def summarize(scores: list[tuple[float | None, float | None]]) -> dict[str, Any]:
    """Means over scored responses; unscorable ones (None) are counted, not averaged."""
    traits = [t for t, _ in scores if t is not None]
    coherences = [c for _, c in scores if c is not None]
    return {"trait_mean": sum(traits) / len(traits) if traits else None,
            "coherence_mean": sum(coherences) / len(coherences) if coherences else None,
            "n": len(scores),
            "n_unscored": sum(t is None or c is None for t, c in scores)}


class ResultsLog:
    """An append-only JSONL of baseline and config entries."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []
        if self.path.exists():
            self.entries = _read_entries(self.path)

    def baseline(self, settings_hash: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.entries) if e["type"] == "baseline"
                     and e.get("settings_hash") == settings_hash), None)

    def find(self, settings_hash: str, config: ConfigSpec,
             vector_files: dict[str, str]) -> dict[str, Any] | None:
        key = config_key(config)
        for e in reversed(self.entries):
            if (e["type"] == "config" and e.get("settings_hash") == settings_hash
                    and e.get("vector_files") == vector_files
                    and config_key(config_from_dict(e["config"])) == key):
                return e
        return None

    def configs(self, settings_hash: str) -> list[dict[str, Any]]:
        """The latest entry of each config evaluated under these settings, in first-seen order."""
        latest: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            if e["type"] == "config" and e.get("settings_hash") == settings_hash:
                latest[config_key(config_from_dict(e["config"]))] = e
        return list(latest.values())

    def append(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            write_jsonl(self.path, self.entries + entries)
            self.entries = self.entries + entries


def _read_entries(path: Path) -> list[dict[str, Any]]:
    entries = []
    for lineno, entry in iter_jsonl(path):
        if not isinstance(entry, dict) or entry.get("type") not in ("baseline", "config") \
                or not isinstance(entry.get("result"), dict) \
                or (entry["type"] == "config" and not isinstance(entry.get("config"), dict)):
            raise SteeropsError(f"{path}:{lineno}: not a steering result entry "
                                "(needs type baseline|config, result, and config for configs)")
        entries.append(entry)
    return entries


def _joined(refs: tuple[VectorRef, ...], attr: str) -> Any:
    values = [getattr(r, attr) for r in refs]
    return values[0] if len(set(values)) == 1 else "+".join(map(str, values))


def tidy_row(entry: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a config entry; multi-vector configs join their fields with '+'."""
    config = config_from_dict(entry["config"])
    refs = config.vectors
    row = dict(labels)
    row.update(method=_joined(refs, "method"), position=_joined(refs, "position"),
               component=_joined(refs, "component"), layer=_joined(refs, "layer"),
               coefficient=config.coefficient, weight=_joined(refs, "weight"))
    result = entry["result"]
    row.update({k: result.get(k) for k in ("trait_mean", "coherence_mean", "trait_delta", "n",
                                           "n_unscored")})
    return row


def run_params(config: ConfigSpec) -> dict[str, Any]:
    """A config as flat MLflow params (multi-vector configs join fields with '+')."""
    refs = config.vectors
    return {"method": _joined(refs, "method"), "position": _joined(refs, "position"),
            "component": _joined(refs, "component"), "layer": _joined(refs, "layer"),
            "coefficient": config.coefficient,
            "weight": "+".join(f"{r.weight:.6g}" for r in refs)}


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _rank(row: dict[str, Any], direction: str) -> tuple[float, float]:
    # Trait moved in `direction` first; among equals, the more coherent config.
    sign = 1.0 if direction == "positive" else -1.0
    return sign * row["trait_delta"], row["coherence_mean"]


def best_per_layer(rows: list[dict[str, Any]], min_coherence: float,
                   direction: str = "positive") -> dict[Any, dict[str, Any]]:
    """Per layer, the row moving the trait most in `direction` at coherence >= the threshold."""
    best: dict[Any, dict[str, Any]] = {}
    for row in rows:
        delta, coherence = row.get("trait_delta"), row.get("coherence_mean")
        if delta is None or coherence is None or coherence < min_coherence:
            continue
        current = best.get(row["layer"])
        if current is None or _rank(row, direction) > _rank(current, direction):
            best[row["layer"]] = row
    return best


def metrics_summary(rows: list[dict[str, Any]], baseline: dict[str, Any],
                    min_coherence: float, direction: str = "positive") -> dict[str, Any]:
    """The DVC metrics: the best config over all layers and the baseline it is measured from."""
    candidates = list(best_per_layer(rows, min_coherence, direction).values())
    top = max(candidates, key=lambda r: _rank(r, direction), default=None)
    summary: dict[str, Any] = {
        "baseline_trait": baseline.get("trait_mean"),
        "baseline_coherence": baseline.get("coherence_mean"),
        "min_coherence": min_coherence, "n_configs": len(rows),
        "n_feasible": sum(r.get("coherence_mean") is not None
                          and r["coherence_mean"] >= min_coherence for r in rows),
        "best_trait_delta": None, "best_trait_mean": None, "best_coherence": None,
        "best_layer": None, "best_coefficient": None, "best_weight": None,
    }
    if top is not None:
        summary.update(best_trait_delta=top["trait_delta"], best_trait_mean=top["trait_mean"],
                       best_coherence=top["coherence_mean"], best_layer=top["layer"],
                       best_coefficient=top["coefficient"], best_weight=top["weight"])
    return summary
