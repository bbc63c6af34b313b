"""vae.v1 messages <-> numpy, with the checks every request input gets (raises InvalidInput)."""

import functools
import secrets
from dataclasses import dataclass

import numpy as np

from vae_serve.api.v1 import vae_pb2
from vae_serve.core.errors import InvalidInput
from vae_serve.core.manifest import Manifest, Preprocessing
from vae_serve.core.preprocessing import IDENTITY
from vae_serve.core.vae_math import LATENT_LIMIT

FLOAT32_LE = np.dtype("<f4")
# Tensor.dtype -> the numpy type of its bytes; every other value is refused.
WIRE_TYPES = {vae_pb2.DATA_TYPE_FLOAT32: FLOAT32_LE, vae_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8")}


def to_tensor(array: np.ndarray) -> vae_pb2.Tensor:
    """A float32 array as shape + raw little-endian bytes."""
    array = np.ascontiguousarray(array, dtype=FLOAT32_LE)
    return vae_pb2.Tensor(shape=array.shape, data=array.tobytes())


def to_saturated_tensor(array: np.ndarray) -> vae_pb2.Tensor:
    """``to_tensor`` of a float64 array whose values may lie beyond float32's range (feature errors of a
    far out-of-distribution row: the square of a residual beyond ~1.8e19): those are sent as float32's
    largest finite value, 3.4e38, rather than as infinity."""
    limit = float(np.finfo(np.float32).max)
    return to_tensor(np.clip(array, -limit, limit))


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


def rows_from_tensor(tensor: vae_pb2.Tensor, field: str, row_format: RowFormat, max_rows: int) -> np.ndarray:
    """Decode ``tensor`` into a float32 [n, width] matrix without copying.

    Args:
        tensor: the request field.
        field: its name, for error messages.
        row_format: what one row must be (``input_format`` / ``latent_format`` of the model).
        max_rows: the server's per-request row limit.
    Raises:
        InvalidInput: unsupported dtype, empty, wrong shape, byte length not matching the shape, too
            many rows, non-finite values, or values outside a Bernoulli model's range.
    """
    wire_type = WIRE_TYPES.get(tensor.dtype)
    if wire_type is None:
        raise InvalidInput(
            f"{field}: dtype {tensor.dtype} is not supported; send DATA_TYPE_FLOAT32 (the default) or DATA_TYPE_FLOAT64"
        )
    shape = tuple(tensor.shape)
    if not shape:
        raise InvalidInput(f"{field}: missing tensor; expected shape {row_format.expected}")
    if shape[0] == 0:
        raise InvalidInput(f"{field}: empty batch (shape {list(shape)}); send at least one row")
    if shape[1:] not in row_format.shapes or min(shape) < 1:
        raise InvalidInput(f"{field}: shape {list(shape)} does not fit this model; expected {row_format.expected}")
    rows = shape[0]
    if rows > max_rows:
        raise InvalidInput(f"{field}: {rows} rows exceeds the limit of {max_rows} per request")
    expected_bytes = rows * row_format.width * wire_type.itemsize
    data = tensor.data  # each read of the field copies its bytes out of the message
    if len(data) != expected_bytes:
        raise InvalidInput(
            f"{field}: {len(data)} bytes of data, shape {list(shape)} needs {expected_bytes} "
            f"({wire_type.name}, little-endian)"
        )
    values = np.frombuffer(data, dtype=wire_type).reshape(rows, row_format.width)
    if wire_type != FLOAT32_LE:
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


def model_version(manifest: Manifest) -> vae_pb2.ModelVersion:
    return vae_pb2.ModelVersion(name=manifest.name, version=manifest.version)


def fresh_seed() -> int:
    """A random seed for a request that gave none (53 bits: exact in a JSON number)."""
    return secrets.randbits(53)


def request_seed(request) -> int:
    """The request's seed, or a fresh random one (returned in the reply so the call can be replayed)."""
    return request.seed if request.HasField("seed") else fresh_seed()
