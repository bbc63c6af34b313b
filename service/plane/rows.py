"""What a request's rows must be, and the checks every binding's input gets (raises InvalidInput).

Protocol-neutral: a binding hands over the shape and bytes its wire format carries
(``array_from_bytes``), or an array, and the operations check the values (``checked_rows``).
"""

import functools
import secrets
from dataclasses import dataclass

import numpy as np

from vae_serve.core.errors import InvalidInput
from vae_serve.core.manifest import Manifest, Preprocessing
from vae_serve.core.preprocessing import IDENTITY
from vae_serve.core.vae_math import LATENT_LIMIT

FLOAT32_LE = np.dtype("<f4")


@dataclass(frozen=True)
class RowFormat:
    """What the rows of one request field must be for one model version, worked out once when the
    version loads rather than on every request.

    ``shapes``: accepted shapes of one row, flat [width] first. ``low`` / ``high``: the raw range a
    Bernoulli model's inputs must lie in (its likelihood is defined on [0, 1] only, after the
    bundle's preprocessing), or latent codes (``LATENT_LIMIT``), one value or one per feature; None:
    any finite value. ``range_of``: what that range is, for the refusal.
    """

    shapes: tuple[tuple[int, ...], ...]
    width: int
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    range_of: str = ""

    @property
    def expected(self) -> str:
        return " or ".join(str(["n", *row]) for row in self.shapes)

    def accepts(self, values: np.ndarray) -> bool:
        """All finite (and within the range, if any), in one pass where it can: NaN fails every
        comparison, so rows inside a finite range are finite too."""
        if self.low is None:
            return bool(np.isfinite(values).all())
        if self.low.size == 1:
            inside = bool(values.min() >= self.low[0] and values.max() <= self.high[0])
        else:
            inside = bool(((values >= self.low) & (values <= self.high)).all())
        # A range whose end overflowed float32 lets infinity in: then check finiteness as well.
        return inside and (self.finite_range or bool(np.isfinite(values).all()))

    @functools.cached_property
    def finite_range(self) -> bool:
        return bool(np.isfinite(self.low).all() and np.isfinite(self.high).all())


def input_format(manifest: Manifest) -> RowFormat:
    """A model's input rows: flat [D] or the example's natural shape; for a Bernoulli model, raw
    values that the preprocessing maps into [0, 1] (e.g. 0..255 for pixel / 255)."""
    flat = (manifest.input.num_features,)
    natural = tuple(manifest.input.shape)
    shapes = (flat,) if natural == flat else (flat, natural)
    if manifest.likelihood.name != "bernoulli":
        return RowFormat(shapes, flat[0])
    low, high = bernoulli_raw_range(manifest.preprocessing)
    range_of = "the range of this Bernoulli model's raw data (its preprocessing maps that range onto [0, 1])"
    return RowFormat(shapes, flat[0], low, high, range_of)


def latent_format(manifest: Manifest) -> RowFormat:
    """A model's latent codes: [L] each, every value within +-LATENT_LIMIT (core.vae_math: the box
    every served posterior lies in, far inside what a float32 decoder decodes finitely)."""
    limit = np.float32(LATENT_LIMIT)
    range_of = (
        "the range of latent codes this server decodes (the prior is N(0, I); codes of the encoder "
        "lie within a few units of 0)"
    )
    return RowFormat(((manifest.latent_dim,),), manifest.latent_dim, np.array([-limit]), np.array([limit]), range_of)


def check_shape(field: str, shape: tuple[int, ...], row_format: RowFormat, max_rows: int) -> int:
    """The number of rows of a field of ``shape``.

    Raises:
        InvalidInput: no shape (a missing tensor), no rows, a row shape the model does not take, or
            more rows than ``max_rows``.
    """
    if not shape:
        raise InvalidInput(f"{field}: missing tensor; expected shape {row_format.expected}")
    if shape[0] == 0:
        raise InvalidInput(f"{field}: empty batch (shape {list(shape)}); send at least one row")
    if shape[1:] not in row_format.shapes or min(shape) < 1:
        raise InvalidInput(f"{field}: shape {list(shape)} does not fit this model; expected {row_format.expected}")
    if shape[0] > max_rows:
        raise InvalidInput(f"{field}: {shape[0]} rows exceeds the limit of {max_rows} per request")
    return shape[0]


def array_from_bytes(
    field: str, data: bytes, dtype: np.dtype, shape: tuple[int, ...], row_format: RowFormat, max_rows: int
) -> np.ndarray:
    """Little-endian ``data`` of ``shape`` as an [n, width] array of ``dtype``, without copying; its
    values are checked by the operation (``checked_rows``).

    Raises:
        InvalidInput: the shape does not fit (``check_shape``) or the byte length does not match it.
    """
    rows = check_shape(field, shape, row_format, max_rows)
    expected_bytes = rows * row_format.width * dtype.itemsize
    if len(data) != expected_bytes:
        raise InvalidInput(
            f"{field}: {len(data)} bytes of data, shape {list(shape)} needs {expected_bytes} "
            f"({dtype.name}, little-endian)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(rows, row_format.width)


def checked_rows(field: str, values: np.ndarray, row_format: RowFormat, max_rows: int) -> np.ndarray:
    """``values`` as float32 [n, width] rows that the model takes.

    Raises:
        InvalidInput: the shape does not fit (``check_shape``), a value is not finite, or a value is
            outside the range of ``row_format`` (a Bernoulli model's raw range, the latent box).
    """
    if values.shape[1:] != (row_format.width,):
        rows = check_shape(field, values.shape, row_format, max_rows)
        values = values.reshape(rows, row_format.width)
    else:
        check_shape(field, values.shape, row_format, max_rows)
    if values.dtype != FLOAT32_LE:
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused below
            values = values.astype(FLOAT32_LE)
    if not row_format.accepts(values):
        _refuse(values, field, row_format)
    return values


def _refuse(values: np.ndarray, field: str, row_format: RowFormat) -> None:
    """Say which row (and feature) ``row_format`` refuses, the non-finite first."""
    finite = np.isfinite(values)
    if not finite.all():
        bad_row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InvalidInput(f"{field}: non-finite value (NaN or infinity) in row {bad_row}")
    low, high = row_format.low, row_format.high
    row, feature = np.argwhere((values < low) | (values > high))[0]
    raise InvalidInput(
        f"{field}: value {values[row, feature]:g} in row {row}, feature {feature} is outside "
        f"[{_at(low, feature):g}, {_at(high, feature):g}], {row_format.range_of}"
    )


def bernoulli_raw_range(spec: Preprocessing | None) -> tuple[np.ndarray, np.ndarray]:
    """The raw values that x_model = (x - loc) / scale maps onto [0, 1]: [loc, loc + scale]."""
    spec = spec or IDENTITY
    loc, scale = np.asarray(spec.loc, np.float32), np.asarray(spec.scale, np.float32)
    return loc, loc + scale


def _at(bound: np.ndarray, feature: int) -> float:
    return float(bound[feature] if bound.size > 1 else bound[0])


def fresh_seed() -> int:
    """A random seed for a request that gave none (53 bits: exact in a JSON number)."""
    return secrets.randbits(53)
