#!/usr/bin/env bash
# Triton's perf_analyzer against vae-serve's Open Inference Protocol endpoint: the tool platform
# teams already use, on the same models it would measure on Triton.
# Usage: bash bench/perf_analyzer.sh [BUNDLE]   (default models/digits; needs `bash bench/peers/install.sh perf`
# and Debian's libb64-0d). The server is pinned to core 0, perf_analyzer to core 1. Input rows are
# real test-set digits (a Bernoulli model refuses values outside [0, 1], and random data has them).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${1:-models/digits}"
PERF=bench/.venvs/perf
[ -x "$PERF/bin/perf_analyzer" ] || { echo "run: bash bench/peers/install.sh perf" >&2; exit 2; }
export LD_LIBRARY_PATH="$PWD/$PERF/lib/python3.11/site-packages/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
.venv/bin/python - "$WORK/digits.json" <<'PY'
import json, sys
from vae_serve.export.sources import load_source, make_splits
rows = make_splits(load_source("digits")).test.x[:100]
json.dump({"data": [{"x": {"content": row.tolist(), "shape": [len(row)]}} for row in rows]}, open(sys.argv[1], "w"))
PY
taskset -c 0 .venv/bin/vae-serve --bundle "$BUNDLE" --port 0 --no-metrics >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$WORK/server.out")
NAME=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1] + '/manifest.json'))['name'])" "$BUNDLE")
sleep 1
for model in "$NAME-elbo" "$NAME-encoder"; do
    echo "## $model"
    taskset -c 1 "$PERF/bin/perf_analyzer" -m "$model" -i grpc -u "127.0.0.1:$PORT" --input-data "$WORK/digits.json" \
        --concurrency-range 1:16:15 -p 4000 --percentile 99 2>&1 | sed -n '/^Request concurrency/,$p' | grep -v "^$"
done
