"""The local transformers judge on tiny random models whose tokenizer spells integers with
several tokens: digits are separate tokens except the merge "10", so 100 = "10" + "0",
85 = "8" + "5". Scores are checked against an independent computation: one full forward
per (prompt, integer) without cache, batching or padding."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import transformers as T
import yaml
from transformers import DynamicCache

from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.judges import make_judge
from steerops.judges.cache import JudgeCache
from steerops.judges.hf import HFJudge
from steerops.judges.numbers import encode, integer_distributions, number_trie, tree_fits
from steerops.judges.prompts import JudgePrompts
from steerops.traits import Trait
from tiny import ARCHS, UNLISTED, VOCAB, digit_tokenizer, tiny_model

PROMPTS = JudgePrompts("rate {question} : {answer}", "coherence of {answer} for {question}")
QUESTIONS = ["how do i bake bread ?", "how do i bake 2 bread ?", "help 7 ?", "no"]
RESPONSES = ["sure . first get flour .", "sorry no", "12 bread 40", ""]


def peaky(model: torch.nn.Module) -> torch.nn.Module:
    """Sharpen the random LM head so answers differ clearly between prompts."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)
    return model


def gemma2_sliding() -> torch.nn.Module:
    torch.manual_seed(0)
    config = T.Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=6,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return T.Gemma2ForCausalLM(config).eval()


MODELS = {arch: (lambda arch=arch: tiny_model(arch)) for arch in ARCHS}
MODELS["gemma2_sliding"] = gemma2_sliding  # a window shorter than the prompts


def reference(model, tokenizer, text: str) -> dict[int, float]:
    """P(n) = prod P(number tokens) * P(next token is not a digit token, nor a "/" of a
    fraction, nor, after 0 or 1, a "." of a decimal): full forwards of prompt + number, no
    cache and no padding (sequences of equal length share a batch)."""
    base = tokenizer(text, add_special_tokens=False)["input_ids"]
    extends = np.zeros(model.config.get_text_config().vocab_size, dtype=bool)
    decimal = np.zeros_like(extends)
    for piece, i in tokenizer.get_vocab().items():
        extends[i] = piece[0].isdigit() or piece[0] == "/"
        decimal[i] = piece[0] == "."
    by_length: dict[int, list[tuple[int, list[int]]]] = {}
    for n in range(101):
        ids = tokenizer(text + str(n), add_special_tokens=False)["input_ids"]
        assert ids[: len(base)] == base
        by_length.setdefault(len(ids), []).append((n, ids))
    probs = {}
    for group in by_length.values():
        with torch.no_grad():
            logits = model(torch.tensor([ids for _, ids in group])).logits.double()
        logp = torch.log_softmax(logits, -1).numpy()
        for row, (n, ids) in enumerate(group):
            total = sum(logp[row, len(base) - 1 + k, t] for k, t in enumerate(ids[len(base) :]))
            ends = extends | decimal if n in (0, 1) else extends
            stop = np.exp(logp[row, -1])[~ends].sum()
            probs[n] = float(np.exp(total) * stop)
    return probs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return digit_tokenizer()


def rendered(tokenizer, kind: str, q: str, r: str) -> str:
    from steerops.models.generation import format_prompt

    return format_prompt(tokenizer, PROMPTS.messages(kind, q, r))


def test_a_number_continued_as_a_fraction_or_a_unit_decimal_is_no_score():
    """ "7/10" is not 7 of 100, nor "0.9" 0: their mass is no integer's (as `openai`)."""
    from steerops.judges.numbers import _node_stats

    probs = torch.tensor([[0.1, 0.1, 0.3, 0.2, 0.2, 0.1]])  # "0" "5" "." "/" "x" "y"
    extends = torch.tensor([True, True, False, True, False, False])
    decimal = torch.tensor([False, False, True, False, False, False])
    kids, stop, unit_stop = _node_stats(probs.log(), extends, decimal, [0, 1])
    assert kids[0] == pytest.approx([math.log(0.1), math.log(0.1)])
    assert math.exp(stop[0]) == pytest.approx(0.6)  # ".", "x", "y" end a number
    assert math.exp(unit_stop[0]) == pytest.approx(0.3)  # after 0 or 1, "." does not


def test_trie_spells_integers_with_merged_and_split_tokens(tokenizer):
    trie = number_trie(tokenizer, rendered(tokenizer, "trait", "q", "a"))
    spell = {n: tokenizer.convert_ids_to_tokens(list(p)) for p, n in trie.value_of.items()}
    assert len(spell) == 101
    assert spell[100] == ["10", "0"] and spell[85] == ["8", "5"] and spell[10] == ["10"]
    assert spell[7] == ["7"]
    with pytest.raises(SteeropsError, match="cannot spell"):
        number_trie(digit_tokenizer(digits=False), "<bos> <|assistant|>")


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_distributions_match_uncached_reference(tokenizer, arch, monkeypatch):
    """Tree attention where the model allows it (every architecture, unless a sliding
    window is shorter than prompt + tree), else rows fanned out with cache copies."""
    model = peaky(MODELS[arch]())
    texts = [
        rendered(tokenizer, kind, q, r)
        for q, r in zip(QUESTIONS, RESPONSES, strict=True)
        for kind in ("trait", "coherence")
    ]
    trie = number_trie(tokenizer, texts[0])
    longest = max(len(encode(tokenizer, t)) for t in texts)
    tree = tree_fits(model, longest, trie)
    assert tree == (arch != "gemma2_sliding")
    if tree:  # the tree reads the prompt's cache in place: no row is copied
        monkeypatch.setattr(DynamicCache, "reorder_cache", None)
    got = integer_distributions(model, tokenizer, texts, trie, prune_prob=0.0)
    for text, dist in zip(texts, got, strict=True):
        want = reference(model, tokenizer, text)
        assert sorted(dist) == list(range(101))
        np.testing.assert_allclose(
            [dist[n] for n in range(101)], [want[n] for n in range(101)], rtol=2e-4, atol=1e-7
        )
    # Pruning unlikely prefixes loses at most prune_prob per pruned trie node.
    pruned = integer_distributions(model, tokenizer, texts, trie, prune_prob=1e-3)
    nodes = len(trie.children) + len(trie.value_of)
    for full, cut in zip(got, pruned, strict=True):
        assert sum(full.values()) - nodes * 1e-3 <= sum(cut.values()) <= sum(full.values()) + 1e-6


def all_texts(tokenizer) -> list[str]:
    return [
        rendered(tokenizer, kind, q, r)
        for q, r in zip(QUESTIONS, RESPONSES, strict=True)
        for kind in ("trait", "coherence")
    ]


@pytest.mark.parametrize("merge_ten", [True, False])
@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_tree_at_the_edge_of_a_sliding_window(arch, merge_ten):
    """With the window just wide enough for the longest prompt and every trie node (depth
    2 with the merge "10", 3 without), the tree reads what the fan-out reads; one column
    more and the fan-out is used."""
    tokenizer = digit_tokenizer(merge_ten=merge_ten)
    texts = all_texts(tokenizer)
    trie = number_trie(tokenizer, texts[0])
    assert max(map(len, trie.value_of)) == (2 if merge_ten else 3)
    nodes = len({seq[:k] for seq in trie.value_of for k in range(1, len(seq) + 1)})
    longest = max(len(encode(tokenizer, t)) for t in texts)
    model = peaky(tiny_model(arch))
    model.config.get_text_config().sliding_window = longest + nodes + 2
    assert tree_fits(model, longest, trie) and not tree_fits(model, longest + 1, trie)
    tree = integer_distributions(model, tokenizer, texts, trie, prune_prob=0.0, tree=True)
    fan = integer_distributions(model, tokenizer, texts, trie, prune_prob=0.0, tree=False)
    for got, want in zip(tree, fan, strict=True):
        np.testing.assert_allclose(
            [got[n] for n in range(101)], [want[n] for n in range(101)], rtol=1e-4, atol=1e-9
        )


def alibi_falcon() -> torch.nn.Module:
    torch.manual_seed(0)
    config = T.FalconConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True
    )
    return T.FalconForCausalLM(config).eval()


@pytest.mark.parametrize("arch", [*sorted(UNLISTED), "falcon_alibi", "flash"])
def test_the_fan_out_where_a_custom_mask_is_not_known_to_reach_every_layer(tokenizer, arch):
    """Architectures not tested with tree attention (ALiBi reads positions from a 2D mask;
    recurrent layers ignore a 4D one) and flash attention (no 4D mask) keep the fan-out,
    and read the reference's probabilities."""
    if arch == "flash":
        model = tiny_model("llama")
        model.config._attn_implementation = "flash_attention_2"
    else:
        model = alibi_falcon() if arch == "falcon_alibi" else tiny_model(arch)
    model = peaky(model)
    texts = all_texts(tokenizer)[:4]
    trie = number_trie(tokenizer, texts[0])
    assert not tree_fits(model, 10, trie)
    if arch == "flash":
        return  # flash attention is not installed here: nothing to run
    got = integer_distributions(model, tokenizer, texts, trie, prune_prob=0.0)
    for text, dist in zip(texts, got, strict=True):
        want = reference(model, tokenizer, text)
        np.testing.assert_allclose(
            [dist[n] for n in range(101)], [want[n] for n in range(101)], rtol=2e-4, atol=1e-7
        )


def test_judge_scores_are_weighted_means_and_cached(tmp_path, tokenizer):
    model = peaky(tiny_model("llama"))
    cache = JudgeCache(tmp_path / "cache")
    judge = HFJudge(
        model,
        tokenizer,
        "tiny-llama",
        PROMPTS,
        cache,
        min_prob_mass=0.0,
        batch_size=3,
        prune_prob=0.0,
        progress=False,
    )
    scores = judge.score(QUESTIONS, RESPONSES)
    masses = []
    for (trait, coherence), q, r in zip(scores, QUESTIONS, RESPONSES, strict=True):
        for got, kind in ((trait, "trait"), (coherence, "coherence")):
            probs = reference(model, tokenizer, rendered(tokenizer, kind, q, r))
            p = np.array([probs[n] for n in range(101)])
            masses.append(p.sum())
            assert got == pytest.approx(float(p @ np.arange(101) / p.sum()), rel=1e-4)
    assert judge.calls == 8
    assert len({s for pair in scores for s in pair}) > 4  # the prompts really differ
    again = HFJudge(
        model, tokenizer, "tiny-llama", PROMPTS, cache, min_prob_mass=0.0, prune_prob=0.0
    )
    assert again.score(QUESTIONS, RESPONSES) == scores and again.calls == 0
    # Pruning changes the answer, so it is part of the judge's cache identity.
    pruned = HFJudge(model, tokenizer, "tiny-llama", PROMPTS, cache, prune_prob=0.01)
    assert pruned.id != judge.id
    pruned.score(QUESTIONS[:1], RESPONSES[:1])
    assert pruned.calls == 2
    # The mass threshold applies to cached answers too.
    cut = float(np.median(masses))
    strict = HFJudge(
        model, tokenizer, "tiny-llama", PROMPTS, cache, min_prob_mass=cut, prune_prob=0.0
    )
    flat = [s for pair in strict.score(QUESTIONS, RESPONSES) for s in pair]
    assert [s is None for s in flat] == [m < cut for m in masses] and strict.calls == 0


def test_make_judge_loads_the_variant(tmp_path, tokenizer):
    model = peaky(tiny_model("llama"))
    model.save_pretrained(tmp_path / "judge_model")
    tokenizer.save_pretrained(tmp_path / "judge_model")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        yaml.safe_dump(
            {
                "models": {"judge": {"id": "judge_model"}},
                "judge": {
                    "kind": "hf",
                    "variant": "judge",
                    "cache_dir": "cache",
                    "min_prob_mass": 0,
                },
            }
        )
    )
    trait = Trait("test/refusal", tmp_path, [], [], [], None, "The answer refuses to help.")
    judge = make_judge(load_params(params_file), trait)
    # Named by the weights' content, not the folder's path: a copy keeps its cache.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(tmp_path / "judge_model", copy / "judge_model")
    shutil.copy(params_file, copy / "params.yaml")
    assert make_judge(load_params(copy / "params.yaml"), trait).id == judge.id
    assert judge.id.startswith("hf:local-") and str(tmp_path) not in judge.id
    versioned = load_params(params_file, {"judge.version": "retrained-2"})
    assert make_judge(versioned, trait).id != judge.id
    scores = judge.score(QUESTIONS[:2], RESPONSES[:2])
    assert all(0 <= s <= 100 for pair in scores for s in pair)
    assert (tmp_path / "cache").is_dir()
    with pytest.raises(SteeropsError, match="judge.variant"):
        make_judge(load_params(params_file, {"judge.variant": None}), trait)
    with pytest.raises(SteeropsError, match="models.nope"):
        make_judge(load_params(params_file, {"judge.variant": "nope"}), trait)
