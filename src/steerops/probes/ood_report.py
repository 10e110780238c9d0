"""The OOD analysis as a markdown summary and a scatter plot of probe vs behavioural delta."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from steerops.io import atomic_path
from steerops.probes.ood import fitted_compared


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _with_ci(block: dict, key: str) -> str:
    """A statistic with its 95% interval (runs written before it had none)."""
    return _interval(block[key], block.get(f"{key}_ci"))


def _interval(value, ci) -> str:
    """A value with its 95% interval, where it has one."""
    low, high = ci or (None, None)
    return _f(value) + ("" if low is None else f" [{_f(low)}, {_f(high)}]")


def tasks_line(result: dict) -> str:
    """Which tasks the statistics use: held out from the probe's fit, or all (optimistic)."""
    tasks = result.get("tasks")
    if tasks is None:  # written before the selection was recorded
        return f"Statistics on {result['n_tasks']} tasks."
    if tasks["selection"] == "heldout":
        return (
            f"Statistics on the {tasks['n_used']} tasks the probe was neither fitted nor "
            f"selected on ({tasks['n_fitted_left_out']} fitted tasks left out; "
            "`probes.ood.tasks: heldout`)."
        )
    fitted = tasks.get("n_fitted_used")
    among = "an unrecorded number" if fitted is None else str(fitted)
    return (
        f"Statistics on all {tasks['n_used']} tasks, {among} of them fitted or selected on "
        "by the probe (`probes.ood.tasks: all`): optimistic, the figures include fitted tasks."
    )


def _target_means(means: dict) -> str:
    """Per role: mean target delta of probe / behaviour, each with its 95% t interval, n."""
    parts = [
        f"{role or '-'}: {_interval(m['probe'], m.get('probe_ci'))} / "
        f"{_interval(m['behaviour'], m.get('behaviour_ci'))} (n {m['n']})"
        for role, m in means.items()
    ]
    return "; ".join(parts) or "-"


def _targets_counted(result: dict) -> str:
    """Which targets the mean target deltas count, as a sentence's end."""
    left_out = result.get("n_fitted_targets_left_out") or 0
    if (result.get("tasks") or {}).get("selection") == "heldout":
        return (
            f", targets the probe was fitted on left out ({left_out}): held out."
            if left_out
            else ", no target fitted: held out."
        )
    return ", every target counted (fitted ones too, see Targets: optimistic)."


def _inversions_counted(pairs: dict) -> str:
    """Which targets the inversions count, as a sentence's end: the probe's fitted ones too
    when it was trained under the baseline's prompt (A minus C then reads no reading it was
    fitted on), else not."""
    left_out = pairs.get("fitted_left_out") or 0
    if left_out:
        return (
            f"; {_targets(left_out)} the probe was fitted on left out: trained under another "
            "prompt than the baseline's, it may have been fitted on their A or C readings."
        )
    counted = fitted_compared(pairs)
    if not counted:
        return "."
    return (
        f"; {_targets(counted)} the probe was fitted on counted: A minus C reads two "
        "conditions it never saw (the baseline reading, in-sample for them, cancels)."
    )


def _targets(n: int) -> str:
    return f"{n} target{'' if n == 1 else 's'}"


def _baseline_vs_training(base: dict) -> str:
    """ ", not the prompt the probe was trained under: ..." where they differ, else ""."""
    if base.get("probe_trained_under_it") is not False:
        return ""
    return (
        ", **not the prompt the probe was trained under**: every delta is measured from "
        "readings under another prompt than its training's"
    )


def _fitted_mark(flag) -> str:
    return "unknown" if flag is None else ("yes" if flag else "no")


def markdown(result: dict) -> str:
    probe, base = result["probe"], result["baseline"]
    final_n = f", n {probe['final_n']}" if probe.get("final_n") else ""
    if probe.get("protocol") == "cv":  # the folds' predictions chose alpha and layer
        fit = f"out-of-fold r {_f(probe['final_r'])}{final_n}, optimistic: not held out"
    else:
        fit = f"final r {_with_ci(probe, 'final_r')}{final_n}"
    lines = [
        "# OOD probe analysis",
        "",
        f"Probe run `{probe['run_id']}`, layer {probe['layer']} ({fit})."
        f" Baseline `{base['id']}`: system prompt policy `{base['system_prompt_policy']}`"
        f" (system prompt {json.dumps(base['system_prompt'])})"
        f"{_baseline_vs_training(base)}."
        f" {result['permutations']} permutations (seed {result['seed']}).",
        "",
        tasks_line(result),
        "",
        "## Per version (pooled over conditions and tasks)",
        "",
        "The within-condition r (deltas centred in each condition) is the task-level"
        " agreement the permutation p tests (one-sided: agreement above chance, so a"
        " negative r gives a p near 1); the pooled r also counts the conditions' mean"
        " shifts, one point per condition. Intervals: 95% bootstrap over tasks; the mean"
        " target delta's: 95% t over its n (condition, target) rows" + _targets_counted(result),
        "",
    ]
    rows = []
    for version, v in result["per_version"].items():
        means = _target_means(v["mean_target_delta"])
        rows.append(
            [
                version,
                v["n_conditions"],
                v["n_pairs"],
                _with_ci(v, "pearson_within"),
                _with_ci(v, "pearson"),
                _with_ci(v, "spearman"),
                v["p_perm"],
                _with_ci(v, "sign_agreement")
                + (f" (n {v['n_sign']})" if v.get("n_sign") is not None else ""),
                means,
            ]
        )
    lines += _table(
        [
            "version",
            "conditions",
            "pairs",
            "within-condition r [95%]",
            "pooled pearson [95%]",
            "spearman [95%]",
            "p (perm, one-sided)",
            "sign agree [95%]",
            "mean target delta probe / behaviour [95%]",
        ],
        rows,
    )
    lines += [
        "## Targets",
        "",
        f"Rank 1 = the target moved most in that direction among all tasks; tasks tied "
        f"with it share the average of their places; top-k rate with k = {result['top_k']}."
        " Fitted: the probe was fitted or selected on the target (its deltas are not held"
        " out).",
        "",
    ]
    rows = [
        [
            g["role"],
            g["target"],
            _fitted_mark(g.get("fitted")),
            g["n_conditions"],
            g["topk_rate"]["probe_up"],
            g["topk_rate"]["probe_down"],
            g["topk_rate"]["behaviour_up"],
            g["topk_rate"]["behaviour_down"],
            "; ".join(
                f"{v}: {_f(m['probe'])} / {_f(m['behaviour'])}"
                for v, m in g["mean_delta_by_version"].items()
            ),
        ]
        for g in result["targets"]
    ]
    lines += _table(
        [
            "role",
            "target",
            "fitted",
            "conditions",
            "probe top-k up",
            "probe top-k down",
            "beh. top-k up",
            "beh. top-k down",
            "mean delta by version (probe / beh.)",
        ],
        rows,
    )
    pairs = result["pairs"]
    lines += [
        f"## Paired {pairs['roles'][0]}/{pairs['roles'][1]} inversions",
        "",
        (
            f"{pairs['inversions']} of {pairs['n']} comparable (target, version) pairs "
            f"invert (rate {_interval(pairs['rate'], pairs.get('rate_ci'))}, 95% Wilson "
            f"clustered by target, n {pairs['n']})"
            if pairs["n"]
            else "No comparable (target, version) pair"
        )
        + _inversions_counted(pairs),
        "",
    ]
    lines += _table(
        ["target", "fitted", "version", "probe A-C", "behaviour A-C", "inverted"],
        [
            [
                i["target"],
                _fitted_mark(i.get("fitted")),
                i["version"],
                i["probe_diff"],
                i["behaviour_diff"],
                i["inverted"],
            ]
            for i in pairs["items"]
        ],
    )
    return "\n".join(lines)


def scatter(
    path: Path,
    points: dict[str, tuple[np.ndarray, np.ndarray]],
    targets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    per_version: dict,
) -> None:
    """One colour per version, labelled with the within-condition r the permutation p tests
    (its interval and n); target tasks drawn as crosses, faint where the statistics leave
    them out (`targets`: probe deltas, behaviour deltas, left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    faint = False
    for version, (x, y) in points.items():
        block = per_version[version]
        low, high = block.get("pearson_within_ci") or (None, None)
        interval = "" if low is None else f" [{_f(low, 2)}, {_f(high, 2)}]"
        label = (
            f"{version}: within-condition r {_f(block.get('pearson_within'), 2)}{interval}, "
            f"n {block.get('n_tasks')}"
        )
        dots = ax.scatter(y, x, s=8, alpha=0.5, label=label)
        if version in targets and len(targets[version][0]):
            tx, ty, left_out = targets[version]
            colour = dots.get_facecolor()[0]
            ax.scatter(ty[~left_out], tx[~left_out], s=60, marker="x", color=colour)
            ax.scatter(ty[left_out], tx[left_out], s=60, marker="x", color=colour, alpha=0.3)
            faint = faint or bool(left_out.any())
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("behavioural delta (rate - baseline rate)")
    ax.set_ylabel("probe delta (probe - baseline probe)")
    crosses = "x = target task" + ("; faint x: fitted by the probe, not counted" if faint else "")
    ax.set_title(f"probe vs behaviour deltas per task\n({crosses})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
