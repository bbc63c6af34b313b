"""``csv:PATH`` and ``parquet:PATH``: a table of numeric columns, one optionally the integer label.

Returns ``SourceData`` with raw rows, as clients will send them to the server, and no official
test split (``make_splits`` makes one). Every feature cell must be a finite number; anything else
is refused with a ``DataError`` naming the file, the column and the row. Booleans are refused
rather than read as 0/1, because the file should hold exactly the rows clients will send. Row
numbers in messages are "data rows" counted from 1 with the header not counted, for CSV and
Parquet alike (data row 1 is the second line of a CSV file).
"""

from pathlib import Path

import numpy as np

from vae_serve.core.preprocessing import IDENTITY
from vae_serve.export.sources.base import DataError, Part, SourceData, SourceOptions

MIN_EXAMPLES = 10
TABLE_FORMATS = ("csv", "parquet")
TABLE_PREPROCESSING = "none: per-feature standardisation happens inside the graphs (Gaussian likelihood)"


def load_csv(location: str, options: SourceOptions) -> SourceData:
    """``csv:PATH``, with ``--label-column``: see ``load_table``."""
    return load_table(Path(location), "csv", options.label_column)


def load_parquet(location: str, options: SourceOptions) -> SourceData:
    """``parquet:PATH``, with ``--label-column``: see ``load_table``."""
    return load_table(Path(location), "parquet", options.label_column)


def load_table(path: Path, file_format: str, label_column: str | None = None) -> SourceData:
    """A CSV or Parquet table of numeric features, with an optional integer label column.

    Args:
        path: the file.
        file_format: "csv" or "parquet".
        label_column: the column holding integer labels; it is removed from the features.

    Returns:
        Float32 rows [rows, features], int64 labels or None, and no preprocessing in the bundle
        (the Gaussian likelihood standardises each feature inside the exported graphs).

    Raises:
        DataError: the file cannot be read or a cell is not a finite number; the message names the
            file, column and data row (1-based, header not counted).
        ValueError: ``file_format`` is neither "csv" nor "parquet".
    """
    table = _read_table(Path(path), file_format)
    names = table.column_names
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"{path}: repeated column names {repeated}; give every column its own name")
    if label_column is not None and label_column not in names:
        raise DataError(f"{path}: no column {label_column!r}; the columns are {names}")
    features = [name for name in names if name != label_column]
    if table.num_rows < MIN_EXAMPLES or not features:
        raise DataError(
            f"{path}: {table.num_rows} data rows and {len(features)} feature columns; "
            f"need at least {MIN_EXAMPLES} rows and 1 feature column"
        )
    labels = None if label_column is None else _labels(path, label_column, table.column(label_column))
    rows = _feature_rows(path, table, features)
    return SourceData(
        train=Part(rows, labels),
        test=None,
        example_shape=(len(features),),
        value_range=(float(rows.min()), float(rows.max())),
        description={
            "source": file_format,
            "location": str(path),
            "preprocessing": TABLE_PREPROCESSING,
            "columns": features,
            "label_column": label_column,
        },
        preprocessing=IDENTITY,
    )


def _read_table(path: Path, file_format: str):
    if file_format not in TABLE_FORMATS:
        raise ValueError(f"file_format must be one of {TABLE_FORMATS}, got {file_format!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file; {file_format}:PATH takes a {file_format.upper()} file")
    import pyarrow as pa  # imported here: only the table sources need pyarrow
    import pyarrow.csv
    import pyarrow.parquet

    try:
        return pyarrow.csv.read_csv(path) if file_format == "csv" else pyarrow.parquet.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(
            f"{path}: cannot be read as {file_format.upper()} ({error}); fix or re-export the file"
        ) from None


def _cell_error(path: Path, column: str, index: int, problem: str) -> DataError:
    return DataError(f"{path}: column {column!r}, data row {index + 1}: {problem}")


def _first_valid(array) -> int:
    """Index of the first non-null cell (0 if all are null): the cell a type error is shown with."""
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return int(np.argmax(valid)) if valid.any() else 0


def _first_unparsable(array) -> int:
    """Index of the first text cell that Arrow cannot cast to a number (the whole column is known to fail).

    Bisects by casting slices, so a late bad cell in a large column costs O(rows), not one cast per row.
    """
    import pyarrow as pa

    low, high = 0, len(array)  # the first bad cell is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            array.slice(low, middle - low).cast(pa.float64())
            low = middle
        except pa.ArrowInvalid:
            high = middle
    return low


def _is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_number(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _parse_text(path: Path, name: str, array, rule: str):
    """A text column cast to float64 (Arrow's number parser); the first cell that is no number is refused.

    Text columns are parsed rather than refused outright because a Parquet writer may store numbers as text.
    """
    import pyarrow as pa

    try:
        return array.cast(pa.float64())
    except pa.ArrowInvalid:
        index = _first_unparsable(array)
    value = array[index].as_py()
    problem = "is empty (a missing value)" if value.strip() == "" else f"{value!r} is not a number"
    raise _cell_error(path, name, index, f"{problem}; {rule}")


def _numeric_column(path: Path, name: str, column) -> np.ndarray:
    """A column as float64 with NaN for nulls; non-numeric columns are refused at their first bad cell."""
    import pyarrow as pa

    array = column.combine_chunks()
    kind = array.type
    if pa.types.is_boolean(kind):
        raise _cell_error(path, name, _first_valid(array), "holds true/false, not numbers; write them as 0 and 1")
    if _is_text(kind):
        array = _parse_text(path, name, array, "features must be numbers: fix the cell or drop the column")
    elif not (_is_number(kind) or pa.types.is_null(kind)):  # null: a column of empty cells, refused later
        index = _first_valid(array)
        raise _cell_error(
            path, name, index, f"{array[index].as_py()!r} is {kind}, not a number; drop the column or convert it"
        )
    return array.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _feature_rows(path: Path, table, features: list[str]) -> np.ndarray:
    """The feature columns as float32 rows; the first non-finite cell (by row, then column) is refused."""
    wide = np.column_stack([_numeric_column(path, name, table.column(name)) for name in features])
    with np.errstate(over="ignore"):  # values beyond float32 become inf here and are refused just below
        rows = wide.astype(np.float32)
    bad = np.argwhere(~np.isfinite(rows))  # row-major: the first entry is the earliest row
    if len(bad):
        index, column = (int(value) for value in bad[0])
        problem = _non_finite_problem(table.column(features[column])[index].as_py(), wide[index, column])
        raise _cell_error(path, features[column], index, problem)
    return rows


def _non_finite_problem(stored, value: float) -> str:
    """What is wrong with a cell that is not a finite float32, and the fix."""
    if stored is None:  # CSV reads empty, NA, NaN, null (and similar) cells as nulls
        return "is a missing value (empty, NA, NaN or null); fill it in or drop the row"
    if np.isnan(value):
        return "is NaN (a missing value); fill it in or drop the row"
    if np.isfinite(value):
        return f"{stored!r} is beyond the float32 range; rescale the column"
    return "is infinite; replace it or drop the row"


def _labels(path: Path, name: str, column) -> np.ndarray:
    """The label column as int64: integer-typed, or floats with integer values; anything else refused."""
    import pyarrow as pa

    rule = "labels must be integers (e.g. 0..K-1 for K classes)"
    array = column.combine_chunks()
    if _is_text(array.type):
        array = _parse_text(path, name, array, rule)
    kind = array.type
    if not _is_number(kind):
        index = _first_valid(array)
        raise _cell_error(path, name, index, f"label {array[index].as_py()!r} ({kind}) is not an integer; {rule}")
    if pa.types.is_integer(kind):
        bad = np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))
    else:
        values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)  # NaN for nulls
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if len(bad):
        index = int(bad[0])
        stored = array[index].as_py()
        problem = "is empty (a missing label)" if stored is None else f"label {stored!r} is not an integer"
        raise _cell_error(path, name, index, f"{problem}; {rule}")
    try:
        return array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        raise DataError(f"{path}: column {name!r} holds labels beyond the int64 range; use 0..K-1") from None
