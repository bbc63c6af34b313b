#!/usr/bin/env bash
# Serving cost of an architecture (issue 12): Elbo batch 1 latency and batch 256 throughput, the MLP
# against the conv models, on Fashion-MNIST-shaped bundles (784 features). Run by hand.
#
# Serving cost does not depend on how well a model is trained, so each bundle is trained for one
# epoch on one class (minutes, not hours); pass trained bundles as NAME=DIR arguments instead.
# Each server is pinned to core 0 and the load generator to core 1, one after another.
# Usage: bash bench/serving_cost.sh [OUT_DIR] [NAME=BUNDLE ...]    (default OUT_DIR runs/serving-cost)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/serving-cost}"; shift || true
PY=.venv/bin/python
mkdir -p "$OUT"
declare -A BUNDLES=()
if [ $# -gt 0 ]; then
    for pair in "$@"; do BUNDLES[${pair%%=*}]=${pair#*=}; done
else
    declare -A ARCHS=(
        [mlp-400]="--arch mlp --hidden 400 --latent-dim 20"
        [conv-16-32]="--arch conv --hidden 16,32 --latent-dim 32"
        [conv-32-64]="--arch conv --hidden 32,64 --latent-dim 32"
    )
    for name in "${!ARCHS[@]}"; do
        if [ ! -f "$OUT/bundles/$name/manifest.json" ]; then
            # shellcheck disable=SC2086
            .venv/bin/vae-train train --dataset fashion-mnist --likelihood bernoulli --classes 0 --epochs 1 --iwae-k 10 --no-progress \
                ${ARCHS[$name]} --out "$OUT/bundles/$name" --force > /dev/null 2> "$OUT/$name.train.log"
        fi
        BUNDLES[$name]="$OUT/bundles/$name"
    done
fi
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
for name in "${!BUNDLES[@]}"; do
    log="$OUT/$name.serve.log"
    taskset -c 0 .venv/bin/vae-serve --bundle "${BUNDLES[$name]}" --port 0 --no-metrics > "$log" 2>&1 &
    server=$!
    for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
    target=$(grep -o "listening on [^ ]*" "$log" | cut -d' ' -f3)
    .venv/bin/vae-client --target "$target" health > /dev/null
    for spec in "elbo_b1_k1 1" "elbo_b256 1,4"; do
        read -r workload levels <<< "$spec"
        taskset -c 1 "$PY" bench/loadgen.py --target "$target" --label "$name" --workload "$workload" \
            --num-features 784 --closed "$levels" --duration 8 --json "$RESULTS" > /dev/null
    done
    kill "$server"; wait "$server" || true
done
"$PY" - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| model | workload | concurrency | requests/s | rows/s | p50 ms | mean ms (closed loop: c / rate) |")
print("|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["workload"], r["concurrency"], r["target"])):
    mean_ms = 1e3 * r["concurrency"] / r["requests_per_s"]
    print(f"| {r['target']} | {r['workload']} | {r['concurrency']} | {r['requests_per_s']:.0f} | "
          f"{r['rows_per_s']:.0f} | {r['p50_ms']:.2f} | {mean_ms:.2f} |")
PY
