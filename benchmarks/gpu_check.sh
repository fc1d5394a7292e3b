#!/usr/bin/env bash
# The CUDA path, end to end, in under 5 minutes on one GPU: real-size random backbones through pipeline(device="cuda"),
# feature extraction on CUDA, Trainer steps with bf16 autocast (their MFU against the GPU's nominal bf16 peak), and
# `train.py --dataset demo --bf16 true` placing its frozen backbones on the GPU. Writes benchmarks/gpu_check.json
# (the `gpu` section of bench.py, in quick mode, with the machine it ran on).
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
print(f"gpu_check: {gpu['device']}: pipeline {gpu['pipeline_items_per_second']:.1f} items/s, extraction "
      f"{gpu['extraction_utterances_per_second']:.1f} utterances/s, bf16 training MFU {gpu['train_mfu_bf16']}")
PY
