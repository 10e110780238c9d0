"""Probe runs on disk: one immutable directory per run, never overwritten.

    <out>/probes/<tasks>/<variant>/<position>/
        runs/<run_id>/probes.safetensors   weight_<L> [hidden] and bias_<L> [1], scaler folded in
        runs/<run_id>/manifest.json        config, inputs with hashes, counts, per-layer sweep,
                                           the ids of the tasks that fitted or chose the probe
        runs/<run_id>/predictions.csv      every layer's predictions on the tasks its r is
                                           scored on (final part, or out of fold under CV)
        runs/runs.jsonl                    append-only index, one line per invocation
        runs/latest.json                   pointer to the run of the most recent invocation
        metrics.json                       that run's headline numbers, for DVC metrics
    <out>/ood/<tasks>/<variant>/<position>/<conditions>/   written by `probe ood`
    <out>/ood/tasks/...                   the conditions' activations `probe ood` extracted
                                          (those `extract --tasks` wrote to <out>/tasks/
                                          are read from there)

DVC keeps <out>/tasks and <out>/probes as `probe_train`'s outputs and <out>/ood as
`probe_ood`'s; each stage's metrics.json/ood.json are gathered into metrics/
(`probes.summary`), since DVC refuses a metric inside an output. A run directory is
assembled under a temporary name and renamed into place, so it exists only complete.
`run_id` = UTC timestamp (when training ends) + the first 8 characters of the run key, a
hash of the config, the input hashes and the run format (`RUN_FORMAT`), + `-2`, `-3` ...
for a repeat finished in the same second. An invocation whose key matches a finished
run reuses it, provided its weights still have the MD5 its manifest records (`weights_md5`);
a damaged run is trained again, and `probe ood` names it with the command that does so.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from steerops.errors import SteeropsError
from steerops.io import (
    atomic_folder,
    check_folder_name,
    file_md5,
    json_text,
    load_tensors,
    read_json,
    read_jsonl,
    remove_orphans_in,
    save_tensors,
    text_md5,
    write_json,
    write_jsonl,
    write_text,
)
from steerops.specs import position_slug

WEIGHTS = "probes.safetensors"
MANIFEST = "manifest.json"
OOD_FILES = ("ood.json", "ood.md", "ood_scatter.png")  # what `probe ood` writes, one set


def probes_root(out: Path, tasks_name: str, variant: str, position: str) -> Path:
    check_folder_name(tasks_name, "probes.tasks_name")
    check_folder_name(variant, "probes.variant")
    return Path(out) / "probes" / tasks_name / variant / position_slug(position)


# What a run's files hold; part of the run key, so a run written before its files gained or
# changed a field (pairwise_ci, format 2; fitted_tasks, 3; final_r2 and the per-feature
# constant-layer rule, 4; predictions.csv and the training prompt, 5) is trained again, not
# reused without it. Raise it whenever train writes something new or computes something
# differently.
RUN_FORMAT = 5
PREDICTIONS = "predictions.csv"
PREDICTION_COLUMNS = ("layer", "task_id", "part", "score", "target", "prediction")


def run_key(config: dict, inputs: dict) -> str:
    keyed = {"config": config, "inputs": inputs, "format": RUN_FORMAT}
    return text_md5(json.dumps(keyed, sort_keys=True))


def ood_dir(out: Path, tasks_name: str, variant: str, position: str, conditions: str) -> Path:
    """Where `probe ood` writes: outside <out>/probes, so each stage owns its own out."""
    check_folder_name(tasks_name, "probes.tasks_name")
    check_folder_name(variant, "probes.variant")
    check_folder_name(conditions, "conditions file name")
    return Path(out) / "ood" / tasks_name / variant / position_slug(position) / conditions


def runs_dir(root: Path) -> Path:
    return Path(root) / "runs"


def find_run(root: Path, key: str) -> Path | None:
    """The newest finished, intact run with this key, if any (a damaged one is reported on
    stderr and passed over, so it is trained again)."""
    index = runs_dir(root) / "runs.jsonl"
    entries = read_jsonl(index) if index.exists() else []
    seen: set[Path] = set()  # a run reused is indexed again: said once
    for entry in reversed(entries):
        run_dir = runs_dir(root) / entry["run_id"]
        if entry.get("key") == key and (run_dir / MANIFEST).is_file() and run_dir not in seen:
            seen.add(run_dir)
            problem = run_damage(run_dir)
            if problem is None:
                return run_dir
            print(f"{run_dir}: {problem}; training it again", file=sys.stderr)
    # a run renamed into place by an invocation killed before it indexed it is finished too
    # (run ids sort by time; a dot folder is a run still being assembled)
    indexed = {entry.get("run_id") for entry in entries}
    for manifest in sorted(runs_dir(root).glob(f"*/{MANIFEST}"), reverse=True):
        run_dir = manifest.parent
        if run_dir.name in indexed or run_dir.name.startswith("."):
            continue
        if run_damage(run_dir) is None and read_json(manifest).get("key") == key:
            return run_dir
    return None


def run_damage(run_dir: Path) -> str | None:
    """Why a finished run cannot be trusted, or None: its manifest must be readable and hold
    the figures it was written with (`manifest_md5`; a run written before that was kept is
    checked by its weights alone), and its weights must have the MD5 the manifest records."""
    try:
        manifest = read_json(run_dir / MANIFEST)
    except (OSError, ValueError, SteeropsError):
        return f"{MANIFEST} is unreadable"
    recorded = manifest.get("weights_md5") if isinstance(manifest, dict) else None
    if recorded is None:
        return f"{MANIFEST} records no weights_md5"
    written = manifest.get("manifest_md5")
    if written is not None and written != manifest_md5(manifest):
        return f"{MANIFEST} does not match the MD5 it was written with (edited or damaged)"
    if not (run_dir / WEIGHTS).is_file() or file_md5(run_dir / WEIGHTS) != recorded:
        return f"{WEIGHTS} does not match the MD5 in {MANIFEST}"
    predictions = manifest.get("predictions_md5")
    if predictions is not None and (
        not (run_dir / PREDICTIONS).is_file() or file_md5(run_dir / PREDICTIONS) != predictions
    ):
        return f"{PREDICTIONS} does not match the MD5 in {MANIFEST}"
    return None


def manifest_md5(manifest: dict) -> str:
    """The MD5 of a manifest's content, its own `manifest_md5` left out (keys sorted: the
    same figures give the same hash however the file was laid out)."""
    content = {k: v for k, v in manifest.items() if k != "manifest_md5"}
    # as the file writes it (`json_text`: NaN as null, numpy numbers as numbers), so what
    # is read back hashes the same
    return text_md5(json_text(content))


def new_run_id(root: Path, key: str) -> str:
    """The UTC second and the key's first 8 characters, with `-2`, `-3` ... when that run
    folder is taken: the folder is made here, empty, so two identical trainings finishing
    together take two ids (`write_run` fills it; `drop_run_id` removes it if the run
    fails before)."""
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + key[:8]
    runs_dir(root).mkdir(parents=True, exist_ok=True)
    run_id, n = base, 1
    while True:
        try:
            (runs_dir(root) / run_id).mkdir()
            return run_id
        except FileExistsError:
            n += 1
            run_id = f"{base}-{n}"


def drop_run_id(root: Path, run_id: str) -> None:
    """Give back an id `new_run_id` took for a run that was never written."""
    with contextlib.suppress(OSError):  # written after all, or never made
        (runs_dir(root) / run_id).rmdir()


def predictions_csv(rows: list[dict]) -> str:
    """predictions.csv's text: one row per (layer, task), PREDICTION_COLUMNS."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PREDICTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_run(
    root: Path,
    run_id: str,
    probes: dict[int, tuple[np.ndarray, float]],
    manifest: dict,
    predictions: str | None = None,
) -> Path:
    """Write weights, predictions (`predictions_csv`) and manifest into a fresh run dir
    (atomically, as a whole)."""
    run_dir = runs_dir(root) / run_id
    if run_dir.exists() and any(run_dir.iterdir()):  # not the empty folder `new_run_id` took
        raise SteeropsError(f"{run_dir}: run directory already exists; not overwriting it")
    drop_run_id(root, run_id)  # the written folder is renamed into its place
    remove_orphans_in(run_dir.parent)  # what a killed run was writing (another run id)
    with atomic_folder(run_dir) as staging:
        tensors = {}
        for layer, (weight, bias) in probes.items():
            tensors[f"weight_{layer}"] = torch.from_numpy(np.asarray(weight, dtype=np.float32))
            tensors[f"bias_{layer}"] = torch.tensor([bias], dtype=torch.float32)
        save_tensors(staging / WEIGHTS, tensors, metadata={"run_id": run_id})
        manifest = {**manifest, "weights_md5": file_md5(staging / WEIGHTS)}
        if predictions is not None:
            write_text(staging / PREDICTIONS, predictions)
            manifest["predictions_md5"] = file_md5(staging / PREDICTIONS)
        write_json(staging / MANIFEST, {**manifest, "manifest_md5": manifest_md5(manifest)})
    return run_dir


def record_invocation(root: Path, manifest: dict, reused: bool) -> None:
    """Append to runs.jsonl, then point latest.json and metrics.json at this run."""
    index = runs_dir(root) / "runs.jsonl"
    rows = read_jsonl(index) if index.exists() else []
    entry = {
        "run_id": manifest["run_id"],
        "key": manifest["key"],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reused": reused,
        "best_layer": manifest["best_layer"],
    }
    protocol = manifest["config"].get("protocol", "holdout")
    # under k-fold CV the r is out-of-fold (`metric_name`), not a held-out final r
    entry[metric_name("final_r", protocol)] = manifest["best_final_r"]
    write_jsonl(index, rows + [entry])
    write_json(
        runs_dir(root) / "latest.json",
        {"run_id": manifest["run_id"], "path": str(runs_dir(root) / manifest["run_id"])},
    )
    write_json(root / "metrics.json", headline_metrics(manifest))


# under k-fold CV the out-of-fold figures chose alpha and layer: not held out, so they are
# named as such (a `dvc metrics show` column of final r holds held-out figures only) and
# carry no interval
_CV_NAMES = {
    "best_final_r": "best_oof_r",
    "best_final_n": "best_oof_n",
    "best_final_r2": "best_oof_r2",
    "final_r": "oof_r",
    "pairwise_accuracy": "oof_pairwise_accuracy",
    "pairwise_n": "oof_pairwise_n",
}


def metric_name(name: str, protocol: str) -> str:
    """What a metric is called in metrics.json and MLflow: under k-fold CV a held-out
    name (`best_final_r`) becomes its out-of-fold one (`best_oof_r`)."""
    return _CV_NAMES.get(name, name) if protocol == "cv" else name


def headline_metrics(manifest: dict) -> dict:
    metrics = _headline(manifest)
    if manifest.get("groups"):  # the groups the split kept apart (probes.group_by)
        metrics["groups"] = manifest["groups"]
    if metrics["protocol"] != "cv":
        return metrics
    dropped = ("best_final_r_ci", "pairwise_ci")
    return {metric_name(k, "cv"): v for k, v in metrics.items() if k not in dropped}


def _headline(manifest: dict) -> dict:
    layers = manifest["layers"]
    return {
        "run_id": manifest["run_id"],
        # "holdout": final r scored on tasks nothing chose on; "cv": out-of-fold, optimistic
        "protocol": manifest["config"].get("protocol", "holdout"),
        "best_layer": manifest["best_layer"],
        "best_alpha": layers[str(manifest["best_layer"])]["alpha"],
        # "lowest"/"highest": the best alpha is at that end of probes.alphas (may lie beyond)
        "best_alpha_at_edge": layers[str(manifest["best_layer"])].get("alpha_at_edge"),
        "best_sweep_r": manifest["best_sweep_r"],
        "best_final_r": manifest["best_final_r"],
        "best_final_r_ci": layers[str(manifest["best_layer"])].get("final_r_ci"),
        "best_final_n": layers[str(manifest["best_layer"])].get("final_n"),
        # out-of-sample R2: the probe's predictions in the scores' units (r ignores scale)
        "best_final_r2": layers[str(manifest["best_layer"])].get("final_r2"),
        "final_r": {k: v["final_r"] for k, v in layers.items()},
        # layers that gave no probe (r undefined, not in the best-layer choice), and why
        "skipped_layers": {k: v["skipped"] for k, v in layers.items() if v.get("skipped")},
        "pairwise_accuracy": {
            k: v["pairwise_accuracy"]
            for k, v in layers.items()
            if v.get("pairwise_accuracy") is not None
        },
        # comparisons between evaluated tasks each accuracy is scored on (chance 0.5), and
        # its 95% interval: a bootstrap over those tasks (comparisons sharing a task move
        # together)
        "pairwise_n": {
            k: v["n_pairs"] for k, v in layers.items() if v.get("pairwise_accuracy") is not None
        },
        "pairwise_ci": {
            k: v.get("pairwise_ci", [None, None])
            for k, v in layers.items()
            if v.get("pairwise_accuracy") is not None
        },
    }


def resolve_run(root: Path, run: str | Path | None = None, flag: str = "") -> Path:
    """A run dir: `run` (a path, or a run id), else the one latest.json points to. `flag`:
    what the errors' `steerops probe train` needs (`cli.run_out_flag`)."""
    if run is None:
        pointer = runs_dir(root) / "latest.json"
        if not pointer.is_file():
            raise SteeropsError(
                f"no probe run under {root} (run `steerops probe train{flag}` first)"
            )
        run_id = read_json(pointer)
        run_id = run_id.get("run_id") if isinstance(run_id, dict) else None
        if not isinstance(run_id, str):
            raise SteeropsError(
                f"{pointer}: names no run_id; run `steerops probe train{flag}` again"
            )
        run_dir = runs_dir(root) / run_id
    else:
        run_dir = Path(run) if Path(run).is_dir() else runs_dir(root) / str(run)
    if not (run_dir / MANIFEST).is_file():
        raise SteeropsError(f"probes.ood.probe_run: not a finished probe run: {run_dir}")
    problem = run_damage(run_dir)
    if problem is not None:
        raise SteeropsError(
            f"{run_dir}: damaged probe run ({problem}); run `steerops probe train{flag}` again"
        )
    return run_dir


def load_probe(run_dir: Path, layer: int | None = None) -> tuple[np.ndarray, float, int, dict]:
    """(weight, bias, layer, manifest) of one layer's probe; default the run's best layer."""
    manifest = read_json(run_dir / MANIFEST)
    layer = manifest["best_layer"] if layer is None else layer
    tensors = load_tensors(run_dir / WEIGHTS)
    if f"weight_{layer}" not in tensors:
        have = sorted(int(k.split("_")[1]) for k in tensors if k.startswith("weight_"))
        raise SteeropsError(
            f"probes.ood.layer: no probe for layer {layer} in {run_dir} (layers: {have})"
        )
    weight = tensors[f"weight_{layer}"].double().numpy()
    return weight, float(tensors[f"bias_{layer}"][0]), int(layer), manifest
