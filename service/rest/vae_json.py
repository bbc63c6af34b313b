"""vae.v1 messages as JSON for the HTTP/JSON routes (service/rest/vae_http.py): the proto3 JSON mapping
(``google.protobuf.json_format``: lowerCamelCase names, or the proto's own; int64/uint64 as strings;
bytes as base64; enums by name), with one extension each way for ``Tensor`` fields.

In: a Tensor may also be a plain nested JSON array of numbers (rectangular). It becomes the mapping's
form before the parse, as float64 little-endian bytes with the array's shape: float64 holds every
JSON number a client means as float32 exactly, so nothing is lost, and the server's own checks
(shape, rows, finite values) then apply as to any Tensor. An array of more rows than the server
takes is refused first, before its numbers are looked at or copied (numpy's copy of a large parsed
array would cost many times the body's size), with the server's own message for too many rows.

Out: with ``arrays``, every Tensor of a reply is written as a nested JSON array of its values (its
shape is the nesting). A float32 is written as the shortest decimal of its float64 value, which
parses back to the same float64 and so to the same float32 bits. A value that is not finite is
written as the string the mapping uses for doubles ("NaN", "Infinity", "-Infinity").
"""

import json

import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vae_serve.api.v1 import vae_pb2
from vae_serve.core.errors import InvalidInput, MalformedRequest
from vae_serve.service.status import Code

TENSOR = vae_pb2.Tensor.DESCRIPTOR.full_name
FLOAT64_NAME = vae_pb2.DataType.Name(vae_pb2.DATA_TYPE_FLOAT64)
# Tensor.dtype -> the numpy type of its bytes (the server's replies are float32).
WIRE_TYPES = {vae_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"), vae_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8")}
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
MAX_DETAIL_CHARS = 300  # protobuf's reasons list every field name: enough to say what was wrong


def status_document(code: Code, message: str) -> dict:
    """A google.rpc.Status in its JSON form, as grpc-gateway and Envoy's transcoder answer errors."""
    return {"code": int(code), "message": message, "details": []}


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different (json_format refuses duplicates the same way)."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {duplicate!r} is given twice in one object")
    return document


def _detail(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."


def parse_request(body: bytes, request_type: type[Message], max_rows: int | None = None) -> Message:
    """The request message a JSON body holds (an empty body is the empty message).

    Args:
        body: the request body, UTF-8 JSON.
        request_type: the rpc's request message class.
        max_rows: the server's per-request row limit (``--max-rows``); a Tensor given as an array of
            more rows is refused before it is converted. None: no limit here.

    Returns:
        The parsed message.

    Raises:
        MalformedRequest: the body is not JSON, not an object, or not a ``request_type`` message
            (an unknown field, a value of the wrong type), with protobuf's or JSON's reason.
        InvalidInput: a Tensor given as an array that is not a rectangular array of numbers, or has
            more than ``max_rows`` rows.
    """
    name = request_type.DESCRIPTOR.full_name
    if not body.strip():
        document = {}
    else:
        try:
            document = json.loads(body, object_pairs_hook=_unique_keys)
        except RecursionError:
            raise MalformedRequest("the request body is not valid JSON: it is nested too deeply") from None
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise MalformedRequest(f"the request body is not valid JSON: {_detail(error)}") from None
    if not isinstance(document, dict):
        raise MalformedRequest(
            f"the request body must be a JSON object (a {name} message), not {type(document).__name__}"
        )
    arrays_to_tensors(document, request_type.DESCRIPTOR, max_rows)
    message = request_type()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        raise MalformedRequest(f"the request body is not a {name} message: {_detail(error)}") from None
    return message


def _fields_by_key(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by the names its JSON may use: lowerCamelCase and the proto's own."""
    return {key: field for field in descriptor.fields for key in (field.json_name, field.name)}


def arrays_to_tensors(document: dict, descriptor: Descriptor, max_rows: int | None = None) -> None:
    """Replace, in place, every Tensor given as a JSON array by the mapping's form of the same values.

    Raises:
        InvalidInput: an array of more than ``max_rows`` rows, or one that is ragged, holds something
            other than numbers, or a number beyond float64.
    """
    fields = _fields_by_key(descriptor)
    for key, value in document.items():
        field = fields.get(key)
        if field is None or field.message_type is None:
            continue  # not a message field (or unknown: the parse says so)
        if field.message_type.full_name == TENSOR and isinstance(value, list):
            document[key] = tensor_document(value, field.name, max_rows)
        elif isinstance(value, dict):
            arrays_to_tensors(value, field.message_type, max_rows)
        elif isinstance(value, list):  # a repeated message field
            for item in value:
                if isinstance(item, dict):
                    arrays_to_tensors(item, field.message_type, max_rows)


def _check_numbers(values: list, field: str) -> None:
    for value in values:
        if type(value) is list:
            _check_numbers(value, field)
        elif type(value) not in (int, float):  # bool is not a number here, nor a string of one
            raise InvalidInput(
                f"{field}: a tensor given as an array must hold only numbers, found {json.dumps(value)[:40]}; "
                "send nested arrays of numbers, or the Tensor form {shape, data (base64), dtype}"
            )


def tensor_document(values: list, field: str, max_rows: int | None = None) -> dict:
    """The mapping's Tensor (float64 bytes, base64) of a nested array of numbers.

    Raises:
        InvalidInput: see ``arrays_to_tensors``.
    """
    if max_rows is not None and len(values) > max_rows and isinstance(values[0], list):
        # Rows (a nested array) only: a flat array is no batch, and the shape check says why.
        # The text of service/plane/rows.py's check_shape, which a Tensor of base64 bytes meets.
        raise InvalidInput(f"{field}: {len(values)} rows exceeds the limit of {max_rows} per request")
    _check_numbers(values, field)
    try:
        array = np.array(values, dtype="<f8")
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{field}: the array is not rectangular (rows of different lengths, or numbers and arrays side by side) "
            "or holds a number beyond float64; send one array of rows of equal length"
        ) from None
    data = json_format.MessageToDict(vae_pb2.Tensor(data=array.tobytes()))
    return {"shape": list(array.shape), "data": data.get("data", ""), "dtype": FLOAT64_NAME}


def tensor_values(tensor: vae_pb2.Tensor) -> list:
    """A Tensor's values as a nested list (its shape is the nesting)."""
    array = np.frombuffer(tensor.data, WIRE_TYPES[tensor.dtype]).reshape(tuple(tensor.shape))
    if np.isfinite(array).all():
        return array.tolist()  # each float32 as the float64 that holds it exactly
    return np.vectorize(lambda value: NON_FINITE.get(str(value), float(value)), otypes=[object])(
        array.astype("<f8")
    ).tolist()


def _tensors_to_arrays(message: Message, document: dict) -> None:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.full_name == TENSOR:
            document[field.json_name] = tensor_values(value)
        elif field.is_repeated:
            for item, item_document in zip(value, document[field.json_name], strict=True):
                _tensors_to_arrays(item, item_document)
        else:
            _tensors_to_arrays(value, document[field.json_name])


def reply_document(message: Message, arrays: bool = False) -> dict:
    """A reply in the proto3 JSON mapping, every field written (zeros and empty lists too).

    Args:
        message: the reply.
        arrays: write each Tensor as a nested array of numbers rather than {shape, data, dtype}.
    """
    document = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    if arrays:
        _tensors_to_arrays(message, document)
    return document


def reply_json(message: Message, arrays: bool = False) -> bytes:
    """``reply_document`` as UTF-8 JSON (orjson writes each float as the shortest text that parses back to it)."""
    return orjson.dumps(reply_document(message, arrays))
