#!/usr/bin/env bash
# The GPU check of issue 16 in one command, on a machine with a CUDA device (about 3-6 minutes, at most 8):
#
#   bash benchmarks/gpu_check.sh [PAYLOAD_DIR]
#
# 1. joins and verifies every file brought in parts to PAYLOAD_DIR (default gpu_payload/ in the checkout,
#    gitignored; relative paths are from the checkout's root; parts are made with
#    `python -m benchmarks.transfer split FILE gpu_payload --part-mb 48` on the machine that has the file);
# 2. points HYBRID_IR_TOKENIZER_JSON at PAYLOAD_DIR/tokenizer.json (multilingual-e5-small's, 17 MB) when it is
#    there, and HYBRID_IR_DATA at shared/data or ../shared/data when unset (XQuAD-R, the training batches);
# 3. runs the benchmarks gpu_throughput (base size and e5-small shapes, ours vs a bare loop, tokens/s, MFU) and
#    gpu_gradcache (peak GPU memory of GradCache at batch 1024 vs the plain step at 64, losses), all bf16-mixed.
# Results: $OUT (default benchmarks/results/gpu/): one JSON per benchmark and gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PAYLOAD=${1:-gpu_payload}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"

shopt -s nullglob
for manifest in "$PAYLOAD"/*.manifest.json; do
  "$PY" -m benchmarks.transfer join "$manifest"
done
if [[ -z "${HYBRID_IR_TOKENIZER_JSON:-}" && -f "$PAYLOAD/tokenizer.json" ]]; then
  export HYBRID_IR_TOKENIZER_JSON="$(cd "$PAYLOAD" && pwd)/tokenizer.json"
fi
if [[ -z "${HYBRID_IR_DATA:-}" ]]; then
  for root in shared/data ../shared/data; do
    if [[ -d "$root/xquad-r" ]]; then export HYBRID_IR_DATA="$(cd "$root" && pwd)"; break; fi
  done
fi

"$PY" - <<'PYEOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible; nothing to measure")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 {torch.cuda.is_bf16_supported()}", flush=True)
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

timeout 480 "$PY" -m benchmarks.run --only gpu_throughput gpu_gradcache --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
