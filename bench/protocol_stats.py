"""AUROC with bootstrap intervals, and the offline p-value combinations, for bench/protocol.py.

The bootstrap resamples test rows with replacement as multinomial counts (a row drawn k times
weighs k), so one AUROC per resample is a weighted Mann-Whitney statistic computed from one sort
of the scores: 1,000 resamples of 10,000 rows cost a few hundred milliseconds per score column.
Ties count one half, as in scikit-learn's roc_auc_score (which the unweighted value equals).
"""

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CHUNK_RESAMPLES = 100  # resamples held in memory at once ([chunk, rows] counts)


def bootstrap_counts(num_rows: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """Yields [chunk, num_rows] float64 counts of each row in each resample; seeded, so every score
    column of a data set sees the same resamples (a joint bootstrap across classes, seeds, models)."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK_RESAMPLES):
        size = min(CHUNK_RESAMPLES, resamples - start)
        draws = rng.integers(0, num_rows, size=(size, num_rows))
        flat = (draws + np.arange(size)[:, None] * num_rows).ravel()
        yield np.bincount(flat, minlength=size * num_rows).reshape(size, num_rows).astype(np.float64)


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC (in [0, 1]) of ``scores`` against ``labels`` (1 = anomaly, the higher score) per row of
    ``weights`` [B, n]: P(score of an anomaly > score of a normal row), ties one half.

    Args:
        scores: [n] finite scores.
        labels: [n] 0/1.
        weights: [B, n] non-negative row weights (bootstrap counts; ones for the plain AUROC).

    Returns:
        [B] AUROCs; NaN where a resample holds no anomaly or no normal row.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # first row of each tie group
    w = weights[:, order]
    positives = np.add.reduceat(np.where(sorted_labels, w, 0.0), starts, axis=1)
    negatives = np.add.reduceat(np.where(sorted_labels, 0.0, w), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives  # negatives in strictly lower groups
    total = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (positives * (below + 0.5 * negatives)).sum(axis=1) / total


def auroc_percent(scores: np.ndarray, labels: np.ndarray) -> float:
    """The plain AUROC in %."""
    return float(weighted_auroc(scores, labels, np.ones((1, len(scores))))[0]) * 100


def cauchy_combination(p_values: list[np.ndarray]) -> np.ndarray:
    """Liu & Xie's (2020) Cauchy combination, mean of tan((0.5 - p) pi): higher = more anomalous."""
    stacked = np.clip(np.stack(p_values), 1e-300, 1.0)
    return np.mean(np.tan((0.5 - stacked) * np.pi), axis=0)


def min_p(p_values: list[np.ndarray]) -> np.ndarray:
    """Minus the smallest p-value (higher = more anomalous); Bonferroni's rule ranks the same."""
    return -np.min(np.stack(p_values), axis=0)


OFFLINE = {"offline_cauchy": cauchy_combination, "offline_min_p": min_p}
OFFLINE_COMPONENTS = ("negative_elbo", "reconstruction_error")
