#!/usr/bin/env bash
# The main job: install vae-serve into .venv, train on the embedded digits data if no bundle exists
# yet, export it to ONNX, and verify the bundle with the torch-free loader the server uses.
# VAE_BUNDLE chooses the bundle directory (default models/digits).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
BUNDLE="${VAE_BUNDLE:-models/digits}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[train]"
if [ ! -f "$BUNDLE/manifest.json" ]; then
    .venv/bin/vae-train --dataset digits --out "$BUNDLE"
fi
.venv/bin/vae-train verify --bundle "$BUNDLE"
# Serving the bundle (vae-serve --bundle "$BUNDLE") arrives with issue 3, the gRPC server.
