#!/usr/bin/env bash
# The main job: install vae-serve into .venv, train and export a digits VAE if no bundle exists
# yet, then serve it over gRPC (port 50051) and REST (the Open Inference Protocol on port 8000), with
# metrics on 9090; stop with Ctrl-C or SIGTERM.
# VAE_BUNDLE chooses the bundle directory (default models/digits); every other VAE_* setting and
# any vae-serve flag given to this script apply too, e.g. `bash scripts/start.sh --port 0`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export VAE_BUNDLE="${VAE_BUNDLE:-models/digits}"
export VAE_HTTP_PORT="${VAE_HTTP_PORT-8000}"  # VAE_HTTP_PORT= (empty) turns REST off
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[train]"
if [ ! -f "$VAE_BUNDLE/manifest.json" ]; then
    .venv/bin/vae-train train --dataset digits --out "$VAE_BUNDLE"
fi
exec .venv/bin/vae-serve "$@"
