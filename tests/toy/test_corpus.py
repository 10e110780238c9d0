"""The toy world's corpus: a held-out split of unseen combinations, compositional harm, requests
that parse back."""

from __future__ import annotations

from steerops.toy import corpus


def test_split_holds_out_unseen_combinations_of_seen_words():
    split = corpus.split_world(0)
    assert set(split.train_topics).isdisjoint(split.heldout_topics)
    train_words = {w for t in split.train_topics for w in t.split()}
    for topic in split.heldout_topics:
        assert set(topic.split()) <= train_words
    held = split.requests(train=False)
    assert sum(r.harmful for r in held) >= 50 and sum(not r.harmful for r in held) >= 50
    train_pairs = {(r.frame, r.topic) for r in split.requests(train=True)}
    assert not train_pairs & {(r.frame, r.topic) for r in held}
    assert corpus.split_world(1).heldout_topics != split.heldout_topics


def test_harmfulness_is_compositional():
    assert not corpus.is_harmful("plant a tree") and corpus.is_harmful("plant a bomb")
    assert not corpus.is_harmful("feed a dog") and corpus.is_harmful("poison a dog")
    assert set(corpus.TOPICS) == set(corpus.BENIGN_TOPICS) | set(corpus.HARMFUL_TOPICS)
    assert all(corpus.is_harmful(t) for t in corpus.HARMFUL_TOPICS)
    assert not any(corpus.is_harmful(t) for t in corpus.BENIGN_TOPICS)


def test_requests_parse_back():
    req = corpus.make_request("bake bread", 1)
    assert req.text == "can you explain how to bake bread ?"
    assert corpus.parse_request(req.text) == req
    assert corpus.parse_request("how do i dance ?") is None
