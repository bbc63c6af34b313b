"""What score monitoring costs the server (issue 22): ScoreAnomaly's server CPU per call with
monitoring on (the defaults) and off (``--no-monitor``), two servers side by side, both pinned to
core 0 and loaded in turn by bench/loadgen.py on core 1, for ``--rounds`` rounds per point. Prints the
lowest and median CPU per call of each, and on / off: the ratio of the lowest rounds and the median
of the per-round ratios (a ratio within one round cancels the machine's drift).

First, in-process and quieter: what the request path adds per call (``Monitor.record`` of one
1-row and one 256-row event) and what one background evaluation costs (the drift test of a full
window and a flag-rate test), amortised per scored row at the default step.

    python bench/monitor_cost.py --bundle models/digits [--rounds 10 --duration 2.5]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import timeit  # noqa: E402

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from bench.cpu_per_call import cpu_us_per_call, paired_ratio  # noqa: E402
from bench.http_overhead import start_server  # noqa: E402
from vae_serve.service.monitor.drift import drift_test, ranks_of  # noqa: E402
from vae_serve.service.monitor.events import ScoredEvent  # noqa: E402
from vae_serve.service.monitor.flag_rate import flag_rate_p_value  # noqa: E402
from vae_serve.service.monitor.monitor import Monitor  # noqa: E402
from vae_serve.service.settings import Settings  # noqa: E402

POINTS = (("score_b1", 16), ("score_b256", 4))
SERVERS = {"on": (), "off": ("--no-monitor",)}


def event(rows: int, calibration_rows: int, rng: np.random.Generator) -> ScoredEvent:
    percentiles = rng.random(rows)
    p_values = (1.0 + calibration_rows * (1.0 - percentiles)) / (calibration_rows + 1.0)
    return ScoredEvent(
        "digits", "1", "negative_elbo", calibration_rows, rng.random(rows), percentiles, p_values,
        p_values < 0.01, 3.0, 0.01, True, 1, "", "", time.time(),
    )  # fmt: skip


def in_process(calibration_rows: int = 144) -> dict:
    """Microseconds: record() per call at 1 and 256 rows; one evaluation; the evaluation per row."""
    settings = Settings(bundle=Path("."), metrics_port=None)
    monitor = Monitor(settings, CollectorRegistry())
    rng = np.random.default_rng(0)
    result = {}
    for rows in (1, 256):
        scored = event(rows, calibration_rows, rng)
        timings = timeit.repeat(lambda scored=scored: monitor.record(scored), number=2000, repeat=5)
        result[f"record_us_{rows}_rows"] = round(min(timings) / 2000 * 1e6, 2)
    ranks = ranks_of(rng.random(settings.monitor_window_rows), calibration_rows)
    evaluation = min(
        timeit.repeat(lambda: (drift_test(ranks, calibration_rows), flag_rate_p_value(5000, 60, 0.01, 144)), number=20)
    )
    result["evaluation_us"] = round(evaluation / 20 * 1e6, 1)
    result["evaluation_us_per_row"] = round(evaluation / 20 * 1e6 / settings.monitor_step_rows, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=2.5)
    args = parser.parse_args()
    print(json.dumps({"in_process": in_process()}), flush=True)
    features = json.loads((args.bundle / "manifest.json").read_text())["input"]["num_features"]
    servers = {
        name: start_server(args.bundle, Path(f"/tmp/monitor_cost_{name}.log"), extra, http=False)[:2]
        for name, extra in SERVERS.items()
    }
    try:
        for workload, concurrency in POINTS:
            rounds: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, (process, port) in servers.items():
                    point = cpu_us_per_call(process.pid, port, workload, concurrency, args.duration, "vae", features)
                    rounds[name].append(point)
            summary = {
                "workload": workload,
                "concurrency": concurrency,
                "rounds": args.rounds,
                "lowest_us": {name: round(min(values)) for name, values in rounds.items()},
                "median_us": {name: round(statistics.median(values)) for name, values in rounds.items()},
                "on_over_off": paired_ratio(rounds["on"], rounds["off"]),
            }
            print(json.dumps(summary), flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
