"""The configs a cell's latest sweep asked for: the grid its files, its choice and the
search's known trials cover.

A cell's results log keeps every config ever evaluated in it (the cache that serves a config
asked again). Its files (`results.csv`, `metrics.json`, the curve) and the report cover only
the configs of the latest sweep, recorded in `sweep.json` beside the log, so the cell's
numbers are a function of the params that ran it: a DVC experiment on other coefficients
does not change the choice of one run after it on the first grid. A coefficient of an
earlier sweep is kept by listing it again (served from the log, not generated).

    sweep.json  {"settings_hash": ..., "configs": [{coefficient, vectors: [{layer, component,
                position, method, weight}]}, ...]}

A cell without the file (written by an older steerops) covers every config logged under
its settings, as it did; so does one whose file names other settings, where the caller gives
the settings (the report). The search reads the record whatever its settings: it takes the
configs it names that were scored under the search's own scope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import read_json, text_md5, write_json
from steerops.steering.store import entry_key

SWEEP_FILE = "sweep.json"


def write_sweep(folder: Path, settings_hash: str, configs: list[dict[str, Any]]) -> set[str]:
    """Record `configs` (logged config dicts) as the cell's latest sweep; returns their keys
    (`store.entry_key`), as `sweep_keys` reads them back."""
    by_key = {entry_key(c): c for c in configs}
    write_json(
        Path(folder) / SWEEP_FILE,
        {"settings_hash": settings_hash, "configs": [by_key[k] for k in sorted(by_key)]},
    )
    return set(by_key)


def sweep_digest(keys: set[str]) -> str:
    """A short digest of a sweep's config keys: the cell's metrics.json records the one it
    was written for, so a run stopped between the two files is caught, not read."""
    return text_md5("\n".join(sorted(keys)))[:12]


def sweep_keys(folder: Path, settings_hash: str | None = None) -> set[str] | None:
    """The config keys (`store.entry_key`) of the cell's latest sweep (under `settings_hash`
    when given); None where the cell records none (every logged config counts)."""
    path = Path(folder) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        recorded = read_json(path)
        if settings_hash is not None and recorded.get("settings_hash") != settings_hash:
            return None
        return {entry_key(c) for c in recorded["configs"]}
    except (SteeropsError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SteeropsError(
            f"{path}: not a sweep record ({exc}); run `steerops steer` on the cell to write "
            "it again"
        ) from exc
