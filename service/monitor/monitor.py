"""The score monitor: what each scored row adds to its model version's watch, the background
evaluation of the drift and flag-rate tests, the monitoring state, and its Prometheus series.

The request path (``record``) only does numpy on the event's arrays: a bincount into fixed p-value
bucket counts, an append into a preallocated ring buffer of calibration percentiles, a few counters, all
under one lock held for microseconds. The tests run in a background task, off the event loop (in a
thread), every ``monitor_step_rows`` new rows of a (model, version, score); a request never waits
for them. Prometheus reads the counts through a custom collector (``MonitorCollector``), so no
metric object is touched per row. Memory: one window of ``monitor_window_rows`` floats per watched
(model, version, score), and a few numbers per promised-rate bucket.
"""

import asyncio
import contextlib
import logging
import math
import threading
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry

from vae_serve.service.monitor.collector import MonitorCollector
from vae_serve.service.monitor.drift import MIN_WINDOW_ROWS, DriftResult, RowWindow, drift_test, ranks_of
from vae_serve.service.monitor.events import ScoredEvent
from vae_serve.service.monitor.flag_rate import RATE_BUCKETS, RateCounts, rate_bucket
from vae_serve.service.monitor.states import P_VALUE_BOUNDS, FlagRateState, Reading, ScoreMonitorState
from vae_serve.service.settings import Settings

__all__ = ["FlagRateState", "Monitor", "ScoreMonitorState"]  # the states are defined in states.py
log = logging.getLogger(__name__)
_P_VALUE_BOUNDS = np.asarray(P_VALUE_BOUNDS)  # an array: searchsorted on a tuple converts it each call
EVALUATION_POLL_S = 0.2  # how often the background task looks for a watch with enough new rows


@dataclass
class _Watch:
    """What is kept of one (model, version, score): counts, the window, the last test results."""

    calibration_rows: int
    window: RowWindow
    rows_seen: int = 0
    rows_tested: int = 0  # rows_seen at the last evaluation
    p_value_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(P_VALUE_BOUNDS) + 1, np.int64))
    p_value_sum: float = 0.0
    rates: dict[int, RateCounts] = field(default_factory=dict)  # by RATE_BUCKETS index
    drift: DriftResult | None = None
    drift_alarm: bool = False
    evaluations: int = 0


class Monitor:
    """Watches every served (model, version, score): the p-values, the drift and flag-rate tests.

    Args:
        settings: monitor_window_rows (not None), monitor_step_rows and monitor_alpha.
        registry: where its series are exported (a custom collector).
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        if settings.monitor_window_rows is None:
            raise ValueError("Monitor needs settings.monitor_window_rows; with --no-monitor build none")
        self.window_rows = settings.monitor_window_rows
        self.step_rows = settings.monitor_step_rows
        self.alpha = settings.monitor_alpha
        self._watches: dict[tuple[str, str, str], _Watch] = {}
        self._lock = threading.Lock()  # record (event loop) against the scrape thread and the tests' results
        self._task: asyncio.Task | None = None
        registry.register(MonitorCollector(self.readings))

    # --- the request path --------------------------------------------------------------------------

    def record(self, event: ScoredEvent) -> None:
        """Add one score call's rows: O(rows) numpy, never waits (besides a lock held for microseconds)."""
        rows = len(event.p_values)
        if rows == 0:
            return
        key = (event.model, event.version, event.score)
        n = event.calibration_rows
        p_counts = np.bincount(_P_VALUE_BOUNDS.searchsorted(event.p_values), minlength=len(P_VALUE_BOUNDS) + 1)
        p_sum = float(event.p_values.sum())  # the histogram's _sum
        flagged = int(np.count_nonzero(event.flagged))
        bucket = rate_bucket(event.false_positive_rate)
        with self._lock:
            watch = self._watches.get(key)
            if watch is None or watch.calibration_rows != n:  # new, or the version was recalibrated
                watch = self._watches[key] = _Watch(n, RowWindow(self.window_rows))
            watch.window.append(event.percentiles)  # made ranks in the background test
            watch.rows_seen += rows
            watch.p_value_counts += p_counts
            watch.p_value_sum += p_sum
            watch.rates.setdefault(bucket, RateCounts()).add(rows, flagged, event.false_positive_rate)

    # --- the state ---------------------------------------------------------------------------------

    def forget(self, model: str, version: str) -> None:
        """A model version is no longer served: its watches and series go."""
        with self._lock:
            for key in [key for key in self._watches if key[:2] == (model, version)]:
                del self._watches[key]

    def states(self, model: str = "", version: str = "") -> list[ScoreMonitorState]:
        """The state of every watched (model, version, score), sorted; "" matches any model or version."""
        with self._lock:
            return [
                _state_of(key, watch)
                for key, watch in sorted(self._watches.items())
                if model in ("", key[0]) and version in ("", key[1])
            ]

    def readings(self) -> list[Reading]:
        """Consistent copies of every watch's state and counts, for the collector (the scrape thread)."""
        with self._lock:
            return [
                Reading(
                    _state_of(key, watch),
                    watch.p_value_counts.copy(),
                    watch.p_value_sum,
                    tuple(counts.expected_flags for _, counts in sorted(watch.rates.items())),
                )
                for key, watch in sorted(self._watches.items())
            ]

    # --- the background evaluation -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task that runs the tests."""
        self._task = asyncio.create_task(self._evaluate_forever(), name="vae-score-monitor")

    async def close(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _evaluate_forever(self) -> None:
        while True:
            await asyncio.sleep(EVALUATION_POLL_S)
            for key in self._due():
                try:
                    await self._evaluate(key)
                except Exception:  # a bug in a test must not end the monitoring of every model
                    log.exception("score monitor: evaluating %s failed", ":".join(key))

    def _due(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [
                key for key, watch in self._watches.items() if watch.rows_seen - watch.rows_tested >= self.step_rows
            ]

    async def _evaluate(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            watch = self._watches.get(key)
            if watch is None:
                return
            watch.rows_tested = watch.rows_seen
            n = watch.calibration_rows
            full_enough = watch.window.rows >= min(MIN_WINDOW_ROWS, self.window_rows)
            percentiles = watch.window.snapshot() if full_enough else None
            rates = {
                bucket: RateCounts(counts.rows, counts.flagged, 0.0, counts.largest_rate)
                for bucket, counts in watch.rates.items()
            }
        drift, rates = await asyncio.to_thread(_tests, percentiles, n, rates, self.alpha)
        with self._lock:
            if self._watches.get(key) is not watch:
                return  # forgotten (or recalibrated) meanwhile
            for bucket, tested in rates.items():
                watch.rates[bucket].p_value, watch.rates[bucket].alarm = tested.p_value, tested.alarm
            if drift is not None:
                watch.drift, watch.drift_alarm = drift, drift.p_value < self.alpha
                watch.evaluations += 1


def _tests(percentiles: np.ndarray | None, n: int, rates: dict[int, RateCounts], alpha: float):
    """Both tests, in a worker thread: the drift test (None with too few rows) and each bucket's."""
    for bucket, counts in rates.items():
        counts.evaluate(RATE_BUCKETS[bucket], n, alpha)
    return (None if percentiles is None else drift_test(ranks_of(percentiles, n), n)), rates


def _state_of(key: tuple[str, str, str], watch: _Watch) -> ScoreMonitorState:
    drift = watch.drift
    flag_rates = tuple(
        FlagRateState(
            RATE_BUCKETS[bucket],
            counts.rows,
            counts.flagged,
            counts.flagged / counts.rows if counts.rows else 0.0,
            counts.p_value,
            counts.alarm,
        )
        for bucket, counts in sorted(watch.rates.items())
    )
    return ScoreMonitorState(
        *key,
        calibration_rows=watch.calibration_rows,
        window_capacity_rows=watch.window.capacity_rows,
        window_rows=watch.window.rows,
        rows_seen=watch.rows_seen,
        drift_statistic=math.nan if drift is None else drift.statistic,
        drift_p_value=math.nan if drift is None else drift.p_value,
        drift_alarm=watch.drift_alarm,
        evaluations=watch.evaluations,
        tail_exceedances=() if drift is None else drift.tail_exceedances,
        flag_rates=flag_rates,
    )
