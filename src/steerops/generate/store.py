"""Responses on disk, as `steerops generate` writes them and `steerops extract` reads them.

    <out>/responses/<cat>/<trait>/<variant>/responses.jsonl   one row per completion
    <out>/responses/<cat>/<trait>/<variant>/summary.json      settings hashes, counts, timing

A row is `{index, polarity, source_index, rollout, system_prompt, prompt, response, kept,
trait, coherence}` (`kept` after vetting; scores null when not vetted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import iter_jsonl, read_json, read_jsonl, write_json, write_jsonl
from steerops.traits import POLARITIES

RESPONSES_FILE = "responses.jsonl"
SUMMARY_FILE = "summary.json"


def responses_dir(out: Path, trait: str, variant: str) -> Path:
    return Path(out) / "responses" / trait / variant


def responses_file(out: Path, trait: str, variant: str) -> Path:
    return responses_dir(out, trait, variant) / RESPONSES_FILE


def write_responses(folder: Path, rows: list[dict], summary: dict[str, Any]) -> None:
    """The rows, then the summary that says they are complete."""
    write_jsonl(folder / RESPONSES_FILE, rows)
    write_json(folder / SUMMARY_FILE, summary)


def read_rows(folder: Path) -> list[dict]:
    return read_jsonl(folder / RESPONSES_FILE)


def previous_summary(folder: Path) -> dict | None:
    """The summary of a finished earlier run in `folder`, if any."""
    summary_file, rows_file = folder / SUMMARY_FILE, folder / RESPONSES_FILE
    if not (summary_file.is_file() and rows_file.is_file()):
        return None
    try:
        old = read_json(summary_file)
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) and "generation_hash" in old else None


def load_kept_responses(path: Path, trait: str, variant: str) -> list[dict]:
    """Rows of a responses file that passed vetting; a clear error when it is missing."""
    if not path.is_file():
        raise SteeropsError(
            f"responses not found: {path} (response positions need "
            f"completions: run `steerops generate --trait {trait}` with "
            f"generate.variant={variant} first)"
        )
    rows = []
    for lineno, row in iter_jsonl(path):
        missing = [
            k
            for k in ("polarity", "source_index", "prompt", "response")
            if not isinstance(row, dict) or k not in row
        ]
        if missing:
            raise SteeropsError(f"{path}:{lineno}: missing key {missing[0]!r}")
        if row["polarity"] not in POLARITIES:
            raise SteeropsError(
                f"{path}:{lineno}: polarity must be positive or negative (got {row['polarity']!r})"
            )
        if row.get("kept", True):
            rows.append(row)
    if not rows:
        raise SteeropsError(f"{path}: no kept responses to extract from")
    return rows
