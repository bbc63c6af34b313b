"""The REST binding's cost beside gRPC: the same ModelInfer on one server, four ways.

One vae-serve (``--http-port 0``) runs pinned to core 0; bench/loadgen.py runs pinned to core 1
and drives the same Elbo work through (1) VaeService.Elbo, (2) the Open Inference Protocol's
ModelInfer over gRPC, (3) ModelInfer over REST with JSON tensors and (4) over REST with the
binary-data extension. For each point: calls/s, mean latency, and the server's CPU per call
(user + system time from /proc over the measured window / calls answered), which is the cost of
the protocol with less noise than throughput. Prints a Markdown table; appends JSON lines to --out.

    python bench/http_overhead.py --bundle models/digits --out bench/results/2026-11-29.jsonl
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.cpu_per_call import lowest_cpu_per_call  # noqa: E402
from bench.run_all import PYTHON, pinned  # noqa: E402

PROTOCOLS = ("vae", "oip", "rest-binary", "rest")
POINTS = [("elbo_b1_k1", 1), ("elbo_b1_k1", 16), ("elbo_b256", 1), ("elbo_b256", 4)]


def start_server(
    bundle: Path, log: Path, extra: tuple[str, ...] = (), http: bool = True
) -> tuple[subprocess.Popen, int, int | None]:
    """vae-serve on ``bundle`` pinned to core 0, with ``extra`` flags: (process, gRPC port, REST port
    or None without ``http``), once the models have had a second to load."""
    command = [str(Path(PYTHON).with_name("vae-serve")), "--bundle", str(bundle), "--port", "0"]
    command += ["--http-port", "0"] if http else []
    command += ["--no-metrics", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, preexec_fn=pinned({0}))
    grpc_port = http_port = None
    while grpc_port is None or (http and http_port is None):
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"vae-serve exited: {log.read_text()}")
        if line.startswith("vae-serve listening on "):
            grpc_port = int(line.rsplit(":", 1)[1])
        elif line.startswith("vae-serve http on "):
            http_port = int(line.rsplit(":", 1)[1])
    time.sleep(1.0)  # models load after the ports are announced
    return process, grpc_port, http_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    log = Path("/tmp/http_overhead.log")
    process, grpc_port, http_port = start_server(args.bundle, log)
    rows = []
    try:
        for workload, concurrency in POINTS:
            for protocol in PROTOCOLS:
                port = http_port if protocol.startswith("rest") else grpc_port
                best = lowest_cpu_per_call(
                    process.pid, port, protocol, workload, concurrency, args.duration, args.rounds
                )
                best |= {"bench": "http_overhead", "protocol": protocol, "date": time.strftime("%Y-%m-%d %H:%M")}
                rows.append(best)
                if args.out:
                    with args.out.open("a") as stream:
                        stream.write(json.dumps(best) + "\n")
                print(json.dumps(best), file=sys.stderr, flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print("| workload | protocol | calls/s | mean ms | server CPU us/call | CPU vs gRPC ModelInfer |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        reference = next(
            other["server_cpu_us_per_call"]
            for other in rows
            if other["protocol"] == "oip"
            and (other["workload"], other["concurrency"]) == (row["workload"], row["concurrency"])
        )
        print(
            f"| {row['workload']} c{row['concurrency']} | {row['protocol']} | {row['requests_per_s']:,.0f} | "
            f"{row['mean_ms']:.3f} | {row['server_cpu_us_per_call']:,.0f} | "
            f"{row['server_cpu_us_per_call'] / reference:.2f}x |"
        )


if __name__ == "__main__":
    main()
