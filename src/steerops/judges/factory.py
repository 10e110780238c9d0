"""Build the judge `params.judge.kind` names. Each kind's module is imported only when
chosen: the endpoint judge needs no torch, the local one loads a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerops.errors import SteeropsError
from steerops.judges.base import Judge

TOY_TRAIT = "toy/refusal"  # the one trait the toy world has, and its judge judges

if TYPE_CHECKING:
    from steerops.config import Params
    from steerops.models.loading import LoadedModel
    from steerops.traits import Trait


def make_judge(
    params: Params, trait: Trait | None = None, loaded: LoadedModel | None = None
) -> Judge:
    """The judge named by `params.judge.kind`, with prompts built for `trait`. A local
    judge (hf, proxy) whose `judge.variant` is the `loaded` model reads with it."""
    kind = params.judge.kind
    if kind == "toy":
        from steerops.judges.toy import ToyJudge

        _check_toy(trait)
        return ToyJudge()
    if kind == "openai":
        from steerops.judges.openai import OpenAIJudge

        return OpenAIJudge.from_params(params, trait)
    if kind == "hf":
        from steerops.judges.hf import HFJudge

        return HFJudge.from_params(params, trait, loaded)
    if kind == "proxy":
        from steerops.judges.proxy import ProxyJudge

        return ProxyJudge.from_params(params, trait, loaded)
    raise _unknown(kind)


def check_judge(params: Params, trait: Trait | None = None) -> None:
    """Refuse, without building it, what `make_judge` would refuse for `trait`: params
    (an endpoint's URL and model, its key's variable set), the rubric or phrases, the
    judge's model variant (known, its source, its device). Sends nothing, loads no model
    and keeps no key: a stage calls it before it loads its own model or opens a run."""
    kind = params.judge.kind
    if kind == "openai":
        from steerops.judges.openai import OpenAIJudge

        OpenAIJudge.check_params(params, trait)
    elif kind == "hf":
        from steerops.judges.hf import HFJudge

        HFJudge.check_params(params, trait)
    elif kind == "proxy":
        from steerops.judges.proxy import ProxyJudge

        ProxyJudge.check_params(params, trait)
    elif kind == "toy":
        _check_toy(trait)
    else:
        raise _unknown(kind)


def _check_toy(trait: Trait | None) -> None:
    """The exact toy judge knows the toy world's grammar only: on any other trait it would
    score every answer incoherent and unrefused, which reads as a finding."""
    if trait is not None and trait.name != TOY_TRAIT:
        raise SteeropsError(
            f"judge.kind: toy scores only the toy world's trait {TOY_TRAIT}, not {trait.name}: "
            "set judge.kind to proxy, openai or hf (docs/params.md)"
        )


def reach_judge(params: Params, trait: Trait | None = None) -> None:
    """An endpoint judge is asked once that it is there and takes the key (after
    `check_judge`, before a stage loads its model or opens a run); a local one needs
    nothing."""
    if params.judge.kind == "openai":
        from steerops.judges.openai import OpenAIJudge

        OpenAIJudge.reach(params, trait)


def _unknown(kind: str) -> SteeropsError:
    return SteeropsError(f"judge.kind: unknown judge {kind!r} (use toy, openai, hf or proxy)")
