"""The monitoring state of each watched (model, version, score), as ``Monitor.states`` reports it and
as the Prometheus collector reads it: plain frozen values, copied out under the monitor's lock."""

from dataclasses import dataclass

import numpy as np

# The p-value histogram's upper bounds: under no drift, the share of rows at or below b is about b.
P_VALUE_BOUNDS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class FlagRateState:
    """The flag rate of one promised-rate bucket against its promise."""

    false_positive_rate: float  # the bucket's promised rate
    rows: int
    flagged: int
    observed_rate: float
    p_value: float  # one-sided, calibration-aware (1.0 until the bucket has enough rows)
    alarm: bool


@dataclass(frozen=True)
class ScoreMonitorState:
    """The monitoring state of one (model, version, score)."""

    model: str
    version: str
    score: str
    calibration_rows: int
    window_capacity_rows: int
    window_rows: int
    rows_seen: int
    drift_statistic: float  # KS D; nan before the first evaluation
    drift_p_value: float  # combined; nan before the first evaluation
    drift_alarm: bool
    evaluations: int
    tail_exceedances: tuple[tuple[float, int, int], ...]  # (level b, window rows above it, window rows)
    flag_rates: tuple[FlagRateState, ...]


@dataclass(frozen=True)
class Reading:
    """One watch as the collector reads it."""

    state: ScoreMonitorState
    p_value_counts: np.ndarray  # [len(P_VALUE_BOUNDS) + 1] rows per bucket, not cumulative
    p_value_sum: float
    expected_flags: tuple[float, ...]  # by state.flag_rates
