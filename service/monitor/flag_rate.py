"""The flag rate against its promise: rows counted by the promised false-positive rate, bucketed,
and a one-sided test of the flagged count that accounts for the calibration's own randomness.

A request's rate a sets the threshold at the calibration's (1 - a) quantile (numpy's linear
quantile of the n calibration scores, position (1 - a)(n - 1) among them sorted). The flag
probability of that threshold is itself random, a draw fixed once by the calibration sample: about
Beta with mean a and variance a (1 - a) / (n + 2). For small n a it is far from normal (skewed to
the right) and, because the linear quantile sits up to one calibration row below the conformal one,
its mean is nearer (1 + a (n - 1)) / (n + 1) than a: 0.0168 for a = 0.01 and n = 144. A z-test
around N a would therefore alarm on undrifted data. The test here is exact instead:

A flagged row lies above the threshold, hence above the calibration score at position
floor((1 - a)(n - 1)), the j-th largest for j = n - floor((1 - a)(n - 1)). Under exchangeability
the count of N rows above the j-th largest of n is Beta-Binomial(N, j, n + 1 - j), so
P(Beta-Binomial >= flagged) is a valid (conservative, exact when the position is whole) one-sided
p-value: distribution-free, whatever N. A bucket holding several rates uses the largest seen.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from vae_serve.service.monitor.drift import beta_binomial_sf

# The promised rates rows are counted under: each rate goes to the nearest in log space, so the
# label's cardinality is bounded whatever rates clients ask for.
RATE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
_LOG_BUCKETS = np.log(np.asarray(RATE_BUCKETS))
_LOG_EDGES = (_LOG_BUCKETS[1:] + _LOG_BUCKETS[:-1]) / 2.0  # midpoints in log space
MIN_FLAG_TEST_ROWS = 100  # and at least 10 expected flags: max(100, 10 / a) rows before an alarm


@functools.lru_cache(maxsize=1024)  # on the request path; clients ask for few distinct rates
def rate_bucket(rate: float) -> int:
    """The index in RATE_BUCKETS nearest ``rate`` in log space (0 and below: the smallest)."""
    if rate <= 0.0:
        return 0
    return int(np.searchsorted(_LOG_EDGES, math.log(rate)))


def bucket_label(index: int) -> str:
    """The ``fpr`` label value of a bucket, e.g. "0.01"."""
    return f"{RATE_BUCKETS[index]:g}"


def minimum_rows(rate: float) -> int:
    """Rows a bucket needs before its test may alarm: max(100, 10 / a)."""
    return max(MIN_FLAG_TEST_ROWS, math.ceil(10.0 / rate))


def exceeded_rank(rate: float, calibration_rows: int) -> int:
    """j: a row flagged at promised rate ``rate`` lies above the calibration's j-th largest score."""
    n = calibration_rows
    position = math.floor((1.0 - min(max(rate, 0.0), 1.0)) * (n - 1) + 1e-9)
    return n - position


def flag_rate_p_value(rows: int, flagged: int, largest_rate: float, calibration_rows: int) -> float:
    """P(a count at least ``flagged`` of ``rows``) under no drift, for thresholds at promised rates
    up to ``largest_rate`` on a calibration of n rows: exact Beta-Binomial, conservative.

    Args:
        rows: N, rows scored in the bucket.
        flagged: rows flagged among them.
        largest_rate: the largest promised rate among them.
        calibration_rows: n >= 2.

    Returns:
        The one-sided p-value in [0, 1].
    """
    j = exceeded_rank(largest_rate, calibration_rows)
    return beta_binomial_sf(flagged, rows, j, calibration_rows + 1 - j)


@dataclass
class RateCounts:
    """Cumulative counts of one (model, version, score, rate bucket)."""

    rows: int = 0
    flagged: int = 0
    expected_flags: float = 0.0  # the sum of each row's promised rate: the promised count
    largest_rate: float = 0.0
    p_value: float = 1.0  # at the last evaluation; 1.0 until the bucket has minimum_rows
    alarm: bool = False

    def add(self, rows: int, flagged: int, rate: float) -> None:
        self.rows += rows
        self.flagged += flagged
        self.expected_flags += rows * rate
        self.largest_rate = max(self.largest_rate, rate)

    def evaluate(self, bucket_rate: float, calibration_rows: int, alpha: float) -> None:
        """Test the counts so far; an alarm needs p < ``alpha`` and ``minimum_rows(bucket_rate)`` rows."""
        if self.rows < minimum_rows(bucket_rate):
            self.p_value, self.alarm = 1.0, False
            return
        self.p_value = flag_rate_p_value(self.rows, self.flagged, self.largest_rate, calibration_rows)
        self.alarm = self.p_value < alpha
