"""A variant's own chat template from params (`models.<variant>.chat_template`): a Jinja
string or the file holding one, compiled as transformers compiles it, so a broken template
is one line naming its key before any run opens, not a Jinja traceback at the first prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerops.errors import SteeropsError
from steerops.io import read_text

if TYPE_CHECKING:
    from steerops.config import Params


def chat_template(params: Params, variant: str) -> str | None:
    """`models.<variant>.chat_template`: the Jinja text (read from the file it names), checked
    to compile, so a broken one is one line before any run opens instead of a Jinja traceback
    at the first prompt; None: the tokenizer's own."""
    from jinja2 import TemplateError

    template = params.variant(variant).chat_template
    if not template:
        return None
    key = f"models.{variant}.chat_template"
    if len(template) < 4096 and "{" not in template:
        path = params.path(template)
        if not path.is_file():
            raise SteeropsError(f"{key}: file not found: {path}")
        template = read_text(path)
    try:
        _compile_template(template)
    except TemplateError as exc:
        lineno = getattr(exc, "lineno", None)  # a syntax error knows its line
        line = f" (line {lineno})" if lineno else ""
        raise SteeropsError(
            f"{key}: not a Jinja template transformers can render{line}: {exc.message or exc}"
        ) from None
    return template


def _compile_template(template: str) -> None:
    try:  # transformers' own environment: its filters, extensions and globals
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # a transformers that moved it: jinja2's sandbox, as transformers uses
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        ImmutableSandboxedEnvironment(extensions=[loopcontrols]).from_string(template)
        return
    _compile_jinja_template(template)
