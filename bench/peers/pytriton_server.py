"""Peer server: Triton Inference Server 2.51.0 (bundled by nvidia-pytriton 0.7.0) serving the VAE.

Usage (with the peer venv made by bench/peers/install.sh):
    bench/.venvs/triton/bin/python bench/peers/pytriton_server.py --bundle DIR --grpc-port P [--http-port H]

Serves vae_encode, vae_elbo_k1 and vae_elbo_k100 (see vae_compute.py) over the KServe v2 gRPC API
(inference.GRPCInferenceService) with Triton's dynamic batcher. Blocks; prints one line
"READY triton ... grpc=HOST:PORT" to stdout once PyTriton has loaded every model. Wait for that
line or for ModelReady: the gRPC port opens, and ServerReady answers true, about a second after
start, seconds before the first model has loaded. Exits 0 on SIGTERM or SIGINT (Triton then takes
about 5-8 s to unload the models).

Batching (Triton counts rows, the first dimension of each request's x, summed over the batched
requests; a single request with more rows than max_batch_size is rejected with INVALID_ARGUMENT):
    vae_encode, vae_elbo_k1: max_batch_size 8192 rows, max_queue_delay_microseconds 500
    vae_elbo_k100:           max_batch_size 64 rows,   max_queue_delay_microseconds 500
Each model gets --instances model instances (default 1, like bench/run_all.py's vae-serve with
--batch-runners 1 on one pinned core; 2 suits two cores); each instance owns its ONNX Runtime
sessions with intra_op_num_threads=1.
"""

from __future__ import annotations

import _thread
import argparse
import logging
import os
import signal
import socket
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


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_HANDSHAKE_TIMEOUT = "def get_config_from_handshake_server(socket_path: pathlib.Path, timeout_s: float = 1.0)"
_HANDSHAKE_TIMEOUT_LONGER = _HANDSHAKE_TIMEOUT.replace("1.0)", "30.0)")
_HANDSHAKE_CONNECT = """        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.0, should_stop_before_s - time.time()))
        sock.connect(socket_path.as_posix())
"""
_HANDSHAKE_CONNECT_RETRYING = """        while True:  # patched by bench/peers/pytriton_server.py: retry until listening
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(0.0, should_stop_before_s - time.time()))
            try:
                sock.connect(socket_path.as_posix())
                break
            except ConnectionRefusedError:
                sock.close()
                sock = None
                if time.time() >= should_stop_before_s:
                    raise
                time.sleep(0.005)
"""


def _patch_handshake_race(model_store: Path) -> int:
    """Work around a start-up race in PyTriton 0.7.0 with several instances per model.

    Instance 0's Python-backend stub starts a Unix-socket "handshake" server; the other instances
    wait at most 1 s for its socket file, then connect once, without retry. Both fail under load:
    the file appears at bind(), before listen(), so a connect in between gets ConnectionRefusedError;
    and instance 0 can take over 1 s to get there (TimeoutError "waiting for config file"). Triton
    then fails the model ("failed to load all models"): 3 of 8 starts here with 3 models x 2
    instances loading at once on 2 busy cores. This makes the copies of communication.py in the
    model store (what the stubs import) wait up to 30 s and retry the connect. Returns the files
    patched.
    """
    patched = 0
    for path in model_store.glob("*/*/communication.py"):
        text = path.read_text()
        if _HANDSHAKE_CONNECT in text and _HANDSHAKE_TIMEOUT in text:
            text = text.replace(_HANDSHAKE_CONNECT, _HANDSHAKE_CONNECT_RETRYING)
            path.write_text(text.replace(_HANDSHAKE_TIMEOUT, _HANDSHAKE_TIMEOUT_LONGER))
            patched += 1
    return patched


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
    parser.add_argument("--instances", type=int, default=1, help="model instances per model (default 1)")
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

    for port in (args.grpc_port, args.http_port, args.metrics_port):
        if port is not None and not _port_free(args.address, port):
            print(f"pytriton failed: port {args.address}:{port} is in use", file=sys.stderr)
            return 1
    _ensure_libpython_on_ld_path()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy

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
    # Local model store: bind() writes each model's config before tritonserver starts, so Triton loads
    # them all at start-up and opens its ports only then (PyTriton's default loads them one by one
    # through the repository API after the ports are open, while ServerReady already answers true).
    triton = Triton(
        config=config,
        triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True),
    )
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

    if args.instances > 1:
        store = Path(triton._workspace.model_store_path)  # where bind() wrote the models (local store)
        if _patch_handshake_race(store) != len(MODELS):
            print("warning: could not patch PyTriton's handshake race (another PyTriton version?)", file=sys.stderr)

    # A plain flag, not an Event: the handler runs on the main thread, possibly inside Event.wait(),
    # whose lock Event.set() would then wait for forever.
    stop_requested = False
    ready = threading.Event()  # set by the main thread only; is_set() takes no lock
    died_starting = threading.Event()

    def on_signal(signum, _frame):
        nonlocal stop_requested
        stop_requested = True
        if not ready.is_set():
            raise KeyboardInterrupt  # leave PyTriton's start-up wait at once

    def start_watchdog() -> None:
        """PyTriton waits up to 120 s for a tritonserver that already exited (a port in use, a model
        it refuses): interrupt that wait as soon as the process is gone."""
        while not ready.wait(0.2):
            server = getattr(triton, "_triton_server", None)
            if getattr(server, "_tritonserver_running_cmd", None) is not None and not server.is_alive():
                died_starting.set()
                _thread.interrupt_main()
                return

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=start_watchdog, daemon=True).start()
    try:
        triton.run()  # starts tritonserver (which loads the models first), waits until they are ready
        ready.set()
        others = ""
        if args.http_port is not None:
            others += f" http={args.address}:{args.http_port}"
        if args.metrics_port is not None:
            others += f" metrics={args.metrics_port}"
        # The gRPC address comes last, so `line.rsplit(":", 1)[1]` is its port.
        print(
            f"READY triton models={','.join(MODELS)} instances={args.instances} "
            f"startup_s={time.monotonic() - started:.1f} log={triton_log or 'stdout'}{others} "
            f"grpc={args.address}:{args.grpc_port}",
            flush=True,
        )
        while not stop_requested:
            time.sleep(0.5)
            if not stop_requested and not triton.is_alive():
                print("tritonserver or a model proxy died", file=sys.stderr, flush=True)
                return 1
    except KeyboardInterrupt:
        ready.set()
        if died_starting.is_set():
            print(f"pytriton failed: tritonserver exited during start-up{_log_errors(triton_log)}", file=sys.stderr)
            return 1
    except Exception as error:
        ready.set()
        print(f"pytriton failed: {type(error).__name__}: {error}{_log_errors(triton_log)}", file=sys.stderr)
        return 1
    finally:
        triton.stop()
    print("pytriton stopped", file=sys.stderr, flush=True)
    return 0


def _log_errors(log: Path | None) -> str:
    """The error lines of tritonserver's log, for a failure message."""
    if log is None or not log.is_file():
        return " (see stdout)"
    noise = ("CudaDriverHelper", "config modification time")
    errors = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.startswith("E")]
    errors = [line for line in errors if not any(n in line for n in noise)]
    return f": {' | '.join(errors[-3:])} (see {log})" if errors else f" (see {log})"


if __name__ == "__main__":
    sys.exit(main())
