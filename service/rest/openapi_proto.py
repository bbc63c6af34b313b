"""JSON Schemas of protobuf messages, read from their descriptors, as the proto3 JSON mapping writes
them (https://protobuf.dev/programming-guides/json/): the schemas of the VaeService routes in the
OpenAPI document (service/rest/openapi.py).

The mapping: property names are each field's ``json_name`` (lowerCamelCase); 64-bit integers are
decimal strings (JavaScript's numbers lose digits past 2^53); bytes are base64 strings; floats and
doubles are numbers, or "NaN", "Infinity", "-Infinity"; enums are their value names; repeated
fields are arrays; messages are objects. Every field may be left out (it then has its default), so
no property is required. The .proto's comments are not in the generated descriptors, so each
schema names its message and field instead; protos/vae/v1/vae.proto says the rest.
"""

from collections.abc import Iterable

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

REF = "#/components/schemas/"
TENSOR = "vae.v1.Tensor"
NESTED_NUMBERS = "NestedNumbers"  # a Tensor given as a (nested) JSON array, in requests
NESTED_VALUES = "NestedValues"  # a Tensor written as a (nested) JSON array, in replies
JSON_DOUBLE = "JsonDouble"
INT32_LIMIT, UINT32_LIMIT = 2**31, 2**32
DECIMAL = "a decimal string (a JSON number is accepted on input)"

_INT32 = {"type": "integer", "format": "int32", "minimum": -INT32_LIMIT, "maximum": INT32_LIMIT - 1}
_UINT32 = {"type": "integer", "minimum": 0, "maximum": UINT32_LIMIT - 1}
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$", "description": "int64: " + DECIMAL}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$", "description": "uint64: " + DECIMAL}
_SCALARS: dict[int, dict] = {
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_DOUBLE: {"$ref": REF + JSON_DOUBLE},
    FieldDescriptor.TYPE_FLOAT: {"$ref": REF + JSON_DOUBLE},
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
}

# Schemas every document that uses this module's schemas needs.
SHARED_SCHEMAS: dict[str, dict] = {
    JSON_DOUBLE: {
        "description": "A float or double in the proto3 JSON mapping: a number, or one of the strings for the "
        "values JSON has no number for.",
        "anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}],
    },
    NESTED_NUMBERS: {
        "description": "A tensor as a JSON array of numbers, nested one level per dimension, row-major "
        "(e.g. [[0, 0.5], [1, 0.25]] for shape [2, 2]); the server reads its shape from the nesting.",
        "type": "array",
        "items": {"anyOf": [{"type": "number"}, {"$ref": REF + NESTED_NUMBERS}]},
    },
    NESTED_VALUES: {
        "description": "A tensor as a JSON array of its values, nested one level per dimension, row-major; a "
        "value that is not finite is written as the mapping writes doubles.",
        "type": "array",
        "items": {"anyOf": [{"$ref": REF + JSON_DOUBLE}, {"$ref": REF + NESTED_VALUES}]},
    },
}


def _explicit_presence(file: FileDescriptor) -> set[str]:
    """Full names of the fields declared ``optional`` in proto3: their one-field oneofs are synthetic,
    not oneofs a reader should see. Only the file's own descriptor proto says which they are."""
    proto = descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)
    found: set[str] = set()

    def visit(messages: Iterable[descriptor_pb2.DescriptorProto], scope: str) -> None:
        for message in messages:
            name = f"{scope}.{message.name}"
            found.update(f"{name}.{field.name}" for field in message.field if field.proto3_optional)
            visit(message.nested_type, name)

    visit(proto.message_type, proto.package)
    return found


class ProtoSchemas:
    """The schemas of messages and of every message and enum they hold, keyed by full name.

    A Tensor field is a Tensor object or a nested JSON array (service/rest/vae_json.py): of numbers in
    a message reached from a request (``add(..., request=True)``), of numbers or the mapping's
    strings for non-finite values in a reply.
    """

    def __init__(self) -> None:
        self.schemas: dict[str, dict] = dict(SHARED_SCHEMAS)
        self._presence: dict[str, set[str]] = {}  # file name -> its proto3 optional fields
        self._sides: dict[str, bool] = {}  # message -> whether its schema is the request form

    def add(self, message: Descriptor, request: bool) -> dict:
        """The ``$ref`` of ``message``'s schema, made (with those of the types it holds) if new.

        Raises:
            ValueError: a message with Tensor fields is reached from both a request and a reply,
                whose Tensor forms differ.
        """
        name = message.full_name
        if name in self._sides:
            if self._sides[name] != request and _has_tensor_field(message):
                raise ValueError(f"{name} is in both a request and a reply; its Tensor fields need one form")
            return {"$ref": REF + name}
        self._sides[name] = request
        self.schemas[name] = {}  # reserved first: a message may hold itself
        self.schemas[name] = self._message(message, request)
        return {"$ref": REF + name}

    def _message(self, message: Descriptor, request: bool) -> dict:
        properties = {field.json_name: self._field(field, request) for field in message.fields}
        schema = {"type": "object", "description": f"The protobuf message {message.full_name}."}
        oneofs = [oneof for oneof in message.oneofs if not self._synthetic(oneof)]
        if oneofs:
            groups = "; ".join(
                f"{oneof.name}: {', '.join(field.json_name for field in oneof.fields)}" for oneof in oneofs
            )
            schema["description"] += f" Set at most one field of each oneof ({groups})."
        schema["properties"] = properties
        return schema

    def _synthetic(self, oneof) -> bool:
        return len(oneof.fields) == 1 and oneof.fields[0].full_name in self._presence_of(oneof.fields[0])

    def _presence_of(self, field: FieldDescriptor) -> set[str]:
        file = field.containing_type.file
        if file.name not in self._presence:
            self._presence[file.name] = _explicit_presence(file)
        return self._presence[file.name]

    def _field(self, field: FieldDescriptor, request: bool) -> dict:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value, request)}
        schema = self._single(field, request)
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        notes = [f"Field {field.name} ({field.number})"]
        if field.full_name in self._presence_of(field):
            notes.append("optional: leave it out for unset, which differs from its zero value")
        elif field.containing_oneof is not None:
            notes.append(f"one of the oneof {field.containing_oneof.name}")
        return {**schema, "description": "; ".join([*notes, schema.get("description", "")]).rstrip("; ") + "."}

    def _single(self, field: FieldDescriptor, request: bool) -> dict:
        """The schema of one value of ``field`` (an item, when it is repeated)."""
        if field.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            ref = self.add(field.message_type, request)
            if field.message_type.full_name == TENSOR:
                return {"oneOf": [ref, {"$ref": REF + (NESTED_NUMBERS if request else NESTED_VALUES)}]}
            return ref
        return dict(_SCALARS[field.type])


def _has_tensor_field(message: Descriptor) -> bool:
    return any(field.message_type is not None and field.message_type.full_name == TENSOR for field in message.fields)
