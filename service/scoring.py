"""Likelihood bounds and anomaly scores computed through the ONNX graphs, and their calibration.

The exporter calibrates with exactly this code, so a served score and its stored quantiles always
come from the same computation.
"""

from dataclasses import dataclass

import numpy as np

from service import vae_math
from service.runtime import OnnxVae

# Each score's parameters are part of its definition: calibration quantiles are only valid for the
# parameters they were computed with. k=100 for IWAE follows the usual anomaly-detection protocol.
SCORE_PARAMS: dict[str, dict[str, int]] = {
    "negative_elbo": {"num_samples": 10},
    "negative_iwae": {"num_samples": 100},
    "reconstruction_error": {},
}
# 1001 levels: p-values resolve to 0.1 % anywhere, and to the sample's own resolution in the tails.
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 1001)
# Rows of decoder output held at once (samples x examples x features), bounding memory to ~64 MB.
MAX_DECODED_VALUES = 1 << 24


@dataclass(frozen=True)
class BoundEstimates:
    """Per-example Monte-Carlo estimates from ``num_samples`` posterior draws, all in nats."""

    elbo: np.ndarray
    reconstruction: np.ndarray  # E_q[log p(x|z)]
    kl: np.ndarray  # closed form
    iwae: np.ndarray  # log mean_k w_k, a lower bound on log p(x)
    iwae_standard_error: np.ndarray


def estimate_bounds(vae: OnnxVae, x: np.ndarray, num_samples: int, rng: np.random.Generator) -> BoundEstimates:
    """ELBO (its two terms) and the IWAE bound of each row of ``x``.

    ELBO = mean_k log p(x|z_k) - KL(q||p) with the KL in closed form (lower variance than the
    sampled log-ratio); IWAE = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) (Burda et al. eq. 8).
    """
    z_mean, z_logvar = vae.encode(x)
    kl = vae_math.kl_to_standard_normal(z_mean, z_logvar)
    # All noise is drawn up front, eps[k, i] for sample k of example i, so the values do not depend
    # on how the rows are chunked: eps = default_rng(seed).standard_normal((K, n, L), float32).
    noise = rng.standard_normal((num_samples, *z_mean.shape), dtype=np.float32)
    chunk = max(1, MAX_DECODED_VALUES // (num_samples * x.shape[1]))
    reconstruction = np.empty(len(x), dtype=np.float64)
    iwae = np.empty(len(x), dtype=np.float64)
    standard_error = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        z = z_mean[rows] + np.exp(0.5 * z_logvar[rows]) * noise[:, rows]
        decoded = vae.decode(z.reshape(-1, z.shape[-1]))
        decoded = {name: value.reshape(*z.shape[:2], -1) for name, value in decoded.items()}
        log_px_z = vae.log_likelihood(x[rows], decoded)  # [samples, examples]
        log_weights = (
            log_px_z
            + vae_math.standard_normal_log_prob(z)
            - vae_math.diag_normal_log_prob(z, z_mean[rows], z_logvar[rows])
        )
        reconstruction[rows] = log_px_z.mean(axis=0)
        iwae[rows] = vae_math.logmeanexp(log_weights, axis=0)
        standard_error[rows] = vae_math.iwae_standard_error(log_weights, axis=0)
    return BoundEstimates(reconstruction - kl, reconstruction, kl, iwae, standard_error)


def reconstruction_errors(vae: OnnxVae, x: np.ndarray) -> np.ndarray:
    """Per-feature squared error of the posterior-mean reconstruction E[x | z = mean(q(z|x))]."""
    z_mean, _ = vae.encode(x)
    return (x - vae.expected_x(vae.decode(z_mean))) ** 2


def anomaly_scores(vae: OnnxVae, x: np.ndarray, names: list[str], seed: int) -> dict[str, np.ndarray]:
    """Per-example scores (higher = more anomalous) for each name in ``names``.

    Each sampled score draws from its own generator seeded with ``seed``, so a score's value does
    not depend on which other scores were asked for.
    """
    scores: dict[str, np.ndarray] = {}
    for name in names:
        if name not in SCORE_PARAMS:
            raise ValueError(f"unknown anomaly score {name!r}; known: {sorted(SCORE_PARAMS)}")
        if name == "reconstruction_error":
            scores[name] = reconstruction_errors(vae, x).sum(axis=1, dtype=np.float64)
            continue
        bounds = estimate_bounds(vae, x, SCORE_PARAMS[name]["num_samples"], np.random.default_rng(seed))
        scores[name] = -(bounds.elbo if name == "negative_elbo" else bounds.iwae)
    return scores


def calibrate(vae: OnnxVae, x: np.ndarray, seed: int, description: str) -> dict:
    """Quantiles of every anomaly score over ``x`` (held-out normal data), for thresholds and p-values."""
    scores = anomaly_scores(vae, x, list(SCORE_PARAMS), seed)
    return {
        "data": description,
        "seed": seed,
        "quantile_levels": [round(float(level), 6) for level in QUANTILE_LEVELS],
        "scores": {
            name: {
                "params": SCORE_PARAMS[name],
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
    percentile = np.interp(scores, quantiles, levels, left=0.0, right=1.0)
    count = calibration.num_examples
    p_value = (1.0 + count * (1.0 - percentile)) / (1.0 + count)
    if threshold is None:
        threshold = float(np.interp(1.0 - false_positive_rate, levels, quantiles))
    else:
        false_positive_rate = float(1.0 - np.interp(threshold, quantiles, levels, left=0.0, right=1.0))
    return Decision(percentile, p_value, scores > threshold, threshold, false_positive_rate)
