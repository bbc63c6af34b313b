#!/usr/bin/env bash
# Install vae-serve with its training and test extras into .venv, check the generated gRPC code
# and the lint, run the test suite, then the container smoke test. This is the README's second
# set-up command and all that .ci/run does.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Tools the tests call, from Debian when missing and run as root: promtool checks the /metrics
# exposition and the alerting rules (package prometheus); kubectl renders deploy/ with its built-in
# kustomize (package kubernetes-client); chromium is the browser Playwright drives through the
# explorer page (tests/test_ui.py; Playwright's own browser download is never used).
apt_install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    apt-get install -y -qq --no-install-recommends "$1" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "$1" >/dev/null 2>&1; }
}
# They download in the background (one apt at a time: dpkg takes a lock) while pip fills the venvs,
# so the browser's ~100 MB costs CI no extra minutes; the tests wait for them below.
(
    for pair in promtool:prometheus kubectl:kubernetes-client chromium:chromium; do
        command -v "${pair%%:*}" >/dev/null || apt_install "${pair#*:}" \
            || echo "scripts/test.sh: could not install ${pair%%:*}; its tests will be skipped" >&2
    done
) &
apt_tools=$!
# On any exit: no more apt installs after a failed run (the one under way finishes: dpkg is not cut
# off midway), and no generated code left behind. Emptied once waited for: its pid may be reused.
trap '[ -z "${apt_tools:-}" ] || kill "$apt_tools" 2>/dev/null; rm -rf "${generated:-}"' EXIT
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[train,dev]"
# Triton's own client drives the Open Inference Protocol (gRPC and REST) in tests/test_oip.py and
# tests/test_http.py, and its model_config proto parses our Triton configs. It pins protobuf < 5 and
# numpy < 2, so it lives in a venv of its own, never in the project's.
[ -x .venvs/tritonclient/bin/python ] || "$PYTHON" -m venv .venvs/tritonclient
.venvs/tritonclient/bin/python -m pip install --quiet --disable-pip-version-check "tritonclient[grpc,http]==2.51.0"
# KServe's SDK builds deploy/kserve/ through its typed models (tests/test_kserve.py); it pins
# protobuf < 7, so it too has a venv of its own.
[ -x .venvs/kserve/bin/python ] || "$PYTHON" -m venv .venvs/kserve
.venvs/kserve/bin/python -m pip install --quiet --disable-pip-version-check "kserve==0.21.0" pyyaml
# The committed api/ must be exactly what the pinned grpcio-tools generates from protos/.
generated="$(mktemp -d)"
bash scripts/gen_protos.sh "$generated"
diff -r --exclude=__pycache__ "$generated/api" api
.venv/bin/ruff check .
.venv/bin/ruff format --check .
wait "$apt_tools"
apt_tools=""
.venv/bin/python -m pytest "$@"
# The image: built from scratch on this machine, run, called, stopped (needs root; skips itself
# otherwise). VAE_SKIP_CONTAINER_SMOKE=1 leaves it out of a quick local run.
[ "${VAE_SKIP_CONTAINER_SMOKE:-0}" = 1 ] || bash scripts/container_smoke.sh
