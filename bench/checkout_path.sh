#!/usr/bin/env bash
# Print a PYTHONPATH under which `import vae_serve` finds another checkout's code instead of the
# installed one: vae_serve is a namespace package mapped from the checkout's folders (pyproject's
# package-dir), so a folder of links named vae_serve/ stands in for the mapping, and PYTHONPATH
# comes before the editable install's finder.
#
#   PYTHONPATH=$(bash bench/checkout_path.sh /tmp/old /tmp/old-shim) python -m vae_serve.service ...
set -euo pipefail
CHECKOUT=$(cd "$1" && pwd); SHIM=$(realpath -m "$2")
mkdir -p "$SHIM/vae_serve"
for part in api core service export client; do ln -sfn "$CHECKOUT/$part" "$SHIM/vae_serve/$part"; done
echo "$SHIM"
