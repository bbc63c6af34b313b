#!/usr/bin/env bash
# Install vae-serve with its training and test extras into .venv, check the generated gRPC code
# and the lint, then run the test suite. This is the README's second set-up command and all that
# .ci/run does.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[train,dev]"
# promtool checks the /metrics exposition in the tests; Debian ships it in the prometheus package.
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; }; } \
        || echo "scripts/test.sh: could not install promtool; its test will be skipped" >&2
fi
# The committed vae/v1 must be exactly what the pinned grpcio-tools generates from protos/.
generated="$(mktemp -d)"
trap 'rm -rf "$generated"' EXIT
bash scripts/gen_protos.sh "$generated"
diff -r --exclude=__pycache__ "$generated/vae" vae
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
