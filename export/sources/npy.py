"""``npy:PATH``: a user's own [examples, ...] array in a ``.npy`` file, with optional integer labels in another.

The header is read and checked against the file's size before any data is read: a truncated or
forged file whose header declares more rows than it holds (say 2^40 rows in 64 bytes) is refused
by name, instead of numpy trying to allocate the memory the header asks for.
"""

import math
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from vae_serve.export.sources.base import DataError, Part, SourceData, SourceOptions

MIN_EXAMPLES = 10
# float32 bytes per value: what the rows are converted to.
FLOAT32_BYTES = 4


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data the file holds after its header) of a .npy file."""
    try:
        with open(path, "rb") as stream:
            version = npy_format.read_magic(stream)
            # Version 3.0 differs from 2.0 only in the header's text encoding (utf-8), which these read alike.
            reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = reader(stream)
            data_bytes = path.stat().st_size - stream.tell()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; npy:PATH takes a .npy file written by numpy.save") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a .npy file; npy:PATH takes a file written by numpy.save") from None
    except OSError as error:
        raise DataError(
            f"{path}: cannot be read ({error.strerror or error}); check the path and its permissions"
        ) from None
    except ValueError as error:
        raise DataError(f"{path}: not a .npy file ({error}); write it with numpy.save") from None
    return tuple(shape), dtype, data_bytes


def check_header(shape: tuple[int, ...], dtype: np.dtype, data_bytes: int, where: str, what: str) -> int:
    """The bytes of data an array header declares, checked against the bytes that follow it.

    Args:
        shape, dtype: what the header declares.
        data_bytes: the bytes after the header (in the file, or in the archive member).
        where: the file (or ``FILE [KEY]``) the messages name.
        what: "values" or "labels", for the message on arrays of Python objects.

    Returns:
        The declared bytes.

    Raises:
        DataError: the array holds Python objects, or declares more data than there is.
    """
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects ({dtype}); save the {what} as a numeric array")
    declared_bytes = math.prod(shape) * dtype.itemsize
    if declared_bytes > data_bytes:
        raise DataError(
            f"{where}: its header declares shape {list(shape)} of {dtype} ({declared_bytes:,} bytes), more data than "
            f"the file holds ({data_bytes:,} bytes after the header); the file is truncated or damaged: write it "
            "again with numpy.save"
        )
    return declared_bytes


def load_array(path: Path, what: str) -> np.ndarray:
    """A .npy file's array, its header checked against the file's size first.

    Raises:
        DataError: the file is missing, unreadable, not a .npy file, holds objects, declares more data than
            it holds, or does not fit in memory; the message names the file.
    """
    shape, dtype, data_bytes = _read_header(path)
    declared_bytes = check_header(shape, dtype, data_bytes, str(path), what)
    try:
        return np.load(path, allow_pickle=False)
    except MemoryError:
        raise DataError(
            f"{path}: shape {list(shape)} ({declared_bytes:,} bytes) does not fit in memory; use fewer rows"
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be loaded ({error}); write it again with numpy.save") from None


def load(location: str, options: SourceOptions) -> SourceData:
    """``npy:PATH``, with ``--labels``: see ``load_npy_source``."""
    return load_npy_source(Path(location), options.labels)


def load_npy_source(path: Path, labels_path: Path | None) -> SourceData:
    """A user's own [examples, ...] array in a .npy file, with optional labels in another.

    Raises:
        DataError: a file cannot be used (see ``load_array``), the values are not numeric rows of
            finite numbers, or the labels are not one integer per row.
    """
    values = load_array(path, "values")
    labels = None if labels_path is None else load_array(labels_path, "labels")
    return array_source(values, labels, str(path), labels_path, "npy")


def array_source(
    values: np.ndarray, labels: np.ndarray | None, where: str, labels_path: Path | None, name: str
) -> SourceData:
    """The rows of an array already loaded (from a .npy file, or a member of an .npz archive).

    Args:
        values: [examples, features...], integers or floats.
        labels: one integer per example, or None.
        where: the file (or ``FILE [KEY]``) the messages and the manifest's ``location`` name.
        labels_path: the labels' file, for their message.
        name: the source's name, recorded in the manifest.

    Raises:
        DataError: the values are not numeric rows of finite numbers, or the labels are not one
            integer per row.
    """
    real = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if values.ndim < 2 or len(values) < MIN_EXAMPLES or not real:
        raise DataError(
            f"{where}: need a numeric array [examples >= {MIN_EXAMPLES}, features...], "
            f"got {values.dtype} {values.shape}"
        )
    try:
        flat = values.reshape(len(values), -1).astype(np.float32)
    except MemoryError:
        needed = values.size * FLOAT32_BYTES
        raise DataError(
            f"{where}: as float32 rows it needs {needed:,} bytes, more than is free; use fewer rows"
        ) from None
    if not np.all(np.isfinite(flat)):
        raise DataError(f"{where}: contains NaN or infinite values")
    if labels is not None and (labels.shape != (len(values),) or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(
            f"{labels_path}: need integer labels of shape ({len(values)},), got {labels.dtype} {labels.shape}"
        )
    return SourceData(
        train=Part(flat, None if labels is None else labels.astype(np.int64)),
        test=None,
        example_shape=tuple(values.shape[1:]),
        value_range=(float(flat.min()), float(flat.max())),
        description={"source": name, "location": where, "preprocessing": "none (values as stored)"},
    )
