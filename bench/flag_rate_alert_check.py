"""How often the flag-rate alert's PromQL test (deploy/base/prometheus/rules.yml, VaeFlagRateExcess)
fires under no drift, computed exactly rather than simulated.

Under no drift the count F of N rows flagged at promised rate a, with a threshold at numpy's linear
(1 - a) quantile of n calibration scores, is at most Beta-Binomial(N, j, n + 1 - j) with
j = 1 + ceil(a (n - 1)) (the calibration's j-th largest score lies at or below the threshold;
conformal exchangeability). The script sums that distribution's mass where each z exceeds 3.09:
- "normal z against a": (F - N a) / sqrt(N a (1 - a) + N^2 a (1 - a) / (n + 2)), the first design;
- "rules.yml": the rule's Wilson-Hilferty z against the bound j / (n + 1).
The target is 0.001 (one-sided p < 0.001). Prints one row per case, as a Markdown table.

    python bench/flag_rate_alert_check.py
"""

import math

import numpy as np
from scipy.stats import betabinom

Z_ALARM = 3.09  # one-sided p < 0.001
CALIBRATION_ROWS = (20, 144, 1000, 10_000)
RATES = (0.0001, 0.001, 0.01, 0.05)
WINDOW_ROWS = (1_000, 10_000, 100_000)


def exceeded_rank(rate: float, calibration_rows: int) -> int:
    """j: a row flagged at ``rate`` lies above the calibration's j-th largest score (as the rule)."""
    return 1 + math.ceil(rate * (calibration_rows - 1) - 1e-6)


def normal_z(flagged: np.ndarray, rows: int, rate: float, calibration_rows: int) -> np.ndarray:
    """The plain calibration-aware z against the promised rate itself."""
    expected = rows * rate
    variance = expected * (1 - rate) + rows**2 * rate * (1 - rate) / (calibration_rows + 2)
    return (flagged - expected) / np.sqrt(variance)


def rule_z(flagged: np.ndarray, rows: int, rate: float, calibration_rows: int) -> np.ndarray:
    """vae:score_flag_excess:z1h: Wilson-Hilferty z of a Gamma matched to the bound's mean and variance."""
    bound = exceeded_rank(rate, calibration_rows) / (calibration_rows + 1)
    mean = rows * bound
    shape = rows * bound / ((1 - bound) * (1 + rows / (calibration_rows + 2)))
    return 3 * np.sqrt(shape) * ((flagged / mean) ** (1 / 3) - 1) + 1 / (3 * np.sqrt(shape))


def false_alarm_rate(z_of, rows: int, rate: float, calibration_rows: int) -> float:
    """P(z > Z_ALARM) when F follows the no-drift Beta-Binomial bound exactly."""
    j = exceeded_rank(rate, calibration_rows)
    flagged = np.arange(rows + 1)
    mass = betabinom.pmf(flagged, rows, j, calibration_rows + 1 - j)
    return float(mass[z_of(flagged, rows, rate, calibration_rows) > Z_ALARM].sum())


def main() -> None:
    print("| n | a | N (rows an hour) | j | normal z against a | rules.yml |")
    print("|---|---|---|---|---|---|")
    for calibration_rows in CALIBRATION_ROWS:
        for rate in RATES:
            for rows in WINDOW_ROWS:
                if rows < max(100, 10 / rate):  # the alert's minimum count
                    continue
                plain = false_alarm_rate(normal_z, rows, rate, calibration_rows)
                rule = false_alarm_rate(rule_z, rows, rate, calibration_rows)
                j = exceeded_rank(rate, calibration_rows)
                print(f"| {calibration_rows} | {rate:g} | {rows} | {j} | {plain:.4f} | {rule:.5f} |")


if __name__ == "__main__":
    main()
