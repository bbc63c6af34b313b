"""What each rpc computes, for a batch of requests at once: numpy and an OnnxVae, no grpc.

Every function takes a list of request items and returns one result per item, in order (the
batcher's contract). Concatenating the items' rows and running each graph once is the point; each
item's randomness still comes only from its own seed, via ``numpy.random.default_rng([seed,
stream])``: stream 0 for latent noise, stream 1 for observation noise. So a reply never depends on
which other requests shared its batch, and a streamed sample equals the unary one.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core import scoring, vae_math
from vae_serve.core.errors import OutputInvalid
from vae_serve.core.runtime import OnnxVae
from vae_serve.core.scoring import split_rows

STREAM_OBSERVED = 1


def observed_generator(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM_OBSERVED])


def check_finite(name: str, *arrays: np.ndarray | None) -> None:
    """A non-finite model output is a server-side failure, never a successful reply."""
    for array in arrays:
        if array is not None and not np.isfinite(array).all():
            raise OutputInvalid(f"the model produced non-finite {name} for this input")


def guarded(results: list, name: str, arrays_of) -> list:
    """Each result whose arrays are not all finite becomes an OutputInvalid for its caller alone."""
    checked = []
    for result in results:
        try:
            check_finite(name, *arrays_of(result))
            checked.append(result)
        except OutputInvalid as error:
            checked.append(error)
    return checked


def draw_observations(vae: OnnxVae, decoded: dict[str, np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` draws x ~ p(x|z) per row: [count, rows, features]."""
    if vae.likelihood == "bernoulli":
        probs = vae.expected_x(decoded)
        return (rng.random((count, *probs.shape), dtype=np.float32) < probs).astype(np.float32)
    noise = rng.standard_normal((count, *decoded["mean"].shape), dtype=np.float32)
    return decoded["mean"] + np.exp(decoded["log_scale"]) * noise


def split_decoded(decoded: dict[str, np.ndarray], counts: list[int]) -> list[dict[str, np.ndarray]]:
    parts = {name: split_rows(value, counts) for name, value in decoded.items()}
    return [{name: parts[name][index] for name in parts} for index in range(len(counts))]


@dataclass(frozen=True)
class EncodeItem:
    x: np.ndarray
    num_samples: int
    seed: int


def encode_batch(vae: OnnxVae, items: list[EncodeItem]) -> list:
    """-> (z_mean, z_logvar, draws [num_samples, n, L] or None) per item."""
    counts = [len(item.x) for item in items]
    means, logvars = (split_rows(values, counts) for values in vae.encode(np.concatenate([item.x for item in items])))
    results = []
    for item, mean, logvar in zip(items, means, logvars, strict=True):
        draws = None
        if item.num_samples:
            draws = vae_math.sample_posterior(mean, logvar, item.num_samples, scoring.latent_generator(item.seed))
        results.append((mean, logvar, draws))
    return guarded(results, "posterior parameters", lambda result: result)


@dataclass(frozen=True)
class DecodeItem:
    z: np.ndarray
    num_samples: int
    seed: int


def likelihood_params(vae: OnnxVae, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reply's parameters: Bernoulli probabilities, or Gaussian mean and standard deviation."""
    if vae.likelihood == "bernoulli":
        return {"probs": vae.expected_x(decoded)}
    return {"mean": decoded["mean"], "scale": np.exp(decoded["log_scale"])}


def decode_batch(vae: OnnxVae, items: list[DecodeItem]) -> list:
    """-> (likelihood parameters, draws [num_samples, n, D] or None) per item."""
    decoded_all = vae.decode(np.concatenate([item.z for item in items]))
    results = []
    for item, decoded in zip(items, split_decoded(decoded_all, [len(item.z) for item in items]), strict=True):
        draws = (
            draw_observations(vae, decoded, item.num_samples, observed_generator(item.seed))
            if item.num_samples
            else None
        )
        results.append((likelihood_params(vae, decoded), draws))
    return guarded(results, "likelihood parameters", lambda result: (*result[0].values(), result[1]))


@dataclass(frozen=True)
class Samples:
    z: np.ndarray
    x_mean: np.ndarray
    x: np.ndarray


class Sampler:
    """One sampling request's random state: consecutive chunks concatenate to one unary draw."""

    def __init__(self, latent_dim: int, temperature: float, seed: int) -> None:
        self.latent_dim = latent_dim
        self.temperature = temperature
        self.latent_rng = scoring.latent_generator(seed)
        self.observed_rng = observed_generator(seed)

    def latents(self, rows: int) -> np.ndarray:
        return self.temperature * self.latent_rng.standard_normal((rows, self.latent_dim), dtype=np.float32)


@dataclass(frozen=True)
class SampleItem:
    sampler: Sampler
    rows: int


def sample_batch(vae: OnnxVae, items: list[SampleItem]) -> list:
    """-> Samples per item: z from the prior, E[x|z], and one draw of x."""
    latents = [item.sampler.latents(item.rows) for item in items]
    decoded_all = vae.decode(np.concatenate(latents))
    results = []
    for item, z, decoded in zip(items, latents, split_decoded(decoded_all, [item.rows for item in items]), strict=True):
        x = draw_observations(vae, decoded, 1, item.sampler.observed_rng)[0]
        results.append(Samples(z, vae.expected_x(decoded), x))
    return guarded(results, "samples", lambda result: (result.x_mean, result.x))


@dataclass(frozen=True)
class BoundsItem:
    x: np.ndarray
    k: int
    seed: int


def elbo_batch(vae: OnnxVae, items: list[BoundsItem]) -> list:
    """-> scoring.BoundEstimates per item."""
    requests = [(item.x, item.k, scoring.latent_generator(item.seed)) for item in items]
    return guarded(
        scoring.estimate_bounds_batch(vae, requests), "likelihood bounds", lambda bounds: (bounds.elbo, bounds.iwae)
    )


@dataclass(frozen=True)
class ScoreItem:
    x: np.ndarray
    name: str
    seed: int


def score_batch(vae: OnnxVae, items: list[ScoreItem]) -> list:
    """-> per-example scores per item."""
    scores = scoring.score_batch(vae, [(item.x, item.name, item.seed) for item in items])
    return guarded(scores, "anomaly scores", lambda values: (values,))


@dataclass(frozen=True)
class FeatureErrorsItem:
    x: np.ndarray


def feature_errors_batch(vae: OnnxVae, items: list[FeatureErrorsItem]) -> list:
    """-> per-feature squared reconstruction errors [n, D] per item."""
    errors = scoring.reconstruction_errors_batch(vae, [item.x for item in items])
    return guarded(errors, "reconstruction errors", lambda values: (values,))
