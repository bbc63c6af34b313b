"""The VAE computation both peer servers serve: numpy + ONNX Runtime only, no vae-serve import.

A model bundle is a directory with ``encoder.onnx`` (x [n, D] -> z_mean, z_logvar [n, L]),
``decoder.onnx`` (z [n, L] -> logits [n, D], Bernoulli likelihood) and ``manifest.json``.

Served models (the same names, inputs and outputs in both peers):
- ``vae_encode``: x FP32 [n, D] -> z_mean, z_logvar FP32 [n, L].
- ``vae_elbo_k1`` / ``vae_elbo_k100``: x FP32 [n, D] -> elbo FP64 [n, 1]; k100 also iwae FP64 [n, 1].
  The trailing 1: Triton cannot declare a per-example scalar output of a batching model (its model
  config refuses empty ``dims``: "model output 'elbo' must specify 'dims'"), so both peers answer
  [n, 1] to stay identical; the n values are the same bytes as an [n] tensor.

Math (nats; q(z|x) = N(mean, diag(exp(logvar))), p(z) = N(0, I)):
    z_k   = mean + exp(logvar / 2) * eps_k,  eps ~ N(0, 1) from numpy's default_rng, shape [k, n, L]
    log p(x|z) = sum_d [x_d * l_d - log(1 + exp(l_d))]      (log1p(exp) as np.logaddexp(0, l))
    KL    = 0.5 * sum_j [exp(logvar_j) + mean_j^2 - 1 - logvar_j]
    elbo  = mean_k log p(x|z_k) - KL
    iwae  = logmeanexp_k [log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mean, exp(logvar))]
Like vae-serve: noise and decoder in float32, the mean over k in float64, the decoder run over all
k*n latents at once in chunks of at most 2**24 decoded values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort

LOG_2PI = math.log(2.0 * math.pi)
MAX_DECODED_VALUES = 1 << 24  # same chunk bound as vae-serve's decoder pass

# Model name -> (k posterior samples or None for the encoder, output names). The single source of
# the served model set for both peers.
MODELS: dict[str, tuple[int | None, tuple[str, ...]]] = {
    "vae_encode": (None, ("z_mean", "z_logvar")),
    "vae_elbo_k1": (1, ("elbo",)),
    "vae_elbo_k100": (100, ("elbo", "iwae")),
}


def make_session(path: Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def bundle_dims(bundle: str | Path) -> tuple[int, int]:
    """(D, L) of a bundle, from its manifest."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    return int(manifest["input"]["num_features"]), int(manifest["latent_dim"])


def logmeanexp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.squeeze(np.log(np.mean(np.exp(values - peak), axis=axis, keepdims=True)) + peak, axis=axis)


class VaeCompute:
    """One bundle's encoder and decoder sessions plus the ELBO/IWAE math. Not thread-safe: one per worker."""

    def __init__(self, bundle: str | Path, intra_op_threads: int = 1, seed: int | None = None):
        bundle = Path(bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        likelihood = manifest["likelihood"]["name"]
        if likelihood != "bernoulli":
            raise ValueError(f"{bundle}: likelihood {likelihood!r}; the peers serve Bernoulli bundles only")
        self.num_features, self.latent_dim = bundle_dims(bundle)
        self.encoder = make_session(bundle / manifest["graphs"]["encoder"]["file"], intra_op_threads)
        self.decoder = make_session(bundle / manifest["graphs"]["decoder"]["file"], intra_op_threads)
        self.rng = np.random.default_rng(seed)

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape [n, {self.num_features}], got {list(x.shape)}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self.encoder.run(["z_mean", "z_logvar"], {"x": self._check_x(x)})
        return mean, logvar

    def _log_px(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """log p(x_r | z[:, r]) for z [k, n, L] -> [k, n] (float32)."""
        k, n, latent = z.shape
        flat = z.reshape(k * n, latent)
        chunk = max(1, MAX_DECODED_VALUES // self.num_features)
        out = np.empty(k * n, dtype=np.float32)
        for start in range(0, k * n, chunk):
            (logits,) = self.decoder.run(["logits"], {"z": flat[start : start + chunk]})
            rows = np.arange(start, start + len(logits)) % n
            out[start : start + len(logits)] = np.sum(x[rows] * logits - np.logaddexp(0.0, logits), axis=-1)
        return out.reshape(k, n)

    def bounds(self, x: np.ndarray, k: int, with_iwae: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-example ELBO (float64 [n]) and, if asked, the IWAE bound (float64 [n]) with k samples."""
        x = self._check_x(x)
        mean, logvar = self.encode(x)
        eps = self.rng.standard_normal((k, *mean.shape), dtype=np.float32)
        z = mean + np.exp(0.5 * logvar) * eps  # [k, n, L]
        log_px = self._log_px(x, z)
        kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)
        elbo = log_px.mean(axis=0, dtype=np.float64) - kl.astype(np.float64)
        if not with_iwae:
            return elbo, None
        log_prior = np.sum(-0.5 * (LOG_2PI + z**2), axis=-1)
        log_q = np.sum(-0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * np.exp(-logvar)), axis=-1)
        iwae = logmeanexp(log_px + log_prior - log_q, axis=0).astype(np.float64)
        return elbo, iwae

    def run(self, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of one served model (see MODELS) for a batch x [n, D]."""
        k, outputs = MODELS[model]
        if k is None:
            mean, logvar = self.encode(x)
            return {"z_mean": mean, "z_logvar": logvar}
        elbo, iwae = self.bounds(x, k, with_iwae="iwae" in outputs)
        result = {"elbo": elbo[:, None]}
        if iwae is not None:
            result["iwae"] = iwae[:, None]
        return result
