"""Steering results on disk, as `steerops steer` writes them (and each search, in its own
folder) and the search and the report read them.

    <out>/steering/<cat>/<trait>/<variant>/baselines.jsonl    unsteered results per settings
    <out>/steering/<cat>/<trait>/<variant>/<position>/<component>/<method>/
        results.jsonl   append-only log of baseline and config entries
        results.csv     this sweep's configs, tidy (one row per config)
        metrics.json    the best config at the coherence threshold (DVC metric)
        curve.png       trait and coherence vs coefficient per layer
        responses/      baseline.json and L<layer>_c<coefficient>.json

`results.jsonl` holds one `{"type": "baseline", settings_hash, settings, result}` entry per
settings and one `{"type": "config", settings_hash, config: {coefficient, vectors: [{layer,
component, position, method, weight}]}, vector_files, result: {trait_mean, coherence_mean,
trait_delta, n, n_unscored}}` entry per evaluated config. Entries are only ever added (the
whole file is rewritten atomically), and a config is served from the log only when its
settings hash, its config (coefficient and weights) and the md5 of the vector files it used
all match.
"""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import atomic_path, iter_jsonl, read_json, write_json, write_jsonl
from steerops.paths import cell_dir
from steerops.steering.configs import Config, ConfigResult, VectorRef

RESULTS_FILE = "results.jsonl"
BASELINES_FILE = "baselines.jsonl"
CSV_FILE = "results.csv"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.png"
RESPONSES_DIR = "responses"
CSV_COLUMNS = (
    "trait variant vector_variant method position component layer coefficient weight "
    "trait_mean coherence_mean trait_delta n n_unscored"
).split()


# steering_dir(out, trait, variant, position, component, method)
steering_dir = partial(cell_dir, "steering")


def results_file(out: Path, trait: str, variant: str, ref: VectorRef) -> Path:
    """The results log of a config whose (first) vector is `ref`."""
    return steering_dir(out, trait, variant, ref.position, ref.component, ref.method) / RESULTS_FILE


def baselines_file(out: Path, trait: str, variant: str) -> Path:
    return Path(out) / "steering" / trait / variant / BASELINES_FILE


# ---- the results log ------------------------------------------------------------------------


def config_dict(config: Config, weights: tuple[float, ...]) -> dict[str, Any]:
    return {
        "coefficient": config.coefficient,
        "vectors": [
            {
                "layer": v.layer,
                "component": v.component,
                "position": v.position,
                "method": v.method,
                "weight": w,
            }
            for v, w in zip(config.vectors, weights, strict=True)
        ],
    }


def entry_key(config: dict[str, Any]) -> str:
    """A logged config's identity: its coefficient and its vectors with their weights."""
    vectors = [
        {
            "layer": int(v["layer"]),
            "component": v["component"],
            "position": v["position"],
            "method": v["method"],
            "weight": float(v["weight"]),
        }
        for v in config["vectors"]
    ]
    return json.dumps(
        {"coefficient": config.get("coefficient"), "vectors": vectors}, sort_keys=True
    )


def config_key(config: Config, weights: tuple[float, ...]) -> str:
    return entry_key(config_dict(config, weights))


def result_dict(result: ConfigResult) -> dict[str, Any]:
    return {
        "trait_mean": result.trait_mean,
        "coherence_mean": result.coherence_mean,
        "trait_delta": result.trait_delta,
        "n": result.n,
        "n_unscored": result.n_unscored,
    }


class ResultsLog:
    """An append-only JSONL of baseline and config entries."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []
        if self.path.exists():
            self.entries = _read_entries(self.path)

    def baseline(self, settings_hash: str) -> dict[str, Any] | None:
        return next(
            (
                e
                for e in reversed(self.entries)
                if e["type"] == "baseline" and e.get("settings_hash") == settings_hash
            ),
            None,
        )

    def find(
        self, settings_hash: str, key: str, vector_files: dict[str, str]
    ) -> dict[str, Any] | None:
        """The latest entry of the config with `config_key` `key`, evaluated under these
        settings with these vector files."""
        for e in reversed(self.entries):
            if (
                e["type"] == "config"
                and e.get("settings_hash") == settings_hash
                and e.get("vector_files") == vector_files
                and entry_key(e["config"]) == key
            ):
                return e
        return None

    def configs(self, settings_hash: str) -> list[dict[str, Any]]:
        """The latest entry of each config evaluated under these settings, in first-seen order."""
        latest: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            if e["type"] == "config" and e.get("settings_hash") == settings_hash:
                latest[entry_key(e["config"])] = e
        return list(latest.values())

    def append(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            write_jsonl(self.path, self.entries + entries)
            self.entries = self.entries + entries


def _read_entries(path: Path) -> list[dict[str, Any]]:
    entries = []
    for lineno, entry in iter_jsonl(path):
        if (
            not isinstance(entry, dict)
            or entry.get("type") not in ("baseline", "config")
            or not isinstance(entry.get("result"), dict)
            or (entry["type"] == "config" and not isinstance(entry.get("config"), dict))
        ):
            raise SteeropsError(
                f"{path}:{lineno}: not a steering result entry "
                "(needs type baseline|config, result, and config for configs)"
            )
        entries.append(entry)
    return entries


# ---- a sweep's files ------------------------------------------------------------------------


def joined(values: list[Any]) -> Any:
    """One value, or a multi-vector config's values joined with '+'."""
    return values[0] if len(set(values)) == 1 else "+".join(map(str, values))


def tidy_row(result: ConfigResult, labels: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a config result; multi-vector configs join their fields with '+'."""
    assert result.config is not None, "the baseline has no row"
    refs = result.config.vectors
    row = dict(labels)
    row.update(
        method=joined([r.method for r in refs]),
        position=joined([r.position for r in refs]),
        component=joined([r.component for r in refs]),
        layer=joined([r.layer for r in refs]),
        coefficient=result.config.coefficient,
        weight=joined(list(result.weights)),
    )
    row.update(result_dict(result))
    return row


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def save_responses(
    folder: Path,
    policy: str,
    settings_hash: str,
    baseline: ConfigResult,
    results: list[ConfigResult],
    rows: list[dict],
    best: dict,
) -> list[Path]:
    """Write response files for `policy`; with `best`, drop config files of other configs.

    A cached config's responses are not kept in the results log, so a best config served
    from cache keeps the file an earlier run wrote for it (when one exists)."""
    if policy == "none":
        return []
    keep = list(zip(results, rows, strict=True))
    if policy == "best":
        chosen = {id(row) for row in best.values()}
        keep = [(r, row) for r, row in keep if id(row) in chosen]
    saved = []
    if baseline.responses:
        write_json(
            folder / "baseline.json",
            {
                "settings_hash": settings_hash,
                "result": result_dict(baseline),
                "responses": baseline.responses,
            },
        )
    if (folder / "baseline.json").exists():
        saved.append(folder / "baseline.json")
    for result, row in keep:
        path = folder / f"L{row['layer']}_c{row['coefficient']:g}.json"
        if result.responses:
            assert result.config is not None
            write_json(
                path,
                {
                    "settings_hash": settings_hash,
                    "config": config_dict(result.config, result.weights),
                    "result": result_dict(result),
                    "responses": result.responses,
                },
            )
        elif not (path.exists() and read_json(path).get("settings_hash") == settings_hash):
            print(
                f"note: no responses for {path.stem}: an earlier run evaluated it "
                "without keeping them"
            )
            continue
        saved.append(path)
    if policy == "best" and folder.is_dir():
        for stale in set(folder.glob("L*_c*.json")) - set(saved):
            stale.unlink()
    return saved
