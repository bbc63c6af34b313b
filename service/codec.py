"""vae.v1 messages <-> numpy, with the checks every request input gets (raises InvalidInput)."""

import secrets

import numpy as np

from vae_serve.api.v1 import vae_pb2
from vae_serve.core.errors import InvalidInput
from vae_serve.core.manifest import Manifest, Preprocessing
from vae_serve.core.preprocessing import IDENTITY

FLOAT32_LE = np.dtype("<f4")
# Tensor.dtype -> the numpy type of its bytes; every other value is refused.
WIRE_TYPES = {vae_pb2.DATA_TYPE_FLOAT32: FLOAT32_LE, vae_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8")}


def to_tensor(array: np.ndarray) -> vae_pb2.Tensor:
    """A float32 array as shape + raw little-endian bytes."""
    array = np.ascontiguousarray(array, dtype=FLOAT32_LE)
    return vae_pb2.Tensor(shape=array.shape, data=array.tobytes())


def rows_from_tensor(
    tensor: vae_pb2.Tensor, field: str, row_shapes: list[tuple[int, ...]], max_rows: int
) -> np.ndarray:
    """Decode ``tensor`` into a float32 [n, width] matrix without copying.

    Args:
        tensor: the request field.
        field: its name, for error messages.
        row_shapes: accepted shapes of one row, e.g. [(64,), (8, 8)]; the first one's size is the width.
        max_rows: the server's per-request row limit.
    Raises:
        InvalidInput: unsupported dtype, empty, wrong shape, byte length not matching the shape, too
            many rows, or non-finite values.
    """
    wire_type = WIRE_TYPES.get(tensor.dtype)
    if wire_type is None:
        raise InvalidInput(
            f"{field}: dtype {tensor.dtype} is not supported; send DATA_TYPE_FLOAT32 (the default) or DATA_TYPE_FLOAT64"
        )
    shape = tuple(tensor.shape)
    expected = " or ".join(str(["n", *row]) for row in row_shapes)
    if not shape:
        raise InvalidInput(f"{field}: missing tensor; expected shape {expected}")
    if shape[0] == 0:
        raise InvalidInput(f"{field}: empty batch (shape {list(shape)}); send at least one row")
    if any(dim < 1 for dim in shape) or shape[1:] not in row_shapes:
        raise InvalidInput(f"{field}: shape {list(shape)} does not fit this model; expected {expected}")
    rows = shape[0]
    if rows > max_rows:
        raise InvalidInput(f"{field}: {rows} rows exceeds the limit of {max_rows} per request")
    width = int(np.prod(row_shapes[0]))
    expected_bytes = rows * width * wire_type.itemsize
    if len(tensor.data) != expected_bytes:
        raise InvalidInput(
            f"{field}: {len(tensor.data)} bytes of data, shape {list(shape)} needs {expected_bytes} "
            f"({wire_type.name}, little-endian)"
        )
    values = np.frombuffer(tensor.data, dtype=wire_type).reshape(rows, width)
    if wire_type != FLOAT32_LE:
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused below
            values = values.astype(FLOAT32_LE)
    if not np.isfinite(values).all():
        bad_row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise InvalidInput(f"{field}: non-finite value (NaN or infinity) in row {bad_row}")
    return values


def input_shapes(manifest: Manifest) -> list[tuple[int, ...]]:
    """Accepted shapes of one input row: flat [D] first, then the example's natural shape."""
    flat = (manifest.input.num_features,)
    natural = tuple(manifest.input.shape)
    return [flat] if natural == flat else [flat, natural]


def input_rows(tensor: vae_pb2.Tensor, field: str, manifest: Manifest, max_rows: int) -> np.ndarray:
    """A request's model inputs as float32 [n, D] of raw values: the checks of ``rows_from_tensor``,
    and for a Bernoulli model, whose likelihood is defined on [0, 1] only, values that the bundle's
    preprocessing maps into that range (e.g. 0..255 for pixel / 255)."""
    x = rows_from_tensor(tensor, field, input_shapes(manifest), max_rows)
    if manifest.likelihood.name == "bernoulli":
        low, high = bernoulli_raw_range(manifest.preprocessing)
        outside = (x < low) | (x > high)
        if outside.any():
            row, feature = np.argwhere(outside)[0]
            raise InvalidInput(
                f"{field}: value {x[row, feature]:g} in row {row}, feature {feature} is outside "
                f"[{_at(low, feature):g}, {_at(high, feature):g}], the range of this Bernoulli model's raw data "
                "(its preprocessing maps that range onto [0, 1])"
            )
    return x


def bernoulli_raw_range(spec: Preprocessing | None) -> tuple[np.ndarray, np.ndarray]:
    """The raw values that x_model = (x - loc) / scale maps onto [0, 1]: [loc, loc + scale]."""
    spec = spec or IDENTITY
    loc, scale = np.asarray(spec.loc, np.float32), np.asarray(spec.scale, np.float32)
    return loc, loc + scale


def _at(bound: np.ndarray, feature: int) -> float:
    return float(bound[feature] if bound.size > 1 else bound[0])


def latent_rows(tensor: vae_pb2.Tensor, field: str, manifest: Manifest, max_rows: int) -> np.ndarray:
    """A request's latent codes as float32 [n, L]."""
    return rows_from_tensor(tensor, field, [(manifest.latent_dim,)], max_rows)


def check_path_lengths(start: np.ndarray, end: np.ndarray) -> None:
    """A spherical path's points are as long as its longer end: refuse ends too long for float32."""
    longest = max(
        np.linalg.norm(start.astype(np.float64), axis=1).max(), np.linalg.norm(end.astype(np.float64), axis=1).max()
    )
    if longest > np.finfo(np.float32).max:
        raise InvalidInput(
            f"start and end: a latent code of length {longest:g} is too long for a spherical path in float32; "
            "use the linear path or shorter codes"
        )


def model_version(manifest: Manifest) -> vae_pb2.ModelVersion:
    return vae_pb2.ModelVersion(name=manifest.name, version=manifest.version)


def fresh_seed() -> int:
    """A random seed for a request that gave none (53 bits: exact in a JSON number)."""
    return secrets.randbits(53)


def request_seed(request) -> int:
    """The request's seed, or a fresh random one (returned in the reply so the call can be replayed)."""
    return request.seed if request.HasField("seed") else fresh_seed()
