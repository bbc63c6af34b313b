"""The score monitor's Prometheus series: a custom collector that reads the monitor's counts at each
scrape, so the request path touches no metric object per row. Labels: model (the bundle's name),
version, score, and fpr (the promised-rate bucket) on the flag-rate series."""

from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from vae_serve.service.monitor.states import P_VALUE_BOUNDS, Reading

LABELS = ("model", "version", "score")


def _families() -> dict[str, Metric]:
    rates = (*LABELS, "fpr")
    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    return {
        "p_value": HistogramMetricFamily(
            "vae_score_p_value",
            "Conformal p-value of each scored row; under no drift le=b holds about b.",
            labels=LABELS,
        ),
        "calibration_rows": gauge("vae_score_calibration_rows", "Calibration rows n of the score.", labels=LABELS),
        "rows": counter("vae_score_rows", "Rows scored, by promised false-positive rate bucket.", labels=rates),
        "flagged": counter("vae_score_flagged", "Rows flagged, by promised false-positive rate bucket.", labels=rates),
        "expected": counter(
            "vae_score_expected_flags",
            "Sum of the promised false-positive rate over scored rows (the promised count of flags).",
            labels=rates,
        ),
        "statistic": gauge("vae_drift_statistic", "KS statistic D, window against calibration.", labels=LABELS),
        "drift_p": gauge("vae_drift_p_value", "Drift p-value (KS and tail exceedances, Bonferroni).", labels=LABELS),
        "window": gauge("vae_drift_window_rows", "Rows in the drift window.", labels=LABELS),
        "capacity": gauge("vae_drift_window_capacity_rows", "Capacity of the drift window, rows.", labels=LABELS),
        "alarm": gauge("vae_drift_alarm", "1 while the last drift test's p-value is below alpha.", labels=LABELS),
        "evaluations": counter("vae_drift_evaluations", "Drift tests run.", labels=LABELS),
        "flag_p": gauge(
            "vae_flag_rate_p_value", "One-sided p-value of the flag rate against its promise.", labels=rates
        ),
        "flag_alarm": gauge(
            "vae_flag_rate_alarm", "1 while the flag rate exceeds its promise significantly.", labels=rates
        ),
    }


class MonitorCollector:
    """The monitor's Prometheus series, read from its counts at each scrape (names: docs/monitoring.md)."""

    def __init__(self, readings: Callable[[], list[Reading]]) -> None:
        self.readings = readings  # the monitor's consistent copies of its watches

    def describe(self) -> list[Metric]:
        return list(_families().values())  # names only: registering must not read the counts

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for reading in self.readings():
            state = reading.state
            labels = [state.model, state.version, state.score]
            cumulative = np.cumsum(reading.p_value_counts)
            buckets = [
                (floatToGoString(bound), float(count))
                for bound, count in zip(P_VALUE_BOUNDS, cumulative[:-1], strict=True)
            ]
            families["p_value"].add_metric(labels, [*buckets, ("+Inf", float(cumulative[-1]))], reading.p_value_sum)
            families["calibration_rows"].add_metric(labels, state.calibration_rows)
            families["statistic"].add_metric(labels, state.drift_statistic)
            families["drift_p"].add_metric(labels, state.drift_p_value)
            families["window"].add_metric(labels, state.window_rows)
            families["capacity"].add_metric(labels, state.window_capacity_rows)
            families["alarm"].add_metric(labels, float(state.drift_alarm))
            families["evaluations"].add_metric(labels, state.evaluations)
            for rate, expected in zip(state.flag_rates, reading.expected_flags, strict=True):
                rate_labels = [*labels, f"{rate.false_positive_rate:g}"]
                families["rows"].add_metric(rate_labels, rate.rows)
                families["flagged"].add_metric(rate_labels, rate.flagged)
                families["expected"].add_metric(rate_labels, expected)
                families["flag_p"].add_metric(rate_labels, rate.p_value)
                families["flag_alarm"].add_metric(rate_labels, float(rate.alarm))
        yield from families.values()
