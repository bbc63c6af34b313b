"""Soak test: N clients x M minutes of mixed traffic against real vae-serve processes, with a
client-side ledger of every call.

    python bench/soak.py --bundle models/digits --clients 16 --minutes 10             # one server
    python bench/soak.py --bundle models/digits --clients 16 --minutes 5 --kill       # two, one SIGKILLed

One server: every call is answered exactly once (a reply or a clear status, each within its
deadline), the server's own request counters equal the ledger per method and status, and its RSS
grows less than 50 MB after the warm-up. With --kill: two servers behind one round-robin channel
with gRPC's retry policy; one is SIGKILLed halfway; at least 99.9 % of calls must succeed and the
rest fail UNAVAILABLE, none hung. Prints one JSON object; exit status 0 only if every check holds.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prometheus_client.parser import text_string_to_metric_families

from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc

VAE_SERVE = str(Path(sys.executable).with_name("vae-serve"))
CALL_TIMEOUT_S = 20.0
RSS_GROWTH_LIMIT_MB = 50.0
RETRY_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "vae.v1.VaeService"}, {"service": "inference.GRPCInferenceService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def tensor(array: np.ndarray) -> vae_pb2.Tensor:
    array = np.ascontiguousarray(array, dtype="<f4")
    return vae_pb2.Tensor(shape=array.shape, data=array.tobytes())


def start_server(bundle: Path) -> tuple[subprocess.Popen, int, str]:
    process = subprocess.Popen(
        [VAE_SERVE, "--bundle", str(bundle), "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    port, metrics_url = None, None
    while port is None or metrics_url is None:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("vae-serve exited during start")
        if line.startswith("vae-serve listening on "):
            port = int(line.rsplit(":", 1)[1])
        elif line.startswith("vae-serve metrics on "):
            metrics_url = line.split(" on ", 1)[1].strip()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=2)
            break
        except grpc.RpcError:
            time.sleep(0.1)
    channel.close()
    return process, port, metrics_url


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_counts(metrics_url: str) -> Counter:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vae_requests_total":
                counts[(sample.labels["method"], sample.labels["code"])] += int(sample.value)
    return counts


def mixed_calls(channel: grpc.Channel, rng: random.Random):
    """One random call of the mix: (method name, callable); about 5 % are deliberately malformed."""
    stub, oip = vae_pb2_grpc.VaeServiceStub(channel), oip_pb2_grpc.GRPCInferenceServiceStub(channel)
    rows = rng.choice([1, 1, 1, 4, 16, 64])
    x = np.random.default_rng(rng.randrange(2**32)).random((rows, 64), dtype=np.float32)
    seed = rng.randrange(2**32)
    choice = rng.random()
    if choice < 0.05:
        return "Elbo", lambda: stub.Elbo(vae_pb2.ElboRequest(x=tensor(x[:, :10])), timeout=CALL_TIMEOUT_S)
    if choice < 0.35:
        k = rng.choice([1, 1, 10, 100])
        return "Elbo", lambda: stub.Elbo(vae_pb2.ElboRequest(x=tensor(x), k=k, seed=seed), timeout=CALL_TIMEOUT_S)
    if choice < 0.55:
        request = vae_pb2.ScoreAnomalyRequest(x=tensor(x), score=rng.choice([1, 3]), seed=seed)
        return "ScoreAnomaly", lambda: stub.ScoreAnomaly(request, timeout=CALL_TIMEOUT_S)
    if choice < 0.70:
        return "Encode", lambda: stub.Encode(vae_pb2.EncodeRequest(x=tensor(x), num_samples=1), timeout=CALL_TIMEOUT_S)
    if choice < 0.78:
        z = tensor(np.random.default_rng(seed).standard_normal((rows, 8)))
        return "Decode", lambda: stub.Decode(vae_pb2.DecodeRequest(z=z), timeout=CALL_TIMEOUT_S)
    if choice < 0.84:
        return "Sample", lambda: stub.Sample(vae_pb2.SampleRequest(n=rows * 4, seed=seed), timeout=CALL_TIMEOUT_S)
    if choice < 0.88:
        request = vae_pb2.SampleRequest(n=2000, chunk_size=500, seed=seed)
        return "SampleStream", lambda: list(stub.SampleStream(request, timeout=CALL_TIMEOUT_S))
    if choice < 0.90:
        return "GetModelInfo", lambda: stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=CALL_TIMEOUT_S)
    request = oip_pb2.ModelInferRequest(model_name="digits-elbo")
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return "ModelInfer", lambda: oip.ModelInfer(request, timeout=CALL_TIMEOUT_S)


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()  # (method, status name) -> calls
        self.slowest_s = 0.0

    def record(self, method: str, code: str, seconds: float) -> None:
        with self.lock:
            self.outcomes[(method, code)] += 1
            self.slowest_s = max(self.slowest_s, seconds)


def client(target: str, options: list, stop: threading.Event, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(target, options=options) as channel:
        while not stop.is_set():
            method, call = mixed_calls(channel, rng)
            started = time.monotonic()
            try:
                call()
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            ledger.record(method, code, time.monotonic() - started)


def run(args: argparse.Namespace) -> dict:
    servers = [start_server(args.bundle) for _ in range(2 if args.kill else 1)]
    ports = [port for _, port, _ in servers]
    if args.kill:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        options = [("grpc.service_config", RETRY_CONFIG), ("grpc.enable_retries", 1)]
    else:
        target, options = f"127.0.0.1:{ports[0]}", []
    before = server_counts(servers[0][2])
    ledger, stop = Ledger(), threading.Event()
    threads = [
        threading.Thread(target=client, args=(target, options, stop, ledger, seed), daemon=True)
        for seed in range(args.clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    duration_s = args.minutes * 60
    time.sleep(min(args.warmup, duration_s / 4))
    rss_warm = rss_mb(servers[0][0].pid)
    killed_at = None
    if args.kill:
        time.sleep(duration_s / 2)
        servers[1][0].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(duration_s / 2)
    else:
        time.sleep(duration_s)
    rss_end = rss_mb(servers[0][0].pid)
    stop.set()
    for thread in threads:
        thread.join(timeout=CALL_TIMEOUT_S * 2)
    hung_clients = sum(thread.is_alive() for thread in threads)
    after = server_counts(servers[0][2])
    for process, _, _ in servers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    total = sum(ledger.outcomes.values())
    codes = Counter()
    for (_, code), count in ledger.outcomes.items():
        codes[code] += count
    result = {
        "mode": "kill" if args.kill else "single",
        "clients": args.clients,
        "minutes": args.minutes,
        "calls": total,
        "calls_per_s": round(total / duration_s, 1),
        "codes": dict(codes),
        "slowest_call_s": round(ledger.slowest_s, 3),
        "hung_clients": hung_clients,
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
    }
    checks = {"none hung": hung_clients == 0 and codes.get("DEADLINE_EXCEEDED", 0) == 0}
    if args.kill:
        ok = codes.get("OK", 0) + codes.get("INVALID_ARGUMENT", 0)
        result["killed_after_s"] = round(killed_at - started, 1)
        result["answered_fraction"] = round(ok / total, 6)
        checks[">= 99.9% answered"] = ok / total >= 0.999
        checks["the rest UNAVAILABLE"] = set(codes) <= {"OK", "INVALID_ARGUMENT", "UNAVAILABLE"}
    else:
        served = Counter({key: after[key] - before.get(key, 0) for key in after if after[key] - before.get(key, 0)})
        checks["server counters equal the ledger"] = served == ledger.outcomes
        checks["only OK and the malformed calls' INVALID_ARGUMENT"] = set(codes) <= {"OK", "INVALID_ARGUMENT"}
        checks[f"RSS growth < {RSS_GROWTH_LIMIT_MB:.0f} MB"] = rss_end - rss_warm < RSS_GROWTH_LIMIT_MB
        if served != ledger.outcomes:
            result["ledger_minus_server"] = {
                f"{m}/{c}": ledger.outcomes[(m, c)] - served[(m, c)] for m, c in set(served) | set(ledger.outcomes)
            }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline")
    parser.add_argument("--kill", action="store_true", help="two servers, one SIGKILLed halfway")
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    result = run(args)
    print(json.dumps(result), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
