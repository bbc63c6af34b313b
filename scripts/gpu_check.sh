#!/usr/bin/env bash
# The CUDA path, end to end, on a machine with an NVIDIA GPU (issue 13); under 5 minutes.
# Checks that ONNX Runtime's CUDA provider loads, that `vae-serve --device cuda` serves every rpc,
# that its replies equal a CPU server's within a stated tolerance, and measures Elbo batch 1 and
# batch 4096 GPU against CPU (served), and session.run against I/O binding (in-process). Writes
# OUT/gpu-check.md (and OUT/nvidia-smi.txt); exits 0 only if every check passed.
#
# Needs the project installed with onnxruntime-gpu in place of onnxruntime, e.g.
#   bash scripts/test.sh   (or python -m venv .venv && .venv/bin/pip install -e ".[train]")
#   .venv/bin/pip uninstall -y onnxruntime && .venv/bin/pip install onnxruntime-gpu
# Usage: [PYTHON=.venv/bin/python] [BUNDLE=models/digits] bash scripts/gpu_check.sh [OUT]
# Without a bundle it trains the digits one (15 s, needs the [train] extra).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu-check}"
PY="${PYTHON:-.venv/bin/python}"
BUNDLE="${BUNDLE:-models/digits}"
mkdir -p "$OUT"
{ nvidia-smi -L && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } > "$OUT/nvidia-smi.txt" 2>&1 \
    || echo "nvidia-smi: not found or failed" >> "$OUT/nvidia-smi.txt"
cat "$OUT/nvidia-smi.txt"
if [ ! -f "$BUNDLE/manifest.json" ]; then
    "$PY" -m vae_serve.export.cli train --dataset digits --out "$BUNDLE" --no-progress > /dev/null || exit 1
fi
timeout 280 "$PY" scripts/gpu_check.py --bundle "$BUNDLE" --report "$OUT/gpu-check.md"
