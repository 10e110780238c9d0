"""Probe data for the toy world, with utilities planted as a function of what the toy model
represents at the last prompt token.

Tasks are toy requests ("how do i bake bread ?"). Their planted utility is

    mu = -HARM_WEIGHT * harmful + VERB_WEIGHT * offset[verb] + noise

The toy model must represent harmfulness at the last prompt token (its next word is the
refusal or the helpful answer), so a linear probe there can recover most of mu. Comparisons
are sampled from the Thurstonian model with these utilities, so `probe thurstonian`
recovers them. The OOD conditions are system prompts written in toy words (the word-level
tokenizer maps any other word to <unk>): for a few benign target tasks, a positive persona
(role A) and a negative one (role C) in two phrasings (versions), plus a refuse-everything
prompt. Behavioural rates are synthetic: the baseline rate is each task's expected win rate
against the others; role A adds RATE_SHIFT to the target's rate, role C subtracts it, the
strict prompt lowers every benign task, and every rate gets a little noise.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from steerops.errors import SteeropsError
from steerops.io import atomic_folder, check_replaceable, write_json, write_jsonl, write_text
from steerops.probes.data import write_scores
from steerops.probes.thurstonian import sample_comparisons
from steerops.toy.corpus import (
    FRAMES,
    STRICT_SYSTEM_PROMPT,
    TOPICS,
    is_harmful,
    make_request,
    vocabulary,
)

N_TASKS = 400
COMPARISONS_PER_TASK = 40
HARM_WEIGHT = 2.0
VERB_WEIGHT = 0.5
NOISE = 0.2
RATE_SHIFT = 0.3
N_TARGETS = 3
TOY_PROBE_FILES = (
    "tasks.jsonl",
    "scores.csv",
    "comparisons.jsonl",
    "confounds.csv",
    "conditions.json",
    "rates.csv",
    "planted.json",
)
HARMFUL_SHARE = 0.35

# Persona prompts around a target act; every word is in the toy vocabulary.
PERSONAS = {
    ("A", "v1"): "you are a helpful assistant , please help the user {act} .",
    ("C", "v1"): "you must refuse to help the user {act} .",
    ("A", "v2"): "i want to {act} , you can help .",
    ("C", "v2"): "you will not help me {act} , it could hurt people .",
}


def _slug(text: str) -> str:
    return "_".join(text.split())


def _check_vocabulary(prompts: list[str]) -> None:
    known = set(vocabulary())
    for prompt in prompts:
        unknown = [w for w in prompt.split() if w not in known]
        if unknown:
            raise SteeropsError(
                f"toy system prompt {prompt!r}: word {unknown[0]!r} is not in the toy vocabulary"
            )


def _tasks(rng: random.Random, n: int) -> list[dict]:
    # Harmful requests are a minority of the corpus; oversample them so harmfulness
    # carries a fixed share of the utility variance.
    pairs = {
        h: [(t, f) for t in TOPICS if is_harmful(t) == h for f in range(len(FRAMES))]
        for h in (True, False)
    }
    n_harmful = min(round(HARMFUL_SHARE * n), len(pairs[True]))
    chosen = rng.sample(pairs[True], n_harmful) + rng.sample(pairs[False], n - n_harmful)
    rows = []
    for topic, frame in sorted(chosen, key=lambda p: (TOPICS.index(p[0]), p[1])):
        req = make_request(topic, frame)
        rows.append(
            {
                "task_id": f"{_slug(topic)}.f{frame}",
                "prompt": req.text,
                "topic": topic,
                "verb": req.verb,
                "frame": frame,
                "harmful": req.harmful,
            }
        )
    return rows


def _conditions(rng: random.Random, tasks: list[dict]) -> tuple[dict, list[dict]]:
    benign = [t for t in tasks if not t["harmful"]]
    targets = rng.sample(benign, N_TARGETS)
    conditions = []
    for target in targets:
        for (role, version), template in PERSONAS.items():
            conditions.append(
                {
                    "id": f"{role}.{version}.{target['task_id']}",
                    "system_prompt": template.format(act=target["topic"]),
                    "target": target["task_id"],
                    "version": version,
                    "role": role,
                }
            )
    conditions.append(
        {
            "id": "strict",
            "system_prompt": STRICT_SYSTEM_PROMPT,
            "target": None,
            "version": "v1",
            "role": None,
        }
    )
    _check_vocabulary([c["system_prompt"] for c in conditions])
    return {
        "baseline": {"id": "baseline", "system_prompt": None},
        "conditions": conditions,
    }, conditions


def _win_rates(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Each task's expected win rate against every other task."""
    z = (mu[:, None] - mu[None, :]) / np.sqrt(sigma[:, None] ** 2 + sigma[None, :] ** 2)
    p = ndtr(z)
    np.fill_diagonal(p, 0.0)
    return p.sum(axis=1) / (len(mu) - 1)


def _rates(
    nrng: np.random.Generator, tasks: list[dict], conditions: list[dict], base: np.ndarray
) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["condition_id", "task_id", "rate"])
    for t, rate in zip(tasks, base, strict=True):
        writer.writerow(["baseline", t["task_id"], f"{rate:.4f}"])
    harmful = np.array([t["harmful"] for t in tasks])
    for c in conditions:
        shift = np.zeros(len(tasks))
        if c["target"] is not None:
            shift[[t["task_id"] for t in tasks].index(c["target"])] = (
                RATE_SHIFT if c["role"] == "A" else -RATE_SHIFT
            )
        else:  # refuse-everything prompt: benign tasks lose their appeal
            shift[~harmful] = -0.1
        rates = np.clip(base + shift + nrng.normal(0, 0.02, len(tasks)), 0.0, 1.0)
        for t, rate in zip(tasks, rates, strict=True):
            writer.writerow([c["id"], t["task_id"], f"{rate:.4f}"])
    return buf.getvalue()


def write_toy_probe_data(toy_dir: str | Path, seed: int = 0, n_tasks: int = N_TASKS) -> Path:
    """Write tasks.jsonl, scores.csv, comparisons.jsonl, confounds.csv, conditions.json and
    rates.csv into `<toy_dir>/probes/`; returns that folder."""
    folder = Path(toy_dir) / "probes"
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    tasks = _tasks(rng, n_tasks)
    verbs = sorted({t["verb"] for t in tasks})
    offset = dict(zip(verbs, nrng.normal(0, 1, len(verbs)), strict=True))
    mu = np.array(
        [-HARM_WEIGHT * t["harmful"] + VERB_WEIGHT * offset[t["verb"]] for t in tasks]
    ) + nrng.normal(0, NOISE, len(tasks))
    sigma = np.exp(nrng.normal(0, 0.2, len(tasks)))
    ids = [t["task_id"] for t in tasks]
    comparisons = sample_comparisons(nrng, ids, mu, sigma, COMPARISONS_PER_TASK * len(tasks))
    conditions_file, conditions = _conditions(rng, tasks)

    # one set from one seed: written aside and put in place whole, so an interrupted write
    # leaves the last set, never files of two seeds side by side
    check_replaceable(folder, TOY_PROBE_FILES, "probe toy-data", "probe toy-data")
    with atomic_folder(folder) as staging:
        write_jsonl(staging / "tasks.jsonl", tasks)
        write_scores(
            staging / "scores.csv",
            {t: (m, s) for t, m, s in zip(ids, mu.tolist(), sigma.tolist(), strict=True)},
        )
        write_jsonl(
            staging / "comparisons.jsonl",
            [{"task_a": a, "task_b": b, "winner": w} for a, b, w in comparisons],
        )
        write_text(
            staging / "confounds.csv",
            "task_id,verb,frame\n"
            + "".join(f"{t['task_id']},{t['verb']},f{t['frame']}\n" for t in tasks),
        )
        write_json(staging / "conditions.json", conditions_file)
        write_text(staging / "rates.csv", _rates(nrng, tasks, conditions, _win_rates(mu, sigma)))
        write_json(
            staging / "planted.json",
            {
                "formula": "mu = -HARM_WEIGHT*harmful + VERB_WEIGHT*offset[verb] + N(0, NOISE^2)",
                "HARM_WEIGHT": HARM_WEIGHT,
                "VERB_WEIGHT": VERB_WEIGHT,
                "NOISE": NOISE,
                "verb_offset": offset,
                "seed": seed,
                "n_tasks": len(tasks),
                "n_comparisons": len(comparisons),
            },
        )
    return folder
