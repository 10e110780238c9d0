"""Do probe outputs move with behaviour when the system prompt changes? (pure analysis)

Inputs, for every condition, two deltas per task against the baseline condition:
probe delta = probe(condition activations) - probe(baseline activations), and behavioural
delta = rate(condition) - rate(baseline) (nan where a rate is missing).

- The statistics below (per version and per condition) are computed on the `evaluated`
  tasks: by default (`probes.ood.tasks: heldout`) those the probe was neither fitted nor
  selected on, since on its training tasks the probe's baseline readings are in-sample and
  agree with anything that tracks the scores better than on new tasks. Targets are ranked
  among all tasks and kept whether fitted or not, flagged `fitted` (None: not recorded).
- Per version, pooled over its (condition, task) pairs: Pearson and Spearman r, sign
  agreement (pairs where both deltas are non-zero), and a permutation p for Pearson r:
  behavioural deltas are shuffled *within each condition* (so a condition-wide shift is not
  mistaken for task-level agreement), with `numpy.random.default_rng(seed)` drawing one
  `permutation` per condition per round, in condition order; one-sided,
  p = (1 + #{r_perm >= r_obs}) / (1 + n_perm).
- Per version, the within-condition Pearson r (both deltas centred in each condition): the
  task-level agreement the permutation p tests. The pooled r also counts how the conditions'
  mean shifts agree, which with 2-3 conditions rests on 2-3 points (two conditions that
  shift probe and behaviour the same way give a pooled r near 1 with no task-level
  agreement at all).
- Per version, 95% intervals of the within-condition r, the pooled Pearson and Spearman r and
  the sign agreement: a percentile bootstrap over tasks (a task's pairs in every condition
  resampled together, as multinomial weights), the same `BOOTSTRAP` draws from
  `default_rng(seed)` for all four.
- Per (role, target): the target task's deltas in each condition, its rank among all tasks
  by descending delta (1 = moved up most) and by ascending delta (1 = moved down most), the
  top-k rate in each direction, and its mean delta per version.
- Per version and role, the mean target delta (probe and behaviour, over the (condition,
  target) rows where both are known) with a 95% Student t interval over those n rows (None
  when n < 2).
- Paired inversions: for each (target, version) that has conditions of both pair roles
  (A = positive persona, C = negative persona), compare the target's mean delta under A minus
  under C for the probe and for behaviour; an inversion is when the two differences have
  opposite signs (pairs where either difference is 0 are not counted); the rate of
  inversions over the n comparable pairs gets a 95% Wilson interval, clustered by target
  (`stats.clustered_proportion`: a target's versions move together). Under `heldout` the
  mean target deltas leave out targets the probe was fitted on (a delta subtracts the
  baseline reading, in-sample for them); the inversions count them, flagged, when the probe
  was trained under the baseline's prompt: A minus C then reads two conditions it never
  saw, and the baseline reading cancels (trained under another prompt, they are left out).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

import numpy as np
from scipy.stats import spearmanr
from scipy.stats import t as student_t

from steerops.extract.conditions import OodCondition
from steerops.stats import CONFIDENCE, clustered_proportion
from steerops.stats.correlation import pearson

Tasks = list[str]  # task ids in row order
Conditions = list[OodCondition]
Deltas = dict[str, np.ndarray]  # condition id -> [n_tasks] deltas against the baseline

_CHUNK = 512  # permutations (or bootstrap draws) scored per vectorised batch
BOOTSTRAP = 2000


def _rowwise_pearson(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc @ xc) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / denom


def permutation_p(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_perm: int, seed: int
) -> float:
    """One-sided p of Pearson r(x, y) with y shuffled within groups, +1 corrected."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    blocks = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    observed = _rowwise_pearson(x, y[None])[0]
    if np.isnan(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, _CHUNK):
        index = np.empty((min(_CHUNK, n_perm - start), len(y)), dtype=np.int64)
        for row in index:
            for block in blocks:
                row[block] = block[rng.permutation(len(block))]
        hits += int((_rowwise_pearson(x, y[index]) >= observed - 1e-12).sum())
    return (1 + hits) / (1 + n_perm)


def _within_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of x, y centred within each group, with row weights w [draws, n]."""
    sums = np.zeros((3, len(w)))  # sxy, sxx, syy per draw
    for g in np.unique(groups):
        m = groups == g
        wg = w[:, m]
        total = np.maximum(wg.sum(axis=1, keepdims=True), 1e-300)
        dx = x[m] - (wg @ x[m])[:, None] / total
        dy = y[m] - (wg @ y[m])[:, None] / total
        sums += [(wg * dx * dy).sum(1), (wg * dx * dx).sum(1), (wg * dy * dy).sum(1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[0] / np.sqrt(sums[1] * sums[2])


def _weighted_r(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of a, b ([n] or [draws, n]) with row weights w [draws, n]."""
    total = np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    da = a - (w * a).sum(axis=1, keepdims=True) / total
    db = b - (w * b).sum(axis=1, keepdims=True) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * da * db).sum(1) / np.sqrt((w * da * da).sum(1) * (w * db * db).sum(1))


def _weighted_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (scipy's, ties share them) of v in the sample that repeats row i
    w[:, i] times, per draw [draws, n]."""
    order = np.argsort(v, kind="stable")
    _, first, inverse = np.unique(v[order], return_index=True, return_inverse=True)
    tie = np.add.reduceat(w[:, order], first, axis=1)  # weight of each distinct value
    rank = np.cumsum(tie, axis=1) - tie + (tie + 1) / 2
    out = np.empty_like(w)
    out[:, order] = rank[:, inverse]
    return out


def bootstrap_intervals(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, task: np.ndarray, seed: int
) -> dict[str, list[float | None]]:
    """95% percentile bootstrap intervals over tasks (`task`: each row's task index) of the
    within-group r, the pooled Pearson and Spearman r and the sign agreement, all from the
    same draws; an interval is None where a draw leaves the statistic undefined."""
    tasks, row_task = np.unique(task, return_inverse=True)
    both = (x != 0) & (y != 0)  # sign agreement counts pairs where both deltas move
    agree = (both & (np.sign(x) == np.sign(y))).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {
        k: [] for k in ("pearson_within", "pearson", "spearman", "sign_agreement")
    }
    chunk = max(1, min(_CHUNK, 2_000_000 // len(x)))  # [chunk, pairs] weights stay ~16 MB
    for start in range(0, BOOTSTRAP, chunk):
        counts = rng.multinomial(
            len(tasks), np.full(len(tasks), 1 / len(tasks)), size=min(chunk, BOOTSTRAP - start)
        )
        w = counts[:, row_task].astype(np.float64)
        draws["pearson_within"].append(_within_r(x, y, groups, w))
        draws["pearson"].append(_weighted_r(x, y, w))
        draws["spearman"].append(_weighted_r(_weighted_ranks(x, w), _weighted_ranks(y, w), w))
        with np.errstate(invalid="ignore", divide="ignore"):
            draws["sign_agreement"].append((w @ agree) / (w @ both))
    out: dict[str, list[float | None]] = {}
    for key, parts in draws.items():
        boot = np.concatenate(parts)
        out[key] = (
            [float(q) for q in np.quantile(boot, [0.025, 0.975])]
            if np.isfinite(boot).all()
            else [None, None]
        )
    return out


def sign_agreement(x: np.ndarray, y: np.ndarray) -> tuple[float | None, int]:
    mask = (x != 0) & (y != 0)
    n = int(mask.sum())
    return (float(np.mean(np.sign(x[mask]) == np.sign(y[mask]))) if n else None), n


def _ranks(delta: np.ndarray, target: int) -> tuple[float | None, float | None, int | None]:
    """The target's rank among the tasks' finite deltas, largest first and smallest first,
    tied tasks sharing the average of their places (coarse rates, e.g. 0/1 outcomes, tie
    many: the best place would call the target the task that moved most), and how many
    other tasks share its delta."""
    if not np.isfinite(delta[target]):
        return None, None, None
    finite = delta[np.isfinite(delta)]
    tied = int((finite == delta[target]).sum()) - 1
    above, below = int((finite > delta[target]).sum()), int((finite < delta[target]).sum())
    return 1 + above + tied / 2, 1 + below + tied / 2, tied


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _paired_means(rows: list[dict]) -> dict:
    """Mean probe and behaviour delta over the rows where both are known (a condition or
    task without a behavioural rate would otherwise weigh in one mean and not the other),
    and their count."""
    return _means_of(_both_known(rows))


def _means_of(both: list[dict]) -> dict:
    """`_paired_means` of rows already known to have both deltas."""
    return {
        "probe": _mean([r["probe_delta"] for r in both]),
        "behaviour": _mean([r["behaviour_delta"] for r in both]),
        "n": len(both),
    }


def mean_interval(values: list[float]) -> list[float | None]:
    """95% Student t interval of the mean of `values`; [None, None] below 2 values (no
    spread to estimate)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return [None, None]
    half = student_t.ppf(0.5 + CONFIDENCE / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def _means_with_intervals(rows: list[dict]) -> dict:
    """`_paired_means` with each mean's 95% t interval over the same rows."""
    both = _both_known(rows)
    return _means_of(both) | {
        "probe_ci": mean_interval([r["probe_delta"] for r in both]),
        "behaviour_ci": mean_interval([r["behaviour_delta"] for r in both]),
    }


def _both_known(rows: list[dict]) -> list[dict]:
    """The rows with both a probe and a behavioural delta."""
    return [
        r
        for r in rows
        if _nan_to_none(r["probe_delta"]) is not None
        and _nan_to_none(r["behaviour_delta"]) is not None
    ]


def _nan_to_none(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def per_version(
    tasks: Tasks, conditions: Conditions, probe: Deltas, behaviour: Deltas, n_perm: int, seed: int
) -> dict:
    out = {}
    for version in dict.fromkeys(c.version for c in conditions):
        xs, ys, groups, rows = [], [], [], []
        for k, c in enumerate(c for c in conditions if c.version == version):
            keep = np.isfinite(behaviour[c.id])
            xs.append(probe[c.id][keep])
            ys.append(behaviour[c.id][keep])
            groups.append(np.full(int(keep.sum()), k))
            rows.append(np.flatnonzero(keep))
        x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)
        task = np.concatenate(rows)
        agree, n_sign = sign_agreement(x, y)
        enough = len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
        point = {
            "pearson_within": _within_r(x, y, g, np.ones((1, len(x))))[0] if enough else None,
            "pearson": pearson(x, y) if enough else None,
            "spearman": spearmanr(x, y)[0] if enough else None,
        }
        point = {k: _nan_to_none(v) for k, v in point.items()} | {"sign_agreement": agree}
        cis = bootstrap_intervals(x, y, g, task, seed) if len(x) >= 3 else {}
        out[version] = {
            "n_pairs": int(len(x)),
            "n_conditions": len(xs),
            "n_tasks": int(len(np.unique(task))),
            "p_perm": _nan_to_none(permutation_p(x, y, g, n_perm, seed)) if enough else None,
            "n_sign": n_sign,
            **point,
            # 95% bootstrap over tasks, the same draws for all four; none without a point
            **{
                f"{k}_ci": cis.get(k, [None, None]) if v is not None else [None, None]
                for k, v in point.items()
            },
        }
    return out


def _topk_rate(rows: list[dict], key: str, top_k: int) -> float | None:
    ranks = [r[key] for r in rows if r[key] is not None]
    return float(np.mean([r <= top_k for r in ranks])) if ranks else None


def per_target(
    tasks: list[str],
    conditions: Conditions,
    probe: Deltas,
    behaviour: Deltas,
    top_k: int,
    fitted: Collection[str] | None = (),
) -> list[dict]:
    """Each (role, target)'s rows; `fitted`: the tasks the probe was fitted or selected on
    (None: not recorded), to flag a target among them."""
    index = {t: i for i, t in enumerate(tasks)}
    groups: dict[tuple[str, str], list[OodCondition]] = defaultdict(list)
    for c in conditions:
        if c.target is not None and c.target in index:
            groups[(c.role or "", c.target)].append(c)
    out = []
    for (role, target), conds in groups.items():
        t = index[target]
        rows = []
        for c in conds:
            p_desc, p_asc, p_tied = _ranks(probe[c.id], t)
            b_desc, b_asc, b_tied = _ranks(behaviour[c.id], t)
            rows.append(
                {
                    "id": c.id,
                    "version": c.version,
                    "probe_delta": float(probe[c.id][t]),
                    "behaviour_delta": _nan_to_none(behaviour[c.id][t]),
                    "probe_rank_desc": p_desc,
                    "probe_rank_asc": p_asc,
                    "behaviour_rank_desc": b_desc,
                    "behaviour_rank_asc": b_asc,
                    "probe_tied": p_tied,
                    "behaviour_tied": b_tied,
                }
            )

        by_version = {
            v: _paired_means([r for r in rows if r["version"] == v])
            for v in dict.fromkeys(r["version"] for r in rows)
        }
        out.append(
            {
                "role": role,
                "target": target,
                # the probe saw this task in training: its deltas are not held out
                "fitted": None if fitted is None else target in fitted,
                "n_conditions": len(rows),
                "conditions": rows,
                "mean_delta_by_version": by_version,
                "topk_rate": {
                    "probe_up": _topk_rate(rows, "probe_rank_desc", top_k),
                    "probe_down": _topk_rate(rows, "probe_rank_asc", top_k),
                    "behaviour_up": _topk_rate(rows, "behaviour_rank_desc", top_k),
                    "behaviour_down": _topk_rate(rows, "behaviour_rank_asc", top_k),
                },
            }
        )
    return out


def paired_inversions(targets: list[dict], roles: tuple[str, str]) -> dict:
    pos, neg = roles
    by_role = {(g["role"], g["target"]): g["mean_delta_by_version"] for g in targets}
    fitted = {g["target"]: g.get("fitted") for g in targets}
    items = []
    for (role, target), versions in by_role.items():
        if role != pos or (neg, target) not in by_role:
            continue
        for version, a in versions.items():
            c = by_role[(neg, target)].get(version)
            if c is None or None in (a["probe"], a["behaviour"], c["probe"], c["behaviour"]):
                continue
            probe_diff, beh_diff = a["probe"] - c["probe"], a["behaviour"] - c["behaviour"]
            comparable = probe_diff != 0 and beh_diff != 0
            items.append(
                {
                    "target": target,
                    "fitted": fitted[target],
                    "version": version,
                    "probe_diff": probe_diff,
                    "behaviour_diff": beh_diff,
                    "inverted": bool(comparable and np.sign(probe_diff) != np.sign(beh_diff)),
                    "comparable": comparable,
                }
            )
    n = sum(i["comparable"] for i in items)
    inversions = sum(i["inverted"] for i in items)
    # a target's pairs in several versions move together: clustered by target
    comparable = [i for i in items if i["comparable"]]
    rate = clustered_proportion(
        [float(i["inverted"]) for i in comparable], [i["target"] for i in comparable]
    )
    return {
        "roles": [pos, neg],
        "n": n,
        "inversions": inversions,
        "rate": rate.mean,
        "rate_ci": [rate.lo, rate.hi],  # 95% Wilson, clustered by target
        "items": items,
    }


def fitted_compared(pairs: dict) -> int:
    """How many targets the probe was fitted on the inversions compare (`paired_inversions`'
    comparable items)."""
    return len({i["target"] for i in pairs["items"] if i["comparable"] and i.get("fitted")})


def analyse(
    tasks: list[str],
    conditions: Conditions,
    probe: Deltas,
    behaviour: Deltas,
    n_perm: int,
    seed: int,
    top_k: int,
    roles: tuple[str, str],
    evaluated: np.ndarray | None = None,
    fitted: Collection[str] | None = (),
    exclude_fitted: bool = False,
    fitted_in_pairs: bool = True,
) -> dict:
    """Every statistic above as one JSON-ready dict. `evaluated`: a mask over `tasks` of the
    tasks the per-version and per-condition statistics use (None: all); `fitted`: the tasks
    the probe was fitted or selected on, flagged among the targets (None: not recorded);
    `exclude_fitted`: the mean target deltas leave fitted targets out too (held out),
    counting them in `n_fitted_targets_left_out`; the inversions keep them (see above) when
    `fitted_in_pairs` (the probe was trained under the baseline's prompt), else leave them
    out too (`pairs.fitted_left_out`): trained under a condition's prompt, an A or C reading
    of a fitted target may be one it was fitted on."""
    targets = per_target(tasks, conditions, probe, behaviour, top_k, fitted)
    left_out = {g["target"] for g in targets if exclude_fitted and g["fitted"]}
    scored = [g for g in targets if g["target"] not in left_out]
    if evaluated is not None:
        evaluated = np.asarray(evaluated, dtype=bool)
        tasks = [t for t, keep in zip(tasks, evaluated, strict=True) if keep]
        probe = {cid: d[evaluated] for cid, d in probe.items()}
        behaviour = {cid: d[evaluated] for cid, d in behaviour.items()}
    per_condition = []
    for c in conditions:
        keep = np.isfinite(behaviour[c.id]) & np.isfinite(probe[c.id])
        x, y = probe[c.id][keep], behaviour[c.id][keep]
        per_condition.append(
            {
                "id": c.id,
                "version": c.version,
                "role": c.role,
                "target": c.target,
                "n": int(keep.sum()),
                "pearson": _nan_to_none(pearson(x, y)) if len(x) >= 3 else None,
                # over the same tasks: those with a behavioural rate
                "mean_probe_delta": _mean(list(x)),
                "mean_behaviour_delta": _mean(list(y)),
            }
        )
    versions = per_version(tasks, conditions, probe, behaviour, n_perm, seed)
    for version, block in versions.items():
        rows = [(g["role"], r) for g in scored for r in g["conditions"] if r["version"] == version]
        block["mean_target_delta"] = {
            role: _means_with_intervals([r for ro, r in rows if ro == role])
            for role in dict.fromkeys(ro for ro, _ in rows)
        }
    paired = targets if fitted_in_pairs or not exclude_fitted else scored
    pairs = paired_inversions(paired, roles)
    pairs["fitted_left_out"] = len({g["target"] for g in targets} - {g["target"] for g in paired})
    return {
        "per_condition": per_condition,
        "per_version": versions,
        "targets": targets,
        "pairs": pairs,
        # targets the probe was fitted on, left out of the mean target deltas
        "n_fitted_targets_left_out": len(left_out),
    }
