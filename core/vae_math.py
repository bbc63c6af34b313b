"""VAE probability math in pure numpy: the exact formulas the served numbers come from.

Conventions: the posterior is q(z|x) = N(mean, diag(exp(logvar))), the prior p(z) = N(0, I), and
every log-density is in nats, summed over the event (last) axis. References:
- Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Appendix B (closed-form Gaussian KL).
- Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", eq. (8) (the IWAE bound).
"""

import math

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def softplus(values: np.ndarray) -> np.ndarray:
    """log(1 + exp(v)) without overflow for large |v|."""
    return np.logaddexp(0.0, values)


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """sum_d [x_d * l_d - softplus(l_d)] = sum_d log Bernoulli(x_d; sigmoid(l_d)).

    For binary x this is the exact log-probability; for grey levels in [0, 1] it is the negative
    binary cross-entropy (an unnormalised density; see README).
    """
    return np.sum(x * logits - softplus(logits), axis=-1)


def gaussian_log_prob(x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """sum_d log N(x_d; mean_d, exp(log_scale_d)^2)."""
    standardized = (x - mean) * np.exp(-log_scale)
    return np.sum(-0.5 * LOG_2PI - log_scale - 0.5 * standardized**2, axis=-1)


def diag_normal_log_prob(z: np.ndarray, mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """sum_j log N(z_j; mean_j, exp(logvar_j))."""
    return np.sum(-0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * np.exp(-logvar)), axis=-1)


def reparameterized_log_prob(noise: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log q(z|x) of z = mean + exp(logvar / 2) * noise: sum_j log N(noise_j; 0, 1) - logvar_j / 2.

    The same value as ``diag_normal_log_prob(z, mean, logvar)``, computed from the noise: it stays
    finite when a posterior is so narrow that exp(logvar / 2) underflows (z == mean exactly, where
    (z - mean)^2 * exp(-logvar) is 0 * inf).
    """
    return np.sum(-0.5 * (LOG_2PI + logvar + noise**2), axis=-1)


def standard_normal_log_prob(z: np.ndarray) -> np.ndarray:
    """sum_j log N(z_j; 0, 1)."""
    return np.sum(-0.5 * (LOG_2PI + z**2), axis=-1)


def kl_to_standard_normal(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in closed form (Kingma & Welling, Appendix B)."""
    return 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def sample_posterior(mean: np.ndarray, logvar: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Reparameterised draws z = mean + exp(logvar / 2) * eps, shape [num_samples, *mean.shape]."""
    return reparameterize(mean, logvar, rng.standard_normal((num_samples, *mean.shape), dtype=np.float32))


def reparameterize(mean: np.ndarray, logvar: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """z = mean + exp(logvar / 2) * noise, broadcasting over leading sample axes of ``noise``."""
    return mean + np.exp(0.5 * logvar) * noise


def logmeanexp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(mean(exp(values))) along ``axis``, stable for values far from zero."""
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    mean_exp = np.mean(np.exp(values - peak), axis=axis, keepdims=True)
    return np.squeeze(np.log(mean_exp) + peak, axis=axis)


def iwae_standard_error(log_weights: np.ndarray, axis: int = 0) -> np.ndarray:
    """Delta-method Monte-Carlo standard error of the IWAE estimate log(mean(w)).

    Var[log mean w] ~= Var[w] / (K * E[w]^2); computed on weights scaled by their maximum, which
    the ratio does not depend on, so nothing overflows.
    """
    count = log_weights.shape[axis]
    scaled = np.exp(log_weights - np.max(log_weights, axis=axis, keepdims=True))
    ratio = np.std(scaled, axis=axis, ddof=1 if count > 1 else 0) / np.mean(scaled, axis=axis)
    return ratio / math.sqrt(count)


# Below this sin(angle) two latent codes count as parallel or opposite (or one as zero): the great
# circle between their directions is not defined, and the straight line is taken instead.
SLERP_MIN_SIN = 1e-6


def interpolate(start: np.ndarray, end: np.ndarray, steps: int, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points on the path from each row of ``start`` to the same row of ``end`` ([n, L] each).

    Returns (t [steps], z [n, steps, L] float32) with t = 0, 1/(steps - 1), ..., 1. Linear:
    z(t) = (1 - t) a + t b. Spherical: the directions follow the great circle between them (slerp,
    Shoemake 1985; White 2016, "Sampling Generative Networks", for latent spaces),
    u(t) = sin((1 - t) w) / sin w * a/|a| + sin(t w) / sin w * b/|b| with w the angle between a and b,
    and the length goes linearly from |a| to |b|: z(t) = ((1 - t) |a| + t |b|) u(t). It keeps to
    the shell where N(0, I) codes lie instead of cutting through the less likely interior, and no
    point is longer than the longer end (plain slerp of vectors of different lengths is unbounded
    as the ends turn opposite). Rows that are (nearly) parallel or opposite, or zero, take the line.
    Computed in float64; both ends come back exactly as given.
    """
    t = np.linspace(0.0, 1.0, steps)
    a, b = start.astype(np.float64)[:, None, :], end.astype(np.float64)[:, None, :]
    along = t[None, :, None]
    z = (1.0 - along) * a + along * b
    if spherical:
        norm_a, norm_b = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
        unit_a, unit_b = a / np.where(norm_a > 0, norm_a, 1.0), b / np.where(norm_b > 0, norm_b, 1.0)
        angle = np.arccos(np.clip(np.sum(unit_a * unit_b, axis=-1, keepdims=True), -1.0, 1.0))
        sine = np.sin(angle)
        curved = (sine > SLERP_MIN_SIN) & (norm_a > 0) & (norm_b > 0)
        safe_sine = np.where(curved, sine, 1.0)
        direction = (np.sin((1.0 - along) * angle) * unit_a + np.sin(along * angle) * unit_b) / safe_sine
        z = np.where(curved, ((1.0 - along) * norm_a + along * norm_b) * direction, z)
    z[:, 0], z[:, -1] = a[:, 0], b[:, 0]  # the ends exactly, not as rounded by the weights
    return t, z.astype(np.float32)
