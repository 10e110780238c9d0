"""Readers (validated, one-line errors) and writers for the probe stage's small inputs:
scores CSV, pairwise comparisons JSONL, confounds CSV, behavioural rates CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import file_md5, iter_jsonl, read_json, read_text, write_text


def param_file(params, value: str | None, key: str) -> Path | None:
    """The file param `key` names with `value` (None: it is unset); one that is missing is
    an error. The caller reads the param itself, so each stage's reads stay visible."""
    path = params.path(value) if value else None
    if path is not None and not path.is_file():
        raise SteeropsError(f"{key}: file not found: {path}")
    return path


def _open_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise SteeropsError(f"file not found: {path}")
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    header = reader.fieldnames or []
    for col in required:
        if col not in header:
            raise SteeropsError(f"{path}: missing column {col!r} (header: {header})")
    return list(reader)


def _number(path: Path, line: int, col: str, text: str | None) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise SteeropsError(f"{path}:{line}: column {col!r} is not a finite number ({text!r})")
    return value


def _check_whole(path: Path) -> None:
    """Warn of a file whose last line has no newline: a file written whole usually ends with
    one, and one cut short mid-write (a copy, a full disk) can end in a truncated number
    that still parses (0.7108 cut to 0.7). Hand-written files often lack it, so only said."""
    path = Path(path)
    if not path.is_file():
        return  # `_open_csv` names the missing file
    data = path.read_bytes().rstrip(b" \t")
    if data.strip() and not data.endswith((b"\n", b"\r")):
        print(
            f"warning: {path}:{len(data.splitlines())}: the last line has no newline; if the "
            "file was cut short, its last value may be truncated",
            file=sys.stderr,
        )


def read_scores(path: Path) -> dict[str, tuple[float, float | None]]:
    """`task_id,mu[,sigma]` -> {task_id: (mu, sigma or None)}; a last line without a
    newline is warned of (`_check_whole`)."""
    _check_whole(path)
    rows = _open_csv(path, ["task_id", "mu"])
    scores: dict[str, tuple[float, float | None]] = {}
    for line, row in enumerate(rows, start=2):
        task = (row["task_id"] or "").strip()
        if not task:
            raise SteeropsError(f"{path}:{line}: empty task_id")
        if task in scores:
            raise SteeropsError(f"{path}:{line}: duplicate task_id {task!r}")
        sigma = row.get("sigma")
        scores[task] = (
            _number(path, line, "mu", row["mu"]),
            _number(path, line, "sigma", sigma) if sigma not in (None, "") else None,
        )
    if not scores:
        raise SteeropsError(f"{path}: no scores")
    return scores


def scores_text(scores: dict[str, tuple[float, float]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task_id", "mu", "sigma"])
    for task in sorted(scores):
        mu, sigma = scores[task]
        writer.writerow([task, f"{mu:.6g}", f"{sigma:.6g}"])
    return buf.getvalue()


def write_scores(path: Path, scores: dict[str, tuple[float, float]]) -> None:
    write_text(path, scores_text(scores))


def fit_summary_path(scores: Path) -> Path:
    """The `.fit.json` that `probe thurstonian` writes beside its scores CSV."""
    return Path(scores).with_suffix(".fit.json")


def scores_of_other_comparisons(scores: Path, comparisons: Path) -> str | None:
    """Why `scores` were not fitted from `comparisons` as they are now (its `.fit.json`
    records the MD5 of those it was fitted from), or None (the same, or no record)."""
    try:
        recorded = read_json(fit_summary_path(scores)).get("comparisons_md5")
    except (OSError, ValueError, AttributeError, SteeropsError):
        return None
    if recorded is None or recorded == file_md5(comparisons):
        return None
    return f"{scores} were fitted from other comparisons than {comparisons} holds now"


def fit_ceiling(scores: Path) -> dict | None:
    """The noise ceiling `probe thurstonian` recorded for `scores` (its `.fit.json`'s
    `split_half`), or None: hand-made scores, a fit written before it was kept, or a
    summary of other scores than the file holds."""
    if scores_out_of_step(scores) is not None:
        return None
    try:
        halves = read_json(fit_summary_path(scores)).get("split_half")
    except (OSError, ValueError, AttributeError, SteeropsError):
        return None
    return halves if isinstance(halves, dict) else None


def scores_out_of_step(scores: Path) -> str | None:
    """Why a scores CSV is not the one its `.fit.json` describes, or None. The summary is
    written first and records the scores' MD5, so a fit interrupted between the two writes
    leaves a mismatch here rather than a summary of other scores."""
    summary = fit_summary_path(scores)
    if not summary.is_file() or not Path(scores).is_file():
        return None
    try:
        recorded = json.loads(summary.read_text(encoding="utf-8")).get("scores_md5")
    except (ValueError, AttributeError):
        return f"{summary} is unreadable"
    if recorded is None or recorded == file_md5(scores):  # no MD5: written before it was kept
        return None
    return f"{scores} is not the fit {summary} describes (an interrupted `probe thurstonian`?)"


def read_comparisons(path: Path) -> list[tuple[str, str, str]]:
    """JSONL rows `{task_a, task_b, winner}` -> [(a, b, winner)]; winner is a or b."""
    path = Path(path)
    if not path.is_file():
        raise SteeropsError(f"file not found: {path}")
    out = []
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise SteeropsError(f"{path}:{line_no}: expected a JSON object")
        missing = [k for k in ("task_a", "task_b", "winner") if k not in row]
        if missing:
            raise SteeropsError(f"{path}:{line_no}: missing key {missing[0]!r}")
        for key in ("task_a", "task_b", "winner"):
            # an empty id (or null, which str() would make the id "None") names no task
            if row[key] is None or not str(row[key]).strip():
                raise SteeropsError(f"{path}:{line_no}: empty {key} ({row[key]!r})")
            # 1 and 1.0 would be two tasks, ["a"] the task "['a']": none matches a task id
            if isinstance(row[key], bool) or not isinstance(row[key], str | int):
                raise SteeropsError(
                    f"{path}:{line_no}: {key} must be a string (a task id), got {row[key]!r}"
                )
        a, b, w = str(row["task_a"]), str(row["task_b"]), str(row["winner"])
        if w not in (a, b):
            raise SteeropsError(f"{path}:{line_no}: winner {w!r} is neither task_a nor task_b")
        if a == b:
            raise SteeropsError(f"{path}:{line_no}: task {a!r} compared with itself")
        out.append((a, b, w))
    if not out:
        raise SteeropsError(f"{path}: no comparisons")
    return out


def unknown_tasks(comparisons: list[tuple[str, str, str]], known: set[str]) -> dict[str, int]:
    """{task id not in `known`: how many comparisons name it}, in first-seen order."""
    unknown: dict[str, int] = {}
    for a, b, _ in comparisons:
        for task in (a, b):
            if task not in known:
                unknown[task] = unknown.get(task, 0) + 1
    return unknown


def read_groups(path: Path, field: str, tasks: set[str]) -> dict[str, str]:
    """{task_id: its value of `field`} over `tasks` in the task set JSONL at `path` (every
    one must have a string or number there): what `probes.group_by` keeps on one side of
    every split."""
    groups: dict[str, str] = {}
    missing: list[str] = []
    for lineno, row in iter_jsonl(path):
        task = str(row.get("task_id")) if isinstance(row, dict) else None
        if task not in tasks:
            continue
        value = row.get(field)
        if value is None or value == "":
            missing.append(task)
            continue
        label = _group_label(value)
        if label is None:
            raise SteeropsError(
                f"{path}:{lineno}: {field}: {value!r} is no group label (probes.group_by "
                "needs a string or a finite number)"
            )
        groups[task] = label
    if missing:
        raise SteeropsError(
            f"probes.group_by {field!r}: {len(missing)} of the {len(tasks)} scored tasks in "
            f"{path} have no {field!r} (e.g. {sorted(missing)[0]!r}); every task needs a group"
        )
    return groups


def _group_label(value) -> str | None:
    """A group's label as text, one for each number (1 and 1.0 alike); None for a value
    that is no label (a list, a boolean, NaN)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def read_confounds(path: Path) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """`task_id,<categorical columns...>` -> ({task_id: values}, column names)."""
    rows = _open_csv(path, ["task_id"])
    columns = [c for c in (list(rows[0]) if rows else []) if c != "task_id"]
    if not columns:
        raise SteeropsError(f"{path}: no confound columns besides task_id")
    out: dict[str, tuple[str, ...]] = {}
    for line, row in enumerate(rows, start=2):
        task = (row["task_id"] or "").strip()
        if not task:
            raise SteeropsError(f"{path}:{line}: empty task_id")
        if task in out:
            raise SteeropsError(f"{path}:{line}: duplicate task_id {task!r}")
        out[task] = tuple((row.get(c) or "").strip() for c in columns)
    return out, columns


def _rate(path: Path, line: int, text: str | None) -> float:
    """A behavioural rate: a share of responses, so a finite number in [0, 1]."""
    value = _number(path, line, "rate", text)
    if not 0.0 <= value <= 1.0:
        raise SteeropsError(f"{path}:{line}: rate {text!r} is outside [0, 1]")
    return value


def read_rates(path: Path) -> dict[str, dict[str, float]]:
    """`condition_id,task_id,rate` -> {condition_id: {task_id: rate}}; rates in [0, 1]; a
    last line without a newline is warned of (`_check_whole`)."""
    _check_whole(path)
    rows = _open_csv(path, ["condition_id", "task_id", "rate"])
    out: dict[str, dict[str, float]] = {}
    for line, row in enumerate(rows, start=2):
        cond, task = (row["condition_id"] or "").strip(), (row["task_id"] or "").strip()
        for col, value in (("condition_id", cond), ("task_id", task)):
            if not value:
                raise SteeropsError(f"{path}:{line}: empty {col}")
        per = out.setdefault(cond, {})
        if task in per:
            raise SteeropsError(f"{path}:{line}: duplicate rate for ({cond!r}, {task!r})")
        per[task] = _rate(path, line, row["rate"])
    return out
