#!/usr/bin/env bash
# Server CPU per request, two versions of vae-serve side by side (e.g. before and after a refactor).
#
#   git worktree add /tmp/old <commit>
#   bash bench/ab_cpu.sh /tmp/old models/digits [rounds]
#
# OLD is a checkout of an earlier commit, run from its own folder with this checkout's venv: before
# the vae_serve package existed its server module was `service` (run as `python -m service` there);
# later ones are `vae_serve.service`, reached through bench/checkout_path.sh. Each round starts each server pinned to core 0 and drives it
# with bench/loadgen.py pinned to core 1 (closed loop, 16 callers, elbo_b1_k1, 8 s), in alternating
# order. The server is CPU-bound there, so requests served per 8 s of server CPU (user + sys, from
# /proc) measure the per-request cost of the whole served path, with less noise than wall time.
set -euo pipefail
OLD=$(cd "$1" && pwd); BUNDLE=$(cd "$2" && pwd); ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
PY="$(pwd)/.venv/bin/python"
old_module=vae_serve.service; [ -d "$OLD/service" ] && [ ! -d "$OLD/core" ] && old_module=service
serve() {  # $1: folder to run in, $2: module, $3: PYTHONPATH; prints the pid, leaves the port in $WORK/out
    (cd "$1" && PYTHONPATH="$3" exec taskset -c 0 "$PY" -m "$2" --bundle "$BUNDLE" --port 0 --no-metrics) >"$WORK/out" 2>/dev/null &
    echo $!
}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
# A checkout with the vae_serve layout is mapped by pyproject, not found by its folder: without
# this, `python -m vae_serve.service` in it would run this checkout's installed code.
old_path=""; [ "$old_module" = vae_serve.service ] && old_path=$(bash bench/checkout_path.sh "$OLD" "$WORK/shim")
for round in $(seq "$ROUNDS"); do
    order=(before after); [ $((round % 2)) = 0 ] && order=(after before)
    for label in "${order[@]}"; do
        if [ "$label" = before ]; then pid=$(serve "$OLD" "$old_module" "$old_path"); else pid=$(serve "$WORK" vae_serve.service ""); fi
        for _ in $(seq 100); do grep -q listening "$WORK/out" && break; sleep 0.2; done
        sleep 2
        port=$(grep listening "$WORK/out" | sed 's/.*://')
        cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        requests=$(taskset -c 1 "$PY" bench/loadgen.py --target "127.0.0.1:$port" --protocol vae \
            --workload elbo_b1_k1 --closed 16 --duration 8 --warmup 0 --num-features 64 2>/dev/null \
            | "$PY" -c "import json, sys; print(json.loads(sys.stdin.readline())['requests'])")
        cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        ticks=$((cpu1 - cpu0)); hz=$(getconf CLK_TCK)
        echo "{\"round\": $round, \"server\": \"$label\", \"requests\": $requests, \"server_cpu_s\": $(echo "$ticks / $hz" | bc -l | cut -c1-6)}"
        kill "$pid"; wait "$pid" 2>/dev/null || true; sleep 1
    done
done
