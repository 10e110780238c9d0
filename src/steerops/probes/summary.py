"""The probe stages' DVC metrics, gathered into `metrics/` like steer's (`steerops.summary`):
DVC cannot declare a metric inside the cached folders the runs live in, and their names
follow params (task set, variant, position) that dvc.yaml cannot compute.

    metrics/probe_train.json   {cell: run, protocol, best layer, its final r with interval and n}
    metrics/probe_ood.json     {cell: probe run, layer, tasks, A/C inversions of n pairs,
                                and per version the within-condition r, its permutation p
                                and the sign agreement, with intervals and n}
"""

from __future__ import annotations

from steerops.io import read_json, write_json
from steerops.summary import collect, summary_dir

TRAIN_KEYS = (
    "run_id",
    "protocol",
    "best_layer",
    "best_alpha",
    "best_final_r",
    "best_final_r_ci",
    "best_final_n",
)
VERSION_KEYS = (
    "pearson_within",
    "pearson_within_ci",
    "p_perm",
    "sign_agreement",
    "sign_agreement_ci",
    "n_sign",
    "n_tasks",
)


def write_train_summary(params) -> None:
    summary = {}
    for cell, path in collect(params.out / "probes", "metrics.json").items():
        headline = read_json(path)
        summary[cell] = {k: headline.get(k) for k in TRAIN_KEYS}
    write_json(summary_dir(params) / "probe_train.json", summary)


def write_ood_summary(params) -> None:
    summary = {}
    for cell, path in collect(params.out / "ood", "ood.json").items():
        result = read_json(path)
        summary[cell] = {
            "probe_run": result["probe"]["run_id"],
            "layer": result["probe"]["layer"],
            "n_tasks": result["n_tasks"],
            "inversion_rate": result["pairs"]["rate"],
            "inversions": result["pairs"]["inversions"],
            "n_inversion_pairs": result["pairs"]["n"],  # the A/C pairs the rate is over
            "versions": {
                version: {k: block.get(k) for k in VERSION_KEYS}
                for version, block in result["per_version"].items()
            },
        }
    write_json(summary_dir(params) / "probe_ood.json", summary)
