"""The drift test of one model version's score: the window of its latest rows against its calibration.

Every production p-value is computed against one finite calibration sample, so they are not
independent uniforms, and a one-sample test against the uniform would alarm on large windows
whenever the calibration happens to be a little off. Both tests here are therefore TWO-SAMPLE,
window against calibration, and distribution-free when production and calibration scores are
exchangeable (no drift); their power is limited by the calibration's size n, as it must be.

A row's calibration percentile u (the calibration's interpolated CDF at its score) gives its rank
among the n sorted calibration scores: r = u (n - 1) (numpy's linear quantile puts the i-th
smallest at level i / (n - 1)). Rows above the calibration's maximum (u = 1) rank above every
calibration score, rows below its minimum (u = 0) below every one. The window holds the
percentiles; the background test turns them into ranks.

1. Kolmogorov-Smirnov, two-sample: D = sup |G_window - F_calibration|, both empirical CDFs read off
   the ranks; p-value from the Kolmogorov distribution at the effective size m = N n / (N + n) with
   Stephens' small-sample correction (Stephens 1970; Numerical Recipes 14.3):
   lambda = (sqrt(m) + 0.12 + 0.11 / sqrt(m)) D, Q_KS(lambda) = 2 sum_k (-1)^(k-1) exp(-2 k^2 lambda^2).
2. Upper-tail exceedance, exact: for a tail level b, j = floor(b (n + 1)); the count K of window
   rows above the calibration's j-th largest score is Beta-Binomial(N, j, n + 1 - j) under
   exchangeability (the exceedance probability of the j-th largest of n is Beta(j, n + 1 - j)).
   One-sided p-value P(K' >= K). The test for anomalies mixed into the traffic.
The drift p-value is their Bonferroni combination, min(1, tests * min p).

No scipy on the serving side: both tails are written here with ``math``.
"""

import math
from dataclasses import dataclass

import numpy as np

TAIL_LEVELS = (0.01, 0.05)  # b: the exceedance tests' tail levels, where anomalies show first
MIN_WINDOW_ROWS = 100  # fewer rows than this (or a smaller window, full): no test yet
_CHUNK_TERMS = 1024  # Beta-Binomial terms summed per numpy step, until the rest are negligible
_NEGLIGIBLE = 1e-17  # a term this small relative to the sum so far ends the tail sum


class RowWindow:
    """The latest ``capacity_rows`` values (calibration percentiles) of one model version's score: a
    ring buffer, allocated once, so memory is bounded whatever the traffic."""

    def __init__(self, capacity_rows: int) -> None:
        self.capacity_rows = capacity_rows
        self._values = np.empty(capacity_rows, dtype=np.float64)
        self._next = 0  # where the next value goes
        self.rows = 0  # values held, up to capacity_rows

    def append(self, values: np.ndarray) -> None:
        """Add ``values`` [rows]; the oldest make room once the window is full."""
        values = values[-self.capacity_rows :]
        head = min(len(values), self.capacity_rows - self._next)
        self._values[self._next : self._next + head] = values[:head]
        self._values[: len(values) - head] = values[head:]
        self._next = (self._next + len(values)) % self.capacity_rows
        self.rows = min(self.capacity_rows, self.rows + len(values))

    def snapshot(self) -> np.ndarray:
        """A copy of the values held (their order is of no use to the tests)."""
        return self._values[: self.rows].copy()


def ranks_of(percentiles: np.ndarray, calibration_rows: int) -> np.ndarray:
    """Each row's rank among the n sorted calibration scores, from its calibration percentile.

    Args:
        percentiles: [rows] the calibration's CDF at each row's score, in [0, 1].
        calibration_rows: n.

    Returns:
        [rows] float64 ranks in [-0.5, n - 0.5]: i for the i-th smallest calibration score
        (0-based), fractions between them, -0.5 below the minimum and n - 0.5 above the maximum.
    """
    ranks = np.asarray(percentiles, dtype=np.float64) * (calibration_rows - 1)
    ranks[percentiles <= 0.0] = -0.5
    ranks[percentiles >= 1.0] = calibration_rows - 0.5
    return ranks


def ks_statistic(ranks: np.ndarray, calibration_rows: int) -> float:
    """The two-sample Kolmogorov-Smirnov statistic of the window against the calibration.

    Both empirical CDFs are right-continuous steps, so the supremum of their distance is reached at
    a jump of one of them: at each window rank and at each calibration rank 0..n-1.

    Args:
        ranks: [N] the window's ranks (``ranks_of``), N >= 1.
        calibration_rows: n.

    Returns:
        D in [0, 1].
    """
    ranks = np.sort(ranks)
    window_rows, n = len(ranks), calibration_rows
    # At each window rank: the window's CDF (ties counted in full) and the calibration's.
    window_cdf = np.searchsorted(ranks, ranks, side="right") / window_rows
    calibration_cdf = np.clip(np.floor(ranks + 1e-9) + 1.0, 0.0, n) / n
    at_window = np.abs(window_cdf - calibration_cdf).max()
    grid = np.arange(n, dtype=np.float64)
    at_calibration = np.abs(np.searchsorted(ranks, grid + 1e-9, side="right") / window_rows - (grid + 1.0) / n).max()
    return float(max(at_window, at_calibration))


def kolmogorov_tail(lam: float) -> float:
    """Q_KS(lambda) = P(K > lambda) for the Kolmogorov distribution.

    Two series, each used where it converges fast: the alternating one above lambda = 1.18 and the
    Jacobi-theta form of the CDF, sqrt(2 pi) / lambda sum_k exp(-(2k - 1)^2 pi^2 / (8 lambda^2)), below.
    """
    if lam <= 0.2:
        return 1.0  # the CDF is below 1e-20 here
    if lam < 1.18:
        scale = math.pi**2 / (8.0 * lam * lam)
        cdf = math.sqrt(2.0 * math.pi) / lam * sum(math.exp(-((2 * k - 1) ** 2) * scale) for k in range(1, 8))
        return min(1.0, max(0.0, 1.0 - cdf))
    total = sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 20))
    return min(1.0, max(0.0, 2.0 * total))


def ks_p_value(statistic: float, window_rows: int, calibration_rows: int) -> float:
    """The two-sample KS p-value of ``statistic``: the Kolmogorov tail at Stephens' corrected lambda
    for the effective size m = N n / (N + n)."""
    effective = window_rows * calibration_rows / (window_rows + calibration_rows)
    root = math.sqrt(effective)
    return kolmogorov_tail((root + 0.12 + 0.11 / root) * statistic)


def _log_sum_exp(logs: np.ndarray) -> float:
    top = float(logs.max())
    return top + math.log(float(np.exp(logs - top).sum()))


def _log_pmf(count: int, trials: int, a: float, b: float) -> float:
    """log P(K = count) for K ~ Beta-Binomial(trials, a, b)."""
    log_choose = math.lgamma(trials + 1) - math.lgamma(count + 1) - math.lgamma(trials - count + 1)
    log_beta_ratio = (
        math.lgamma(count + a)
        + math.lgamma(trials - count + b)
        - math.lgamma(trials + a + b)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    return log_choose + log_beta_ratio


def _log_tail(start: int, last: int, trials: int, a: float, b: float) -> float:
    """log of the sum of P(K = i) for i from ``start`` to ``last`` (inclusive, either direction),
    going away from the mode: the terms only shrink, so the sum stops once they are negligible."""
    step = 1 if last >= start else -1
    log_term = _log_pmf(start, trials, a, b)
    total = log_term
    position = start
    while position != last and log_term - total > math.log(_NEGLIGIBLE):
        terms = min(_CHUNK_TERMS, abs(last - position))
        counts = position + step * np.arange(terms, dtype=np.float64)  # P(i + step) / P(i) for these i
        if step > 0:
            ratio = (trials - counts) * (counts + a) / ((counts + 1.0) * (trials - counts - 1.0 + b))
        else:
            ratio = counts * (trials - counts + b) / ((trials - counts + 1.0) * (counts - 1.0 + a))
        logs = log_term + np.cumsum(np.log(ratio))
        total = float(np.logaddexp(total, _log_sum_exp(logs)))
        log_term = float(logs[-1])
        position += step * terms
    return total


def beta_binomial_sf(count: int, trials: int, a: float, b: float) -> float:
    """P(K >= count) for K ~ Beta-Binomial(trials, a, b), a, b >= 1 (unimodal), from ``math.lgamma``.

    The side away from the mode is summed (terms shrink there, the sum stops when they are
    negligible): the upper tail itself when ``count`` is above the mean, else one minus the lower.
    """
    if count <= 0:
        return 1.0
    if count > trials:
        return 0.0
    mean = trials * a / (a + b)
    if count >= mean:
        return min(1.0, math.exp(_log_tail(count, trials, trials, a, b)))
    return min(1.0, max(0.0, 1.0 - math.exp(_log_tail(count - 1, 0, trials, a, b))))


def tail_rank(level: float, calibration_rows: int) -> tuple[int, float] | None:
    """(j, the rank of the calibration's j-th largest score) for tail level b, j = floor(b (n + 1));
    None when j < 1 (the calibration is too small for that level)."""
    j = math.floor(level * (calibration_rows + 1) + 1e-9)
    return None if j < 1 else (j, float(calibration_rows - j))


@dataclass(frozen=True)
class DriftResult:
    statistic: float  # KS D
    p_value: float  # Bonferroni-combined
    ks_p_value: float
    tail_exceedances: tuple[tuple[float, int, int], ...]  # (level b, window rows above, window rows)
    tail_p_values: tuple[float, ...]


def drift_test(ranks: np.ndarray, calibration_rows: int) -> DriftResult:
    """Both tests of the window ``ranks`` against a calibration of ``calibration_rows`` scores.

    Args:
        ranks: [N] the window's calibration ranks (``ranks_of``), N >= 1.
        calibration_rows: n >= 2.

    Returns:
        The KS statistic, each test's p-value and their Bonferroni combination.
    """
    window_rows = len(ranks)
    statistic = ks_statistic(ranks, calibration_rows)
    ks_p = ks_p_value(statistic, window_rows, calibration_rows)
    exceedances, tail_p = [], []
    for level in TAIL_LEVELS:
        placed = tail_rank(level, calibration_rows)
        if placed is None:
            continue
        j, rank = placed
        above = int(np.count_nonzero(ranks > rank + 1e-9))
        exceedances.append((level, above, window_rows))
        tail_p.append(beta_binomial_sf(above, window_rows, j, calibration_rows + 1 - j))
    tests = 1 + len(tail_p)
    combined = min(1.0, tests * min([ks_p, *tail_p]))
    return DriftResult(statistic, combined, ks_p, tuple(exceedances), tuple(tail_p))
