"""Everything a steering sweep or search needs, checked before a model loads or an MLflow
run opens: the traits and their questions, the steered variant (its source and device), the
judge (its params, rubric, key variable and model variant; nothing loaded; an endpoint is
asked once, last, that it answers and takes the key),
the model's layer count and width (from its config file, no weights), the layers, and every
vector set and layer norm the configs use.
A coefficient far outside its unit's sensible range is said now, not after generating.

A run on a real model takes minutes to load it; a typo in a layer or a missing vector
should cost a second, and leave no FAILED run behind.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from steerops.errors import SteeropsError
from steerops.specs import Layers, MethodName, Position

if TYPE_CHECKING:
    from steerops.models.loading import ModelShape

SENSIBLE_NORM_MULTIPLE = 10.0  # past 10x the layer's activation norm, text is noise


def resolve_layers(spec: Layers, shape: ModelShape, key: str) -> list[int] | None:
    """The layers `spec` selects, with an error naming the params key `key`."""
    return None if shape.num_layers is None else spec.resolve(shape.num_layers, key)


def check_grid(
    params,
    traits: list[str],
    cells: list[tuple[MethodName, Position]],
    layers_spec: Layers,
    layers_key: str,
    coefficients: list[float],
    stage: str,
) -> dict[str, list[int] | None]:
    """Check a sweep's (or search's) inputs; {trait: layers} (None: known after loading).

    Vectors are read from the pipeline's outputs (`params.inputs`), where a scratch run
    finds them too, or from the folder given with --inputs."""
    from steerops.judges import check_judge, reach_judge
    from steerops.models.loading import check_new_tokens, checked_variant, model_shape
    from steerops.steering.configs import VectorSource
    from steerops.steering.sources import VectorSources
    from steerops.traits import load_trait
    from steerops.vectors.store import recorded_mean_norm

    cfg = params.steering
    if not cells:
        raise SteeropsError("steering.methods/steering.positions: the grid has no cells")
    if not coefficients:
        raise SteeropsError("steering.coefficients: give at least one coefficient")
    if not any(coefficients):
        raise SteeropsError(
            "steering.coefficients: only 0, the unsteered model (the baseline is run "
            "anyway): give a steered coefficient"
        )
    params.variant(cfg.vector_variant, "steering.vector_variant")
    params.variant(cfg.variant, "steering.variant")
    # its source, safetensors weights and device; the tokenizer it loaded to check them
    _, tokenizer = checked_variant(params, cfg.variant)
    shape = model_shape(params, cfg.variant)
    check_new_tokens(shape, cfg.max_new_tokens, "steering.max_new_tokens")
    layers = resolve_layers(layers_spec, shape, layers_key)
    out: dict[str, list[int] | None] = {}
    for trait in traits:
        data = load_trait(
            params.path(params.traits.root), trait, need_prompts=False, need_questions=True
        )
        check_judge(params, data)
        check_split(params, data.questions)
        say_short_subset(stage, trait, params.steering.subset, len(data.questions))
        check_prompt_room(params, trait, data.questions, tokenizer, shape.context)
        out[trait] = layers
        check_logs(params, trait, cells, stage)
        if layers is None or shape.hidden_size is None:
            continue
        sources = VectorSources(
            params.inputs,
            trait,
            cfg.vector_variant,
            shape.hidden_size,
            params.inputs_flag,
            params.path(params.traits.root),
            params,
        )
        norms = []
        for method, position in cells:
            source = VectorSource.of(method, position, cfg.component)
            sources.check_current(source)
            for layer in layers:
                ref = source.at(layer)
                sources.vector(ref)
                if cfg.coefficient_unit == "norm":
                    sources.layer_norm(ref)
                else:
                    _, metadata, _ = sources.load(source)
                    norm = recorded_mean_norm(metadata, layer)
                    if norm:
                        norms.append(norm)
        warn_far_coefficients(stage, coefficients, cfg.coefficient_unit, norms)
    reach_judge(params, data)  # last: every check that sends nothing has passed
    return out


def check_logs(params, trait: str, cells: list[tuple[MethodName, Position]], stage: str) -> None:
    """The results logs a run will read (each cell's and the baselines, where it writes and
    where it reads, and a search's own): a damaged line fails here, before the model loads
    or a run opens. The logs are append-only, so a damaged line is refused, not repaired (a
    torn last line, what a kill leaves, is dropped as it is read)."""
    from steerops.steering.configs import VectorSource
    from steerops.steering.store import ResultsLog, baselines_file, results_file

    variant, component = params.steering.variant, params.steering.component
    for out in dict.fromkeys([params.out, params.inputs]):
        ResultsLog(baselines_file(out, trait, variant))
        for method, position in cells:
            source = VectorSource.of(method, position, component)
            ResultsLog(results_file(out, trait, variant, source.at(0)))
    if stage == "search":  # a search keeps its own logs in its folder
        from steerops.paths import cell_dir
        from steerops.steering.store import BASELINES_FILE, RESULTS_FILE

        for method, position in cells:
            folder = cell_dir("search", params.out, trait, variant, position, component, method)
            ResultsLog(folder / RESULTS_FILE)
            ResultsLog(folder / BASELINES_FILE)


def check_prompt_room(
    params, trait: str, questions: list[str], tokenizer, context: int | None
) -> None:
    """Every steered question, as the chat template prompts it, leaves room in the model's
    context for `steering.max_new_tokens`: past it positions have no meaning and a static
    cache does not fit."""
    from steerops.models.generation import encode_prompt, render_prompts

    cfg = params.steering
    if context is None:
        return
    steered = questions[: cfg.subset] if cfg.subset else questions
    lengths = [len(encode_prompt(tokenizer, t)) for t in render_prompts(tokenizer, steered)]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] + cfg.max_new_tokens > context:
        raise SteeropsError(
            f"steering.max_new_tokens: {trait} question {longest + 1} (steering.json) is "
            f"{lengths[longest]} tokens as prompted; with {cfg.max_new_tokens} new tokens it runs "
            f"past the model's context of {context} positions (max_position_embeddings): at "
            f"most {context - lengths[longest]} new tokens fit"
        )


def check_split(params, questions: list[str]) -> None:
    """The questions a run steers (`steering.subset` of them) can be split into a selection
    and a held-out half."""
    from steerops.steering.best import protocol

    subset = params.steering.subset
    try:
        protocol(params).split(questions[:subset] if subset else questions)
    except SteeropsError as exc:
        if not subset:
            raise
        raise SteeropsError(f"{exc}, under --subset {subset} (steering.subset)") from None


def say_short_subset(stage: str, trait: str, subset: int | None, questions: int) -> None:
    """One line when `steering.subset` asks for more questions than the trait has: the run
    steers all of them, and its n says fewer than asked."""
    if subset and subset > questions:
        print(
            f"steerops {stage}: note: steering.subset {subset}: {trait} has {questions} "
            f"questions, all steered",
            file=sys.stderr,
        )


def warn_far_coefficients(
    stage: str, coefficients: list[float], unit: str, norms: list[float]
) -> None:
    """One warning line when a coefficient is over 10x the layer's activation norm."""
    biggest = max(abs(c) for c in coefficients)
    if unit == "norm" and biggest > SENSIBLE_NORM_MULTIPLE:
        print(
            f"steerops {stage}: warning: coefficient {biggest:g} is {biggest:g}x the layer's "
            f"mean activation norm (coefficient_unit: norm; steering works at about 0.1-"
            f"{SENSIBLE_NORM_MULTIPLE:g}); for an absolute weight, as the research scripts "
            "take it, pass --coefficient-unit absolute",
            file=sys.stderr,
        )
    elif unit == "absolute" and norms and biggest > SENSIBLE_NORM_MULTIPLE * max(norms):
        print(
            f"steerops {stage}: warning: coefficient {biggest:g} is over "
            f"{SENSIBLE_NORM_MULTIPLE:g}x the largest steered layer's mean activation norm "
            f"({max(norms):.4g}; coefficient_unit: absolute)",
            file=sys.stderr,
        )
