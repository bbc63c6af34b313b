"""One Elbo point of bench/http_overhead.py, repeated: VaeService, OIP ModelInfer over gRPC and OIP over
REST with binary tensors, in turn on one server, for ``--rounds`` rounds; prints the lowest server CPU
per call of each, and OIP / VaeService. On a noisy machine the lowest of several rounds is the least
disturbed measurement of a per-call cost.

    python bench/protocol_rounds.py --bundle models/digits --workload elbo_b1_k1 --concurrency 16
    PYTHONPATH=$(bash bench/checkout_path.sh OLD /tmp/old-shim) python bench/protocol_rounds.py ...  # another checkout
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.cpu_per_call import lowest_cpu_per_call  # noqa: E402
from bench.http_overhead import start_server  # noqa: E402

PROTOCOLS = ("vae", "oip", "rest-binary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--workload", default="elbo_b1_k1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.5)
    args = parser.parse_args()
    process, grpc_port, http_port = start_server(args.bundle, Path("/tmp/protocol_rounds.log"))
    lowest: dict[str, float] = {}
    try:
        for _ in range(args.rounds):
            for protocol in PROTOCOLS:
                port = http_port if protocol.startswith("rest") else grpc_port
                point = lowest_cpu_per_call(
                    process.pid, port, protocol, args.workload, args.concurrency, args.duration, 2
                )
                lowest[protocol] = min(lowest.get(protocol, float("inf")), point["server_cpu_us_per_call"])
    finally:
        process.terminate()
        process.wait(timeout=30)
    summary = {name: round(value) for name, value in lowest.items()}
    summary["oip_over_vae"] = round(lowest["oip"] / lowest["vae"], 3)
    print(json.dumps({"workload": args.workload, "concurrency": args.concurrency, "server_cpu_us_per_call": summary}))


if __name__ == "__main__":
    main()
