"""The ``--dataset`` values: one table, ``SOURCES``, of each source's name, loader, options and help.

The CLI's ``--dataset`` help and its option flags' help, the option checks ("--key applies only to
npz:PATH datasets"), the "unknown dataset" error and the training recipe by kind of data are all
read from it. A new source is one module with a ``load(location, options) -> SourceData`` function
and one line here.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vae_serve.export.sources import digits, idx, images, npy, npz, tables
from vae_serve.export.sources.base import OPTION_FLAGS, DataError, SourceData, SourceOptions


@dataclass(frozen=True)
class Source:
    """One kind of ``--dataset`` value: ``NAME`` alone, or ``NAME:ARGUMENT``."""

    name: str
    argument: str | None  # "PATH" or "DIR" after the colon; None: the name alone
    load: Callable[[str, SourceOptions], SourceData]  # (the text after the colon, the options) -> data
    options: tuple[str, ...]  # the SourceOptions fields it takes; any other given is refused
    recipe: str  # the training defaults for its kind of data: a key of models/config.py's RECIPES
    help: str

    @property
    def form(self) -> str:
        """How ``--dataset`` spells it: ``digits``, ``npy:PATH``."""
        return self.name if self.argument is None else f"{self.name}:{self.argument}"


SOURCES = (
    Source("digits", None, digits.load_digits_source, (), "digits", "scikit-learn's 8x8 digits, embedded"),
    Source("fashion-mnist", None, idx.load_fashion_mnist, ("data_dir",), "images", "Debian's IDX files, or --data-dir"),
    Source("idx", "DIR", idx.load_idx, (), "images", "a folder of MNIST-format IDX files"),
    Source("npy", "PATH", npy.load, ("labels",), "tables", "an [examples, ...] array written by numpy.save"),
    Source("npz", "PATH", npz.load, ("labels", "key"), "tables", "one array of a numpy.savez archive, picked by --key"),
    Source("images", "DIR", images.load, ("channels", "size"), "images", "PNG/JPEG files, a subfolder per class"),
    Source("csv", "PATH", tables.load_csv, ("label_column",), "tables", "a table of numeric columns"),
    Source("parquet", "PATH", tables.load_parquet, ("label_column",), "tables", "a table of numeric columns"),
)


def listing(sources: tuple[Source, ...] = SOURCES, last: str = "or") -> str:
    """``"digits, npy:PATH or csv:PATH"``: the forms of ``sources``."""
    forms = [source.form for source in sources]
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} {last} {forms[-1]}"


def dataset_help() -> str:
    """The help of ``--dataset``: each form and what it reads."""
    return "; ".join(f"{source.form} ({source.help})" for source in SOURCES)


def taking(option: str) -> tuple[Source, ...]:
    """The sources that take the SourceOptions field ``option``."""
    return tuple(source for source in SOURCES if option in source.options)


def find_source(spec: str) -> tuple[Source, str]:
    """(the source, the text after its colon) of a ``--dataset`` value.

    Raises:
        DataError: no source has that name (or it lacks or has an argument it should not).
    """
    name, colon, location = spec.partition(":")
    for source in SOURCES:
        if source.name == name and bool(colon) == (source.argument is not None):
            return source, location
    raise DataError(f"unknown dataset {spec!r}; use {listing()}")


def check_options(source: Source, options: SourceOptions) -> None:
    """Every option given must be one that ``source`` takes.

    Raises:
        DataError: the first one it does not take, with the sources that do.
    """
    for option in options.given():
        if option not in source.options:
            raise DataError(f"{OPTION_FLAGS[option]} applies only to {listing(taking(option), 'and')} datasets")


def load_source(
    spec: str, data_dir: Path | None = None, labels_path: Path | None = None, options: SourceOptions | None = None
) -> SourceData:
    """Resolve a ``--dataset`` value to its data.

    Args:
        spec: the ``--dataset`` value, e.g. ``digits`` or ``npz:records.npz``.
        data_dir, labels_path: ``--data-dir`` and ``--labels``, when not given in ``options``.
        options: the source-specific flags.

    Raises:
        DataError: an unknown dataset, an option it does not take, or data it cannot use; the
            message says what to change.
    """
    options = options or SourceOptions()
    options = replace(options, data_dir=data_dir or options.data_dir, labels=labels_path or options.labels)
    source, location = find_source(spec)
    check_options(source, options)
    return source.load(location, options)
