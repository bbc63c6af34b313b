"""What the plane's score operation hands to monitoring: one event per answered score call, in plain
numpy arrays and numbers (no protocol, no plane types), so the monitor room imports nothing above it."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoredEvent:
    """The rows of one answered ScoreAnomaly call (or its piece of a split call)."""

    model: str  # the bundle's name
    version: str
    score: str  # the score's name, e.g. "negative_elbo"
    calibration_rows: int  # n: the calibration's size; p-values are multiples of 1/(n+1)
    scores: np.ndarray  # [rows] the raw scores
    percentiles: np.ndarray  # [rows] the calibration's CDF at each score, in [0, 1]
    p_values: np.ndarray  # [rows] conservative p-values, (1 + n (1 - percentile)) / (n + 1)
    flagged: np.ndarray  # [rows] bool: score > threshold
    threshold: float
    false_positive_rate: float  # the promised rate: as asked, or implied by an explicit threshold
    rate_requested: bool  # True: the caller asked for a rate; False: an explicit threshold
    seed: int
    request_id: str  # the caller's x-request-id, or one the server made
    trace_id: str  # the call's trace id (32 hex), "" when it is not traced
    time_s: float  # wall-clock time it was answered (time.time())
    inputs: np.ndarray | None = None  # [rows, D] float32, only when the decision log asks for inputs
