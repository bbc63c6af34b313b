"""Server CPU per call: where one core's time goes, target by target.

Each server runs pinned to core 0 and bench/loadgen.py (closed loop) pinned to core 1. After a
warm-up the server's user + system CPU time (from /proc) is read before and after a measured
window; CPU per call = that time / the calls answered in the window. A server that keeps its core
busy (CPU time ~ wall time) is limited by its per-call cost, which this measures with less noise
than throughput. The in-process reference's time per call is its CPU per call (one thread).

    python bench/cpu_per_call.py --bundle models/digits --baseline /tmp/before --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.run_all import PYTHON, pinned, start, stop, targets  # noqa: E402

POINTS = [("elbo_b256", 4), ("elbo_b1_k1", 16), ("score_b256", 4)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    port: int, workload: str, concurrency: int, duration_s: float, num_features: int = 64, protocol: str = "vae"
) -> dict:
    """One closed-loop point of bench/loadgen.py, pinned to core 1: its JSON result."""
    command = [
        PYTHON, "bench/loadgen.py", "--target", f"127.0.0.1:{port}", "--protocol", protocol,
        "--workload", workload, "--closed", str(concurrency), "--duration", str(duration_s), "--warmup", "0",
        "--num-features", str(num_features),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, preexec_fn=pinned({1}))
    return json.loads(done.stdout.splitlines()[0])


def cpu_us_per_call(
    pid: int,
    port: int,
    workload: str,
    concurrency: int,
    duration_s: float,
    protocol: str = "vae",
    num_features: int = 64,
) -> float:
    """Server CPU per call (us) of one closed-loop point, after a 1 s warm-up."""
    load(port, workload, concurrency, 1.0, num_features, protocol)
    before = cpu_seconds(pid)
    calls = load(port, workload, concurrency, duration_s, num_features, protocol)["requests"]
    return (cpu_seconds(pid) - before) / calls * 1e6


def paired_ratio(numerators: list[float], denominators: list[float]) -> dict:
    """Two series measured in alternating rounds: the ratio of their lowest rounds, and the median
    (with quartiles) of the per-round ratios; a ratio within one round cancels the machine's drift."""
    ratios = [top / bottom for top, bottom in zip(numerators, denominators, strict=True)]
    return {
        "lowest": round(min(numerators) / min(denominators), 3),
        "median_of_rounds": round(statistics.median(ratios), 3),
        "quartiles_of_rounds": [round(value, 3) for value in statistics.quantiles(ratios, n=4)[::2]],
    }


def lowest_cpu_per_call(
    pid: int, port: int, protocol: str, workload: str, concurrency: int, duration_s: float, rounds: int
) -> dict:
    """A warm-up, then ``rounds`` measured points; the one with the lowest server CPU per call (the
    least disturbed), with ``server_cpu_us_per_call`` added."""
    load(port, workload, concurrency, 1.5, protocol=protocol)
    best = None
    for _ in range(rounds):
        before = cpu_seconds(pid)
        result = load(port, workload, concurrency, duration_s, protocol=protocol)
        result["server_cpu_us_per_call"] = (cpu_seconds(pid) - before) / result["requests"] * 1e6
        if best is None or result["server_cpu_us_per_call"] < best["server_cpu_us_per_call"]:
            best = result
    return best


def measure(spec: dict, points, duration_s: float, num_features: int, log: Path) -> dict:
    process, port = start(spec, {0}, log)
    try:
        result = {}
        for workload, concurrency in points:
            load(port, workload, concurrency, 2.0, num_features)  # warm-up
            before = cpu_seconds(process.pid)
            calls = load(port, workload, concurrency, duration_s, num_features)["requests"]
            result[f"{workload} c{concurrency}"] = (cpu_seconds(process.pid) - before) / calls * 1e6
        return result
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    num_features = json.loads((args.bundle / "manifest.json").read_text())["input"]["num_features"]
    available = targets(args.bundle, args.baseline)
    names = ["echo", "vae-serve", *(["vae-serve-baseline"] if args.baseline else [])]
    log = ROOT / "runs" / "cpu_per_call.log"
    log.parent.mkdir(exist_ok=True)
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            rounds[name].append(measure(available[name], POINTS, args.duration, num_features, log))
    for name, results in rounds.items():
        medians = {point: round(statistics.median(r[point] for r in results)) for point in results[0]}
        print(json.dumps({"target": name, "rounds": len(results), "server_cpu_us_per_call": medians}))


if __name__ == "__main__":
    main()
