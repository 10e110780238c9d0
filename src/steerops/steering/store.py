"""Steering results on disk, as `steerops steer` writes them (and each search, in its own
folder) and the search and the report read them.

    <out>/steering/<cat>/<trait>/<variant>/baselines.jsonl    unsteered results per settings
    <out>/steering/<cat>/<trait>/<variant>/<position>/<component>/<method>/
        results.jsonl   append-only log of baseline and config entries (every sweep's)
        results.csv     every config evaluated under the latest sweep's settings, tidy
        metrics.json    the cell's chosen config and its held-out numbers (see steering.best)
        curve.png       trait and coherence vs coefficient per layer
        responses/      baseline.json and L<layer>_c<coefficient>.json (never deleted)

`results.jsonl` holds one `{"type": "baseline", settings_hash, settings, questions, scores,
result}` entry per settings and one `{"type": "config", settings_hash, config: {coefficient,
vectors: [{layer, component, position, method, weight}]}, vector_files, vector_hashes,
scores, result: {trait_mean, coherence_mean, trait_delta, n, n_unscored[, n_refused]}}`
entry per evaluated config (`n_refused`: answers the judge's endpoint refused to judge;
`trait_delta` is against the baseline as judged when the entry was written: a baseline
judged again later, after refusals, changes it, so every derived file recomputes it from
the scores).
`scores` are the judge's [trait, coherence] per question, in the order of the `questions`
of the baseline entry with the same settings hash, so any split of the questions can be
recomputed from the log. Entries are only ever appended, under a file lock,
so several writers on one cell never lose each other's entries.

A logged config stands for a config evaluated now when its scope (the settings but for the
questions), its config (coefficient and weights) and the md5 of its vector files match and
its questions cover the ones asked for (methods and positions compared in their canonical
spelling, whatever spelling the log was written with); its scores on those questions are
then served. The baseline is matched the same way but for the settings that change only
steered rows (`STEERING_ONLY_KEYS`). Entries written before scores were logged, and entries
holding a refusal (not cached by the judge, so asked again), are kept and read, but never
served: they are evaluated again.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import text_md5
from steerops.paths import cell_dir
from steerops.specs import canonical_method, canonical_position
from steerops.steering.configs import Config, ConfigResult, VectorRef

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writer per cell there
    fcntl = None  # type: ignore[assignment]

RESULTS_FILE = "results.jsonl"
BASELINES_FILE = "baselines.jsonl"
CSV_FILE = "results.csv"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.png"
RESPONSES_DIR = "responses"
QUESTION_KEYS = ("questions_hash", "n_questions")  # the settings that name the questions
# settings that change only steered rows: an unsteered baseline logged under other values
# of these is the same responses and scores
STEERING_ONLY_KEYS = ("scope", "direction", "coefficient_unit", "vector_variant")

Score = tuple[float | None, float | None]

# steering_dir(out, trait, variant, position, component, method)
steering_dir = partial(cell_dir, "steering")


def results_file(out: Path, trait: str, variant: str, ref: VectorRef) -> Path:
    """The results log of a config whose (first) vector is `ref`."""
    return steering_dir(out, trait, variant, ref.position, ref.component, ref.method) / RESULTS_FILE


def baselines_file(out: Path, trait: str, variant: str) -> Path:
    return Path(out) / "steering" / trait / variant / BASELINES_FILE


def unsteered_hash(settings: dict[str, Any]) -> str:
    """The settings an unsteered baseline depends on (questions included): equal for two
    sweeps that differ only in what touches steered rows."""
    rest = {k: v for k, v in settings.items() if k not in STEERING_ONLY_KEYS}
    return text_md5(json.dumps(rest, sort_keys=True))[:16]


def scope_of(settings: dict[str, Any], unsteered: bool = False) -> str:
    """What must match for a logged score to stand for one evaluated now, questions aside
    (`unsteered`: for the baseline, whose rows no steering setting touches)."""
    drop = QUESTION_KEYS + (STEERING_ONLY_KEYS if unsteered else ())
    rest = {k: v for k, v in settings.items() if k not in drop}
    return text_md5(json.dumps(rest, sort_keys=True))[:16]


# ---- entries --------------------------------------------------------------------------------


def config_dict(config: Config, weights: tuple[float, ...]) -> dict[str, Any]:
    return {
        "coefficient": config.coefficient,
        "vectors": [
            {
                "layer": v.layer,
                "component": v.component,
                "position": v.position,
                "method": v.method,
                "weight": w,
            }
            for v, w in zip(config.vectors, weights, strict=True)
        ],
    }


def canonical_files(vector_files: dict[str, str] | None) -> dict[str, str] | None:
    """`vector_files` ({"method|position|component": md5}) with canonical names."""
    if vector_files is None:
        return None
    out = {}
    for key, md5 in vector_files.items():
        method, position, component = (key.split("|") + ["", ""])[:3]
        out[f"{canonical_method(method)}|{canonical_position(position)}|{component}"] = md5
    return out


def same_weight(a: float, b: float) -> bool:
    """Whether two logged weights are one (a weight recomputed in another order of
    operations, or by an older steerops, differs in its last bits): the one tolerance every
    reader of the log uses."""
    return math.isclose(a, b, rel_tol=1e-9)


def _units(entry: dict[str, Any]) -> dict[str, float]:
    """{vector (its identity without the weight): |weight| per unit coefficient} of a logged
    config; empty at coefficient 0, where the weight says nothing of the unit."""
    try:
        coefficient = float(entry["config"].get("coefficient") or 0.0)
    except (TypeError, ValueError):
        return {}
    if coefficient == 0.0:
        return {}
    return {
        vector_identity(v): abs(float(v["weight"]) / coefficient)
        for v in entry["config"]["vectors"]
    }


def logged_ref(vector: dict[str, Any]) -> VectorRef:
    """A logged vector (a config entry's `vectors` item) as the vector it names, in the
    canonical spellings."""
    return VectorRef(
        int(vector["layer"]),
        vector["component"],
        canonical_position(vector["position"]),
        canonical_method(vector["method"]),
    )


def vector_identity(vector: dict[str, Any]) -> str:
    """A logged vector's identity (layer, component, position, method; no weight)."""
    ref = logged_ref(vector)
    return json.dumps([ref.layer, ref.component, ref.position, ref.method])


def entry_key(config: dict[str, Any]) -> str:
    """A logged config's identity: its coefficient and its vectors with their weights
    (method and position in their canonical spelling)."""
    vectors = [
        {
            "layer": int(v["layer"]),
            "component": v["component"],
            "position": canonical_position(v["position"]),
            "method": canonical_method(v["method"]),
            "weight": float(v["weight"]),
        }
        for v in config["vectors"]
    ]
    return json.dumps(
        {"coefficient": config.get("coefficient"), "vectors": vectors}, sort_keys=True
    )


def config_key(config: Config, weights: tuple[float, ...]) -> str:
    return entry_key(config_dict(config, weights))


def result_dict(result: ConfigResult) -> dict[str, Any]:
    return {
        "trait_mean": result.trait_mean,
        "coherence_mean": result.coherence_mean,
        "trait_delta": result.trait_delta,
        "n": result.n,
        "n_unscored": result.n_unscored,
        **refused(result),
    }


def refused(result: ConfigResult) -> dict[str, int]:
    """`n_refused` for an entry's result when the endpoint refused to judge some answers."""
    return {"n_refused": result.n_refused} if result.n_refused else {}


def servable(entry: dict[str, Any]) -> bool:
    """Whether an entry's scores may be served: not when the endpoint refused to judge some
    of its answers (a refusal is not cached, so evaluating the config again asks again)."""
    return not (entry.get("result") or {}).get("n_refused")


def scores_of(entry: dict[str, Any]) -> list[Score] | None:
    scores = entry.get("scores")
    return None if scores is None else [(s[0], s[1]) for s in scores]


# ---- the log ---------------------------------------------------------------------------------


class ResultsLog:
    """An append-only JSONL of baseline and config entries."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []
        self._covering: dict[tuple[str, tuple[str, ...], bool], dict[str, list[int]]] = {}
        if self.path.exists():
            self.entries = _read_entries(self.path)

    def baseline(self, settings_hash: str) -> dict[str, Any] | None:
        return next(
            (
                e
                for e in reversed(self.entries)
                if e["type"] == "baseline" and e.get("settings_hash") == settings_hash
            ),
            None,
        )

    def questions(self, settings_hash: str) -> list[str] | None:
        """The questions (in score order) of the settings, from their baseline entry."""
        entry = next(
            (
                e
                for e in reversed(self.entries)
                if e["type"] == "baseline"
                and e.get("settings_hash") == settings_hash
                and isinstance(e.get("questions"), list)
            ),
            None,
        )
        return None if entry is None else list(entry["questions"])

    def logged_vectors(self, settings_hash: str) -> list[dict[str, Any]]:
        """Each vector the configs logged under these settings steered with, once (first
        seen), as logged: {layer, component, position, method, weight}."""
        seen: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            if e["type"] == "config" and e.get("settings_hash") == settings_hash:
                for v in e["config"]["vectors"]:
                    seen.setdefault(vector_identity(v), v)
        return list(seen.values())

    def units_now(
        self,
        settings_hash: str,
        absolute: bool,
        layer_norm: Callable[[VectorRef], float | None],
    ) -> dict[str, float]:
        """|weight| per unit coefficient of each vector the configs logged under these
        settings steered with, as it is now (`configs`' `units`): 1 for absolute
        coefficients, else `layer_norm(vector)` from the vectors' metadata; a vector it
        gives None for (gone) is left out."""
        out = {}
        for v in self.logged_vectors(settings_hash):
            unit = 1.0 if absolute else layer_norm(logged_ref(v))
            if unit is not None:
                out[vector_identity(v)] = unit
        return out

    def configs(
        self,
        settings_hash: str,
        vector_files: dict[str, str] | None = None,
        units: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """The latest entry of each config evaluated under these settings, in first-seen
        order, measured with the current vector files: `vector_files` ({file: md5}, the
        files on disk now), else for a file it does not name the md5 the log names last.
        After the vectors change, a config no sweep evaluated again holds the old vectors'
        numbers and is left out. So is one measured at another weight per unit coefficient
        than its vector has now (the layer's `norm` unit changed while the vector file did
        not): it steered with another strength than its coefficient now means. `units`
        ({`vector_identity`: |weight| per unit coefficient now}, read from the vectors'
        metadata by the caller), else for a vector it does not name the latest entry's."""
        configs = [e for e in self.entries if e["type"] == "config"]
        current: dict[str, str] = {}  # vector file -> its md5 in the latest entry naming it
        for e in configs:
            current.update(canonical_files(e.get("vector_files")) or {})
        current.update(canonical_files(vector_files) or {})
        measured = [
            e
            for e in configs
            if e.get("settings_hash") == settings_hash
            and all(
                current[k] == md5
                for k, md5 in (canonical_files(e.get("vector_files")) or {}).items()
            )
        ]
        unit: dict[str, float] = {}  # vector -> weight per unit coefficient, latest entry's
        for e in measured:
            unit.update(_units(e))
        unit.update(units or {})
        latest: dict[str, dict[str, Any]] = {}
        for e in measured:
            if all(same_weight(unit[k], u) for k, u in _units(e).items()):
                latest[entry_key(e["config"])] = e
        return list(latest.values())

    def covering(
        self, scope: str, questions: list[str], unsteered: bool = False
    ) -> dict[str, list[int]]:
        """{settings hash: where each of `questions` sits in its question list} for logged
        settings of this scope whose questions include all of them (the exact question
        list first). `unsteered`: `scope` is the baseline's (`scope_of(..., unsteered=True)`)."""
        memo = (scope, tuple(questions), unsteered)
        if memo not in self._covering:
            self._covering[memo] = self._find_covering(scope, questions, unsteered)
        return self._covering[memo]

    def _find_covering(
        self, scope: str, questions: list[str], unsteered: bool
    ) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for e in reversed(self.entries):
            h = e.get("settings_hash")
            if e["type"] != "baseline" or h in found or not isinstance(e.get("questions"), list):
                continue
            if scope_of(e.get("settings") or {}, unsteered) != scope:
                continue
            where = {q: i for i, q in reversed(list(enumerate(e["questions"])))}
            if all(q in where for q in questions):
                found[h] = [where[q] for q in questions]
        return dict(sorted(found.items(), key=lambda kv: kv[1] != list(range(len(questions)))))

    def baseline_scores(self, scope: str, questions: list[str]) -> tuple[str, list[Score]] | None:
        """(settings hash it was logged under, the unsteered scores on `questions`) from a
        baseline of the unsteered scope `scope` (`scope_of(..., unsteered=True)`), or None."""
        for h, at in self.covering(scope, questions, unsteered=True).items():
            entry = self.baseline(h) or {}
            scores = scores_of(entry)
            if scores is not None and servable(entry):
                return h, [scores[i] for i in at]
        return None

    def config_scores(
        self, scope: str, questions: list[str], key: str, vector_files: dict[str, str]
    ) -> list[Score] | None:
        """The logged scores of config `key` on `questions`, or None."""
        found = self.config_match(scope, questions, key, vector_files)
        return None if found is None else found[1]

    def config_match(
        self, scope: str, questions: list[str], key: str, vector_files: dict[str, str]
    ) -> tuple[str, list[Score]] | None:
        """(settings hash it was logged under, its scores on `questions`), or None."""
        covering = self.covering(scope, questions)
        files = canonical_files(vector_files)
        for e in reversed(self.entries):
            h = e.get("settings_hash")
            at = covering.get(h)
            if (
                at is not None
                and e["type"] == "config"
                and e.get("scores") is not None
                and servable(e)
                and canonical_files(e.get("vector_files")) == files
                and entry_key(e["config"]) == key
            ):
                scores = scores_of(e)
                assert scores is not None and h is not None
                return h, [scores[i] for i in at]
        return None

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Add entries at the end of the file, under the file's lock (other writers' entries
        are never lost; the unfinished line of a writer killed mid-write is dropped)."""
        if not entries:
            return
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path), open(self.path, "a+b") as f:
            drop_torn_tail(f)
            f.write(text.encode("utf-8"))
            f.flush()
        self.entries = self.entries + entries
        self._covering.clear()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` across processes (a lock file beside it; the kernel drops
    the lock if its holder dies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def drop_torn_tail(f) -> None:
    """Cut a last line with no newline (a write torn by a kill; under the lock no live
    writer is mid-line)."""
    f.seek(0, 2)
    if f.tell() == 0:
        return
    f.seek(-1, 2)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    data = f.read()
    f.truncate(data.rfind(b"\n") + 1)
    f.seek(0, 2)


def _read_entries(path: Path) -> list[dict[str, Any]]:
    entries = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):  # no newline after it: a write torn by a kill
                break
            raise SteeropsError(f"{path}:{lineno}: malformed JSON line") from None
        if (
            not isinstance(entry, dict)
            or entry.get("type") not in ("baseline", "config")
            or not isinstance(entry.get("result"), dict)
            or (entry["type"] == "config" and not isinstance(entry.get("config"), dict))
        ):
            raise SteeropsError(
                f"{path}:{lineno}: not a steering result entry "
                "(needs type baseline|config, result, and config for configs)"
            )
        if problem := _shape_problem(entry):
            raise SteeropsError(f"{path}:{lineno}: {problem}")
        entries.append(entry)
    return entries


def _is_number(value: Any) -> bool:
    """A finite number (JSON's Infinity and NaN are no score or weight)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problem(entry: dict[str, Any]) -> str | None:
    """What in an entry the readers could not use (a log given as input, e.g. known
    results, is read after a model load: refused when opened instead), or None."""
    scores = entry.get("scores")
    if scores is not None and not (
        isinstance(scores, list)
        and all(
            isinstance(s, list) and len(s) == 2 and all(v is None or _is_number(v) for v in s)
            for s in scores
        )
    ):
        return "scores: expected a list of [trait, coherence] pairs (numbers or null)"
    questions = entry.get("questions")
    if questions is not None and not (
        isinstance(questions, list) and all(isinstance(q, str) for q in questions)
    ):
        return "questions: expected a list of strings"
    if entry["type"] != "config":
        return None
    config = entry["config"]
    if config.get("coefficient") is not None and not _is_number(config["coefficient"]):
        return "config.coefficient: expected a number"
    vectors = config.get("vectors")
    if not (
        isinstance(vectors, list)
        and vectors
        and all(
            isinstance(v, dict)
            and isinstance(v.get("layer"), int)
            and not isinstance(v.get("layer"), bool)
            and _is_number(v.get("weight"))
            and all(isinstance(v.get(k), str) for k in ("method", "position", "component"))
            for v in vectors
        )
    ):
        return (
            "config.vectors: expected a list of {layer (int), weight (number), method, "
            "position, component}"
        )
    return None


def joined(values: list[Any]) -> Any:
    """One value, or a multi-vector config's values joined with '+'."""
    return values[0] if len(set(values)) == 1 else "+".join(map(str, values))
