"""MLflow records of a steering sweep: the invocation's run, a nested run per grid cell (its
settings, its best config, its files and responses) and under it a run per config, so the
UI compares configs side by side and filters them by stage, trait, method or position.

Names lead with what differs between siblings: a cell is `mean_diff prompt[-1] toy/refusal`,
a config `L2 c1.5 mean_diff prompt[-1]`. Settings are params, measurements are metrics,
whether a result came from the cache is a tag (`steerops.cached`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops import stats
from steerops.io import read_json, tree_md5
from steerops.steering.configs import ConfigResult
from steerops.steering.evaluate import SteeringEvaluator, steers_nothing
from steerops.steering.outputs import coefficient_text
from steerops.steering.store import (
    CSV_FILE,
    CURVE_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    config_key,
    joined,
)

# metrics.json keys that are settings (params) or the chosen config (tags), not measurements
SETTING_KEYS = ("min_coherence", "n_questions", "settings_hash", "heldout_fraction", "seed")
CHOSEN_KEYS = (
    *("layer", "coefficient", "weight", "alias_of", "status"),
    *("tried_layer", "tried_coefficient", "tried_weight"),
)
RESPONSES_TABLE = "responses.json"


def invocation_name(stage: str, traits: list[str], cells: list[tuple[Any, Any]]) -> str:
    """`steer mean_diff prompt[-1] toy/refusal`, or for a grid `steer 34 cells toy/refusal`."""
    what = f"{cells[0][0]} {cells[0][1]}" if len(cells) == 1 else f"{len(cells)} cells"
    who = traits[0] if len(traits) == 1 else f"{len(traits)} traits"
    return f"{stage} {what} {who}"


# tag of a cell's run: its folder and the folder's content hash once its files are written
# (a rerun that serves everything logs again when no FINISHED run holds them: the last one
# was killed)
CELL_FILES = "steerops.cell_files"


def cell_files(folder: Path, digest: str) -> str:
    """The `CELL_FILES` tag of `folder` holding files of content hash `digest` (two cells
    of equal bytes in other folders are other records)."""
    from steerops.tracking import files_tag

    return files_tag(folder, digest)


def folder_digests(folders: list[Path]) -> list[str | None]:
    """Each folder's content hash (None: not there yet). A sweep after which its cells'
    hashes are unchanged, and that generated nothing, has nothing new to log."""
    return [tree_md5(folder) if folder.is_dir() else None for folder in folders]


def cell_name(method: Any, position: Any, trait: str) -> str:
    return f"{method} {position} {trait}"


def config_name(result: ConfigResult) -> str:
    params = config_params(result)
    coefficient = coefficient_text(params["coefficient"])
    return f"L{params['layer']} c{coefficient} {params['method']} {params['position']}"


def config_params(result: ConfigResult) -> dict[str, Any]:
    """A config as flat MLflow params (multi-vector configs join fields with '+')."""
    assert result.config is not None
    refs = result.config.vectors
    return {
        "method": joined([r.method for r in refs]),
        "position": joined([r.position for r in refs]),
        "component": joined([r.component for r in refs]),
        "layer": joined([r.layer for r in refs]),
        "coefficient": result.config.coefficient,
        "weight": "+".join(f"{w:.6g}" for w in result.weights),
    }


def log_configs(
    cell_run,
    evaluator: SteeringEvaluator,
    results: list[ConfigResult],
    span: tuple[float, float] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> None:
    """A nested run per config under the cell's run, spanning the batched evaluation that
    produced it (`span`, epoch seconds; configs are generated together). Its `all_`
    numbers hold the held-out half too; the `selection_` ones, from the cell's `rows`, are
    what the choice sees, as a search trial's are (same names), and `feasible` says whether
    the selection half is coherent: pick from these, and the cell's held-out numbers stay
    held out."""
    shared = evaluator.run_params()
    bar = evaluator.session.params.steering.min_coherence
    start, end = span or (None, None)
    by_key = {row["config_key"]: row for row in rows or ()}
    for result in results:
        assert result.config is not None  # a cell's configs: the baseline is not one
        row = by_key.get(config_key(result.config, result.weights), {})
        selection = row.get("selection_coherence_mean")
        # coefficient 0 steers nothing: never a candidate, so neither feasible nor not
        feasible = None
        if not steers_nothing(result.weights) and stats.as_number(selection) is not None:
            feasible = float(stats.coherent(selection, bar))
        cell_run.add_child(
            config_name(result),
            params={**shared, **config_params(result)},
            metrics={
                # `all_`: over every question, the held-out half too (not to pick by)
                "all_trait_mean": result.trait_mean,
                "all_coherence_mean": result.coherence_mean,
                "all_trait_delta": result.trait_delta,
                "all_n": result.n,
                "n_unscored": result.n_unscored,
                "selection_trait_delta": row.get("selection_trait_delta"),
                "selection_coherence_mean": selection,
                "selection_n": row.get("selection_n"),
                "selection_trait_mean": row.get("selection_trait_mean"),
                "feasible": feasible,
                "coherence_bar": bar,  # what `feasible` is judged at
            },
            tags={"steerops.cached": result.cached},
            start=start,
            end=end,
        )


def log_cell(
    cell_run,
    evaluator: SteeringEvaluator,
    cell: dict[str, Any],
    layers: list[int],
    written: dict[str, Any],
    out_dir: Path,
) -> None:
    """The cell's run: its settings, the best config's measurements, its files and a
    table of the saved responses."""
    cfg = evaluator.session.params.steering
    metrics = written["metrics"]
    cell_run.log_params(
        {
            **evaluator.run_params(),
            **cell,
            "layers": layers,
            "coefficients": cfg.coefficients,
            # rows a decode step, as `max_batch_rows` resolved (auto: by free memory on CUDA)
            "batch_rows": evaluator.session.batch_rows,
            **{k: metrics.get(k) for k in SETTING_KEYS if k != "settings_hash"},
        }
    )
    cell_run.log_metrics(
        {
            k: v
            for k, v in metrics.items()
            if k not in SETTING_KEYS + CHOSEN_KEYS and not isinstance(v, bool | str)
        }
    )
    chosen = {f"steerops.{k}": metrics.get(k) for k in CHOSEN_KEYS}
    if metrics.get("tried_layer") is not None:  # a choice that is not OK is not a best
        label = "best" if metrics.get("status") == stats.OK else "chosen"
        chosen[f"steerops.{label}"] = (
            f"L{metrics['tried_layer']} c{coefficient_text(metrics['tried_coefficient'])}"
        )
    cell_run.set_tags(chosen)
    for name in (CSV_FILE, METRICS_FILE, CURVE_FILE, RESULTS_FILE):
        cell_run.log_artifact(out_dir / name)
    cell_run.log_table(responses_table(written["responses"]), RESPONSES_TABLE)


def responses_table(files: list[Path]) -> list[dict[str, Any]]:
    """Rows (config, layer, coefficient, question, response, trait, coherence) of the saved
    response files, the baseline first."""
    rows = []
    for path in files:
        saved = read_json(path)
        vectors = (saved.get("config") or {}).get("vectors") or [{}]
        coefficient = (saved.get("config") or {}).get("coefficient")
        label = path.stem if saved.get("config") else "baseline"
        for r in saved.get("responses", []):
            rows.append(
                {
                    "config": label,
                    "layer": vectors[0].get("layer"),
                    "coefficient": coefficient,
                    "question": r.get("question"),
                    "response": r.get("response"),
                    "trait": r.get("trait"),
                    "coherence": r.get("coherence"),
                }
            )
    return rows
