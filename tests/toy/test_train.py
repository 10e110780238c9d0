"""Training the toy model is deterministic for a seed."""

from __future__ import annotations

import pytest
import torch

from steerops.toy import corpus
from steerops.toy.tokenizer import build_tokenizer
from steerops.toy.train import TrainConfig, train_model

pytestmark = pytest.mark.slow  # trains the toy model


def test_training_is_deterministic_for_a_seed():
    tok = build_tokenizer()
    cfg = TrainConfig(hidden_size=32, intermediate_size=64, num_layers=2, steps=4, batch_size=8)
    split = corpus.split_world(0)
    a, _ = train_model(tok, split, seed=3, cfg=cfg, progress=False)
    b, _ = train_model(tok, split, seed=3, cfg=cfg, progress=False)
    c, _ = train_model(tok, split, seed=4, cfg=cfg, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
