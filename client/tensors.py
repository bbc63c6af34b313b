"""numpy <-> vae.v1.Tensor: dense float32, row-major, little-endian, as the proto specifies."""

import math

import numpy as np
import numpy.typing as npt

from vae_serve.api.v1 import vae_pb2

# Explicitly little-endian, so the bytes on the wire are right on a big-endian host too.
_WIRE_DTYPE = np.dtype("<f4")


def to_tensor(array: npt.ArrayLike) -> vae_pb2.Tensor:
    """Pack an array as a Tensor.

    Args:
        array: Any array-like of real numbers; it is cast to float32 and laid out row-major.

    Returns:
        A Tensor whose ``data`` holds exactly ``4 * product(shape)`` bytes.
    """
    # order="C" rather than ascontiguousarray, which would turn a 0-d array into shape [1].
    values = np.asarray(array, dtype=_WIRE_DTYPE, order="C")
    return vae_pb2.Tensor(shape=values.shape, data=values.tobytes())


def from_tensor(tensor: vae_pb2.Tensor) -> np.ndarray:
    """Unpack a Tensor into a float32 array of its shape.

    Args:
        tensor: The message to read.

    Returns:
        A new, writable float32 array of shape ``tuple(tensor.shape)``.

    Raises:
        ValueError: If a dimension is negative or the byte length is not ``4 * product(shape)``.
    """
    shape = tuple(int(dim) for dim in tensor.shape)
    if any(dim < 0 for dim in shape):
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    expected_bytes = _WIRE_DTYPE.itemsize * math.prod(shape)
    if len(tensor.data) != expected_bytes:
        raise ValueError(
            f"tensor of shape {list(shape)} needs {expected_bytes} bytes of float32, got {len(tensor.data)}"
        )
    # frombuffer over the message's bytes is read-only; callers expect to be able to edit the result.
    return np.frombuffer(tensor.data, dtype=_WIRE_DTYPE).reshape(shape).copy()
