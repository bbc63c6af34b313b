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
    chunk = max(1, MAX_DECODED_VALUES // (num_samples * x.shape[1]))
    reconstruction = np.empty(len(x), dtype=np.float64)
    iwae = np.empty(len(x), dtype=np.float64)
    standard_error = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        z = vae_math.sample_posterior(z_mean[rows], z_logvar[rows], num_samples, rng)
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
