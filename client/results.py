"""What the client's methods return: small frozen dataclasses of numpy arrays, each naming its model version."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Piece:
    """One request of a call: rows ``start`` to ``stop`` (exclusive) of the input, sent with ``seed``.

    A call that fits one request has one piece; a larger one is split by the server's limits
    (docs/client.md). Calling the same method on ``x[start:stop]`` with ``seed`` repeats the piece.
    """

    start: int
    stop: int
    seed: int | None  # None only in a plan, before the server picked the seed


# eq=False: the fields hold numpy arrays, for which == is elementwise and has no truth value.
@dataclass(frozen=True, eq=False)
class EncodeResult:
    """q(z|x) = N(z_mean, diag(exp(z_logvar))) per input row; z_samples is [s, n, L] or None."""

    z_mean: np.ndarray
    z_logvar: np.ndarray
    z_samples: np.ndarray | None
    model_name: str
    model_version: str
    seed: int
    pieces: tuple[Piece, ...] = ()  # the requests sent, with their seeds


@dataclass(frozen=True, eq=False)
class DecodeResult:
    """p(x|z) per latent row: x_mean = E[x|z]; x_scale (Gaussian only) and x_samples [s, n, D] may be None."""

    likelihood: str
    x_mean: np.ndarray
    x_scale: np.ndarray | None
    x_samples: np.ndarray | None
    model_name: str
    model_version: str
    seed: int
    pieces: tuple[Piece, ...] = ()  # the requests sent, with their seeds


@dataclass(frozen=True, eq=False)
class SampleResult:
    """n draws from the model: latents z [n, L], E[x|z] x_mean [n, D], one draw x [n, D]."""

    z: np.ndarray
    x_mean: np.ndarray
    x: np.ndarray
    model_name: str
    model_version: str
    seed: int


@dataclass(frozen=True, eq=False)
class ElboResult:
    """Per-example bounds in nats (and bits per dimension); the iwae fields are None when k == 1."""

    elbo: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray
    elbo_bits_per_dim: np.ndarray
    iwae: np.ndarray | None
    iwae_standard_error: np.ndarray | None
    iwae_bits_per_dim: np.ndarray | None
    k: int
    model_name: str
    model_version: str
    seed: int
    pieces: tuple[Piece, ...] = ()  # the requests sent, with their seeds


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Per-example anomaly scores (higher is more anomalous) and the decision at ``threshold``."""

    score: str
    scores: np.ndarray
    percentile: np.ndarray
    p_value: np.ndarray
    is_anomaly: np.ndarray
    threshold: float
    false_positive_rate: float
    model_name: str
    model_version: str
    seed: int
    feature_errors: np.ndarray | None = None  # [n, D] squared reconstruction errors, when asked
    pieces: tuple[Piece, ...] = ()  # the requests sent, with their seeds


@dataclass(frozen=True, eq=False)
class InterpolateResult:
    """n paths of ``len(t)`` points: latents z [n, steps, L], E[x|z] x_mean [n, steps, D], and draws
    x_samples [num_samples, n, steps, D] or None."""

    t: np.ndarray
    z: np.ndarray
    x_mean: np.ndarray
    x_samples: np.ndarray | None
    model_name: str
    model_version: str
    seed: int
    pieces: tuple[Piece, ...] = ()  # the requests sent, with their seeds
