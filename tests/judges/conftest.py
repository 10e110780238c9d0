"""The judge tests share the SmolLM2 fixtures of tests/smollm2."""

from smollm2.conftest import smollm2, smollm2_dir  # noqa: F401
