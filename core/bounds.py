"""Likelihood bounds through the ONNX graphs: the ELBO, its two terms and the IWAE bound, batched.

Rows here are in the model's space: callers holding client rows map them with ``OnnxVae.to_model``.

Each request draws its noise from its own generator, so its numbers depend neither on the other
requests in a batch nor on how the decoder pass is chunked.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core import vae_math
from vae_serve.core.runtime import OnnxVae

# Rows of decoder output held at once (samples x examples x features), bounding memory to ~64 MB.
MAX_DECODED_VALUES = 1 << 24
# The same bound for one run of the bounds graph, which holds a few tensors of that size at once.
MAX_GRAPH_VALUES = 1 << 22


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
    if vae.bounds is not None:
        return _graph_bounds_batch(vae, requests)
    counts = [len(x) for x, _, _ in requests]
    starts = np.cumsum([0, *counts[:-1]])
    x_all = np.concatenate([x for x, _, _ in requests])
    mean_all, logvar_all = vae.encode(x_all)
    results: list[BoundEstimates | None] = [None] * len(requests)
    for num_samples, indices in _by_samples(requests).items():
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


def _by_samples(requests: list[tuple[np.ndarray, int, np.random.Generator]]) -> dict[int, list[int]]:
    """Request indices grouped by their number of draws K."""
    groups: dict[int, list[int]] = {}
    for index, (_, num_samples, _) in enumerate(requests):
        groups.setdefault(num_samples, []).append(index)
    return groups


def _graph_bounds_batch(
    vae: OnnxVae, requests: list[tuple[np.ndarray, int, np.random.Generator]]
) -> list[BoundEstimates]:
    """``estimate_bounds_batch`` through the bundle's bounds graph, one graph run per request (chunked
    by rows when large), with each request's noise drawn exactly as the numpy path draws it.

    One run per request, not one per batch: ONNX Runtime's element-wise kernels compute the tail of
    a tensor that does not fill a SIMD register with scalar code, whose exp and log may differ from
    the vector code's in the last bit, so a row's value can depend on its position in a joined
    batch. Run alone, a request's rows sit at the same positions whatever it was batched with,
    and its reply is bit-identical alone or batched, for any model.

    A request with a non-finite value in its bounds is done again by the numpy path, whose
    likelihood falls back to float64 where float32 overflows (a far out-of-distribution row under a
    tight Gaussian scale).
    """
    latent_dim = vae.latent_dim
    results = []
    for x, num_samples, rng in requests:
        noise = rng.standard_normal((num_samples, len(x), latent_dim), np.float32)
        chunk = max(1, MAX_GRAPH_VALUES // (num_samples * x.shape[1]))
        if len(x) <= chunk:
            outputs = vae.run_bounds(x, noise)
        else:
            runs = [
                vae.run_bounds(x[start : start + chunk], noise[:, start : start + chunk])
                for start in range(0, len(x), chunk)
            ]
            outputs = [np.concatenate(values) for values in zip(*runs, strict=True)]
        # One pass over all five outputs: np.isfinite per array costs more than the values here.
        finite = bool(np.isfinite(np.concatenate(outputs)).all())
        results.append(BoundEstimates(*outputs) if finite else bounds_from_noise(vae, x, noise))
    return results


def bounds_from_noise(vae: OnnxVae, x: np.ndarray, noise: np.ndarray) -> BoundEstimates:
    """One request's bounds by the numpy path, from its noise [K, n, L] (the reference the bounds graph
    is checked against)."""
    mean, logvar = vae.encode(x)
    return _bounds(vae, x, np.arange(len(x)), mean, logvar, noise)


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
    # The latent terms in float64: a far out-of-distribution input can get a posterior so wide
    # (logvar > 88) that exp(logvar) and z^2 overflow float32; its bounds are then huge, not NaN.
    z64, logvar64 = z.astype(np.float64), logvar.astype(np.float64)
    log_weights = log_px_z + vae_math.standard_normal_log_prob(z64) - vae_math.reparameterized_log_prob(noise, logvar64)
    log_px_z, log_weights = np.ascontiguousarray(log_px_z.T), np.ascontiguousarray(log_weights.T)
    kl = vae_math.kl_to_standard_normal(mean.astype(np.float64), logvar64)
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
    """Per-feature squared error of the posterior-mean reconstruction E[x | z = mean(q(z|x))], float64.

    Multiplied by ``vae.error_weights`` when the bundle has them (reconstruction units
    "standardized": (x - E[x|z])**2 / feature_scale**2, so that no column carries the error by its
    units alone); without them the raw squared error in the model's space.

    In float64: a residual beyond ~1.8e19 (a far out-of-distribution row of a Gaussian model) squared
    overflows float32, while the square of any float32 residual is finite in float64, and so is its
    product with any weight (at most ~5e89: ``runtime.reconstruction_error_weights``).
    """
    x_all = np.concatenate(xs)
    z_mean, _ = vae.encode(x_all)
    residual = x_all.astype(np.float64) - vae.expected_x(vae.decode(z_mean))
    errors = residual**2
    if vae.error_weights is not None:
        errors *= vae.error_weights
    return split_rows(errors, [len(x) for x in xs])
