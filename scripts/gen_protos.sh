#!/usr/bin/env bash
# Generate the Python protobuf/gRPC modules (with .pyi stubs) from protos/ into vae/ with the pinned
# grpcio-tools. Usage: scripts/gen_protos.sh [OUT_DIR]   (default: the repository root, i.e. vae/v1/)
# CI regenerates into a temporary directory and fails on any difference from the committed files.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.}"
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT/vae/v1" "$OUT/vae/oip"
"$PYTHON" -m grpc_tools.protoc -I protos --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
    protos/vae/v1/vae.proto protos/vae/oip/grpc_service.proto
touch "$OUT/vae/__init__.py" "$OUT/vae/v1/__init__.py" "$OUT/vae/oip/__init__.py"
