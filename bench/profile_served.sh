#!/usr/bin/env bash
# A py-spy profile of a vae-serve under load: the server pinned to core 0, bench/loadgen.py (closed
# loop) and py-spy pinned to core 1, 8 s of samples at 250 Hz after 2 s of warm-up.
#
#   bash bench/profile_served.sh BUNDLE WORKLOAD CONCURRENCY OUT.txt [CHECKOUT]
#   python bench/profile_summary.py OUT.txt
#
# CHECKOUT: another checkout of vae-serve to profile instead of this one (e.g. a worktree of an
# earlier commit); it runs with this checkout's venv (bench/checkout_path.sh). Needs py-spy
# (`.venv/bin/pip install py-spy`). Writes py-spy's raw collapsed stacks, idle samples left out,
# one root frame per thread.
set -euo pipefail
BUNDLE=$(cd "$1" && pwd); WORKLOAD=$2; CONCURRENCY=$3; OUT=$(realpath -m "$4"); CHECKOUT=${5:-}
cd "$(dirname "$0")/.."
PY="$(pwd)/.venv/bin/python"
WORK=$(mktemp -d); trap 'kill "$pid" 2>/dev/null || true; rm -rf "$WORK"' EXIT
path=""; [ -n "$CHECKOUT" ] && path=$(bash bench/checkout_path.sh "$CHECKOUT" "$WORK/shim")
(cd "$WORK" && PYTHONPATH="$path" exec taskset -c 0 "$PY" -m vae_serve.service --bundle "$BUNDLE" --port 0 --no-metrics) >"$WORK/out" 2>"$WORK/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$WORK/out" && break; sleep 0.1; done
port=$(grep listening "$WORK/out" | sed 's/.*://')
features=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['input']['num_features'])" "$BUNDLE/manifest.json")
taskset -c 1 "$PY" bench/loadgen.py --target "127.0.0.1:$port" --workload "$WORKLOAD" --closed "$CONCURRENCY" \
    --duration 11 --warmup 0 --num-features "$features" > "$WORK/load" 2>/dev/null &
load=$!
sleep 2
taskset -c 1 "$(dirname "$PY")/py-spy" record -p "$pid" -d 8 -r 250 --threads ${PYSPY_FLAGS:-} --format raw -o "$OUT" >/dev/null 2>&1
wait "$load"
"$PY" -c "import json, sys; r = json.loads(open(sys.argv[1]).readline()); print(f\"{r['requests_per_s']:.0f} requests/s, p50 {r['p50_ms']:.2f} ms (with py-spy sampling)\")" "$WORK/load"
