"""A variant's own chat template from params (`models.<variant>.chat_template`): a Jinja
string or the file holding one, compiled as transformers compiles it, so a broken template
is one line naming its key before any run opens, not a Jinja traceback at the first prompt.

A tokenizer without a template may still have one beside it in the model's folder: a
multimodal checkpoint saved through its processor keeps it in `chat_template.json` only,
which AutoTokenizer does not read (`folder_chat_template`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from steerops.errors import SteeropsError
from steerops.io import read_text

if TYPE_CHECKING:
    from steerops.config import Params


def chat_template(params: Params, variant: str) -> str | None:
    """`models.<variant>.chat_template`: the Jinja text (read from the file it names), checked
    to compile, so a broken one is one line before any run opens instead of a Jinja traceback
    at the first prompt; None: the tokenizer's own."""
    template = params.variant(variant).chat_template
    if not template:
        return None
    key = f"models.{variant}.chat_template"
    if len(template) < 4096 and "{" not in template:
        path = params.path(template)
        if not path.is_file():
            raise SteeropsError(f"{key}: file not found: {path}")
        template = read_text(path)
    _check_compiles(template, key)
    return template


# what a model folder may hold its template in, besides the tokenizer's files
FOLDER_TEMPLATES = ("chat_template.jinja", "chat_template.json")


def folder_chat_template(source: str, revision: str | None = None) -> str | None:
    """The template in `source`'s `chat_template.jinja`, else in a processor's
    `chat_template.json` (its "chat_template" key), checked to compile; None: neither.
    `source`: a local folder, or a hub id whose files are looked up in the Hugging Face
    cache only (never downloaded)."""
    for name in FOLDER_TEMPLATES:
        path = _model_file(source, name, revision)
        if path is None:
            continue
        text = read_text(path)
        template = text if name.endswith(".jinja") else _json_template(text, path)
        if template:
            _check_compiles(template, str(path))
            return template
    return None


def _model_file(source: str, name: str, revision: str | None) -> Path | None:
    folder = Path(source)
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    from steerops.models.hub import cached_file

    try:
        return cached_file(source, name, revision)
    except ValueError:  # not a hub id's shape: nothing cached under it
        return None


def _json_template(text: str, path: Path) -> str | None:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SteeropsError(f"{path}: not JSON ({exc})") from None
    template = data.get("chat_template") if isinstance(data, dict) else None
    return template if isinstance(template, str) else None


def _check_compiles(template: str, where: str) -> None:
    """One line naming `where` (a params key or a file) when `template` does not compile."""
    from jinja2 import TemplateError

    try:
        _compile_template(template)
    except TemplateError as exc:
        lineno = getattr(exc, "lineno", None)  # a syntax error knows its line
        line = f" (line {lineno})" if lineno else ""
        raise SteeropsError(
            f"{where}: not a Jinja template transformers can render{line}: {exc.message or exc}"
        ) from None


def _compile_template(template: str) -> None:
    try:  # transformers' own environment: its filters, extensions and globals
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # a transformers that moved it: jinja2's sandbox, as transformers uses
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        ImmutableSandboxedEnvironment(extensions=[loopcontrols]).from_string(template)
        return
    _compile_jinja_template(template)
