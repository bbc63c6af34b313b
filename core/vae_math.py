"""VAE probability math in pure numpy: the exact formulas the served numbers come from.

Conventions: the posterior is q(z|x) = N(mean, diag(exp(logvar))), the prior p(z) = N(0, I), and
every log-density is in nats, summed over the event (last) axis. References:
- Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Appendix B (closed-form Gaussian KL).
- Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", eq. (8) (the IWAE bound).
"""

import math

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)

# The numeric box every posterior the server uses (and serves) lies in: float32 graphs overflow
# (3.4e38) long before codes this far out, which no input the encoder was trained on comes near
# (its codes lie within a few units of the N(0, I) prior; Sample's temperature 10 reaches ~50).
# |z_mean| <= LATENT_LIMIT, and a posterior standard deviation at most LATENT_LIMIT:
# LOGVAR_MAX = 2 ln(LATENT_LIMIT) ~= 27.6. LOGVAR_MIN (a standard deviation of e^-50, below float32's
# resolution of any code) only turns an encoder's -inf into a number. Any Gaussian is a valid
# proposal for the ELBO and IWAE bounds, so bounds from the boxed posterior are still lower bounds
# on log p(x); the box changes only far out-of-distribution rows, whose bounds stay finite.
LATENT_LIMIT = 1e6
LOGVAR_MAX = 2.0 * math.log(LATENT_LIMIT)
LOGVAR_MIN = -100.0
# What the encoder sees of a row, in the model's space: each value clipped to +-ENCODER_INPUT_LIMIT.
# A float32 encoder overflows on inputs near float32's maximum (3.4e38 gave NaN codes); 1e15 leaves
# 20 orders of magnitude for its standardization (features' scales are floored at 1e-3) and layers.
# Only the proposal q(z|x) sees the clipped row: every likelihood is of the row as sent, so a row
# beyond the limit still gets the astronomically low likelihood (and extreme score) it deserves.
ENCODER_INPUT_LIMIT = 1e15


def encoder_view(x: np.ndarray) -> np.ndarray:
    """The rows as the encoder sees them: clipped to +-ENCODER_INPUT_LIMIT (the same array when inside)."""
    return _clipped(x, -ENCODER_INPUT_LIMIT, ENCODER_INPUT_LIMIT)


def bounded_posterior(mean: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The posterior's (mean, log-variance) held to the box above: mean to [-LATENT_LIMIT, LATENT_LIMIT],
    log-variance to [LOGVAR_MIN, LOGVAR_MAX], so draws z = mean + exp(logvar / 2) eps, exp(logvar)
    and the decoder's inputs stay finite. Returns the arrays themselves when nothing is outside.
    """
    return _clipped(mean, -LATENT_LIMIT, LATENT_LIMIT), _clipped(logvar, LOGVAR_MIN, LOGVAR_MAX)


def _clipped(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` clipped to [low, high]; the very array when all lie inside (no copy on the hot path)."""
    if values.size == 0 or (values.min() >= low and values.max() <= high):
        return values
    # NaN stays NaN (it fails every comparison): it would be a fault of the model, answered as one.
    return np.clip(values, low, high).astype(values.dtype, copy=False)


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
