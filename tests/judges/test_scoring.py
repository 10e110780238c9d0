"""From answer distributions to 0-100 scores: integer tokens, probability-weighted means, the mass
threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steerops.judges.scoring import as_score_int, integer_probs, thresholded, weighted_score


def test_integer_tokens():
    assert [as_score_int(t) for t in ["0", " 42", "100\n", "7 "]] == [0, 42, 100, 7]
    # token text with the tokenizer's word-start marker, as some servers send it
    assert [as_score_int(t) for t in ["\u258185", "\u012085", "\u2581"]] == [85, 85, None]
    for bad in ["101", "-1", "4.5", "", " ", "ten", "１", "1e2", "1000", "+5"]:
        assert as_score_int(bad) is None, bad


def test_weighting_matches_numpy_on_crafted_logprobs():
    rng = np.random.default_rng(0)
    tokens = ["85", " 85", "90", "Sure", "100", "101", "0", "-3", "７0", "70", "The"]
    logits = rng.normal(size=len(tokens)) * 2
    logprobs = logits - np.log(np.exp(logits).sum())
    top = [{"token": t, "logprob": float(lp)} for t, lp in zip(tokens, logprobs, strict=True)]
    probs = integer_probs(top)
    assert probs[85] == pytest.approx(math.exp(logprobs[0]) + math.exp(logprobs[1]))
    assert set(probs) == {85, 90, 100, 0, 70}
    valid = [i for i, t in enumerate(tokens) if t.strip() in {"85", "90", "100", "0", "70"}]
    values = np.array([int(tokens[i]) for i in valid], dtype=float)
    p = np.exp(logprobs[valid])
    score, mass = weighted_score(probs)
    assert mass == pytest.approx(p.sum()) and score == pytest.approx(p @ values / p.sum())
    assert weighted_score({}) == (None, 0.0)
    assert integer_probs([{"token": "5", "logprob": float("nan")}, {"token": "6"}]) == {}


def test_none_threshold():
    probs = {40: 0.1, 60: 0.1}  # most of the mass went to words: the judge did not answer
    score, mass = weighted_score(probs)
    assert score == pytest.approx(50.0) and mass == pytest.approx(0.2)
    assert thresholded(score, mass, 0.25) is None
    assert thresholded(score, mass, 0.2) == pytest.approx(50.0)
    assert thresholded(None, 0.0, 0.0) is None
