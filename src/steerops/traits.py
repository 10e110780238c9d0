"""Trait datasets on disk: `<root>/<category>/<trait>/`.

positive.txt | positive.jsonl   prompts that elicit the trait (one per line, or JSONL
negative.txt | negative.jsonl   with `prompt` and optional `system_prompt`)
steering.json                   {"questions": [...], "eval_prompt": optional}
definition.txt                  the judge's rubric for the trait
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import check_trait_name, iter_jsonl, read_json, read_text

POLARITIES = ("positive", "negative")  # a trait's two prompt sets
# keys other datasets name a system prompt by: read as metadata, the prompt would run
# without it, so they are refused (other keys, an id or `filesystem`, stay ignored)
SYSTEM_ALIASES = frozenset(
    {"system", "system_message", "systemprompt", "sys_prompt", "system_instruction"}
)


@dataclass(frozen=True)
class Prompt:
    prompt: str | list[dict]  # the user's text, or a whole message list
    system_prompt: str | None = None


@dataclass
class Trait:
    name: str  # "category/trait"
    path: Path
    positive: list[Prompt]
    negative: list[Prompt]
    questions: list[str] = field(default_factory=list)
    eval_prompt: str | None = None
    definition: str = ""

    def prompt_counts(self) -> dict[str, int]:
        """How many prompts each polarity has (the source prompts responses index into)."""
        return {p: len(getattr(self, p)) for p in POLARITIES}


def trait_dir(root: Path, name: str) -> Path:
    category, trait = check_trait_name(name)
    return Path(root) / category / trait


def load_trait(
    root: str | Path, name: str, need_prompts: bool = True, need_questions: bool = False
) -> Trait:
    path = trait_dir(Path(root), name)
    if not path.is_dir():
        raise SteeropsError(f"trait {name!r}: directory not found: {path}")
    positive = _load_prompts(path, "positive") if need_prompts else []
    negative = _load_prompts(path, "negative") if need_prompts else []
    questions, eval_prompt = _load_steering(path, required=need_questions)
    definition_file = path / "definition.txt"
    definition = ""
    if definition_file.exists():
        definition = read_text(definition_file).strip()
    return Trait(name, path, positive, negative, questions, eval_prompt, definition)


def read_prompts_jsonl(path: Path) -> list[Prompt]:
    """Prompts from JSONL lines `{"prompt": str, "system_prompt": str (optional)}`. Other
    keys (an id, a source) are ignored, but one naming a system prompt another way
    ("system", "system_message") would drop it without a word: an error."""
    prompts = []
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise SteeropsError(f"{path}:{lineno}: each line needs a string 'prompt'")
        for key in row:
            if str(key).lower() in SYSTEM_ALIASES:
                raise SteeropsError(
                    f"{path}:{lineno}: unknown key {key!r}: a line's system prompt is read "
                    "from 'system_prompt' only (keys other than 'prompt' and 'system_prompt' "
                    "are ignored)"
                )
        system = row.get("system_prompt")
        if system is not None and not isinstance(system, str):
            raise SteeropsError(f"{path}:{lineno}: 'system_prompt' must be a string")
        if not row["prompt"].strip():  # the .txt form skips blank lines; no empty prompts
            raise SteeropsError(f"{path}:{lineno}: 'prompt' is empty")
        prompts.append(Prompt(row["prompt"], system))
    return prompts


def _load_prompts(path: Path, polarity: str) -> list[Prompt]:
    txt, jsonl = path / f"{polarity}.txt", path / f"{polarity}.jsonl"
    if jsonl.exists() and txt.exists():
        raise SteeropsError(f"{path}: both {polarity}.txt and {polarity}.jsonl; keep one")
    if jsonl.exists():
        prompts = read_prompts_jsonl(jsonl)
    elif txt.exists():
        prompts = [Prompt(s.strip()) for s in read_text(txt).splitlines() if s.strip()]
    else:
        raise SteeropsError(f"{path}: missing {polarity}.txt or {polarity}.jsonl")
    if not prompts:
        raise SteeropsError(f"{path}: {polarity} prompts are empty")
    return prompts


def _load_steering(path: Path, required: bool) -> tuple[list[str], str | None]:
    file = path / "steering.json"
    if not file.exists():
        if required:
            raise SteeropsError(f"{file}: file not found (steering questions)")
        return [], None
    data = read_json(file)  # not JSON: one line naming the file and line
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise SteeropsError(f"{file}: 'questions' must be a list of strings")
    if required and not questions:
        raise SteeropsError(f"{file}: 'questions' is empty")
    first: dict[str, int] = {}
    for i, question in enumerate(questions, 1):
        if not question.strip():
            raise SteeropsError(f"{file}: question {i} is empty")
        # each question is one paired sample of the held-out protocol: a repeat would count
        # twice in the means and once in the split
        if question in first:
            raise SteeropsError(f"{file}: question {i} repeats question {first[question]}")
        first[question] = i
    eval_prompt = data.get("eval_prompt")
    if eval_prompt is not None and not isinstance(eval_prompt, str):
        raise SteeropsError(f"{file}: 'eval_prompt' must be a string")
    return questions, eval_prompt
