"""Score monitoring measured (issue 22): false alarms and detection delay of the server's drift and
flag-rate tests, on scores the served API gave.

For each one-class bundle (``--bundle DIR``; trained with ``vae-train train --classes c``):
1. A real vae-serve serves it. Every row of the bundle's own test split (``make_splits`` with the
   manifest's seed and fractions) is scored once through the gRPC client (ScoreAnomaly, the default
   score and rate, seed 0): each row's calibration percentile and its flag. Normal rows are the
   bundle's classes; anomalies are the other classes.
2. False alarms: ``--windows`` windows of N rows (the server's ``--monitor-window-rows`` default)
   drawn with replacement from the normal test rows (a bootstrap), each tested by the server's own
   code (service/monitor/drift.py ``drift_test`` at the server's default alpha, and the flag-rate
   test of service/monitor/flag_rate.py on the window's counts). The share of windows that alarm,
   with a 95 % Wilson interval.
3. Detection delay: ``--trials`` streams per contamination c, each row an anomaly with probability
   c, fed as the server takes them: a window of the latest N rows tested every
   ``--monitor-step-rows`` rows once it holds 100, flag counts since the start. The rows scored
   before the first alarm (drift or flag rate), the median and the share within 1,000 and 5,000
   rows; a stream that has not alarmed by ``--max-rows`` counts as not detected.
4. An independent reference on the same windows and streams: scipy's two-sample Kolmogorov-Smirnov
   and Cramer-von Mises tests (``scipy.stats.ks_2samp``, ``cramervonmises_2samp``, the functions
   alibi-detect's KSDrift and CVMDrift detectors call), on the raw scores against the calibration
   sample rebuilt from the manifest's quantiles, each at the same alpha.

The tests run in-process on the served scores rather than by polling the server once per window:
the same functions the server's background task calls, so 1,000 windows take seconds, not hours.
tests/test_monitor_live.py and tests/test_monitoring_rpc.py check that the served state matches.

    python bench/monitor_eval.py --bundle /tmp/mon/fashion-c0 --bundle /tmp/mon/digits-c0
"""

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vae_serve.client import VaeClient  # noqa: E402
from vae_serve.core.calibration import QUANTILE_LEVELS  # noqa: E402
from vae_serve.export.sources import load_source  # noqa: E402
from vae_serve.export.sources.splits import make_splits, recorded_split  # noqa: E402
from vae_serve.service.monitor.drift import MIN_WINDOW_ROWS, drift_test, ranks_of  # noqa: E402
from vae_serve.service.monitor.flag_rate import RateCounts  # noqa: E402
from vae_serve.service.settings import Settings  # noqa: E402

DEFAULTS = Settings.model_fields
WINDOW_ROWS = DEFAULTS["monitor_window_rows"].default
STEP_ROWS = DEFAULTS["monitor_step_rows"].default
ALPHA = DEFAULTS["monitor_alpha"].default
CONTAMINATIONS = (0.01, 0.05, 0.2)


def served_scores(bundle: Path, x: np.ndarray) -> dict:
    """Score ``x`` through a real vae-serve on ``bundle``: scores, percentiles, flags, the rate."""
    command = [str(Path(sys.executable).with_name("vae-serve")), "--bundle", str(bundle), "--port", "0"]
    process = subprocess.Popen([*command, "--no-metrics"], stdout=subprocess.PIPE, text=True)
    try:
        port = None
        while port is None:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("vae-serve exited before it listened")
            if match := re.match(r"vae-serve listening on .*:(\d+)", line):
                port = int(match.group(1))
        with VaeClient(f"127.0.0.1:{port}", progress=False) as client:
            time.sleep(1.0)  # the models load after the port is announced; the client retries UNAVAILABLE
            result = client.score(x, seed=0)
        return {
            "scores": result.scores,
            "percentiles": result.percentile,
            "flagged": result.is_anomaly,
            "rate": result.false_positive_rate,
            "score": result.score,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_rows(manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's test split (its recorded split replayed), all classes: rows as clients send them,
    and whether each is normal."""
    data = manifest["training"]["data"]
    source = load_source(data["source"])
    splits = make_splits(source, None, **recorded_split(data))
    normal = np.isin(splits.test.y, data["classes"])
    return splits.test.x, normal


def wilson(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    share = hits / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


class Watch:
    """What the server keeps of one score, replayed: the window and the flag counts since the start."""

    def __init__(self, calibration_rows: int, rate: float) -> None:
        self.n, self.rate = calibration_rows, rate
        self.counts = RateCounts()

    def alarms(self, ranks: np.ndarray, flagged: int) -> tuple[bool, bool]:
        """(drift alarm, flag-rate alarm) of a window of ``ranks`` with ``flagged`` flags so far."""
        drift = drift_test(ranks, self.n).p_value < ALPHA
        self.counts.evaluate(self.rate, self.n, ALPHA)
        return drift, self.counts.alarm


def scipy_alarms(window_scores: np.ndarray, calibration: np.ndarray) -> tuple[bool, bool]:
    ks = stats.ks_2samp(window_scores, calibration).pvalue < ALPHA
    cvm = stats.cramervonmises_2samp(window_scores, calibration).pvalue < ALPHA
    return ks, cvm


def false_alarms(served: dict, normal: np.ndarray, calibration: np.ndarray, n: int, args, rng) -> dict:
    index = np.flatnonzero(normal)
    ranks_all = ranks_of(served["percentiles"], n)
    hits = {"drift": 0, "flag_rate": 0, "either": 0, "scipy_ks": 0, "scipy_cvm": 0}
    for _ in range(args.windows):
        rows = rng.choice(index, WINDOW_ROWS, replace=True)
        watch = Watch(n, served["rate"])
        flagged = int(served["flagged"][rows].sum())
        watch.counts.add(WINDOW_ROWS, flagged, served["rate"])
        drift, flag = watch.alarms(ranks_all[rows], flagged)
        ks, cvm = scipy_alarms(served["scores"][rows], calibration)
        for name, fired in (("drift", drift), ("flag_rate", flag), ("either", drift or flag)):
            hits[name] += int(fired)
        hits["scipy_ks"] += int(ks)
        hits["scipy_cvm"] += int(cvm)
    return {
        name: {
            "alarms": count,
            "windows": args.windows,
            "share": count / args.windows,
            "ci95": wilson(count, args.windows),
        }
        for name, count in hits.items()
    }


def first_alarm(stream: np.ndarray, served: dict, calibration: np.ndarray, n: int) -> dict:
    """Rows scored before the first alarm of each detector on one stream (None: none by its end)."""
    ranks_all = ranks_of(served["percentiles"], n)
    watch = Watch(n, served["rate"])
    found: dict[str, int | None] = {"server": None, "scipy_ks": None, "scipy_cvm": None}
    for end in range(STEP_ROWS, len(stream) + 1, STEP_ROWS):
        step = stream[end - STEP_ROWS : end]
        watch.counts.add(len(step), int(served["flagged"][step].sum()), served["rate"])
        if end < min(MIN_WINDOW_ROWS, WINDOW_ROWS):
            continue
        window = stream[max(0, end - WINDOW_ROWS) : end]
        drift, flag = watch.alarms(ranks_all[window], watch.counts.flagged)
        if found["server"] is None and (drift or flag):
            found["server"] = end
        ks, cvm = scipy_alarms(served["scores"][window], calibration)
        if found["scipy_ks"] is None and ks:
            found["scipy_ks"] = end
        if found["scipy_cvm"] is None and cvm:
            found["scipy_cvm"] = end
        if all(value is not None for value in found.values()):
            break
    return found


def detection(served: dict, normal: np.ndarray, calibration: np.ndarray, n: int, args, rng) -> dict:
    normal_index, anomaly_index = np.flatnonzero(normal), np.flatnonzero(~normal)
    results = {}
    for contamination in CONTAMINATIONS:
        delays: dict[str, list[int | None]] = {"server": [], "scipy_ks": [], "scipy_cvm": []}
        for _ in range(args.trials):
            is_anomaly = rng.random(args.max_rows) < contamination
            stream = np.where(
                is_anomaly,
                rng.choice(anomaly_index, args.max_rows),
                rng.choice(normal_index, args.max_rows),
            )
            for name, rows in first_alarm(stream, served, calibration, n).items():
                delays[name].append(rows)
        results[f"{contamination:g}"] = {name: summary(values, args.max_rows) for name, values in delays.items()}
    return results


def summary(delays: list[int | None], max_rows: int) -> dict:
    found = sorted(value for value in delays if value is not None)
    trials = len(delays)
    median = float(np.median([value if value is not None else math.inf for value in delays]))
    return {
        "trials": trials,
        "detected": len(found),
        "median_rows": None if math.isinf(median) else median,
        "within_1000": sum(value <= 1000 for value in found) / trials,
        "within_5000": sum(value <= 5000 for value in found) / trials,
        "max_rows": max_rows,
    }


def evaluate(bundle: Path, args) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    x, normal = test_rows(manifest)
    served = served_scores(bundle, x)
    calibration_record = manifest["calibration"]["scores"][served["score"]]
    n = calibration_record["num_examples"]
    # The calibration's sorted scores, read back from its quantiles (numpy's linear quantile puts the
    # i-th smallest of n at level i / (n - 1)); exact for n <= 1001 up to the interpolation.
    calibration = np.interp(np.arange(n) / (n - 1), QUANTILE_LEVELS, np.asarray(calibration_record["quantiles"]))
    rng = np.random.default_rng(args.seed)
    return {
        "bundle": manifest["name"],
        "score": served["score"],
        "calibration_rows": n,
        "normal_test_rows": int(normal.sum()),
        "anomaly_test_rows": int((~normal).sum()),
        "window_rows": WINDOW_ROWS,
        "step_rows": STEP_ROWS,
        "alpha": ALPHA,
        "rate": served["rate"],
        "seed": args.seed,
        "false_alarms": false_alarms(served, normal, calibration, n, args, rng),
        "detection": detection(served, normal, calibration, n, args, rng),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--max-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for bundle in args.bundle:
        print(json.dumps(evaluate(bundle, args), default=int), flush=True)


if __name__ == "__main__":
    main()
