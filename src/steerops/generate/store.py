"""Responses on disk, as `steerops generate` writes them and `steerops extract` reads them.

    <out>/responses/<cat>/<trait>/<variant>/responses.jsonl   one row per completion
    <out>/responses/<cat>/<trait>/<variant>/summary.json      settings hashes, counts

A row is `{index, polarity, source_index, rollout, system_prompt, prompt, response,
response_ids, kept, trait, coherence}` (`response` is the decoded text, stripped;
`response_ids` the generated token ids before the stop token, which extraction reads;
`kept` after vetting; scores null when not vetted). Completions are
written before they are vetted, with `kept: null` and a summary whose `vetting_hash` is
null, so a judge failure loses no completion: the next run vets them without generating.
The summary records the rows file's MD5 (`responses_md5`); a rows file that no longer has
it is generated again rather than trusted.

    <...>/<variant>/.partial/<polarity>.json        a class finished by a run that did not end
    <...>/<variant>/.partial/<polarity>.jobs.json   the batches it finished of the next class

Each class is kept there once completed (with the generation settings' hash and its rows'
MD5), so an interrupted run's rerun generates only the class it had not finished (each
class is seeded on its own: the same rows), and of that class only the batches it had not
finished (`steerops.models.kept_jobs`); the folder goes once responses.jsonl is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import (
    file_md5,
    iter_jsonl,
    read_json,
    read_jsonl,
    text_md5,
    write_json,
    write_jsonl,
)
from steerops.traits import POLARITIES

RESPONSES_FILE = "responses.jsonl"
SUMMARY_FILE = "summary.json"
PARTIAL_DIR = ".partial"


def responses_dir(out: Path, trait: str, variant: str) -> Path:
    return Path(out) / "responses" / trait / variant


def responses_file(out: Path, trait: str, variant: str) -> Path:
    return responses_dir(out, trait, variant) / RESPONSES_FILE


def write_responses(folder: Path, rows: list[dict], summary: dict[str, Any]) -> dict[str, Any]:
    """The rows, then the summary that says they are complete (with their MD5); returns the
    summary written."""
    write_jsonl(folder / RESPONSES_FILE, rows)
    summary = {**summary, "responses_md5": file_md5(folder / RESPONSES_FILE)}
    write_json(folder / SUMMARY_FILE, summary)
    return summary


def keep_finished_class(folder: Path, polarity: str, generation_hash: str, rows: list) -> None:
    """Keep a completed class of an unfinished run (see the module docstring)."""
    text = json.dumps(rows, sort_keys=True)
    write_json(
        folder / PARTIAL_DIR / f"{polarity}.json",
        {"generation_hash": generation_hash, "rows_md5": text_md5(text), "rows": rows},
    )


def partial_jobs_file(folder: Path, polarity: str) -> Path:
    return folder / PARTIAL_DIR / f"{polarity}.jobs.json"


def finished_class(folder: Path, polarity: str, generation_hash: str) -> list[dict] | None:
    """The rows of `polarity` an interrupted run completed under these settings; None when
    there are none, or they are of other settings or no longer match their MD5."""
    path = folder / PARTIAL_DIR / f"{polarity}.json"
    try:
        kept = read_json(path)
    except (OSError, ValueError, SteeropsError):
        return None
    if not isinstance(kept, dict) or kept.get("generation_hash") != generation_hash:
        return None
    rows = kept.get("rows")
    if not isinstance(rows, list) or text_md5(json.dumps(rows, sort_keys=True)) != kept.get(
        "rows_md5"
    ):
        return None
    return rows


def drop_finished_classes(folder: Path) -> None:
    """Remove what an unfinished run kept, once the responses are written whole."""
    import shutil

    shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)


def read_rows(folder: Path) -> list[dict]:
    return read_jsonl(folder / RESPONSES_FILE)


def previous_summary(folder: Path) -> dict | None:
    """The summary of an earlier run in `folder` whose rows are intact, if any (a damaged
    pair is reported on stderr and treated as absent, so it is generated again)."""
    summary_file, rows_file = folder / SUMMARY_FILE, folder / RESPONSES_FILE
    if not (summary_file.is_file() and rows_file.is_file()):
        return None
    try:
        old = read_json(summary_file)
    except (OSError, ValueError, SteeropsError):
        old = None
    if not isinstance(old, dict) or "generation_hash" not in old:
        problem = f"{SUMMARY_FILE} is unreadable"
    elif old.get("responses_md5") != file_md5(rows_file):
        problem = f"{RESPONSES_FILE} does not match the MD5 in {SUMMARY_FILE}"
    else:
        return old
    print(f"{folder}: {problem}; generating the responses again", file=sys.stderr)
    return None


def summary_beside(path: Path, out_flag: str = "") -> dict | None:
    """The summary beside a responses file; None where there is none (responses written by
    hand). A damaged one is one error: the responses cannot be checked against it, and
    skipping the checks would pass them as up to date. `out_flag`: what the error's command
    needs (`cli.run_out_flag`)."""
    file = Path(path).parent / SUMMARY_FILE
    if not file.is_file():
        return None
    try:
        summary = read_json(file)
    except (OSError, SteeropsError) as exc:
        raise SteeropsError(
            f"{exc}; the responses beside it cannot be checked: run `steerops generate"
            f"{out_flag}` to write both again"
        ) from None
    if not isinstance(summary, dict):
        raise SteeropsError(
            f"{file}: not a JSON object; the responses beside it cannot be checked: run "
            f"`steerops generate{out_flag}` to write both again"
        )
    return summary


def check_generated_length(path: Path, trait: str, position, out_flag: str = "") -> None:
    """One line when a bounded `response[...]` window reads further into the responses than
    they were generated (`max_new_tokens` in the summary beside `path`): its tokens past
    that length do not exist, so it would silently pool a shorter window (`response[:32]`
    the same as `response[:12]`). A responses file without a summary is not checked.
    `out_flag`: " --out DIR" for a run's own folder (`cli.run_out_flag`)."""
    from steerops.specs import max_response_tokens, parse_position

    pos = parse_position(position)
    needs = max_response_tokens(pos)
    if pos.frame != "response" or needs is None:  # all[...] counts prompt tokens too
        return
    generated = (summary_beside(path, out_flag) or {}).get("max_new_tokens")
    if isinstance(generated, int) and needs > generated:
        raise SteeropsError(
            f"position {pos.text!r} reads up to {needs} response tokens, but the responses "
            f"in {Path(path).parent} were generated with at most {generated}: run `steerops "
            f"generate --trait {trait} --max-new-tokens {needs}{out_flag}` first"
        )


def _row_problem(row: dict) -> str | None:
    """What is wrong with a row's types (a hand-written file), before a model loads."""
    prompt = row["prompt"]
    messages = isinstance(prompt, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in prompt
    )
    if not (isinstance(prompt, str) or (messages and prompt)):
        return "prompt must be a string or a list of {role, content} messages"
    if not isinstance(row["response"], str):
        return "response must be a string"
    if row.get("system_prompt") is not None and not isinstance(row["system_prompt"], str):
        return "system_prompt must be a string or null"
    for key in ("source_index", "index", "rollout"):
        value = row.get(key, 0)
        if type(value) is not int or value < 0:
            return f"{key} must be an integer >= 0 (got {value!r})"
    return None


def prompts_md5(trait) -> str:
    """What the responses were completed from: the trait's prompts and system prompts, per
    polarity (recorded as `settings.prompts_md5` in the summary)."""
    prompts = {p: [[x.prompt, x.system_prompt] for x in getattr(trait, p)] for p in POLARITIES}
    return text_md5(json.dumps(prompts))


def check_prompts(path: Path, trait, out_flag: str = "") -> None:
    """Refuse responses completed from other prompts than the trait has now (its files
    edited since `generate`): they would pool answers to questions no longer asked. A
    responses file without a summary (written by hand) is not checked."""
    settings = (summary_beside(path, out_flag) or {}).get("settings") or {}
    recorded = settings.get("prompts_md5") if isinstance(settings, dict) else None
    if isinstance(recorded, str) and recorded != prompts_md5(trait):
        raise SteeropsError(
            f"{path}: completed from other prompts than {trait.name} has now (its prompt "
            f"files changed since): run `steerops generate --trait {trait.name}{out_flag}` "
            "first"
        )


def _check_md5(path: Path, trait: str, variant: str, out_flag: str = "") -> None:
    """Refuse a responses file whose summary names another MD5 (edited by hand, or left by
    another run); one without a summary (written by hand for a scratch run) is read."""
    recorded = (summary_beside(path, out_flag) or {}).get("responses_md5")
    if isinstance(recorded, str) and recorded != file_md5(path):
        raise SteeropsError(
            f"{path} does not match the MD5 in {SUMMARY_FILE}: run `steerops generate "
            f"--trait {trait}{out_flag}` with generate.variant={variant} to write it again"
        )


def load_kept_responses(
    path: Path,
    trait: str,
    variant: str,
    prompts: dict[str, int] | None = None,
    out_flag: str = "",
) -> list[dict]:
    """Rows of a responses file that passed vetting; a clear error when it is missing, or
    when a row is malformed or (with `prompts`: the trait's prompt count per polarity)
    names a source prompt the trait does not have. `out_flag` (" --out DIR" for a run's
    own folder) goes into the command the missing file's error suggests."""
    if not path.is_file():
        raise SteeropsError(
            f"responses not found: {path} (response positions need "
            f"completions: run `steerops generate --trait {trait}{out_flag}` with "
            f"generate.variant={variant} first)"
        )
    _check_md5(path, trait, variant, out_flag)
    rows = []
    dropped = dict.fromkeys(POLARITIES, 0)
    for lineno, row in iter_jsonl(path):
        missing = [
            k
            for k in ("polarity", "source_index", "prompt", "response")
            if not isinstance(row, dict) or k not in row
        ]
        if missing:
            raise SteeropsError(f"{path}:{lineno}: missing key {missing[0]!r}")
        problem = _row_problem(row)
        if problem:
            raise SteeropsError(f"{path}:{lineno}: {problem}")
        if prompts is not None and row["polarity"] in prompts:
            count = prompts[row["polarity"]]
            if row["source_index"] >= count:  # splits are drawn over the trait's prompts
                raise SteeropsError(
                    f"{path}:{lineno}: source_index {row['source_index']}, but {trait} has "
                    f"{count} {row['polarity']} prompts"
                )
        ids = row.get("response_ids")
        if ids is not None and not (
            isinstance(ids, list) and all(type(i) is int and i >= 0 for i in ids)
        ):
            raise SteeropsError(
                f"{path}:{lineno}: response_ids must be a list of token ids (integers >= 0)"
            )
        if row["polarity"] not in POLARITIES:
            raise SteeropsError(
                f"{path}:{lineno}: polarity must be positive or negative (got {row['polarity']!r})"
            )
        if "kept" in row and row["kept"] is None:
            raise SteeropsError(
                f"{path}:{lineno}: responses not vetted yet (the judge failed or was "
                f"interrupted): run `steerops generate --trait {trait}{out_flag}` again to vet "
                "them"
            )
        if row.get("kept", True):
            rows.append(row)
        else:
            dropped[row["polarity"]] += 1
    if not rows:
        raise SteeropsError(f"{path}: no kept responses to extract from")
    for polarity in POLARITIES:  # a direction needs both classes
        if not any(r["polarity"] == polarity for r in rows):
            raise SteeropsError(
                f"{path}: no kept {polarity} responses (vetting dropped all "
                f"{dropped[polarity]}): a direction needs both; see generate.positive_min / "
                "generate.negative_max, or generate.vet: false"
            )
    return rows
