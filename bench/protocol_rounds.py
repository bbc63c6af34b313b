"""One Elbo point of bench/http_overhead.py, repeated: VaeService, OIP ModelInfer over gRPC and OIP over
REST with binary tensors, in turn on one server, for ``--rounds`` rounds; prints the lowest and the
median server CPU per call of each, and each protocol over VaeService: the ratio of the lowest, and
the median (with quartiles) of the per-round ratios. On a noisy machine the lowest of several rounds
is the least disturbed measurement of a per-call cost, and a ratio within one round cancels drift.

    python bench/protocol_rounds.py --bundle models/digits --workload elbo_b1_k1 --concurrency 16
    PYTHONPATH=$(bash bench/checkout_path.sh OLD /tmp/old-shim) python bench/protocol_rounds.py ...  # another checkout
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.cpu_per_call import cpu_us_per_call, paired_ratio  # noqa: E402
from bench.http_overhead import start_server  # noqa: E402

PROTOCOLS = ("vae", "oip", "rest-binary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--workload", default="elbo_b1_k1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.5)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, vae first")
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    process, grpc_port, http_port = start_server(args.bundle, Path("/tmp/protocol_rounds.log"))
    rounds: dict[str, list[float]] = {protocol: [] for protocol in protocols}
    try:
        for _ in range(args.rounds):
            for protocol in protocols:
                port = http_port if protocol.startswith("rest") else grpc_port
                point = cpu_us_per_call(process.pid, port, args.workload, args.concurrency, args.duration, protocol)
                rounds[protocol].append(point)
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = {
        "workload": args.workload,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "lowest_us": {name: round(min(values)) for name, values in rounds.items()},
        "median_us": {name: round(statistics.median(values)) for name, values in rounds.items()},
    }
    for protocol in protocols[1:]:
        result[f"{protocol}_over_vae"] = paired_ratio(rounds[protocol], rounds["vae"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
