#!/usr/bin/env bash
# The main job: install vae-serve into .venv, train and export a digits VAE if no bundle exists
# yet, then serve it over gRPC (port 50051) and REST (the Open Inference Protocol on port 8000), with
# metrics on 9090; stop with Ctrl-C or SIGTERM.
# VAE_BUNDLE chooses the bundle directory (default models/digits); every other VAE_* setting and
# any vae-serve flag given to this script apply too, e.g. `bash scripts/start.sh --port 0`.
# `bash scripts/start.sh --ui` (or VAE_UI=true) also serves the model explorer page and prints its
# address, `vae-serve explorer on http://127.0.0.1:8000/ui/`.
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
# With the explorer page on (--ui, or VAE_UI=true), also print its address: the REST address the
# server prints (its port may be 0, so the server's own line is read) and /ui/.
ui="${VAE_UI:-false}"
for arg in "$@"; do
    case "$arg" in --ui) ui=true ;; --no-ui) ui=false ;; esac
done
case "${ui,,}" in
    1 | true | t | yes | y | on) ;;
    *) exec .venv/bin/vae-serve "$@" ;;
esac
exec .venv/bin/vae-serve "$@" > >(
    trap '' INT TERM  # Ctrl-C is the server's to handle: keep printing what it says while it drains
    while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
            "vae-serve http on "*) printf 'vae-serve explorer on %s/ui/\n' "${line#vae-serve http on }" ;;
        esac
    done
)
