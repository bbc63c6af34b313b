"""Peer server: Seldon MLServer 1.7.1 with a custom ONNX Runtime runtime serving the VAE.

Usage (with the peer venv made by bench/peers/install.sh):
    bench/.venvs/mlserver/bin/python bench/peers/mlserver/run_mlserver.py --bundle DIR --grpc-port P

Writes settings.json and one model-settings.json per model (vae_encode, vae_elbo_k1,
vae_elbo_k100; runtime vae_runtime.VaeRuntime) into a fresh temporary directory pointing at the
bundle, runs `mlserver start` on it, waits until ServerReady and every ModelReady answer true over
gRPC, then prints one line "READY mlserver ... grpc=HOST:PORT" to stdout. Blocks; on SIGTERM or
SIGINT it stops MLServer (SIGTERM to its process group, SIGKILL after --stop-timeout s), removes
the temporary directory and exits 0.

Adaptive batching (MLServer counts *requests*, not rows: max_batch_size requests of any row count
are concatenated along the first axis, the batch closes when that many arrived or max_batch_time
after its first request; MLServer's batch queue holds max_batch_size requests, further ones wait
to enqueue):
    vae_encode, vae_elbo_k1: max_batch_size 8192, max_batch_time 0.001 s
    vae_elbo_k100:           max_batch_size 64,   max_batch_time 0.001 s
parallel_workers (--workers, default 1, MLServer's own default and like bench/run_all.py's
vae-serve with --batch-runners 1 on one pinned core; 2 suits two cores): inference worker
processes, each with every model loaded (ONNX Runtime intra_op_num_threads=1).
Ports: gRPC on --grpc-port; MLServer always serves REST too, on --http-port (default: a free
port); its Prometheus metrics server is off unless --metrics-port is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent
sys.path.insert(0, str(PEERS))
from vae_compute import MODELS, bundle_dims  # noqa: E402

MAX_BATCH_SIZE = {"vae_encode": 8192, "vae_elbo_k1": 8192, "vae_elbo_k100": 64}  # requests per batch
MAX_BATCH_TIME_S = 0.001


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def write_settings(root: Path, args: argparse.Namespace, http_port: int) -> None:
    num_features, latent_dim = bundle_dims(args.bundle)
    settings = {
        "debug": False,
        "host": args.host,
        "grpc_port": args.grpc_port,
        "http_port": http_port,
        "parallel_workers": args.workers,
        "metrics_endpoint": "/metrics" if args.metrics_port is not None else None,
        "metrics_port": args.metrics_port or 0,
        "metrics_dir": str(root / ".metrics"),
        "environments_dir": str(root / ".envs"),
        "model_repository_root": str(root),
        "load_models_at_startup": True,
        "grpc_max_message_length": 64 << 20,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=1))
    for index, (name, (k, outputs)) in enumerate(MODELS.items()):
        folder = root / name
        folder.mkdir()
        if k is None:
            out_meta = [{"name": o, "datatype": "FP32", "shape": [-1, latent_dim]} for o in outputs]
        else:
            out_meta = [{"name": o, "datatype": "FP64", "shape": [-1, 1]} for o in outputs]  # see vae_compute
        model_settings = {
            "name": name,
            "implementation": "vae_runtime.VaeRuntime",
            "platform": "onnxruntime",
            "max_batch_size": MAX_BATCH_SIZE[name],
            "max_batch_time": args.max_batch_time_ms / 1000.0,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, num_features]}],
            "outputs": out_meta,
            "parameters": {
                "version": "1",
                "extra": {
                    "bundle": str(Path(args.bundle).resolve()),
                    "intra_op_threads": args.intra_op_threads,
                    "seed": None if args.seed is None else args.seed + 100 * index,
                    "log_batches": args.log_batches,
                },
            },
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=1))


def wait_ready(target: str, child: subprocess.Popen, timeout_s: float, stopping) -> str | None:
    """None once the server and every model are ready; else why not."""
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if stopping():
                return "stop requested"
            if child.poll() is not None:
                return f"mlserver exited with code {child.returncode}"
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready and all(
                    stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=2).ready for name in MODELS
                ):
                    return None
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return f"not ready after {timeout_s:.0f} s"


def stop_child(child: subprocess.Popen, timeout_s: float) -> int:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return child.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, default=None, help="MLServer's REST port (default: a free one)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: off)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=1, help="MLServer parallel_workers (default 1)")
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--max-batch-time-ms", type=float, default=MAX_BATCH_TIME_S * 1000.0)
    parser.add_argument("--seed", type=int, default=None, help="noise seed base (default: random)")
    parser.add_argument("--log-batches", action="store_true", help="log every batch's row count (to check batching)")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--stop-timeout", type=float, default=15.0)
    parser.add_argument(
        "--log", default=None, help="MLServer's log file (default: TMPDIR/mlserver_<grpc-port>.log; '-' for stderr)"
    )
    args = parser.parse_args(argv)
    if not (Path(args.bundle) / "manifest.json").is_file():
        parser.error(f"{args.bundle}: no manifest.json")

    started = time.monotonic()
    http_port = args.http_port or free_port(args.host)
    # MLServer does not exit when its gRPC port is taken (it logs "Failed to bind" and hangs on).
    for port in (args.grpc_port, http_port, args.metrics_port):
        if port is not None and not port_free(args.host, port):
            print(f"mlserver failed: port {args.host}:{port} is in use", file=sys.stderr)
            return 1
    root = Path(tempfile.mkdtemp(prefix="mlserver_vae_"))
    log_path = (
        None if args.log == "-" else Path(args.log or Path(tempfile.gettempdir()) / f"mlserver_{args.grpc_port}.log")
    )
    stop_requested = False

    def on_signal(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 (held for the child's lifetime)
    child = None
    try:
        write_settings(root, args, http_port)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(PEERS), *filter(None, [env.get("PYTHONPATH")])])
        mlserver = Path(sys.executable).with_name("mlserver")
        child = subprocess.Popen(
            [str(mlserver), "start", str(root)],
            cwd=root,
            env=env,
            stdout=log or sys.stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop it (and its workers) as one
        )
        why_not = wait_ready(f"{args.host}:{args.grpc_port}", child, args.ready_timeout, lambda: stop_requested)
        if stop_requested:
            return 0
        if why_not is not None:
            print(f"mlserver failed: {why_not} (see {log_path or 'stderr'})", file=sys.stderr, flush=True)
            return 1
        others = f" http={args.host}:{http_port}"
        if args.metrics_port is not None:
            others += f" metrics={args.metrics_port}"
        # The gRPC address comes last, so `line.rsplit(":", 1)[1]` is its port.
        print(
            f"READY mlserver models={','.join(MODELS)} workers={args.workers} "
            f"startup_s={time.monotonic() - started:.1f} log={log_path or 'stderr'}{others} "
            f"grpc={args.host}:{args.grpc_port}",
            flush=True,
        )
        while not stop_requested and child.poll() is None:
            time.sleep(0.2)
        if not stop_requested:
            print(f"mlserver exited with code {child.returncode}", file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        if child is not None:
            stop_child(child, args.stop_timeout)
        if log:
            log.close()
        shutil.rmtree(root, ignore_errors=True)
        print("mlserver stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
