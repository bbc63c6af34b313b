"""The bundle's preprocessing: what the server does to the values clients send before the graphs
and the likelihood see them.

Clients send raw values (0-255 pixels, table rows as stored). A bundle's manifest records one
affine map per feature, x_model = (x_raw - loc) / scale (pixel scaling is loc 0, scale 255;
standardisation is the feature means and standard deviations). The server applies it once per
batch, where the rows enter the model's work (``core.work``, ``core.scores``); everything the
likelihood defines (bounds, scores, E[x|z], draws of x) is in the model's space, and
``to_raw`` maps values back. Imports no torch and no grpc.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core.manifest import Preprocessing

IDENTITY = Preprocessing(loc=[0.0], scale=[1.0], description="none: the graphs take the values as sent")


def pixel_scaling(max_value: float = 255.0) -> Preprocessing:
    """Grey levels or colour channels 0..max_value -> [0, 1]."""
    return Preprocessing(loc=[0.0], scale=[max_value], description=f"pixel / {max_value:g}")


def standardization(mean: np.ndarray, std: np.ndarray) -> Preprocessing:
    """Per-feature (x - mean) / std; a constant feature (std 0) is only centred."""
    std = np.where(np.asarray(std) > 0, std, 1.0)
    return Preprocessing(
        loc=[float(value) for value in np.asarray(mean, np.float32)],
        scale=[float(value) for value in np.asarray(std, np.float32)],
        description="per-feature standardisation (x - mean) / std",
    )


@dataclass(frozen=True)
class Affine:
    """x_model = (x_raw - loc) / scale, in float32 as torch computes it at export (bit-identical)."""

    loc: np.ndarray  # [1] or [D], float32
    scale: np.ndarray

    @classmethod
    def of(cls, spec: Preprocessing | None) -> "Affine | None":
        """The map of a manifest's preprocessing; None for no preprocessing or the identity."""
        if spec is None or (spec.loc == [0.0] and spec.scale == [1.0]):
            return None
        return cls(np.asarray(spec.loc, np.float32), np.asarray(spec.scale, np.float32))

    def to_model(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw rows -> the model's space. A value that overflows float32 there (a huge raw value under a
        scale below 1) saturates at float32's largest finite value instead of becoming infinite: the
        row stays as extreme as float32 can say, and every likelihood of it finite."""
        with np.errstate(over="ignore"):
            x_model = (x_raw - self.loc) / self.scale
        limit = np.finfo(x_model.dtype).max
        return np.clip(x_model, -limit, limit, out=x_model)

    def to_raw(self, x_model: np.ndarray) -> np.ndarray:
        return x_model * self.scale + self.loc


def to_model(affine: "Affine | None", x_raw: np.ndarray) -> np.ndarray:
    """``x_raw`` through ``affine``; the identity returns the very array (no copy on the hot path)."""
    return x_raw if affine is None else affine.to_model(x_raw)
