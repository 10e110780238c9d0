"""The probe stages' DVC metrics, gathered into `metrics/` like steer's (`steerops.summary`):
DVC cannot declare a metric inside the cached folders the runs live in, and their names
follow params (task set, variant, position) that dvc.yaml cannot compute.

    metrics/probe_train.json   {cell: run, protocol, best layer, its final r with interval and n
                                (under k-fold CV its out-of-fold r and n, named so)}
    metrics/probe_ood.json     {cell: probe run, layer, tasks (which: heldout or all, and
                                the fitted ones left out), A/C inversions of n pairs with
                                the rate's interval, and per version the within-condition
                                r, its permutation p and the sign agreement, with intervals
                                and n}
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
    "best_final_r2",
    "best_oof_r",  # under k-fold CV, in place of the four above
    "best_oof_n",
    "best_oof_r2",
    "groups",  # probes.group_by's groups per part, or None
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
        summary[cell] = {k: headline[k] for k in TRAIN_KEYS if k in headline}
    write_json(summary_dir(params) / "probe_train.json", summary)


def write_ood_summary(params) -> None:
    summary = {}
    for cell, path in collect(params.out / "ood", "ood.json").items():
        result = read_json(path)
        summary[cell] = {
            "probe_run": result["probe"]["run_id"],
            "layer": result["probe"]["layer"],
            "n_tasks": result["n_tasks"],
            # None in files written before the selection was recorded (every task used)
            "task_selection": (result.get("tasks") or {}).get("selection"),
            "n_fitted_left_out": (result.get("tasks") or {}).get("n_fitted_left_out"),
            "inversion_rate": result["pairs"]["rate"],
            "inversion_rate_ci": result["pairs"].get("rate_ci", [None, None]),
            "inversions": result["pairs"]["inversions"],
            "n_inversion_pairs": result["pairs"]["n"],  # the A/C pairs the rate is over
            # targets left out of the rate and the mean target deltas (fitted by the probe)
            "n_fitted_targets_left_out": result.get("n_fitted_targets_left_out"),
            "versions": {
                version: {k: block.get(k) for k in VERSION_KEYS}
                for version, block in result["per_version"].items()
            },
        }
    write_json(summary_dir(params) / "probe_ood.json", summary)
