"""Start-up time and memory of vae-serve: process start to health SERVING, and the server's RSS
once serving and after a burst of requests. Several rounds, the median reported.

    python bench/startup.py --bundle models/digits --rounds 5 [--baseline /tmp/before]

The server runs pinned to core 0 (as in bench/run_all.py); ``--baseline`` also measures another
checkout (bench/checkout_path.sh), round by round in alternation.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.run_all import targets  # noqa: E402
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc  # noqa: E402

BURST_CALLS = 2000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_round(bundle: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else dict(os.environ)
    command = [sys.executable, "-m", "vae_serve.service", "--bundle", str(bundle), "--port", "0", "--no-metrics"]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd="/tmp", env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        port = int(line.strip().rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.005)
            serving_s = time.perf_counter() - started
            rss_serving = rss_mib(process.pid)
            stub = vae_pb2_grpc.VaeServiceStub(channel)
            x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
            request = vae_pb2.ElboRequest(x=vae_pb2.Tensor(shape=x.shape, data=x.tobytes()), k=1, seed=1)
            big = np.random.default_rng(0).random((256, 64), dtype=np.float32)
            big_request = vae_pb2.ElboRequest(x=vae_pb2.Tensor(shape=big.shape, data=big.tobytes()), k=100, seed=1)
            for index in range(BURST_CALLS):
                stub.Elbo(big_request if index % 100 == 0 else request, timeout=30)
            rss_after = rss_mib(process.pid)
        return {"start_to_serving_s": serving_s, "rss_serving_mib": rss_serving, "rss_after_burst_mib": rss_after}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    servers = {"vae-serve": None}
    if args.baseline is not None:  # run_all's baseline target: the other checkout's code on PYTHONPATH
        servers["vae-serve-baseline"] = targets(bundle, args.baseline)["vae-serve-baseline"]["env"]["PYTHONPATH"]
    rounds: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, pythonpath in servers.items():
            rounds[name].append(one_round(bundle, pythonpath))
    for name, results in rounds.items():
        summary = {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
        print(json.dumps({"target": name, "rounds": len(results), **summary}))


if __name__ == "__main__":
    main()
