"""The experiment config: `params.yaml`, validated by pydantic, one block per stage.

Each stage's block lives in its own module here; `Params` composes them. Paths inside
params are resolved against the directory of the params file, so an experiment folder can
be run from anywhere.

Where a run writes: the pipeline's run (DVC's, or `--pipeline`) writes the outputs under
`paths.out` and the project's files (metrics/, optuna.db, mlflow.db) next to the params file.
A scratch run has a folder of its own (`Params.set_run_folder`): `out`, `run_root` and, when
it lies in the pipeline's outputs, the judge cache point there, while `inputs` stays the
pipeline's outputs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from steerops.config.base import SPEC_ERROR, Strict
from steerops.config.calibration import CalibrationConfig
from steerops.config.core import PathsConfig, TrackingConfig, TraitsConfig
from steerops.config.extraction import ExtractionConfig
from steerops.config.finite import (
    DuplicateKey,
    ParamsLoader,
    ReadOtherwise,
    not_finite,
    written_text,
)
from steerops.config.generate import GenerateConfig
from steerops.config.judge import JudgeConfig
from steerops.config.models import ModelVariant, default_variants
from steerops.config.probes import ProbesConfig
from steerops.config.report import ReportConfig
from steerops.config.search import SearchConfig
from steerops.config.steering import SteeringConfig
from steerops.config.vectors import CleaningConfig, VectorsConfig
from steerops.errors import SteeropsError
from steerops.io import file_md5, read_text

__all__ = ["Params", "load_params", "ModelVariant", "DEFAULT_PARAMS_FILE", "name_the_flag"]

DEFAULT_PARAMS_FILE = "params.yaml"
# the DVC metrics folder beside the params file (a run's own in its folder: `run_root`)
SUMMARY_DIR = "metrics"
# Keys an older params file may still have, with what replaced them.
RENAMED = {
    "steering.method": "one cell is a one-item list: steering.methods: [NAME]",
    "steering.position": "one cell is a one-item list: steering.positions: [SPEC]",
}


class Params(Strict):
    experiment: str = Field(
        "toy-refusal",
        min_length=1,
        pattern=r"\S",
        description="experiment name (the MLflow experiment unless tracking.experiment)",
    )
    seed: int = Field(
        0,
        ge=0,
        # a layer's fit is seeded seed * 1000 + layer, and sklearn takes seeds below 2**32
        le=4_294_000,
        description="seed of everything seeded (splits, fits, the toy world)",
    )
    paths: PathsConfig = Field(default_factory=PathsConfig)
    traits: TraitsConfig = Field(default_factory=TraitsConfig)
    models: dict[str, ModelVariant] = Field(default_factory=default_variants)
    # one block per stage, in pipeline order
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    vectors: VectorsConfig = Field(default_factory=VectorsConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)
    judge: JudgeConfig = Field(
        default_factory=JudgeConfig, description="scores generate's vetting, steer and search"
    )
    steering: SteeringConfig = Field(default_factory=SteeringConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    # Directory that relative paths in this config are resolved against (not a params key).
    model_config = ConfigDict(extra="forbid")
    _root: Path = Path(".")
    _run_folder: Path | None = None
    _run_named: bool = False
    _inputs_flag: str = ""
    _params_flag: str = ""
    _project_store: bool = False
    _when_checked: list[Callable[[], None]] = PrivateAttr(default_factory=list)
    _pipeline_judge_cache: Path | None = None
    _file: Path | None = None
    _file_md5: str | None = None

    @property
    def root(self) -> Path:
        return self._root

    @property
    def run_folder(self) -> Path | None:
        """This run's own folder (a scratch run or `--out`), None for the pipeline's run."""
        return self._run_folder

    @property
    def file(self) -> Path | None:
        """The params file these were read from (None: built in code, or no file)."""
        return self._file

    @property
    def file_md5(self) -> str | None:
        """The MD5 of the params file's bytes as they were read."""
        return self._file_md5

    @property
    def pipeline_judge_cache(self) -> Path | None:
        """The judge cache a run of its own reads beside its own, never writing it: the
        pipeline's, when judge.cache_dir lies in its outputs; None otherwise."""
        return self._pipeline_judge_cache

    @property
    def run_named(self) -> bool:
        """True for a run folder given with --out (the default MLflow store goes there)."""
        return self._run_named

    @property
    def run_root(self) -> Path:
        """Where this run's project-level files go: metrics/, the default optuna.db and, for
        `--out`, the default MLflow store; the params file's directory for the pipeline."""
        return self._run_folder or self._root

    @property
    def store_root(self) -> Path:
        """Where the default MLflow store (mlflow.db) goes: the folder of a run given --out,
        unless `use_project_store` said otherwise; else the params file's directory."""
        named = self._run_named and not self._project_store
        return self.run_root if named else self._root

    def use_project_store(self) -> None:
        """Log to the project's default store though the run has a folder of its own (a
        report of a default scratch run, which logged there)."""
        self._project_store = True

    def set_run_folder(self, folder: Path, named: bool, kept: tuple[Path, ...] = ()) -> None:
        """Make this a run of its own in `folder`: outputs and metrics/ go there, and the
        judge cache where it lies in paths.out or a folder of `kept` (the pipeline's
        outputs, which a run of its own leaves as they are, when paths.out now names
        another), still read for answers it holds; a cache_dir named outside them is
        shared. `named` (given with --out): the default MLflow store goes there too."""
        cache = self.path(self.judge.cache_dir).resolve()
        for outputs in (self.path(self.paths.out), *kept):
            if cache == outputs.resolve() or outputs.resolve() in cache.parents:
                self.judge.cache_dir = str(Path(folder) / "judge_cache")
                self._pipeline_judge_cache = cache  # still read, never written
                break
        self._run_folder, self._run_named = Path(folder), named

    def path(self, value: str | Path) -> Path:
        """Resolve a path from params against the params file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self._root / p)

    @property
    def out(self) -> Path:
        """Where this run writes its stage outputs."""
        out = self._run_folder or self.path(self.paths.out)
        if out.exists() and not out.is_dir():  # e.g. `--out` naming a file
            raise SteeropsError(f"paths.out: {out} is a file, not a folder")
        return out

    @property
    def inputs(self) -> Path:
        """Where a stage reads what earlier stages wrote: the pipeline's outputs, or the
        folder a run by hand was given with --inputs."""
        return self.path(self.paths.out)

    @property
    def inputs_flag(self) -> str:
        """What a hint's command needs to write this run's missing inputs: " --params FILE"
        for a params file other than ./params.yaml (`params_flag`), and " --out DIR" when
        the inputs are another run's folder (--inputs DIR)."""
        return self._params_flag + self._inputs_flag

    @property
    def inputs_named(self) -> bool:
        """Whether the inputs are another run's folder (--inputs DIR), not the pipeline's."""
        return bool(self._inputs_flag)

    def set_inputs_flag(self, flag: str) -> None:
        self._inputs_flag = flag

    @property
    def params_flag(self) -> str:
        """ " --params FILE" when these were read from a file other than ./params.yaml (a
        command a hint suggests runs where this one ran), else ""."""
        return self._params_flag

    def set_params_flag(self, flag: str) -> None:
        self._params_flag = flag

    def named(self, key: str) -> bool:
        """Whether the params file or a flag set `key` (dotted: `probes.tasks`), whatever the
        value, rather than leaving it to its default."""
        *blocks, last = key.split(".")
        node: BaseModel = self
        for block in blocks:
            node = getattr(node, block)
        return last in node.model_fields_set

    def when_checked(self, action: Callable[[], None]) -> None:
        """Something to do once the run's inputs are checked (`inputs_checked`), not before:
        a run stopped by bad input prints its one error line and leaves nothing behind."""
        self._when_checked.append(action)

    def inputs_checked(self) -> None:
        """Do, once, what waited for the run's inputs to pass (`when_checked`)."""
        while self._when_checked:
            self._when_checked.pop(0)()

    def variant(self, name: str, key: str | None = None) -> ModelVariant:
        """The variant `name`; `key`: the params key that named it (its flag, when one gave
        it, is then named in the error)."""
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            where = f"{key}: " if key else ""
            raise SteeropsError(f"{where}models.{name}: unknown model variant (known: {known})")
        return self.models[name]


def load_params(
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    flag_names: dict[str, str] | None = None,
) -> Params:
    """Load and validate params; `overrides` maps dotted keys to values (CLI flags), and
    `flag_names` those keys to their flags, so a bad flag value is blamed on the flag."""
    path = Path(file or DEFAULT_PARAMS_FILE)
    if file is None and not path.exists():
        data: dict[str, Any] = {}
    else:
        if path.is_dir():
            hint = (
                f" (its {DEFAULT_PARAMS_FILE}?)" if (path / DEFAULT_PARAMS_FILE).is_file() else ""
            )
            raise SteeropsError(f"params file: {path} is a folder, not a YAML file{hint}")
        if not path.is_file():
            raise SteeropsError(f"params file not found: {path}")
        try:
            data = yaml.load(read_text(path), Loader=ParamsLoader)
        except (DuplicateKey, ReadOtherwise) as exc:
            raise SteeropsError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise SteeropsError(f"{path}: malformed YAML{_yaml_problem(exc, path)}") from None
        if data is None:  # every key would take the toy world's default, over real outputs
            raise SteeropsError(
                f"{path}: the params file is empty (no key set); give the experiment's "
                "params, or {} to take every default"
            )
        if not isinstance(data, dict):
            raise SteeropsError(f"{path}: top level must be a mapping of stage blocks")
    written = copy.deepcopy(data) if overrides else data
    try:
        for key, value in (overrides or {}).items():
            _set_dotted(data, key, value)
    except _NotAMapping as exc:
        # a flag's key inside a block the file gives as a list or null: the file's own
        # error on that block, as without the flag (not the block's defaults)
        _validated(written, path, {})
        raise SteeropsError(f"{path}: {exc}: not a mapping") from None
    return _validated(data, path, flag_names or {})


def _validated(data: dict[str, Any], path: Path, flag_names: dict[str, str]) -> Params:
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise SteeropsError(_blame(exc, path, flag_names)) from None
    params._root = path.resolve().parent
    if path.is_file():  # else every key took its default
        params._file, params._file_md5 = path.resolve(), file_md5(path)
    return params


def _yaml_problem(exc: yaml.YAMLError, path: Path) -> str:
    """Where and what, as PyYAML says it, and the likely cause of a flow list that breaks
    on a spec's brackets (`positions: [prompt[-1]]`: quote the specs)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ""
    problem = " ".join(str(getattr(exc, "problem", "") or "").split())
    lines = read_text(path).splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    hint = "; quote specs with brackets, e.g. 'prompt[-1]'" if "[" in line else ""
    return f" (line {mark.line + 1}: {problem}{hint})" if problem else f" (line {mark.line + 1})"


def _blame(exc: ValidationError, path: Path, flag_names: dict[str, str]) -> str:
    """The error line, on the flag that gave the bad value, else on the params file."""
    message = describe_validation_error(exc)  # "<key>: <what is wrong>"
    key = ".".join(str(p) for p in exc.errors()[0]["loc"])
    what = message.removeprefix(key + ": ")
    on_flag = name_the_flag(message, flag_names)
    if on_flag != message:
        return on_flag
    # a check across a block's keys (e.g. coef_max > coef_min) is blamed on the flags
    # that set a key it names
    named = [
        flag
        for name, flag in flag_names.items()
        if name.startswith(key + ".") and re.search(rf"\b{re.escape(name[len(key) + 1 :])}\b", what)
    ]
    if named:
        return f"{'/'.join(named)}: {what} (params: {key})"
    return f"{path}: {message}"


def name_the_flag(message: str, flag_names: dict[str, str]) -> str:
    """`message` ("<key>: <what is wrong>", or "<key> <value>: ...") naming the flag that
    set the key instead, with the key in parentheses; unchanged when no flag set it. A key
    may hold `*` for one part (`models.*.device`, which --device sets)."""
    head, sep, what = message.partition(": ")
    for name, flag in flag_names.items():
        part = re.escape(name).replace(r"\*", r"[^.]+")
        match = re.fullmatch(rf"({part}(?:\.\S+)?)( .+)?", head) if sep else None
        if match:
            return f"{flag}{match[2] or ''}: {what} (params: {match[1]})"
    return message


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first offending key, e.g. `steering.layers: unknown key`."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = RENAMED.get(key) or _did_you_mean(err["loc"])
        return f"{key}: unknown key" + (f" ({hint})" if hint else "")
    if err["type"] == "missing":
        return f"{key}: required key missing"
    got = err.get("input")
    if err["type"] == "too_short" and isinstance(got, list) and not got:
        least = (err.get("ctx") or {}).get("min_length", 1)
        return f"{key}: empty; give at least {least} item{'s' if least != 1 else ''}"
    if err["type"] == "finite_number":
        return f"{key}: {not_finite(written_text(got))}"
    # a spec's own message already quotes it
    shown = "" if isinstance(got, dict | list) or err["type"] == SPEC_ERROR else f" (got {got!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    # pydantic prefixes a validator's own message with its kind
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{key}: {msg}{shown}{more}"


def _did_you_mean(loc: tuple) -> str | None:
    """ "did you mean steering.coefficient_unit?" for a key one typo away from a key of the
    block it sits in (None when none is close, or the block is not found)."""
    import difflib
    import typing

    block: Any = Params
    entry = False  # the next part names a mapping's entry (models.NAME), not a field
    for part in loc[:-1]:
        if entry:
            entry = False
            continue
        fields = getattr(block, "model_fields", None)
        if fields is None or part not in fields:
            return None
        block = fields[part].annotation
        while not (isinstance(block, type) and issubclass(block, BaseModel)):
            entry = entry or typing.get_origin(block) is dict
            args = [a for a in typing.get_args(block) if a is not type(None)]
            if not args:
                return None
            block = args[-1]  # Optional[X] -> X; dict[str, X] -> X
    fields = getattr(block, "model_fields", None) or {}
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1, cutoff=0.75)
    if not close:
        return None
    return "did you mean " + ".".join([*map(str, loc[:-1]), close[0]]) + "?"


class _NotAMapping(Exception):
    """A block on the way to an override's key is not a mapping (its dotted key)."""


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for n, part in enumerate(parts[:-1]):
        if part not in node:
            node[part] = {}
        elif not isinstance(node[part], dict):  # `steering: [1, 2]` or `steering: null`
            raise _NotAMapping(".".join(parts[: n + 1]))
        node = node[part]
    node[parts[-1]] = value
