#!/usr/bin/env bash
# The GPU benches in one call, for a lent CUDA machine: steered decoding (the engine's static
# loop vs the engine on HF generate) at 64, 256 and 1,024 distinct configs, and extraction of
# 512 prompts x 256 tokens (eager and with compiled blocks, each checked against the naive
# way's activations), on a gemma-3-4b-shaped model with random bf16 weights; ends with one
# table. Needs torch, transformers and numpy only (no tracking or search packages).
#
#     bash bench/gpu.sh                      # CUDA; budget about 8 minutes on an H200
#     bash bench/gpu.sh --smoke [TOY_MODEL]  # tiny shapes on CPU: checks it runs end to end
#
# Steered decoding: 4 random 32-token prompts per config, 64 new tokens (random weights do
# not stop early), at most 256 rows at a time, 3 alternating repeats after a warm-up that
# compiles the loop's step (one CUDA graph: 256 slots serve every config count). Set PYTHON
# to choose the interpreter.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python}"
out="$(mktemp -d)"
if [[ "${1:-}" == "--smoke" ]]; then
    steer=(--model gemma3-tiny --device cpu --configs 4,8,16 --max-new-tokens 8 --threads 1)
    extract=(--device cpu --model "${2:-$root/data/toy/model}" --prompts 32 --tokens 24)
else
    steer=(--model gemma3-4b --device cuda --configs 64,256,1024 --max-new-tokens 64)
    extract=(--device cuda)
fi

start=$SECONDS
"$py" "$root/bench/steer.py" "${steer[@]}" --prompts 4 --prompt-len 32 --ways static,hf \
    --repeats 3 --json "$out/steer.json" | tee "$out/steer.txt"
steer_seconds=$((SECONDS - start))
start=$SECONDS
"$py" "$root/bench/extract.py" "${extract[@]}" | tee "$out/extract.txt"
"$py" "$root/bench/extract.py" "${extract[@]}" --compile | tee "$out/extract_compiled.txt"
extract_seconds=$((SECONDS - start))

"$py" - "$out" "$steer_seconds" "$extract_seconds" <<'PY'
import json, re, statistics, sys
out, steer_s, extract_s = sys.argv[1], sys.argv[2], sys.argv[3]

def spread(v):
    return f"{statistics.median(v):,.0f} [{min(v):,.0f}-{max(v):,.0f}]"

rows = []
for r in json.load(open(f"{out}/steer.json")):
    syncs = "-" if r["host_syncs_per_step"] is None else f"{r['host_syncs_per_step']:.2f}"
    rows.append((f"steer {r['configs']} configs", r["way"], spread(r["tokens_per_s"]),
                 f"useful {r['useful_share']:.0%}, syncs/step {syncs}, "
                 f"time/static {statistics.median(r['time_vs_first']):.2f}x, "
                 f"identical {r['identical_rows']:.0%}"))
for blocks in ("extract", "extract_compiled"):
    text = open(f"{out}/{blocks}.txt").read()
    limit = re.search(r"FLOP limit: (\d+)", text)
    same = re.search(r"same activations: largest difference (\S+)", text)
    for name in ("steerops", "naive"):
        m = re.search(rf"{name}:\s+(\d+) tokens/s median \[(\d+)-(\d+)\] of \d+\s+"
                      r"peak memory above weights\s+([\d.]+) MiB", text)
        if m:
            share = f", {100 * int(m[1]) / int(limit[1]):.0f}% of the FLOP limit" if limit else ""
            label = ("extract 512x256" if limit else "extract (smoke)") + (
                " compiled" if blocks.endswith("compiled") else "")
            rows.append((label, name, f"{int(m[1]):,} [{int(m[2]):,}-{int(m[3]):,}]",
                         f"peak {float(m[4]):,.0f} MiB above weights{share}, "
                         f"max diff {same[1] if same else '?'}"))
head = ("bench", "way", "tokens/s median [min-max]", "note")
width = [max(len(r[i]) for r in [*rows, head]) for i in range(3)]
print()
for r in [head, *rows]:
    print(f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  {r[3]}")
print(f"wall time: steer {steer_s} s, extract {extract_s} s")
PY
