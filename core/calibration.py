"""Calibration of anomaly scores on held-out normal data, and decisions against it.

The manifest stores each score's quantiles at QUANTILE_LEVELS; a served score is placed against
them as a percentile and a conservative p-value, and flagged above a threshold.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core.combination import QUANTILE_LEVELS, conformal_p_values, percentiles
from vae_serve.core.scores import score_named

__all__ = ["QUANTILE_LEVELS", "Decision", "calibration_of", "decide"]


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
