"""What the OpenAPI document (service/rest/openapi.py) says of the Open Inference Protocol's REST routes.

Their JSON is not protobuf's mapping but the protocol's own (KServe v2, Triton's extensions), built
by service/rest/codec.py and the plane's ``Inference``; so it is described here, one entry per
route, keyed by (method, path) as service/rest/server.py adds them. The paths in the document come
from the live router: a route with no entry here is marked undocumented, which the tests refuse.
"""

from dataclasses import dataclass

REF = "#/components/schemas/"
OIP_MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")  # as server.py's MODEL_PATHS
BINARY_HEADER = "Inference-Header-Content-Length"


def _ref(name: str) -> dict:
    return {"$ref": REF + name}


def _object(properties: dict, required: tuple[str, ...] = (), description: str = "", closed: bool = False) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    if closed:
        schema["additionalProperties"] = False
    return schema


STRING, BOOLEAN, INTEGER = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
STRINGS = {"type": "array", "items": STRING}
SHAPE = {"type": "array", "items": {"type": "integer", "minimum": -1}}
DURATION = _object({"count": INTEGER, "ns": INTEGER}, ("count", "ns"), "Calls counted and their total time (ns).")
PARAMETERS = {
    "type": "object",
    "description": "Named parameters; each value a number, a string or a boolean.",
    "additionalProperties": {"type": ["number", "string", "boolean"]},
}
TENSOR_METADATA = _object({"name": STRING, "datatype": STRING, "shape": SHAPE}, ("name", "datatype", "shape"))
CONFIG_TENSOR = _object(
    {"name": STRING, "data_type": STRING, "dims": SHAPE}, ("name", "data_type"), "Triton's tensor configuration."
)
NUMBERS = {"$ref": REF + "NestedNumbers"}  # from service/rest/openapi_proto.py

OIP_SCHEMAS: dict[str, dict] = {
    "Error": _object({"error": STRING}, ("error",), "What was wrong and what to change."),
    "oip.Live": _object({"live": BOOLEAN}, ("live",)),
    "oip.Ready": _object({"ready": BOOLEAN}, ("ready",)),
    "oip.ServerMetadata": _object({"name": STRING, "version": STRING, "extensions": STRINGS}, ("name", "version")),
    "oip.TensorMetadata": TENSOR_METADATA,
    "oip.ModelMetadata": _object(
        {
            "name": STRING,
            "versions": STRINGS,
            "platform": STRING,
            "inputs": {"type": "array", "items": _ref("oip.TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("oip.TensorMetadata")},
        },
        ("name", "platform", "inputs", "outputs"),
    ),
    "oip.ModelReady": _object(
        {"name": STRING, "ready": BOOLEAN, "error": STRING},
        ("name", "ready"),
        "Whether the model version serves; ``error`` says why not when the model is unknown.",
    ),
    "oip.ModelConfig": _object(
        {
            "name": STRING,
            "platform": STRING,
            "max_batch_size": INTEGER,
            "input": {"type": "array", "items": CONFIG_TENSOR},
            "output": {"type": "array", "items": CONFIG_TENSOR},
            "dynamic_batching": _object({"max_queue_delay_microseconds": INTEGER}),
            "backend": STRING,
        },
        ("name", "platform", "input", "output"),
        "Triton's model configuration extension, with Triton's field names.",
    ),
    "oip.Parameters": PARAMETERS,
    "oip.RequestInput": _object(
        {
            "name": STRING,
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "description": "FP32 (or FP64)."},
            "parameters": _ref("oip.Parameters"),
            "data": {**NUMBERS, "description": "The values, row-major, flat or nested."},
        },
        ("name", "shape", "datatype"),
        "One input tensor: its values in 'data', or, with the binary data extension, its byte count in the "
        "parameter binary_data_size and its bytes after the JSON.",
        closed=True,
    ),
    "oip.RequestOutput": _object({"name": STRING, "parameters": _ref("oip.Parameters")}, ("name",), closed=True),
    "oip.InferenceRequest": _object(
        {
            "id": STRING,
            "model_name": STRING,
            "model_version": STRING,
            "parameters": _ref("oip.Parameters"),
            "inputs": {"type": "array", "items": _ref("oip.RequestInput")},
            "outputs": {"type": "array", "items": _ref("oip.RequestOutput")},
        },
        ("inputs",),
        "An inference request; the path names the model (model_name and model_version in the body are ignored).",
        closed=True,
    ),
    "oip.ResponseOutput": _object(
        {
            "name": STRING,
            "datatype": STRING,
            "shape": {"type": "array", "items": INTEGER},
            "data": {"type": "array", "items": {"type": "number"}, "description": "Flat, row-major."},
            "parameters": _ref("oip.Parameters"),
        },
        ("name", "datatype", "shape"),
    ),
    "oip.InferenceResponse": _object(
        {
            "model_name": STRING,
            "model_version": STRING,
            "id": STRING,
            "parameters": _ref("oip.Parameters"),
            "outputs": {"type": "array", "items": _ref("oip.ResponseOutput")},
        },
        ("model_name", "model_version", "outputs"),
    ),
    "oip.ModelStat": _object(
        {
            "name": STRING,
            "version": STRING,
            "last_inference": {"type": "integer", "description": "Milliseconds since the epoch."},
            "inference_count": INTEGER,
            "execution_count": INTEGER,
            "inference_stats": {"type": "object", "additionalProperties": DURATION},
            "response_stats": {"type": "object"},
            "batch_stats": {
                "type": "array",
                "items": _object(
                    {
                        "batch_size": INTEGER,
                        "compute_input": DURATION,
                        "compute_infer": DURATION,
                        "compute_output": DURATION,
                    },
                    ("batch_size",),
                ),
            },
            "memory_usage": {"type": "array"},
        },
        ("name", "version", "inference_count", "execution_count", "inference_stats"),
        "Triton's statistics of one model version ($model_stat).",
    ),
    "oip.ModelStatistics": _object(
        {"model_stats": {"type": "array", "items": _ref("oip.ModelStat")}}, ("model_stats",)
    ),
    "oip.RepositoryIndexRequest": _object(
        {"ready": {**BOOLEAN, "description": "Only the ready models (all are: every version served is READY)."}},
        description="Triton's repository index request; the body may also be empty.",
        closed=True,
    ),
    "oip.RepositoryIndex": {
        "type": "array",
        "description": "Triton's repository index: one entry per Open Inference Protocol model version.",
        "items": _object(
            {
                "name": {**STRING, "description": "<bundle>-encoder, <bundle>-decoder or <bundle>-elbo."},
                "version": STRING,
                "state": {"type": "string", "enum": ["READY"]},
                "reason": STRING,
            },
            ("name", "version", "state"),
        ),
    },
}


@dataclass(frozen=True)
class OipOperation:
    """One OIP route in the document.

    Attributes:
        operation_id: unique in the document.
        summary: one line.
        reply: the schema of the 200 reply.
        request: the schema of the JSON body, or "" for none.
        refusal: the schema of the 400 reply when "not ready" is answered with it, as the protocol's ready
            routes do; "" for the usual error.
        open: served without a token (the health probes).
        binary: takes and gives the binary data extension's bodies too (JSON, then raw tensor bytes).
    """

    operation_id: str
    summary: str
    reply: str
    request: str = ""
    refusal: str = ""
    open: bool = False
    binary: bool = False


def _model_operations() -> dict[tuple[str, str], OipOperation]:
    operations = {}
    for path in OIP_MODEL_PATHS:
        of = "Version" if "{version}" in path else ""
        operations |= {
            ("GET", path): OipOperation(f"ModelMetadata{of}", "The model's inputs and outputs.", "oip.ModelMetadata"),
            ("GET", path + "/ready"): OipOperation(
                f"ModelReady{of}",
                "Whether the model serves (400 when not).",
                "oip.ModelReady",
                refusal="oip.ModelReady",
            ),
            ("GET", path + "/config"): OipOperation(
                f"ModelConfig{of}", "Triton's model configuration.", "oip.ModelConfig"
            ),
            ("POST", path + "/infer"): OipOperation(
                f"ModelInfer{of}",
                "Run the model on input tensors.",
                "oip.InferenceResponse",
                "oip.InferenceRequest",
                binary=True,
            ),
            ("GET", path + "/stats"): OipOperation(
                f"ModelStatistics{of or 'Model'}", "Triton's statistics of the model's versions.", "oip.ModelStatistics"
            ),
        }
    return operations


OIP_OPERATIONS: dict[tuple[str, str], OipOperation] = {
    ("GET", "/v2/health/live"): OipOperation("ServerLive", "Whether the server is live.", "oip.Live", open=True),
    ("GET", "/v2/health/ready"): OipOperation(
        "ServerReady", "Whether the server serves (400 when not).", "oip.Ready", refusal="oip.Ready", open=True
    ),
    ("GET", "/v2"): OipOperation("ServerMetadata", "The server's name, version and extensions.", "oip.ServerMetadata"),
    ("POST", "/v2/repository/index"): OipOperation(
        "RepositoryIndex",
        "Triton's model repository index: every model version served, and its state.",
        "oip.RepositoryIndex",
        "oip.RepositoryIndexRequest",
    ),
    ("GET", "/v2/models/stats"): OipOperation(
        "ModelStatistics", "Triton's statistics of every model version.", "oip.ModelStatistics"
    ),
    **_model_operations(),
}
