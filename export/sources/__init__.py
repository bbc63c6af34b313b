"""Data sources for vae-train: one module per kind of ``--dataset`` value, the registry of them
(``registry.SOURCES``), and the deterministic split of their rows (``splits``).

    from vae_serve.export.sources import load_source, make_splits
    splits = make_splits(load_source("digits"))

Importing this loads numpy only: scikit-learn, Pillow and pyarrow are imported by the source that reads with them.
"""

from vae_serve.export.sources.base import DataError, Part, SourceData, SourceOptions
from vae_serve.export.sources.registry import SOURCES, load_source
from vae_serve.export.sources.splits import Splits, make_splits, parse_classes, recorded_split

__all__ = [
    "SOURCES",
    "DataError",
    "Part",
    "SourceData",
    "SourceOptions",
    "Splits",
    "load_source",
    "make_splits",
    "parse_classes",
    "recorded_split",
]
