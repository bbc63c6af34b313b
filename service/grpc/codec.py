"""vae.v1 messages <-> numpy. The checks of the rows themselves are the plane's (``plane.rows``):
this module reads a Tensor's dtype, shape and bytes, and writes arrays back as Tensors."""

import numpy as np

from vae_serve.api.v1 import vae_pb2
from vae_serve.core.errors import InvalidInput
from vae_serve.core.manifest import Manifest
from vae_serve.service.plane import rows
from vae_serve.service.plane.rows import FLOAT32_LE, RowFormat

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


def array_from_tensor(tensor: vae_pb2.Tensor, field: str, row_format: RowFormat, max_rows: int) -> np.ndarray:
    """``tensor`` as an [n, width] array of its dtype, without copying; the operation checks its values.

    Args:
        tensor: the request field.
        field: its name, for error messages.
        row_format: what one row must be (the model's ``inputs`` / ``latents``).
        max_rows: the server's per-request row limit.
    Raises:
        InvalidInput: unsupported dtype, empty, wrong shape, too many rows, or a byte length not
            matching the shape.
    """
    wire_type = WIRE_TYPES.get(tensor.dtype)
    if wire_type is None:
        raise InvalidInput(
            f"{field}: dtype {tensor.dtype} is not supported; send DATA_TYPE_FLOAT32 (the default) or DATA_TYPE_FLOAT64"
        )
    # Each read of ``tensor.data`` copies its bytes out of the message: read once.
    return rows.array_from_bytes(field, tensor.data, wire_type, tuple(tensor.shape), row_format, max_rows)


def model_version(manifest: Manifest) -> vae_pb2.ModelVersion:
    return vae_pb2.ModelVersion(name=manifest.name, version=manifest.version)


def request_seed(request) -> int | None:
    """The request's seed, or None when it gave none (the operation draws a fresh one)."""
    return request.seed if request.HasField("seed") else None


def request_id(context) -> str:
    """The caller's ``x-request-id`` metadata (gRPC lower-cases keys), or "" when it sent none."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return value if isinstance(value, str) else ""
    return ""
