#!/usr/bin/env bash
# The CUDA path, end to end, on one GPU (planned for under 8 minutes on an H100; it has not run yet): real-size random
# backbones through pipeline(device="cuda"); a synthetic corpus of KEMDy's size (10,400 utterances, about 8,300
# training rows) through feature extraction on CUDA; the cached features through both data paths and bf16 training
# epochs; and `train.py --dataset kemdy --bf16 true` on the same corpus, reusing that cache. Writes
# benchmarks/gpu_check.json (the `gpu` section of bench.py, in quick mode, with the machine it ran on) and prints
# the figures with their goals.
#
#     bash benchmarks/gpu_check.sh                       # with the python on PATH
#     PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUTPUT=${OUTPUT:-benchmarks/gpu_check.json}

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: $PYTHON sees no CUDA device (torch.cuda.is_available() is not True); this check needs one GPU" >&2
    exit 2
fi
rm -f "$OUTPUT"  # a fresh file: bench.py --only merges into an existing one
"$PYTHON" benchmarks/bench.py --quick --only gpu --output "$OUTPUT"
"$PYTHON" - "$OUTPUT" <<'PY'
import json, sys
gpu = json.load(open(sys.argv[1]))["details"]["gpu"]
assert "skipped" not in gpu, gpu
assert all(str(place).startswith("cuda") for place in gpu["placed_on"].values()), gpu["placed_on"]
peak = gpu["nominal_bf16_flops"]
print(f"gpu_check: {gpu['device']}; MFU against {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'an unknown peak'} "
      f"(dense bf16): {gpu['train_mfu_bf16']} per training step, {gpu['epoch_mfu_bf16']} over an epoch")
print(f"gpu_check: {gpu['seconds_per_epoch']:.1f} s per epoch of {gpu['epoch_rows'][0]} rows (train.py: "
      f"{gpu['train_py_bf16']['seconds_per_epoch']:.1f} s), extraction {gpu['extraction_utterances_per_second']:.0f} "
      f"utterances/s, pipeline {gpu['pipeline_items_per_second']:.1f} items/s")
for key, goal in gpu["goals"].items():
    print(f"gpu_check: {key} = {gpu[key]:.3f} (goal {goal['goal']}: {'met' if goal['met'] else 'MISSED'})")
PY
