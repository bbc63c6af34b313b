#!/usr/bin/env bash
# The main job: install vae-serve into .venv, train and export a digits VAE if no bundle exists
# yet, then serve it over gRPC (port 50051) and REST (the Open Inference Protocol on port 8000), with
# metrics on 9090; stop with Ctrl-C or SIGTERM.
# VAE_BUNDLE chooses the bundle directory (default models/digits); every other VAE_* setting and
# any vae-serve flag given to this script apply too, e.g. `bash scripts/start.sh --port 0`.
# `bash scripts/start.sh --ui` (or VAE_UI=true) also serves the model explorer page and prints its
# address, `vae-serve explorer on http://127.0.0.1:8000/ui/`; with `--host 0.0.0.0` (or ::) that
# address is the loopback one, and a second line says the page is served on every interface.
# VAE_SKIP_INSTALL=1 skips creating .venv and the pip install (seconds even when nothing is new),
# for a .venv that is already installed, as in tests/test_start_script.py.
# Sourcing this file only defines explorer_lines (the tests call it with the server's lines).

# explorer_lines "vae-serve http on SCHEME://HOST:PORT": the explorer's address, from the server's own
# REST line (its port may be 0 on the command line). A wildcard host (0.0.0.0, ::) is no address a
# browser can open, so the line names the loopback address and a second line says where it listens.
explorer_lines() {
    local url="${1#vae-serve http on }" scheme host port shown wildcard=false
    scheme="${url%%://*}"
    host="${url#*://}"
    port="${host##*:}"
    host="${host%:*}"
    host="${host#\[}"
    host="${host%\]}"
    case "$host" in
        0.0.0.0 | "") shown=127.0.0.1 wildcard=true ;;
        :: | 0:0:0:0:0:0:0:0) shown="[::1]" wildcard=true ;;
        *:*) shown="[$host]" ;; # an IPv6 address is written in brackets in a URL
        *) shown="$host" ;;
    esac
    printf 'vae-serve explorer on %s://%s:%s/ui/\n' "$scheme" "$shown" "$port"
    if [ "$wildcard" = true ]; then
        printf 'vae-serve explorer: served on every interface (--host %s); ' "${host:-0.0.0.0}"
        printf "from another machine, use this machine's name or address in place of %s\n" "$shown"
    fi
}
(return 0 2>/dev/null) && return 0 # sourced: the function above is all

set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export VAE_BUNDLE="${VAE_BUNDLE:-models/digits}"
export VAE_HTTP_PORT="${VAE_HTTP_PORT-8000}"  # VAE_HTTP_PORT= (empty) turns REST off
if [ "${VAE_SKIP_INSTALL:-0}" != 1 ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[train]"
elif [ ! -x .venv/bin/vae-serve ]; then
    echo "scripts/start.sh: VAE_SKIP_INSTALL=1, but .venv has no vae-serve: run it once without VAE_SKIP_INSTALL" >&2
    exit 1
fi
if [ ! -f "$VAE_BUNDLE/manifest.json" ]; then
    .venv/bin/vae-train train --dataset digits --out "$VAE_BUNDLE"
fi
# With the explorer page on (--ui, or VAE_UI=true), also print its address: the REST address the
# server prints (its port may be 0, so the server's own line is read) and /ui/. vae-serve refuses
# --ui=true and the like (a bool flag takes no value), so --ui and --no-ui are all there is to read.
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
            "vae-serve http on "*) explorer_lines "$line" ;;
        esac
    done
)
