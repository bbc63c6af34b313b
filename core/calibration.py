"""Calibration of anomaly scores on held-out normal data, and decisions against it.

The manifest stores each score's quantiles at QUANTILE_LEVELS; a served score is placed against
them as a percentile and a conservative p-value, and flagged above a threshold.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core.combination import QUANTILE_LEVELS, conformal_p_values, percentiles
from vae_serve.core.scores import score_named

__all__ = ["HISTOGRAM_BINS", "QUANTILE_LEVELS", "Decision", "calibration_histogram", "calibration_of", "decide"]

# Bins of the calibration histogram GetModelInfo serves: enough to show a shape, few enough that each
# bin holds many of the quantile grid's 1,000 steps (its resolution is 0.1 % of the rows).
HISTOGRAM_BINS = 30


def calibration_of(scores: dict[str, np.ndarray], seed: int, description: str) -> dict:
    """Quantiles of every anomaly score (``anomaly_scores`` with ``seed``) over held-out normal data:
    the manifest's calibration record, for thresholds and p-values."""
    return {
        "data": description,
        "seed": seed,
        "quantile_levels": [round(float(level), 6) for level in QUANTILE_LEVELS],
        "scores": {
            name: {
                "params": score_named(name).params,
                "num_examples": len(values),
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "quantiles": [float(q) for q in np.quantile(values, QUANTILE_LEVELS)],
            }
            for name, values in scores.items()
        },
    }


@dataclass(frozen=True)
class Decision:
    """Scores placed against a calibration distribution, and the anomaly decision."""

    percentile: np.ndarray
    p_value: np.ndarray
    is_anomaly: np.ndarray
    threshold: float
    false_positive_rate: float


def decide(scores: np.ndarray, calibration, false_positive_rate: float | None, threshold: float | None) -> Decision:
    """Percentiles, conservative p-values and the decision ``score > threshold``.

    ``calibration`` is a manifest ScoreCalibration with quantiles at QUANTILE_LEVELS. With a
    false-positive rate a the threshold is the calibration quantile at level 1 - a; with an explicit
    threshold, the reported rate is the share of calibration data above it. The p-value
    (1 + n (1 - F(s))) / (1 + n) is the usual conformal form: it never reaches 0 on finite data.
    """
    quantiles = np.asarray(calibration.quantiles)
    levels = QUANTILE_LEVELS
    percentile = percentiles(scores, quantiles)
    p_value = conformal_p_values(percentile, calibration.num_examples)
    if threshold is None:
        threshold = float(np.interp(1.0 - false_positive_rate, levels, quantiles))
    else:
        false_positive_rate = float(1.0 - np.interp(threshold, quantiles, levels, left=0.0, right=1.0))
    return Decision(percentile, p_value, scores > threshold, threshold, false_positive_rate)


def calibration_histogram(
    levels, quantiles, num_examples: int, bins: int = HISTOGRAM_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """The histogram of a calibration distribution, derived from its recorded quantiles.

    ``bins`` equal-width bins span the smallest to the largest calibration score (the quantiles at
    levels 0 and 1); bin i is [edges[i], edges[i + 1]), the last one closed. The quantile function is
    taken as piecewise linear between grid points: each step between two levels puts its share of the
    rows uniformly over the values between its two quantiles (a step of equal quantiles, a point mass,
    goes where its value falls). So the counts are exact up to the grid's resolution (0.1 % of the
    rows on the 1,001-level grid), fractional, and sum to ``num_examples``.

    Args:
        levels: The grid's levels, increasing from 0 to 1 (the manifest's ``quantile_levels``).
        quantiles: The score's quantile at each level (non-decreasing).
        num_examples: Calibration rows n.
        bins: Bins B (>= 1).

    Returns:
        (edges [B + 1], counts [B]); one bin [min, max] holding every row when all scores are equal.

    Raises:
        ValueError: the grid does not run from 0 to 1, or levels and quantiles differ in length.
    """
    levels, quantiles = np.asarray(levels, np.float64), np.asarray(quantiles, np.float64)
    if len(levels) != len(quantiles) or len(levels) < 2 or levels[0] != 0.0 or levels[-1] != 1.0:
        raise ValueError("calibration quantiles need a grid of levels from 0 to 1, one quantile per level")
    low, high = float(quantiles[0]), float(quantiles[-1])
    if not high > low:
        return np.array([low, high]), np.array([float(num_examples)])
    edges = np.linspace(low, high, bins + 1)
    start, end, mass = quantiles[:-1], quantiles[1:], np.diff(levels)
    width = end - start
    # The share of each step's mass strictly below each edge: [edges, steps].
    below = np.where(
        width > 0,
        np.clip((edges[:, None] - start) / np.where(width > 0, width, 1.0), 0.0, 1.0),
        (start < edges[:, None]).astype(np.float64),
    )
    cdf = below @ mass
    cdf[-1] = 1.0  # the last bin is closed: a point mass at the largest score is in it
    return edges, np.diff(cdf) * num_examples
