"""vae.v1.GetMonitoring: which model versions a request selects, and the monitor's readings
(service/monitor/monitor.py: each ``ScoreMonitorState`` with its p-value counts, the copies the
Prometheus collector reads) as a MonitoringResponse. Plain conversion: the states are computed off the
request path, and reading them here waits on nothing."""

import math
from collections.abc import Iterable

from vae_serve.api.v1 import vae_pb2
from vae_serve.client.names import SCORE_TYPES
from vae_serve.service.monitor.states import P_VALUE_BOUNDS, Reading
from vae_serve.service.plane.dataplane import DataPlane
from vae_serve.service.settings import Settings


def selection(plane: DataPlane, ref: vae_pb2.ModelRef) -> tuple[str, str]:
    """(model, version) filters of a GetMonitoring request; "" selects all.

    Empty name and version: every model. A name alone: every version of that model. A version, with
    or without a name: that version (of the default model when unnamed), as every rpc resolves it.

    Raises:
        NotFound: the server holds no such model or version.
        NotReady: the models are still loading.
    """
    if not ref.name and not ref.version:
        return "", ""
    manifest = plane.resolve(ref.name, ref.version).bundle.manifest
    return manifest.name, manifest.version if ref.version else ""


def readings(monitor, model: str, version: str) -> list[Reading]:
    """The monitor's readings of the selected versions: the very copies its Prometheus collector reads,
    so the rpc and the metrics tell the same numbers.

    Args:
        monitor: The plane's ``Monitor``.
        model, version: The filters of ``selection``; "" matches any.
    """
    return [
        reading
        for reading in monitor.readings()
        if model in ("", reading.state.model) and version in ("", reading.state.version)
    ]


def monitoring_reply(settings: Settings, watched: Iterable[Reading] | None) -> vae_pb2.MonitoringResponse:
    """The reply: monitoring's settings and one ScoreMonitor per reading.

    Args:
        settings: The server's settings (alpha, step).
        watched: The monitor's readings (``readings``), or None when monitoring is off.
    """
    return vae_pb2.MonitoringResponse(
        enabled=watched is not None,
        alpha=settings.monitor_alpha,
        step_rows=settings.monitor_step_rows,
        scores=[score_monitor(reading) for reading in watched or ()],
    )


def score_monitor(reading: Reading) -> vae_pb2.ScoreMonitor:
    """One reading as a ScoreMonitor; the drift numbers stay unset until the first test ran (the state
    holds NaN then, which a client could take for a value)."""
    state = reading.state
    return vae_pb2.ScoreMonitor(
        model=vae_pb2.ModelVersion(name=state.model, version=state.version),
        score=SCORE_TYPES[state.score],
        calibration_rows=state.calibration_rows,
        window_capacity_rows=state.window_capacity_rows,
        window_rows=state.window_rows,
        rows_seen=state.rows_seen,
        drift_statistic=_measured(state.drift_statistic),
        drift_p_value=_measured(state.drift_p_value),
        drift_alarm=state.drift_alarm,
        evaluations=state.evaluations,
        tail_exceedances=[
            vae_pb2.TailExceedance(level=level, rows_above=above, window_rows=rows)
            for level, above, rows in state.tail_exceedances
        ],
        flag_rates=[flag_rate(rate) for rate in sorted(state.flag_rates, key=lambda rate: rate.false_positive_rate)],
        p_value_histogram=p_value_histogram(reading),
    )


def p_value_histogram(reading: Reading) -> vae_pb2.PValueHistogram:
    """The reading's p-value bucket counts, not cumulative, with the metric's bounds (+Inf left implicit)."""
    counts = [int(count) for count in reading.p_value_counts]
    return vae_pb2.PValueHistogram(upper_bounds=P_VALUE_BOUNDS, counts=counts, sum=reading.p_value_sum)


def flag_rate(state) -> vae_pb2.FlagRateMonitor:
    """One ``FlagRateState`` as a FlagRateMonitor."""
    return vae_pb2.FlagRateMonitor(
        false_positive_rate=state.false_positive_rate,
        rows=state.rows,
        flagged=state.flagged,
        observed_rate=state.observed_rate,
        p_value=state.p_value,
        alarm=state.alarm,
    )


def _measured(value: float) -> float | None:
    """None for the NaN of a test not run yet: the optional field stays unset."""
    return None if math.isnan(value) else value
