"""Likelihood bounds and anomaly scores computed through the ONNX graphs, and their calibration.

The exporter calibrates with exactly this code, so a served score and its stored quantiles always
come from the same computation.
"""

import math
import zlib
from dataclasses import dataclass

import numpy as np

from vae_serve.core import vae_math
from vae_serve.core.runtime import OnnxVae

# Each score's parameters are part of its definition: calibration quantiles are only valid for the
# parameters they were computed with. k=100 for IWAE follows the usual anomaly-detection protocol.
SCORE_PARAMS: dict[str, dict[str, int]] = {
    "negative_elbo": {"num_samples": 10},
    "negative_iwae": {"num_samples": 100},
    "reconstruction_error": {},
    "negative_reconstruction_probability": {"num_samples": 10},
    "complexity_corrected": {"num_samples": 100},
}
# Serra et al.'s compressor stand-in: zlib (DEFLATE) at its strongest level on 8-bit rows.
COMPRESSION_LEVEL = 9
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


def latent_generator(seed: int) -> np.random.Generator:
    """The generator of a request's latent noise: ``default_rng([seed, 0])`` (see vae.proto)."""
    return np.random.default_rng([seed, 0])


def split_rows(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Undo a concatenation of blocks of ``counts`` rows."""
    return np.split(values, np.cumsum(counts)[:-1])


def log_likelihood_rows(vae: OnnxVae, x: np.ndarray, z: np.ndarray, x_index: np.ndarray) -> np.ndarray:
    """log p(x[x_index[r]] | z[r]) for every row r of ``z``, decoding in memory-bounded chunks."""
    chunk = max(1, MAX_DECODED_VALUES // x.shape[1])
    return np.concatenate(
        [
            vae.log_likelihood(x[x_index[start : start + chunk]], vae.decode(z[start : start + chunk]))
            for start in range(0, len(z), chunk)
        ]
    )


def estimate_bounds_batch(
    vae: OnnxVae, requests: list[tuple[np.ndarray, int, np.random.Generator]]
) -> list[BoundEstimates]:
    """ELBO (its two terms) and the IWAE bound of each row, for several (x, K, rng) requests at once.

    One encoder run serves them all, and one (chunked) decoder pass with vectorised math serves all
    requests that share a K. Each request draws its noise in one block,
    eps = rng.standard_normal((K, n, L), float32), so its values depend neither on chunking nor on
    the other requests. ELBO = mean_k log p(x|z_k) - KL(q||p) with the KL in closed form (lower
    variance than the sampled log-ratio); IWAE = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)
    (Burda et al. eq. 8).
    """
    counts = [len(x) for x, _, _ in requests]
    starts = np.cumsum([0, *counts[:-1]])
    x_all = np.concatenate([x for x, _, _ in requests])
    mean_all, logvar_all = vae.encode(x_all)
    by_samples: dict[int, list[int]] = {}
    for index, (_, num_samples, _) in enumerate(requests):
        by_samples.setdefault(num_samples, []).append(index)
    results: list[BoundEstimates | None] = [None] * len(requests)
    for num_samples, indices in by_samples.items():
        rows = np.concatenate([np.arange(starts[index], starts[index] + counts[index]) for index in indices])
        noise = np.concatenate(
            [
                requests[index][2].standard_normal((num_samples, counts[index], mean_all.shape[1]), np.float32)
                for index in indices
            ],
            axis=1,
        )
        bounds = _bounds(vae, x_all, rows, mean_all[rows], logvar_all[rows], noise)
        for index, part in zip(indices, _split_bounds(bounds, [counts[index] for index in indices]), strict=True):
            results[index] = part
    return results


def _bounds(
    vae: OnnxVae, x_all: np.ndarray, rows: np.ndarray, mean: np.ndarray, logvar: np.ndarray, noise: np.ndarray
) -> BoundEstimates:
    """The bounds of x_all[rows] from posterior noise [K, len(rows), L], vectorised over rows.

    Reductions over the K samples run on C-contiguous [rows, K] arrays, along the last axis: numpy
    then sums each row in the same order whatever the number of rows, so a request's reply is
    bit-identical alone or batched (a strided axis-0 reduction is not).
    """
    z = vae_math.reparameterize(mean, logvar, noise)
    num_samples = len(noise)
    flat = z.reshape(-1, z.shape[-1])
    log_px_z = log_likelihood_rows(vae, x_all, flat, np.tile(rows, num_samples)).reshape(num_samples, len(rows))
    log_weights = log_px_z + vae_math.standard_normal_log_prob(z) - vae_math.diag_normal_log_prob(z, mean, logvar)
    log_px_z, log_weights = np.ascontiguousarray(log_px_z.T), np.ascontiguousarray(log_weights.T)
    kl = vae_math.kl_to_standard_normal(mean, logvar)
    reconstruction = log_px_z.astype(np.float64).mean(axis=1)
    return BoundEstimates(
        reconstruction - kl,
        reconstruction,
        kl.astype(np.float64),
        vae_math.logmeanexp(log_weights, axis=1).astype(np.float64),
        vae_math.iwae_standard_error(log_weights, axis=1).astype(np.float64),
    )


def _split_bounds(bounds: BoundEstimates, counts: list[int]) -> list[BoundEstimates]:
    fields = [split_rows(values, counts) for values in vars(bounds).values()]
    return [BoundEstimates(*parts) for parts in zip(*fields, strict=True)]


def estimate_bounds(vae: OnnxVae, x: np.ndarray, num_samples: int, rng: np.random.Generator) -> BoundEstimates:
    """``estimate_bounds_batch`` for one request."""
    return estimate_bounds_batch(vae, [(x, num_samples, rng)])[0]


def reconstruction_errors_batch(vae: OnnxVae, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Per-feature squared error of the posterior-mean reconstruction E[x | z = mean(q(z|x))]."""
    x_all = np.concatenate(xs)
    z_mean, _ = vae.encode(x_all)
    return split_rows((x_all - vae.expected_x(vae.decode(z_mean))) ** 2, [len(x) for x in xs])


def score_batch(vae: OnnxVae, requests: list[tuple[np.ndarray, str, int]]) -> list[np.ndarray]:
    """Per-example scores (higher = more anomalous) for several (x, score name, seed) requests.

    A sampled score draws from ``latent_generator(seed)``, so its value depends only on its own
    request, whatever else shares the batch.
    """
    for _, name, _ in requests:
        if name not in SCORE_PARAMS:
            raise ValueError(f"unknown anomaly score {name!r}; known: {sorted(SCORE_PARAMS)}")
    results: list[np.ndarray | None] = [None] * len(requests)
    sampled = [index for index, (_, name, _) in enumerate(requests) if name != "reconstruction_error"]
    if sampled:
        bounds = estimate_bounds_batch(
            vae,
            [
                (requests[i][0], SCORE_PARAMS[requests[i][1]]["num_samples"], latent_generator(requests[i][2]))
                for i in sampled
            ],
        )
        for index, bound in zip(sampled, bounds, strict=True):
            results[index] = _bound_score(requests[index][1], bound, requests[index][0])
    plain = [index for index, (_, name, _) in enumerate(requests) if name == "reconstruction_error"]
    if plain:
        errors = reconstruction_errors_batch(vae, [requests[i][0] for i in plain])
        for index, error in zip(plain, errors, strict=True):
            results[index] = error.sum(axis=1, dtype=np.float64)
    return results


def compressed_bits(x: np.ndarray) -> np.ndarray:
    """Per row: the bits zlib needs for the row quantized to 8 bits, round(255 x) clipped to 0..255."""
    quantized = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return np.array([8.0 * len(zlib.compress(row.tobytes(), COMPRESSION_LEVEL)) for row in quantized])


def _bound_score(name: str, bound: BoundEstimates, x: np.ndarray) -> np.ndarray:
    if name == "negative_elbo":
        return -bound.elbo
    if name == "negative_iwae":
        return -bound.iwae
    if name == "negative_reconstruction_probability":
        return -bound.reconstruction
    return -bound.iwae / math.log(2.0) - compressed_bits(x)  # complexity_corrected


def anomaly_scores(vae: OnnxVae, x: np.ndarray, names: list[str], seed: int) -> dict[str, np.ndarray]:
    """Each named score of every row of ``x``."""
    return dict(zip(names, score_batch(vae, [(x, name, seed) for name in names]), strict=True))


def calibration_of(scores: dict[str, np.ndarray], seed: int, description: str) -> dict:
    """Quantiles of every anomaly score (``anomaly_scores`` with ``seed``) over held-out normal data:
    the manifest's calibration record, for thresholds and p-values."""
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
