"""What every data source returns (``SourceData``: raw rows, labels, shape, preprocessing) and the
error it raises. Its own module so that the file-format sources and ``data`` share it without a cycle.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core.manifest import Preprocessing
from vae_serve.core.preprocessing import IDENTITY


class DataError(Exception):
    """The data could not be loaded or does not fit the request; the message says how to fix it."""


@dataclass(frozen=True)
class Part:
    """Rows and (optional) labels of one split."""

    x: np.ndarray
    y: np.ndarray | None

    def select(self, index: np.ndarray) -> "Part":
        return Part(self.x[index], None if self.y is None else self.y[index])

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class SourceData:
    """What a source provides: training rows, an official test split if it has one, and metadata."""

    train: Part
    test: Part | None
    example_shape: tuple[int, ...]
    value_range: tuple[float | None, float | None]  # of the raw values
    description: dict
    preprocessing: Preprocessing = IDENTITY
