"""Conformal p-values against a stored calibration, and Fisher's combination of several of them.

The ``combined`` score (``core.scores``) is Fisher's statistic T = -2 sum_i log p_i over the
calibrated p-values of its components (``COMBINED_COMPONENTS``, same rows, same seed). T is then
calibrated like any other score, on its own quantiles over the calibration rows, so its served
p-value is conformal, hence uniform on normal data, whatever the dependence between the components
(which are strongly dependent: neither the chi2 reference of independent p-values nor Cauchy's holds).
Why Fisher rather than Cauchy's combination: -2 log p goes to 0 as a component's p goes to 1, so a
component that finds an anomaly "more normal than normal" costs nothing, whereas Cauchy's
tan((0.5 - p) pi) goes to -inf and cancels the other component's evidence.

numpy only: both ``core.calibration`` (decisions) and ``core.scores`` (the combined score) read it.
"""

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

# 1001 levels: p-values resolve to 0.1 % anywhere, and to the sample's own resolution in the tails.
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 1001)
COMBINED = "combined"
COMBINED_COMPONENTS = ("negative_elbo", "reconstruction_error")


class StoredQuantiles(Protocol):
    """What a p-value needs of a manifest ScoreCalibration."""

    quantiles: list[float]
    num_examples: int


def percentiles(scores: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Each score's level in the stored distribution, 0 below its minimum and 1 above its maximum."""
    return np.interp(scores, np.asarray(quantiles), QUANTILE_LEVELS, left=0.0, right=1.0)


def conformal_p_values(percentile: np.ndarray, count: int) -> np.ndarray:
    """(1 + n (1 - F(s))) / (1 + n): the usual conformal form, which never reaches 0 on finite data."""
    return (1.0 + count * (1.0 - percentile)) / (1.0 + count)


def p_values(scores: np.ndarray, calibration: StoredQuantiles) -> np.ndarray:
    """Conservative p-values of ``scores`` against a stored calibration (as ``core.calibration.decide``)."""
    return conformal_p_values(percentiles(scores, calibration.quantiles), calibration.num_examples)


# The tail beyond the largest calibration score is modelled as exponential (peaks over a threshold),
# its scale the mean excess over the quantile at TAIL_LEVEL.
TAIL_LEVEL = 0.9
# Largest standardized excess kept: exp(-1e300) is 0 in any float, and the statistic stays finite.
MAX_TAIL_EXCESS = 1e300


def tail_scale(quantiles: Sequence[float]) -> float:
    """Mean excess of the calibration scores over their TAIL_LEVEL quantile, read off the stored
    quantiles (evenly spaced levels: their mean above the level is the conditional mean); the
    exponential tail's scale. Positive: a flat tail gets a scale of 1e-12 of its level (or 1e-12)."""
    values = np.asarray(quantiles, dtype=np.float64)
    upper = values[QUANTILE_LEVELS >= TAIL_LEVEL]
    floor = 1e-12 * max(1.0, abs(float(upper[-1])))
    return max(float(upper.mean() - upper[0]), floor)


def tail_log_p_values(scores: np.ndarray, calibration: StoredQuantiles) -> np.ndarray:
    """log p of each score: the conformal p-value inside the calibration range and, beyond its largest
    score q_max, that p-value (1 / (1 + n)) times exp(-(s - q_max) / b), b = ``tail_scale``.

    Why: the conformal p-value stops at 1 / (1 + n) above q_max, so every row beyond the calibration
    data would tie, and a combination of such p-values could not rank them. The tail keeps the order
    of the scores there. Calibration rows lie within the range, so the combined score's own
    calibration, and hence its served p-value, is that of the plain p-values: its validity does not
    rest on the tail model, only its ranking beyond the data does.
    """
    scores = np.asarray(scores, dtype=np.float64)
    inside = np.log(p_values(scores, calibration))
    top = float(calibration.quantiles[-1])
    excess = np.clip((scores - top) / tail_scale(calibration.quantiles), 0.0, MAX_TAIL_EXCESS)
    return inside - excess


def fisher_statistic(log_p_values: Sequence[np.ndarray]) -> np.ndarray:
    """T = -2 sum_i log p_i per row, over each component's log p-values [n]."""
    return -2.0 * np.sum(np.stack(log_p_values), axis=0)


def combined_scores(
    component_scores: Mapping[str, np.ndarray], calibrations: Mapping[str, StoredQuantiles]
) -> np.ndarray:
    """The combined score of rows whose component scores are given: Fisher over their tail-extended
    p-values (``tail_log_p_values``).

    Args:
        component_scores: each component's scores [n], by name (every name of COMBINED_COMPONENTS).
        calibrations: each component's stored calibration, by name.

    Returns:
        T [n], higher = more anomalous; finite for finite scores.

    Raises:
        ValueError: a component's calibration is missing (its p-values cannot be computed).
    """
    missing = [name for name in COMBINED_COMPONENTS if name not in calibrations]
    if missing:
        raise ValueError(f"the {COMBINED} score needs the calibration of {missing}; none was given")
    return fisher_statistic(
        [tail_log_p_values(component_scores[name], calibrations[name]) for name in COMBINED_COMPONENTS]
    )
