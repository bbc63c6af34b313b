"""What every data source takes (``SourceOptions``) and returns (``SourceData``: raw rows, labels,
shape, preprocessing), and the error it raises. Its own module so that the sources, the registry
and the splits share it without a cycle.
"""

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class SourceOptions:
    """The ``--dataset`` flags that apply to some sources only; which ones, the registry says
    (``Source.options``). None: not given."""

    data_dir: Path | None = None
    labels: Path | None = None
    channels: int | None = None
    size: tuple[int, int] | None = None
    label_column: str | None = None
    key: str | None = None

    def given(self) -> list[str]:
        """The names of the options that were given, in the order of ``OPTION_FLAGS``."""
        return [name for name in OPTION_FLAGS if getattr(self, name) is not None]


# Each SourceOptions field and the flag that sets it: the words of the "applies only to" errors.
OPTION_FLAGS = {
    "data_dir": "--data-dir",
    "labels": "--labels",
    "channels": "--channels",
    "size": "--size",
    "label_column": "--label-column",
    "key": "--key",
}
