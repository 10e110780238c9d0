"""A search's outputs on disk, as `steerops search` writes them and the report reads them.

    <out>/search/<cat>/<trait>/<variant>/<position>/<component>/<method>/
        trials.csv                 number, layer, coefficient, weight, trait_mean,
                                   coherence_mean, trait_delta, delta_lo, delta_hi (the
                                   search-half interval of the trials chosen among),
                                   feasible, state, source, rows
        best.json                  the outcome, the chosen config (or none), its search-half
                                   and held-out numbers with intervals, counts
        best.csv                   best.json as one flat row
        search.png                 coefficient vs delta and coherence
        heldout_responses.jsonl    the chosen config's held-out responses
        results.jsonl, baselines.jsonl   the search's own steering results log

The Optuna study itself lives in the study database (`search.storage`), not here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerops import stats
from steerops.errors import SteeropsError
from steerops.io import file_md5, read_json, read_jsonl, write_json, write_jsonl, write_text
from steerops.paths import cell_dir
from steerops.steering.best import COMPACT as CELL_HEADLINES
from steerops.steering.best import headlines
from steerops.summary import collect, summary_dir

if TYPE_CHECKING:
    from steerops.search.trials import TrialRecord

TRIALS_FILE = "trials.csv"
BEST_FILE = "best.json"
BEST_CSV = "best.csv"
PLOT_FILE = "search.png"
HELDOUT_FILE = "heldout_responses.jsonl"
TRIAL_COLUMNS = (
    "number layer coefficient weight trait_mean coherence_mean trait_delta delta_lo delta_hi "
    "feasible state source rows"
).split()


# search_dir(out, trait, variant, position, component, method)
search_dir = partial(cell_dir, "search")


def write_trials_csv(
    path: Path,
    records: list[TrialRecord],
    intervals: dict[int, tuple[float | None, float | None]] | None = None,
) -> None:
    """The trials, with the search-half delta's 95% interval (`delta_lo`, `delta_hi`) of
    those in `intervals` (by trial number: the coherent ones the choice was made among);
    blank for the rest."""
    intervals = intervals or {}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in sorted(records, key=lambda r: r.number):
        lo, hi = intervals.get(r.number, (None, None))
        row = asdict(r) | {"delta_lo": lo, "delta_hi": hi}
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(path, buf.getvalue())


def best_row(best: dict) -> dict:
    """The one-row, flat view of best.json (best.csv): the outcome and the chosen config's
    numbers on the search half and on the held-out half, each with its interval."""
    chosen = best.get("chosen") or {}
    search, heldout = best.get("search") or {}, best.get("heldout") or {}
    status = best.get("status")
    if status == stats.OK and (stats.as_number(heldout.get("n")) or 0) < stats.MIN_HELDOUT:
        # written before "too few held out" existed: it claimed an effect on too few
        # questions, and stays that way until the search reruns
        status = stats.TOO_FEW
    return {
        "trait": best["trait"],
        "variant": best["variant"],
        "method": best["method"],
        "position": best["position"],
        "component": best["component"],
        "status": status,
        "min_coherence": best.get("min_coherence"),  # the bar its verdict was taken at
        # the search half's bar was min_coherence + this
        "coherence_margin": best.get("coherence_margin", 0.0),
        "heldout_feasible": best["feasible"],  # the held-out verdict, not the trials'
        "layer": chosen.get("layer"),
        "coefficient": chosen.get("coefficient"),
        "weight": chosen.get("weight"),
        "at_range_top": chosen.get("at_range_top"),  # the optimum may lie past coef_max
        "search_n": search.get("n"),
        "search_trait_delta": search.get("trait_delta"),
        "search_delta_lo": search.get("delta_lo"),
        "search_delta_hi": search.get("delta_hi"),
        "search_coherence": search.get("coherence_mean"),
        "heldout_n": heldout.get("n"),
        "heldout_trait_delta": heldout.get("trait_delta"),
        "heldout_delta_lo": heldout.get("delta_lo"),
        "heldout_delta_hi": heldout.get("delta_hi"),
        "heldout_p": heldout.get("p"),
        "heldout_coherence": heldout.get("coherence_mean"),
        "heldout_coherence_lo": heldout.get("coherence_lo"),  # none before they were kept
        "heldout_coherence_hi": heldout.get("coherence_hi"),
        "heldout_coherence_scored": heldout.get("coherence_scored"),
        "heldout_under_bar": heldout.get("under_bar"),
        # of them, under the raised bar the search half chose at (`coherence_margin`)
        "heldout_under_margin": heldout.get("under_margin"),
        "heldout_coherence_unscored": heldout.get("coherence_unscored"),
        "heldout_under_bar_moved": heldout.get("under_bar_moved"),
        "heldout_baseline_trait": heldout.get("baseline_trait"),
        "heldout_baseline_coherence": heldout.get("baseline_coherence"),
        "heldout_credited_delta": heldout.get("credited_delta"),
        "heldout_credited_lo": heldout.get("credited_lo"),
        "heldout_credited_hi": heldout.get("credited_hi"),
        # other choices earlier searches read the held-out half for (`earlier_reads`)
        "heldout_read_before": read_before_text(heldout.get("read_before")),
        "n_trials": best["n_trials"],
        "n_known": best.get("n_known"),
        "n_generations": best["n_generations"]["total"],
    }


# how the console line and the report introduce `read_before_text`
READ_BEFORE = "the held-out half was read before, for other choices of earlier searches"


def read_before_of(value: Any) -> str:
    """A report row's `heldout_read_before` value as text: "" where the held-out half was a
    first look (none recorded, or a missing value read back from CSV as NaN)."""
    return value if isinstance(value, str) else ""


def read_before_text(reads: list[dict] | None) -> str:
    """The held-out reads of earlier searches' choices as text ("" for none): "layer 12
    coefficient 0.2333 (delta +55.0, coherence 65.17)", joined by "; "."""
    return "; ".join(
        f"layer {r['layer']} coefficient {r['coefficient']:.4g} (delta "
        f"{stats.delta_text(r.get('trait_delta'))}, coherence "
        f"{stats.coherence_text(r.get('coherence_mean'), 2)})"
        for r in reads or []
    )


# the headline numbers per study in metrics/search.json: the same as a grid cell's (a
# search's choice, whatever its verdict, is its `layer` and `coefficient`)
COMPACT = {k: v for k, v in CELL_HEADLINES.items() if k != "unscored"}
COMPACT |= {"tried_layer": "layer", "tried_coefficient": "coefficient"}


def compact(best: dict) -> dict:
    row = best_row(best)
    return headlines({short: row[full] for short, full in COMPACT.items()})


def write_best(folder: Path, best: dict) -> None:
    """best.json (with the MD5 of the held-out responses written before it, so a later
    file of another choice is not read as this one's) and best.csv."""
    held = best.get("heldout")
    if isinstance(held, dict) and (folder / HELDOUT_FILE).is_file():
        best = {**best, "heldout": {**held, "responses_md5": file_md5(folder / HELDOUT_FILE)}}
    # what this invocation generated is said, not kept: the file (a DVC output) is the
    # same whether a run generated its rows or found them logged
    counts = {k: v for k, v in (best.get("n_generations") or {}).items() if k != "this_run"}
    best = {**best, "n_generations": counts}
    write_json(folder / BEST_FILE, best)
    row = best_row(best)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(folder / BEST_CSV, buf.getvalue())


def write_heldout_responses(folder: Path, held: dict | None) -> None:
    """The chosen config's held-out responses (empty when nothing was chosen)."""
    write_jsonl(folder / HELDOUT_FILE, [] if held is None else held["responses"])


def written_heldout_responses(
    folder: Path, layer: int, coefficient: float, settings_hash: str, questions: list[str]
) -> list[dict] | None:
    """The held-out responses an earlier finalisation wrote for this same choice (best.json,
    written after them, names the config and the held-out settings), or None."""
    try:
        best, rows = read_json(folder / BEST_FILE), read_jsonl(folder / HELDOUT_FILE)
    except (OSError, ValueError, SteeropsError):  # not written yet, or damaged: again
        return None
    chosen, held = best.get("chosen") or {}, best.get("heldout") or {}
    same = (chosen.get("layer"), chosen.get("coefficient"), held.get("settings_hash"))
    if same != (layer, coefficient, settings_hash):
        return None
    # a finalisation of another choice killed before its best.json left its responses here
    # (no MD5: a best.json written before it was kept)
    if held.get("responses_md5") not in (None, file_md5(folder / HELDOUT_FILE)):
        return None
    return rows if [r.get("question") for r in rows] == questions else None


def searches(out: Path) -> list[tuple[Path, dict]]:
    """(trials.csv, best.json) of every finished search under the outputs root."""
    root = Path(out) / "search"
    folders = sorted(p.parent for p in root.rglob(BEST_FILE)) if root.is_dir() else []
    return [
        (folder / TRIALS_FILE, read_best(folder / BEST_FILE))
        for folder in folders
        if (folder / TRIALS_FILE).is_file()
    ]


def read_best(path: Path) -> dict:
    """A study's best.json, checked for what its readers (best.csv, the report, the
    summary) take from it: one line naming the file and key, not a traceback later."""
    best = read_json(path)
    if not isinstance(best, dict):
        raise SteeropsError(f"{path}: not a JSON object")
    for key in ("trait", "variant", "method", "position", "component"):
        if not isinstance(best.get(key), str):
            raise SteeropsError(f"{path}: {key}: expected a string")
    if not isinstance(best.get("n_trials"), int) or isinstance(best["n_trials"], bool):
        raise SteeropsError(f"{path}: n_trials: expected an integer")
    generations = best.get("n_generations")
    if not isinstance(generations, dict) or not isinstance(generations.get("total"), int):
        raise SteeropsError(f"{path}: n_generations: expected an object with an integer total")
    for key in ("chosen", "search", "heldout"):
        if not isinstance(best.get(key), dict | None):
            raise SteeropsError(f"{path}: {key}: expected an object or null")
    return best


def write_search_summary(params) -> Path:
    """metrics/search.json: {cell: its headline numbers} for every study (DVC metrics)."""
    path = summary_dir(params) / "search.json"
    write_json(
        path,
        {
            cell: compact(read_best(p))
            for cell, p in collect(params.out / "search", BEST_FILE).items()
        },
    )
    return path
