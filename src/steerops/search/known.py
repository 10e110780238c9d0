"""Known results: configs already evaluated on the search's questions become study trials,
and the grid's feasible band says where the search starts.

They come from steering results logs (`results.jsonl`, the steer stage's contract): the
grid cell's latest sweep (`steering.sweep`), or `search.known_results`. A logged config counts when
it is a single-vector config of the searched vector source (its method and position in
any spelling: both sides are compared canonically) on a searched layer, logged with
the same vector files and at the weight its coefficient means now (the `norm` unit's layer
norm lives beside the vector files, not in them), under the search evaluator's scope (same
model, judge, generation settings; see `steering.store`), and with scores on every search
question: the grid runs on all questions, so its scores on the search half are the search's
own numbers for that config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.stats import coherent
from steerops.steering.configs import ConfigResult, delta, summarize, trait_delta
from steerops.steering.store import same_weight


@dataclass(frozen=True)
class KnownResult:
    layer: int
    coefficient: float
    weight: float
    trait_mean: float
    coherence_mean: float
    n: int
    scores: list = field(default_factory=list, compare=False)  # per search question

    def gain(self, base: ConfigResult, direction: str) -> float | None:
        """The trait change from the baseline `base` in the steering direction, paired over
        the questions both scored, as the search's own trials are valued; a result without
        per-question scores (none from a results log) falls back to the means."""
        if self.scores:
            return trait_delta(self.scores, base, direction)
        return delta(self.trait_mean, base.trait_mean, direction)


def check_known_file(path: Path) -> None:
    """An explicit known-results log exists and reads (before a run opens)."""
    from steerops.steering.store import ResultsLog

    if not Path(path).is_file():
        raise SteeropsError(f"search.known_results: file not found: {path}")
    ResultsLog(path)  # a malformed line: one error naming it


def load_known(
    path: Path,
    scope: str,
    questions: list[str],
    method: str,
    position: str,
    component: str,
    layers: list[int],
    vector_files: dict[str, str] | None = None,
    required: bool = False,
    weight_of: Callable[[int, float], float] | None = None,
    sweep: set[str] | None = None,
) -> list[KnownResult]:
    """The comparable results in a results log, on `questions` (none if the log does not
    exist, unless required); `weight_of(layer, coefficient)`: the weight that coefficient
    steers with now (a result logged at another weight is not comparable); `sweep`: the
    config keys of the grid cell's latest sweep (`steering.sweep`; None: every config)."""
    from steerops.specs import canonical_method, canonical_position
    from steerops.steering.store import ResultsLog, entry_key

    path = Path(path)
    # logs keep the spelling they were written with: compare both sides canonically
    wanted = (canonical_method(method), canonical_position(position), component)
    if not path.is_file():
        if required:
            raise SteeropsError(f"search.known_results: file not found: {path}")
        return []
    log = ResultsLog(path)
    found: dict[tuple[int, float], KnownResult] = {}
    for entry in reversed(log.entries):
        config = entry.get("config") or {}
        vectors = config.get("vectors") or []
        if entry["type"] != "config" or len(vectors) != 1 or config.get("coefficient") is None:
            continue
        vec = vectors[0]
        logged = (
            canonical_method(str(vec.get("method"))),
            canonical_position(str(vec.get("position"))),
            vec.get("component"),
        )
        if logged != wanted or vec.get("layer") not in layers:
            continue
        if sweep is not None and entry_key(config) not in sweep:
            continue  # an earlier sweep's config: not in the grid the params define
        files = vector_files if vector_files is not None else entry.get("vector_files") or {}
        point = (int(vec["layer"]), float(config["coefficient"]))
        if point in found:
            continue
        if weight_of is not None and not same_weight(float(vec["weight"]), weight_of(*point)):
            continue  # the coefficient meant another weight then (e.g. another layer norm)
        scores = log.config_scores(scope, questions, entry_key(config), files)
        if scores is None:
            continue  # other settings, other questions, other vector files, or no scores
        summary = summarize(scores)
        if summary["trait_mean"] is None or summary["coherence_mean"] is None:
            continue
        found[point] = KnownResult(
            point[0],
            point[1],
            float(vec["weight"]),
            summary["trait_mean"],
            summary["coherence_mean"],
            summary["n"],
            scores,
        )
    return sorted(found.values(), key=lambda k: (k.layer, k.coefficient))


def band_points(
    known: list[KnownResult],
    base: ConfigResult,
    min_coherence: float,
    coef_max: float,
    direction: str = "positive",
    layers: int = 2,
) -> list[tuple[int, float]]:
    """Where the search starts: at the `layers` layers with the largest coherent trait gain
    among known results (against the baseline `base`, paired as the trials' values), the two
    thirds-points between the strongest coherent coefficient and the next known one above
    it (where coherence broke), or a half step beyond it when it is the largest known;
    points already known are left out."""
    best: dict[int, tuple[float, KnownResult]] = {}
    for k in known:
        g = k.gain(base, direction)
        if k.coefficient == 0 or not coherent(k.coherence_mean, min_coherence):
            continue
        if g is None or g <= 0:
            continue
        if k.layer not in best or g > best[k.layer][0]:
            best[k.layer] = (g, k)
    ranked = [k for _, k in sorted(best.values(), key=lambda gk: (-gk[0], gk[1].layer))]
    seen = {(k.layer, k.coefficient) for k in known}
    points: list[tuple[int, float]] = []
    for top in ranked[:layers]:
        coefs = sorted(k.coefficient for k in known if k.layer == top.layer)
        above = [c for c in coefs if c > top.coefficient]
        below = [c for c in coefs if c < top.coefficient]
        if above:
            step = above[0] - top.coefficient
            new = [top.coefficient + step / 3, top.coefficient + 2 * step / 3]
        else:
            step = top.coefficient - (below[-1] if below else 0.0)
            new = [top.coefficient + step / 2]
        for c in new:
            c = round(min(c, coef_max), 6)
            if (top.layer, c) not in seen and c > top.coefficient:
                points.append((top.layer, c))
                seen.add((top.layer, c))
    return points
