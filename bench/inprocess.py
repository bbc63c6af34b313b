"""The other physical limit: the same computation in-process, ONNX Runtime and numpy, no gRPC.

Runs vae-serve's own batch functions (``vae_serve.core.work``) on one thread with the server's session
settings (one intra-op thread), back to back, and reports rows per second.

    python bench/inprocess.py --bundle models/digits --workload elbo_b256 --duration 8
    python bench/inprocess.py --bundle B --workload score_b256 --score pathway   # a named score's cost
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workloads import WORKLOADS, inputs
from vae_serve.core import work
from vae_serve.core.bundle import load_bundle
from vae_serve.core.scores import DEFAULT_SCORE
from vae_serve.service.plane.operations import DEFAULT_FALSE_POSITIVE_RATE


def score_item(bundle, x, score: str = DEFAULT_SCORE) -> work.ScoreItem:
    """The work of ScoreAnomaly with ``score`` (default: the server's DEFAULT_SCORE, as the earlier
    figures were taken), decided at a 1 % false-positive rate."""
    calibration = bundle.manifest.calibration.scores[score]
    return work.ScoreItem(x, score, 1, calibration, DEFAULT_FALSE_POSITIVE_RATE, None)


def one_call(bundle, workload, x, score: str = DEFAULT_SCORE):
    vae, latent_dim = bundle.vae, bundle.manifest.latent_dim
    if workload.rpc == "Elbo":
        return work.elbo_batch(vae, [work.BoundsItem(x, workload.k, 1)])
    if workload.rpc == "Encode":
        return work.encode_batch(vae, [work.EncodeItem(x, 0, 1)])
    if workload.rpc == "ScoreAnomaly":
        return work.score_anomaly_batch(vae, [score_item(bundle, x, score)])
    sampler = work.Sampler(latent_dim, 1.0, 1)
    return [work.sample_batch(vae, [work.SampleItem(sampler, 1000)]) for _ in range(workload.rows // 1000)]


def measure(
    bundle_dir: Path,
    workload_name: str,
    duration_s: float,
    warmup_s: float,
    label: str = "in-process",
    score: str = DEFAULT_SCORE,
) -> dict:
    bundle = load_bundle(bundle_dir, intra_op_threads=1)
    workload = WORKLOADS[workload_name]
    x = inputs(workload, bundle.manifest.input.num_features)
    warm_until = time.perf_counter() + warmup_s
    while time.perf_counter() < warm_until:
        one_call(bundle, workload, x, score)
    calls, latencies, started = 0, [], time.perf_counter()
    while (now := time.perf_counter()) - started < duration_s:
        one_call(bundle, workload, x, score)
        latencies.append(time.perf_counter() - now)
        calls += 1
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "target": label,
        "workload": workload_name,
        **({"score": score} if WORKLOADS[workload_name].rpc == "ScoreAnomaly" else {}),
        "mode": "closed",
        "concurrency": 1,
        "requests": calls,
        "errors": 0,
        "requests_per_s": calls / elapsed,
        "rows_per_s": calls * workload.rows / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--label", default="in-process", help="the target name written with the result")
    parser.add_argument("--score", default=DEFAULT_SCORE, help=f"score workloads: the score (default {DEFAULT_SCORE})")
    args = parser.parse_args()
    result = measure(args.bundle, args.workload, args.duration, args.warmup, args.label, args.score)
    print(json.dumps(result), flush=True)
    if args.json:
        with args.json.open("a") as stream:
            stream.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
