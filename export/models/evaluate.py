"""Likelihood bounds of a trained PyTorch VAE on a data split (ELBO and IWAE-k), in nats."""

import math
from dataclasses import dataclass

import numpy as np
import torch

from vae_serve.export.models.vae import Vae

# Decoder rows (samples x examples) held at once: 50k x 784 float32 logits is ~160 MB.
MAX_DECODED_ROWS = 50_000


@dataclass(frozen=True)
class Bounds:
    """Per-example ELBO (closed-form KL, mean over the same draws) and IWAE-k log-likelihood bound."""

    elbo: np.ndarray
    iwae: np.ndarray
    num_samples: int

    def summary(self, num_features: int) -> dict:
        nll = -float(self.iwae.mean())
        return {
            "num_examples": len(self.elbo),
            "elbo_nats": float(self.elbo.mean()),
            "iwae_nll_nats": nll,
            "iwae_k": self.num_samples,
            "bits_per_dim": nll / (num_features * math.log(2.0)),
        }


def binarize(x: np.ndarray, seed: int) -> np.ndarray:
    """One fixed Bernoulli draw per value: x_d -> 1 with probability x_d (the evaluation protocol)."""
    return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


@torch.no_grad()
def evaluate_bounds(vae: Vae, x: np.ndarray, num_samples: int, seed: int) -> Bounds:
    """ELBO and IWAE-``num_samples`` for every row of ``x``.

    Runs under a forked RNG seeded with ``seed``, so the result is repeatable and the caller's
    random stream (training noise) is left untouched.
    """
    vae.eval()
    chunk = max(1, MAX_DECODED_ROWS // num_samples)
    elbo, iwae = [], []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(x), chunk):
            batch = torch.from_numpy(x[start : start + chunk])
            log_weights, batch_elbo = vae.log_weights(batch, num_samples)
            iwae.append((torch.logsumexp(log_weights, 0) - math.log(num_samples)).double().numpy())
            elbo.append(batch_elbo.double().numpy())
    return Bounds(np.concatenate(elbo), np.concatenate(iwae), num_samples)
