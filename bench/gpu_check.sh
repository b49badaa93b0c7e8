#!/usr/bin/env bash
# The scale path on one GPU in at most 8 minutes, nothing downloaded (bench/gpu_check.py says what it runs):
#   bash bench/gpu_check.sh                                  # 0.5B Llama, bf16, CUDA; writes bench/RESULTS.md's block
#   bash bench/gpu_check.sh --size tiny --device cpu --out /tmp/gpu_check.json     # rehearsal on a CPU (a test)
# Needs the repository's install (pip install -e .); prints the GPU, then one line per phase.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${GPU_CHECK_SECONDS:-480}"
if [ "$#" -eq 0 ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  set -- --size 0.5b --device cuda --write-results
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "$LIMIT" python bench/gpu_check.py "$@"
