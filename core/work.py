"""The kinds of work a served model does, each for a batch of requests at once: numpy and an OnnxVae.

Every item names its ``kind``, the ``rows`` it carries (what the examples metric counts) and its
``cost`` (rows the graphs will process: what batches and queues are bounded by). ``WORK_KINDS[kind]``
takes a list of items and returns one result per item, in order (the batcher's contract); a result
that is an exception belongs to its own item alone. Concatenating the items' rows and running each
graph once is the point; each item's randomness still comes only from its own seed, via
``numpy.random.default_rng([seed, stream])``: stream 0 for latent noise, stream 1 for observation
noise. So a reply never depends on which other requests shared its batch, and a streamed sample
equals the unary one.
"""

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vae_serve.core import vae_math
from vae_serve.core.bounds import BoundEstimates, estimate_bounds_batch, latent_generator, split_rows
from vae_serve.core.calibration import Decision, decide
from vae_serve.core.errors import OutputInvalid
from vae_serve.core.manifest import ScoreCalibration
from vae_serve.core.runtime import OnnxVae
from vae_serve.core.scores import ScoreRequest, score_batch, score_named

STREAM_OBSERVED = 1


def observed_generator(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM_OBSERVED])


def guarded(results: list, name: str, arrays_of: Callable) -> list:
    """Each result with a non-finite array becomes an OutputInvalid for its caller alone: a
    non-finite model output is a server-side failure, never a successful reply."""
    return [
        OutputInvalid(f"the model produced non-finite {name} for this input")
        if any(array is not None and not np.isfinite(array).all() for array in arrays_of(result))
        else result
        for result in results
    ]


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
    kind: ClassVar[str] = "encode"
    x: np.ndarray
    num_samples: int = 0
    seed: int = 0

    @property
    def rows(self) -> int:
        return len(self.x)

    cost = rows


def encode_batch(vae: OnnxVae, items: list[EncodeItem]) -> list:
    """-> (z_mean, z_logvar, draws [num_samples, n, L] or None) per item."""
    counts = [len(item.x) for item in items]
    x_all = vae.to_model(np.concatenate([item.x for item in items]))
    means, logvars = (split_rows(values, counts) for values in vae.encode(x_all))
    results = []
    for item, mean, logvar in zip(items, means, logvars, strict=True):
        draws = None
        if item.num_samples:
            draws = vae_math.sample_posterior(mean, logvar, item.num_samples, latent_generator(item.seed))
        results.append((mean, logvar, draws))
    return guarded(results, "posterior parameters", lambda result: result)


@dataclass(frozen=True)
class DecodeItem:
    kind: ClassVar[str] = "decode"
    z: np.ndarray
    num_samples: int = 0
    seed: int = 0

    @property
    def rows(self) -> int:
        return len(self.z)

    cost = rows


@dataclass(frozen=True)
class PathItem:
    """Interpolate's decoding: ``steps`` points on the path from each start code to its end code
    ([n, L] each), laid out in the decode batch as n x steps rows. The path is computed where the
    decoder runs, on the inference threads, not on the event loop."""

    kind: ClassVar[str] = "decode"
    start: np.ndarray
    end: np.ndarray
    steps: int
    spherical: bool
    num_samples: int = 0
    seed: int = 0

    @functools.cached_property
    def path(self) -> tuple[np.ndarray, np.ndarray]:
        """(t [steps], z [n, steps, L])."""
        return vae_math.interpolate(self.start, self.end, self.steps, self.spherical)

    @property
    def z(self) -> np.ndarray:
        """The points as decoder rows [n x steps, L]."""
        _, points = self.path
        return points.reshape(-1, points.shape[-1])

    @property
    def rows(self) -> int:
        return len(self.start) * self.steps

    cost = rows


def likelihood_params(vae: OnnxVae, decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reply's parameters: Bernoulli probabilities, or Gaussian mean and standard deviation."""
    if vae.likelihood == "bernoulli":
        return {"probs": vae.expected_x(decoded)}
    return {"mean": decoded["mean"], "scale": np.exp(decoded["log_scale"])}


def decode_batch(vae: OnnxVae, items: list[DecodeItem | PathItem]) -> list:
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
        self.latent_rng = latent_generator(seed)
        self.observed_rng = observed_generator(seed)

    def latents(self, rows: int) -> np.ndarray:
        return self.temperature * self.latent_rng.standard_normal((rows, self.latent_dim), dtype=np.float32)


@dataclass(frozen=True)
class SampleItem:
    kind: ClassVar[str] = "sample"
    sampler: Sampler
    count: int

    @property
    def rows(self) -> int:
        return self.count

    cost = rows


def sample_batch(vae: OnnxVae, items: list[SampleItem]) -> list:
    """-> Samples per item: z from the prior, E[x|z], and one draw of x."""
    latents = [item.sampler.latents(item.count) for item in items]
    decoded_all = vae.decode(np.concatenate(latents))
    results = []
    decoded_parts = split_decoded(decoded_all, [item.count for item in items])
    for item, z, decoded in zip(items, latents, decoded_parts, strict=True):
        x = draw_observations(vae, decoded, 1, item.sampler.observed_rng)[0]
        results.append(Samples(z, vae.expected_x(decoded), x))
    return guarded(results, "samples", lambda result: (result.x_mean, result.x))


@dataclass(frozen=True)
class BoundsItem:
    kind: ClassVar[str] = "elbo"
    x: np.ndarray
    k: int
    seed: int

    @property
    def rows(self) -> int:
        return len(self.x)

    @property
    def cost(self) -> int:
        return len(self.x) * self.k


def elbo_batch(vae: OnnxVae, items: list[BoundsItem]) -> list[BoundEstimates | OutputInvalid]:
    """-> BoundEstimates per item."""
    requests = [(vae.to_model(item.x), item.k, latent_generator(item.seed)) for item in items]
    return guarded(estimate_bounds_batch(vae, requests), "likelihood bounds", lambda bounds: (bounds.elbo, bounds.iwae))


@dataclass(frozen=True)
class ScoreItem:
    """One ScoreAnomaly request: the score, its calibration and the threshold to decide at."""

    kind: ClassVar[str] = "score"
    x: np.ndarray
    name: str
    seed: int
    calibration: ScoreCalibration
    false_positive_rate: float | None  # exactly one of these two is set
    threshold: float | None
    feature_errors: bool = False
    # A combined score's components' calibrations, by name (``core.combination``); None otherwise.
    components: Mapping[str, ScoreCalibration] | None = None

    @property
    def rows(self) -> int:
        return len(self.x)

    @property
    def cost(self) -> int:
        # Sampled scores decode num_samples rows per example; the reconstruction pass decodes one
        # (always for a combined score, whose reconstruction_error component needs it).
        score = score_named(self.name)
        reconstruction = score.num_samples and (self.feature_errors or score.components)
        return len(self.x) * (max(score.num_samples, 1) + (1 if reconstruction else 0))


@dataclass(frozen=True)
class ScoreOutcome:
    scores: np.ndarray
    decision: Decision
    feature_errors: np.ndarray | None


def score_anomaly_batch(vae: OnnxVae, items: list[ScoreItem]) -> list:
    """-> ScoreOutcome per item: scores, the decision against the calibration, optional errors."""
    requests = [ScoreRequest(item.x, item.name, item.seed, item.feature_errors, item.components) for item in items]
    outcomes = [
        ScoreOutcome(scores, decide(scores, item.calibration, item.false_positive_rate, item.threshold), errors)
        for item, (scores, errors) in zip(items, score_batch(vae, requests), strict=True)
    ]
    return guarded(outcomes, "anomaly scores", lambda outcome: (outcome.scores, outcome.feature_errors))


WORK_KINDS: dict[str, Callable[[OnnxVae, list], list]] = {
    EncodeItem.kind: encode_batch,
    DecodeItem.kind: decode_batch,
    SampleItem.kind: sample_batch,
    BoundsItem.kind: elbo_batch,
    ScoreItem.kind: score_anomaly_batch,
}
