"""Peer server: Triton Inference Server 2.51.0 (bundled by nvidia-pytriton 0.7.0) serving the VAE.

Usage (with the peer venv made by bench/peers/install.sh):
    bench/.venvs/pytriton/bin/python bench/peers/pytriton_server.py --bundle DIR --grpc-port P [--http-port H]

Serves vae_encode, vae_elbo_k1 and vae_elbo_k100 (see vae_compute.py) over the KServe v2 gRPC API
(inference.GRPCInferenceService) with Triton's dynamic batcher. Blocks; prints one line
"READY pytriton ..." to stdout once every model is loaded; exits 0 on SIGTERM or SIGINT.

Batching (Triton counts rows, the first dimension of each request's x, summed over the batched
requests; a single request with more rows than max_batch_size is rejected with INVALID_ARGUMENT):
    vae_encode, vae_elbo_k1: max_batch_size 8192 rows, max_queue_delay_microseconds 500
    vae_elbo_k100:           max_batch_size 64 rows,   max_queue_delay_microseconds 500
Each model gets --instances model instances (default 2, like vae-serve's two batch runners on two
cores); each instance owns its ONNX Runtime sessions with intra_op_num_threads=1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vae_compute import MODELS, VaeCompute, bundle_dims

MAX_BATCH_ROWS = {"vae_encode": 8192, "vae_elbo_k1": 8192, "vae_elbo_k100": 64}
MAX_QUEUE_DELAY_US = 500


def _ensure_libpython_on_ld_path() -> None:
    """Triton's Python-backend stub links libpython3.X.so dynamically; it finds it via LD_LIBRARY_PATH,
    which it inherits through tritonserver from this process, so setting it here is enough."""
    libdir = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def _make_infer(model: str, bundle: str, intra_op_threads: int, seed: int | None):
    from pytriton.decorators import batch

    compute = VaeCompute(bundle, intra_op_threads=intra_op_threads, seed=seed)

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return compute.run(model, x)

    return infer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, default=None, help="also serve HTTP/REST here (default: off)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: off)")
    parser.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--instances", type=int, default=2, help="model instances per model (default 2)")
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--max-queue-delay-us", type=int, default=MAX_QUEUE_DELAY_US)
    parser.add_argument("--seed", type=int, default=None, help="seed of the first instance's noise (default: random)")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton --log-verbose level")
    parser.add_argument(
        "--triton-log",
        default=None,
        help="tritonserver's log file (default: TMPDIR/pytriton_<grpc-port>.log; '-' for stdout, PyTriton's default)",
    )
    args = parser.parse_args(argv)

    _ensure_libpython_on_ld_path()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # PyTriton's own gRPC client warns on every call that it ignores its timeouts; it is noise here.
    warnings.filterwarnings("ignore", message=".*doesn't support timeout.*")
    # PyTriton echoes every tritonserver log line to stdout; a --log-file keeps stdout for the READY line.
    if args.triton_log is None:
        args.triton_log = str(Path(tempfile.gettempdir()) / f"pytriton_{args.grpc_port}.log")
    triton_log = None if args.triton_log == "-" else Path(args.triton_log)
    if triton_log is not None:
        triton_log.write_text("")  # tritonserver appends; start each run's log afresh
    started = time.monotonic()
    num_features, latent_dim = bundle_dims(args.bundle)
    config = TritonConfig(
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        allow_http=args.http_port is not None,
        http_address=args.address if args.http_port is not None else None,
        http_port=args.http_port,
        allow_metrics=args.metrics_port is not None,
        allow_cpu_metrics=args.metrics_port is not None,
        allow_gpu_metrics=False,
        metrics_address=args.address if args.metrics_port is not None else None,
        metrics_port=args.metrics_port,
        log_verbose=args.log_verbose,
        log_file=triton_log,
        exit_timeout_secs=5,
    )
    triton = Triton(config=config)
    for name, (_, outputs) in MODELS.items():
        if name == "vae_encode":
            out_tensors = [Tensor(name=o, dtype=np.float32, shape=(latent_dim,)) for o in outputs]
        else:
            out_tensors = [Tensor(name=o, dtype=np.float64, shape=(1,)) for o in outputs]  # see vae_compute
        seeds = [None if args.seed is None else args.seed + 1000 * i for i in range(args.instances)]
        triton.bind(
            model_name=name,
            infer_func=[_make_infer(name, args.bundle, args.intra_op_threads, s) for s in seeds],
            inputs=[Tensor(name="x", dtype=np.float32, shape=(num_features,))],
            outputs=out_tensors,
            config=ModelConfig(
                batching=True,
                max_batch_size=MAX_BATCH_ROWS[name],
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=False,
        )

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        triton.run()  # starts tritonserver, loads the models, returns when they are ready
        ports = f"grpc={args.address}:{args.grpc_port}"
        if args.http_port is not None:
            ports += f" http={args.address}:{args.http_port}"
        if args.metrics_port is not None:
            ports += f" metrics={args.metrics_port}"
        print(
            f"READY pytriton {ports} models={','.join(MODELS)} instances={args.instances} "
            f"startup_s={time.monotonic() - started:.1f} triton_log={triton_log or 'stdout'}",
            flush=True,
        )
        while not stop.wait(1.0):
            if not triton.is_alive():
                print("tritonserver or a model proxy died", file=sys.stderr, flush=True)
                return 1
    except Exception as error:  # e.g. a model Triton refuses to load, a port in use
        print(f"pytriton failed: {type(error).__name__}: {error} (see {triton_log or 'stdout'})", file=sys.stderr)
        return 1
    finally:
        triton.stop()
    print("pytriton stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
