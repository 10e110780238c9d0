"""The held-out protocol's question split."""

from __future__ import annotations

import pytest

from steerops.errors import SteeropsError
from steerops.search.heldout import split_questions


def test_question_split_is_disjoint_seeded_and_complete():
    questions = [f"q{i}" for i in range(11)]
    search, heldout = split_questions(questions, 0.5, seed=7)
    assert not set(search) & set(heldout)
    assert sorted(search + heldout) == sorted(questions)
    assert len(heldout) == round(11 * 0.5)
    assert (search, heldout) == split_questions(questions, 0.5, seed=7)
    assert (search, heldout) != split_questions(questions, 0.5, seed=8)
    with pytest.raises(SteeropsError, match="at least 2"):
        split_questions(["only"], 0.5, seed=0)
