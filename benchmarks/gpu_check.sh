#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes): install chromtools with the GPU build of torch that pip
# picks on the machine, then train each model briefly and run its inference on accelerator="gpu".
# Writes benchmarks/results/gpu.json. Run from the repository root on a machine with an NVIDIA GPU;
# CI never runs it. Set PYTHON to choose the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet torch
fi
"$PYTHON" -m pip install --quiet -e ".[scale]"
PYTHONUNBUFFERED=1 timeout 480 "$PYTHON" benchmarks/gpu_check.py --accelerator gpu
