"""The Open Inference Protocol's REST/JSON binding: request bodies <-> the plane's ``Inference``.

The REST routes (service/rest/server.py) call the same plane operations as gRPC, so both protocols
share one set of checks, limits and batchers. This module only translates: a JSON (or JSON +
binary) infer request into input tensors and plain parameters, and an infer result into JSON.

Tensor data comes as a flat or nested row-major JSON array, or, with the binary-data extension
(what ``tritonclient.http`` sends by default), as raw little-endian bytes after the JSON header: the
header's length is in the ``Inference-Header-Content-Length`` HTTP header and each input names its
byte count in the parameter ``binary_data_size``.
"""

import itertools
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from vae_serve.core.errors import InvalidInput
from vae_serve.service.plane.inference import InferResult, InputTensor

HEADER_LENGTH = "Inference-Header-Content-Length"
# The binary-data extension's parameters: read here, never passed on to the model.
BINARY_SIZE, BINARY_OUTPUT, BINARY_ALL_OUTPUTS = "binary_data_size", "binary_data", "binary_data_output"
JSON_TYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
INT64_MAX, UINT64_LIMIT = 2**63 - 1, 2**64
MAX_REPORTED_ERRORS = 3
TRITON_HINTS = "triton_"
TIMEOUT = "timeout"  # Triton's per-request timeout parameter, in microseconds: the call's deadline
NUMERIC_KINDS = "fiu"  # float, signed and unsigned int: what a FP32/FP64 tensor's JSON values may be


Dimension = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[Dimension]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None  # a (nested) JSON array; numpy checks and converts it


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] = {}


class _InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_name: str = ""  # Triton's examples repeat the URL's model in the body; the URL decides
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Any] = {}
    inputs: list[_Tensor]
    outputs: list[_Output] = []


def _describe(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors(include_url=False)[:MAX_REPORTED_ERRORS]
    ]
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _parameter(name: str, value: Any) -> Any:
    """A JSON parameter value, checked to be one the protocol's typed parameters can hold."""
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value < UINT64_LIMIT:
        raise InvalidInput(f"parameter {name!r}: {value} does not fit in 64 bits")
    if not isinstance(value, (bool, int, float, str)):
        raise InvalidInput(f"parameter {name!r}: must be a number, a string or a boolean, got {type(value).__name__}")
    return value


def _parameters(values: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    # Triton's tools' hints mean nothing here.
    return {
        name: _parameter(name, value)
        for name, value in values.items()
        if name not in skip and not name.startswith(TRITON_HINTS)
    }


def _json_data(tensor: _Tensor) -> bytes:
    """A JSON tensor's values as little-endian bytes of its datatype."""
    if tensor.data is None:
        raise InvalidInput(f"input {tensor.name!r}: no data (give 'data', or the parameter '{BINARY_SIZE}')")
    dtype = JSON_TYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype!r} not supported; send FP32 (or FP64)")
    not_numbers = InvalidInput(f"input {tensor.name!r}: 'data' must be a (nested) array of numbers in row-major order")
    try:
        values = np.asarray(tensor.data)  # no dtype first: numpy would turn "0.5", true and null into numbers
    except (TypeError, ValueError, OverflowError):
        raise not_numbers from None
    if values.dtype.kind not in NUMERIC_KINDS:
        raise not_numbers
    if _holds_booleans(tensor.data, values.ndim):
        raise InvalidInput(
            f"input {tensor.name!r}: 'data' holds true or false among its numbers; JSON booleans are not numbers, "
            "send 1 and 0 (or the values themselves)"
        )
    return values.astype(dtype, copy=False).tobytes()


def _holds_booleans(data: Any, ndim: int) -> bool:
    """Whether a JSON array that numpy read as numbers holds a boolean: numpy reads true as 1.0 when
    numbers are beside it. ``ndim`` levels of nesting (regular, or numpy would have refused it) are
    flattened in C, and the leaves' types collected in C too: ~1 ms per 50,000 values."""
    leaves = [data] if ndim == 0 else data
    for _ in range(ndim - 1):
        leaves = itertools.chain.from_iterable(leaves)
    return bool in set(map(type, leaves))


@dataclass(frozen=True)
class BinaryOutputs:
    """Which outputs go back as binary data: by name when the request listed its outputs, else all or none."""

    names: frozenset[str]
    listed: bool
    all_outputs: bool

    def wants(self, name: str) -> bool:
        return name in self.names if self.listed else self.all_outputs


@dataclass(frozen=True)
class RestInfer:
    id: str
    inputs: list[InputTensor]
    parameters: dict[str, Any]
    outputs: list[str]  # the outputs asked for; empty: all
    binary: BinaryOutputs
    timeout_s: float | None  # from Triton's ``timeout`` parameter


def _timeout_s(parameters: dict[str, Any]) -> float | None:
    value = parameters.get(TIMEOUT)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"parameter {TIMEOUT!r}: {value!r} must be a positive integer of microseconds")
    return value / 1e6


def infer_request(body: bytes, header_length: str | None) -> RestInfer:
    """A REST infer call as input tensors and parameters, which outputs go back binary, and its timeout.

    Raises:
        InvalidInput: the body is not a valid infer request; the message says where and why.
    """
    binary = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH}: {header_length!r} is not a byte count") from None
        if not 0 <= length <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH}: {length} is outside the body's {len(body)} bytes")
        body, binary = body[:length], body[length:]
    try:
        parsed = _InferRequest.model_validate_json(body)
    except ValidationError as error:
        raise InvalidInput(f"not a valid infer request: {_describe(error)}") from None
    parameters = _parameters(parsed.parameters, skip=(BINARY_ALL_OUTPUTS, TIMEOUT))
    inputs = []
    offset = 0
    for tensor in parsed.inputs:
        size = tensor.parameters.get(BINARY_SIZE)
        if size is None:
            inputs.append(InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), _json_data(tensor)))
            continue
        if tensor.data is not None:
            raise InvalidInput(f"input {tensor.name!r}: both 'data' and '{BINARY_SIZE}' given; send one")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInput(
                f"input {tensor.name!r}: {BINARY_SIZE} {size!r} does not fit the "
                f"{len(binary) - offset} binary bytes left"
            )
        inputs.append(InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} binary bytes after the inputs belong to no input")
    all_binary = parsed.parameters.get(BINARY_ALL_OUTPUTS) is True
    wanted_binary = set()
    for output in parsed.outputs:
        if output.parameters.get(BINARY_OUTPUT, all_binary) is True:  # an output's own setting wins
            wanted_binary.add(output.name)
    binary = BinaryOutputs(frozenset(wanted_binary), bool(parsed.outputs), all_binary)
    outputs = [output.name for output in parsed.outputs]
    return RestInfer(parsed.id, inputs, parameters, outputs, binary, _timeout_s(parsed.parameters))


def infer_response(
    result: InferResult, model_name: str, request_id: str, binary: BinaryOutputs
) -> tuple[bytes, int | None]:
    """The JSON reply (+ binary outputs) and the JSON header's length when binary data follows."""
    outputs, blobs = [], []
    for spec, values in result.outputs:
        output = {"name": spec.name, "datatype": spec.datatype, "shape": list(values.shape)}
        if binary.wants(spec.name):
            blob = values.tobytes()
            output["parameters"] = {BINARY_SIZE: len(blob)}
            blobs.append(blob)
        else:
            output["data"] = values.reshape(-1)  # row-major, flat: what the protocol's JSON sends
        outputs.append(output)
    document = {"model_name": model_name, "model_version": result.model_version}
    if request_id:
        document["id"] = request_id
    if result.parameters:
        document["parameters"] = dict(result.parameters)
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
