"""What each rpc computes, on numpy arrays and an OnnxVae: no grpc, no asyncio.

Randomness: every call receives its seed and derives independent streams from it with
``numpy.random.default_rng([seed, stream])``, so the latent draws of a sample never depend on how
many x draws came before them, and a streamed reply equals the unary one.
"""

from dataclasses import dataclass

import numpy as np

from service import scoring
from service.errors import OutputInvalid
from service.runtime import OnnxVae

STREAM_LATENT = 0
STREAM_OBSERVED = 1


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(generator for z noise, generator for x noise) of one request."""
    return np.random.default_rng([seed, STREAM_LATENT]), np.random.default_rng([seed, STREAM_OBSERVED])


def check_finite(name: str, *arrays: np.ndarray) -> None:
    """A non-finite model output is a server-side failure, never a successful reply."""
    for array in arrays:
        if array is not None and not np.isfinite(array).all():
            raise OutputInvalid(f"the model produced non-finite {name} for this input")


def draw_observations(vae: OnnxVae, decoded: dict[str, np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` draws x ~ p(x|z) per row: [count, rows, features]."""
    if vae.likelihood == "bernoulli":
        probs = vae.expected_x(decoded)
        return (rng.random((count, *probs.shape), dtype=np.float32) < probs).astype(np.float32)
    noise = rng.standard_normal((count, *decoded["mean"].shape), dtype=np.float32)
    return decoded["mean"] + np.exp(decoded["log_scale"]) * noise


def encode(vae: OnnxVae, x: np.ndarray, num_samples: int, seed: int):
    z_mean, z_logvar = vae.encode(x)
    samples = None
    if num_samples:
        noise = streams(seed)[0].standard_normal((num_samples, *z_mean.shape), dtype=np.float32)
        samples = z_mean + np.exp(0.5 * z_logvar) * noise
    check_finite("posterior parameters", z_mean, z_logvar, samples)
    return z_mean, z_logvar, samples


def likelihood_params(vae: OnnxVae, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reply's parameters: Bernoulli probabilities, or Gaussian mean and standard deviation."""
    if vae.likelihood == "bernoulli":
        return {"probs": vae.expected_x(decoded)}
    return {"mean": decoded["mean"], "scale": np.exp(decoded["log_scale"])}


def decode(vae: OnnxVae, z: np.ndarray, num_samples: int, seed: int):
    decoded = vae.decode(z)
    params = likelihood_params(vae, decoded)
    samples = draw_observations(vae, decoded, num_samples, streams(seed)[1]) if num_samples else None
    check_finite("likelihood parameters", *params.values(), samples)
    return params, samples


@dataclass(frozen=True)
class Samples:
    z: np.ndarray
    x_mean: np.ndarray
    x: np.ndarray


class Sampler:
    """Draws n samples in consecutive chunks; the concatenated chunks equal one unary draw."""

    def __init__(self, vae: OnnxVae, latent_dim: int, temperature: float, seed: int) -> None:
        self.vae = vae
        self.latent_dim = latent_dim
        self.temperature = temperature
        self.latent_rng, self.observed_rng = streams(seed)

    def next_chunk(self, rows: int) -> Samples:
        z = self.temperature * self.latent_rng.standard_normal((rows, self.latent_dim), dtype=np.float32)
        decoded = self.vae.decode(z)
        x = draw_observations(self.vae, decoded, 1, self.observed_rng)[0]
        x_mean = self.vae.expected_x(decoded)
        check_finite("samples", x_mean, x)
        return Samples(z, x_mean, x)


def elbo(vae: OnnxVae, x: np.ndarray, k: int, seed: int) -> scoring.BoundEstimates:
    bounds = scoring.estimate_bounds(vae, x, k, streams(seed)[0])
    check_finite("likelihood bounds", bounds.elbo, bounds.iwae)
    return bounds


def score(vae: OnnxVae, x: np.ndarray, name: str, seed: int) -> np.ndarray:
    values = scoring.anomaly_scores(vae, x, [name], seed)[name]
    check_finite("anomaly scores", values)
    return values
