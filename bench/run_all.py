"""Run every target and workload side by side, in one run, and write JSON lines of results.

    python bench/run_all.py --bundle models/digits --out bench/results/run.jsonl
    python bench/report.py bench/results/run.jsonl     # tables and plots for docs/benchmarks.md

Servers are pinned to --server-cpus and the load generator to --client-cpus (2 cores here: one
each), so the client does not steal the server's core. Targets whose software is missing (the
peers need `bash bench/peers/install.sh`) are skipped with a note.
"""

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.workloads import WORKLOADS  # noqa: E402

PYTHON = sys.executable
VENVS = ROOT / "bench" / ".venvs"
WORKLOAD_SETTINGS = {
    # workload: (closed-loop concurrency levels, open-loop rates per second)
    "elbo_b1_k1": ([1, 4, 16, 64], [250, 1000]),
    "elbo_b1_k100": ([1, 4, 16, 64], []),
    "elbo_b256": ([1, 4, 16], []),
    "encode_b1": ([1, 16], []),
    "score_b256": ([1, 4], []),
    "sample_10000": ([1, 4], []),
}


def serves(spec: dict, workload: str) -> bool:
    """The peers (Open Inference Protocol) have no streaming sampler and no calibrated scores."""
    return not (spec["protocol"] == "kserve" and WORKLOADS[workload].rpc in ("SampleStream", "ScoreAnomaly"))


def targets(bundle: Path, baseline: Path | None) -> dict[str, dict]:
    vae_serve = str(Path(PYTHON).with_name("vae-serve"))
    serve = [vae_serve, "--bundle", str(bundle), "--port", "0", "--no-metrics"]
    found = {}
    if baseline is not None:  # another checkout (an earlier commit), run with this venv: before/after
        shim = subprocess.run(
            ["bash", "bench/checkout_path.sh", str(baseline), str(ROOT / "runs" / "baseline-path")],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        found["vae-serve-baseline"] = {
            "command": [PYTHON, "-m", "vae_serve.service", *serve[1:]],
            "protocol": "vae",
            "ready": "vae-serve listening on ",
            "wait_serving": True,
            "env": {"PYTHONPATH": shim},
        }
    return found | {
        "echo": {
            "command": [PYTHON, "bench/echo_server.py", "--port", "0"],
            "protocol": "vae",
            "ready": "echo listening on ",
        },
        "vae-serve": {"command": serve, "protocol": "vae", "ready": "vae-serve listening on ", "wait_serving": True},
        "vae-serve-unbatched": {
            "command": [*serve, "--max-batch-rows", "1"],
            "protocol": "vae",
            "ready": "vae-serve listening on ",
            "wait_serving": True,
        },
        "triton": {
            "command": [
                str(VENVS / "triton" / "bin" / "python"),
                "bench/peers/pytriton_server.py",
                "--bundle",
                str(bundle),
                "--grpc-port",
                "{port}",
            ],
            "protocol": "kserve",
            "ready": None,
            "needs": VENVS / "triton",
        },
        "mlserver": {
            "command": [
                str(VENVS / "mlserver" / "bin" / "python"),
                "bench/peers/mlserver/run_mlserver.py",
                "--bundle",
                str(bundle),
                "--grpc-port",
                "{port}",
            ],
            "protocol": "kserve",
            "ready": None,
            "needs": VENVS / "mlserver",
        },
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpus: set[int]):
    return lambda: os.sched_setaffinity(0, cpus)


def start(spec: dict, cpus: set[int], log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in spec["command"]]
    env = dict(os.environ) | spec.get("env", {})
    if "needs" in spec:  # PyTriton's tritonserver links against the interpreter's libpython
        import sysconfig

        env["LD_LIBRARY_PATH"] = f"{sysconfig.get_config_var('LIBDIR')}:{env.get('LD_LIBRARY_PATH', '')}"
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log_path.open("w"),
        text=True,
        env=env,
        preexec_fn=pinned(cpus),
        start_new_session=True,
    )
    if spec["ready"] is not None:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
        while True:
            line = lines.get(timeout=120)
            if line.startswith(spec["ready"]):
                port = int(line.strip().rsplit(":", 1)[1])
                break
    wait_ready(port, spec, process, log_path)
    return process, port


def wait_ready(port: int, spec: dict, process: subprocess.Popen, log_path: Path, timeout_s: float = 180) -> None:
    """Until the server says it is ready: OIP ServerReady, gRPC health SERVING, or a connection."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            if spec["protocol"] == "kserve":
                from vae_serve.api.oip import grpc_service_pb2 as service_pb2
                from vae_serve.api.oip import grpc_service_pb2_grpc as service_pb2_grpc

                if (
                    service_pb2_grpc.GRPCInferenceServiceStub(channel)
                    .ServerReady(service_pb2.ServerReadyRequest(), timeout=2)
                    .ready
                ):
                    return
            elif spec.get("wait_serving"):
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            else:
                grpc.channel_ready_future(channel).result(timeout=2)
                return
        except (grpc.RpcError, grpc.FutureTimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file (appended)")
    parser.add_argument("--targets", default="echo,vae-serve-baseline,vae-serve,vae-serve-unbatched,triton,mlserver")
    parser.add_argument("--workloads", default=",".join(WORKLOAD_SETTINGS))
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/before COMMIT`): adds the target vae-serve-baseline",
    )
    args = parser.parse_args()
    server_cpus = {int(cpu) for cpu in args.server_cpus.split(",")}
    client_cpus = {int(cpu) for cpu in args.client_cpus.split(",")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    num_features = manifest["input"]["num_features"]
    workloads = args.workloads.split(",")
    header = {
        "run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": manifest["name"],
        "num_features": num_features,
        "server_cpus": sorted(server_cpus),
        "client_cpus": sorted(client_cpus),
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    with args.out.open("a") as stream:
        stream.write(json.dumps({"header": header}) + "\n")
    for workload in workloads:  # in-process ORT on the server's core: the compute limit
        subprocess.run(
            [
                PYTHON,
                "bench/inprocess.py",
                "--bundle",
                str(args.bundle),
                "--workload",
                workload,
                "--duration",
                str(args.duration),
                "--json",
                str(args.out),
            ],
            cwd=ROOT,
            check=True,
            preexec_fn=pinned(server_cpus),
            stdout=subprocess.DEVNULL,
        )
    available = targets(args.bundle, args.baseline)
    if "vae-serve-baseline" in available and "vae-serve-baseline" in args.targets.split(","):
        for workload in workloads:  # the same computation as the other checkout does it
            subprocess.run(
                [PYTHON, "bench/inprocess.py", "--bundle", str(args.bundle), "--workload", workload,
                 "--duration", str(args.duration), "--json", str(args.out), "--label", "in-process-baseline"],
                cwd=ROOT, check=True, preexec_fn=pinned(server_cpus), stdout=subprocess.DEVNULL,
                env=dict(os.environ) | available["vae-serve-baseline"]["env"],
            )  # fmt: skip
    chosen = {}
    for name, spec in available.items():
        if name not in args.targets.split(","):
            continue
        if "needs" in spec and not spec["needs"].exists():
            print(f"skipping {name}: {spec['needs']} missing (bash bench/peers/install.sh)", file=sys.stderr)
            continue
        chosen[name] = spec
    runs = sum(1 for spec in chosen.values() for workload in workloads if serves(spec, workload))
    progress = tqdm(total=runs, desc="benchmark", unit="workload", file=sys.stderr)
    for name, spec in chosen.items():
        log_path = args.out.parent / f"{name}.log"
        started = time.monotonic()
        process, port = start(spec, server_cpus, log_path)
        progress.write(f"{name} ready on port {port} after {time.monotonic() - started:.1f} s")
        try:
            for workload in workloads:
                closed, rates = WORKLOAD_SETTINGS[workload]
                if not serves(spec, workload):
                    continue
                command = [
                    PYTHON,
                    "bench/loadgen.py",
                    "--target",
                    f"127.0.0.1:{port}",
                    "--protocol",
                    spec["protocol"],
                    "--label",
                    name,
                    "--workload",
                    workload,
                    "--num-features",
                    str(num_features),
                    "--closed",
                    ",".join(map(str, closed)),
                    "--duration",
                    str(args.duration),
                    "--warmup",
                    str(args.warmup),
                    "--json",
                    str(args.out),
                ]
                if rates:
                    command += ["--open", ",".join(map(str, rates))]
                for attempt in (1, 2):  # grpc's client has crashed (SIGSEGV) once in a long run; retry once
                    done = subprocess.run(command, cwd=ROOT, preexec_fn=pinned(client_cpus), stdout=subprocess.DEVNULL)
                    if done.returncode == 0:
                        break
                    progress.write(
                        f"{name} {workload}: load generator exited with {done.returncode} (attempt {attempt})"
                    )
                else:
                    raise RuntimeError(f"{name} {workload}: the load generator failed twice")
                progress.set_postfix_str(f"{name} {workload}")
                progress.update(1)
        finally:
            stop(process)
    progress.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
