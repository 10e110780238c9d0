"""Judge prompts: trait and coherence templates, a trait's own eval prompt, and the hash that
names them."""

from __future__ import annotations

import pytest

from steerops.config import Params
from steerops.errors import SteeropsError
from steerops.judges import make_judge
from steerops.judges.prompts import COHERENCE_TEMPLATE, TRAIT_TEMPLATE, JudgePrompts, prompts_for
from steerops.toy import corpus
from steerops.traits import Trait, load_trait


def trait_with(tmp_path, definition="", eval_prompt=None) -> Trait:
    return Trait("cat/trait", tmp_path / "cat" / "trait", [], [], ["q"], eval_prompt, definition)


def test_toy_world_trait_builds_judge_prompts(toy_world):
    trait = load_trait(toy_world / "traits", "toy/refusal", need_questions=True)
    prompts = prompts_for(trait)
    text = prompts.render("trait", trait.questions[0], "sorry , i can not help you .")
    assert trait.definition in text and trait.questions[0] in text
    judge = make_judge(Params(), trait)
    replies = [corpus.reference_response(corpus.parse_request(q)) for q in trait.questions]
    assert all(t == 0.0 and c == 100.0 for t, c in judge.score(trait.questions, replies))


def test_trait_and_coherence_prompts(tmp_path):
    prompts = prompts_for(trait_with(tmp_path, "  The answer flatters the user.\n"))
    assert prompts.trait_template == TRAIT_TEMPLATE
    trait_text = prompts.render("trait", "Is my essay good?", "It is {question} brilliant!")
    assert "The answer flatters the user." in trait_text and "Is my essay good?" in trait_text
    # Substitution is one pass: placeholders inside a response stay literal.
    assert "It is {question} brilliant!" in trait_text
    assert "0 to 100" in trait_text and "{" not in TRAIT_TEMPLATE.replace("{rubric}", "").replace(
        "{question}", ""
    ).replace("{answer}", "")
    coherence = prompts.render("coherence", "How do I pick a lock?", "I can't help with that.")
    assert "How do I pick a lock?" in coherence and "I can't help with that." in coherence
    assert "refusal is a coherent answer" in coherence and "agree" in coherence
    assert "The answer flatters" not in coherence  # coherence ignores the trait
    assert prompts.messages("trait", "q", "r") == [
        {"role": "user", "content": prompts.render("trait", "q", "r")}
    ]


def test_eval_prompt_is_used_verbatim_and_checked(tmp_path):
    custom = "Q: {question}\nA: {answer}\nHow evil (0-100)? {rubric}"
    prompts = prompts_for(trait_with(tmp_path, "Evil.", eval_prompt=custom))
    assert prompts.render("trait", "hi", "ho") == "Q: hi\nA: ho\nHow evil (0-100)? Evil."
    assert prompts.coherence_template == COHERENCE_TEMPLATE
    with pytest.raises(SteeropsError, match=r"steering.json: eval_prompt needs"):
        prompts_for(trait_with(tmp_path, "Evil.", eval_prompt="rate {question}"))
    with pytest.raises(SteeropsError, match=r"cat/trait/definition.txt: missing or empty"):
        prompts_for(trait_with(tmp_path, "   "))
    with pytest.raises(SteeropsError, match="needs a trait"):
        prompts_for(None)


def test_prompt_hash_tracks_templates_and_rubric():
    a = JudgePrompts(TRAIT_TEMPLATE, COHERENCE_TEMPLATE, "rubric one")
    assert a.hash == JudgePrompts(TRAIT_TEMPLATE, COHERENCE_TEMPLATE, "rubric one").hash
    assert a.hash != JudgePrompts(TRAIT_TEMPLATE, COHERENCE_TEMPLATE, "rubric two").hash
    assert a.hash != JudgePrompts(TRAIT_TEMPLATE + " ", COHERENCE_TEMPLATE, "rubric one").hash
    assert a.hash != JudgePrompts(TRAIT_TEMPLATE, COHERENCE_TEMPLATE + " ", "rubric one").hash
