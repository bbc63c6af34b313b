"""The HTTP routes of ``vae.v1.VaeService`` (issue 24): one table, read by the REST front that serves
them (service/rest/vae_http.py) and by the OpenAPI document that describes them
(service/rest/openapi.py), so the two cannot drift apart.

The mapping follows grpc-gateway's and Envoy's transcoders: a unary rpc is ``POST`` with the request
message as the JSON body (proto3 JSON mapping), the model named in the path; the model-less reads
are ``GET``. Custom verbs are lowerCamelCase after a colon, as in Google's API design guide. Each path
also exists under ``/versions/{version}``. GetMonitoring also has ``GET /v1/monitoring``, for every model.
"""

from dataclasses import dataclass

from google.protobuf.message import Message

from vae_serve.api.v1 import vae_pb2


@dataclass(frozen=True)
class VaeRoute:
    """One rpc over HTTP.

    Attributes:
        rpc: the method's name in ``vae.v1.VaeService`` (also its metric and span label).
        http_method: "POST" (a JSON body holds the request message) or "GET" (no body).
        paths: aiohttp path patterns: the model by name, then by name and version.
        request: the request message class; the path's name and version fill its ``model``.
        response: the reply message class (one per line for a streaming rpc).
        streaming: a server-streaming rpc (JSON Lines, or server-sent events on ``Accept``).
    """

    rpc: str
    http_method: str
    paths: tuple[str, ...]
    request: type[Message]
    response: type[Message]
    streaming: bool = False


MODEL_PATH = "/v1/models/{name}"
VERSION_PATH = "/v1/models/{name}/versions/{version}"
MONITORING_PATH = "/v1/monitoring"  # GetMonitoring of every model: a path without a model


def _post(rpc: str, verb: str, request: type[Message], response: type[Message], streaming: bool = False) -> VaeRoute:
    return VaeRoute(rpc, "POST", (f"{MODEL_PATH}:{verb}", f"{VERSION_PATH}:{verb}"), request, response, streaming)


def _get(rpc: str, suffix: str, request: type[Message], response: type[Message]) -> VaeRoute:
    return VaeRoute(rpc, "GET", (MODEL_PATH + suffix, VERSION_PATH + suffix), request, response)


VAE_ROUTES: tuple[VaeRoute, ...] = (
    _post("Encode", "encode", vae_pb2.EncodeRequest, vae_pb2.EncodeResponse),
    _post("Decode", "decode", vae_pb2.DecodeRequest, vae_pb2.DecodeResponse),
    _post("Sample", "sample", vae_pb2.SampleRequest, vae_pb2.SampleResponse),
    _post("SampleStream", "sampleStream", vae_pb2.SampleRequest, vae_pb2.SampleResponse, streaming=True),
    _post("Elbo", "elbo", vae_pb2.ElboRequest, vae_pb2.ElboResponse),
    _post("ScoreAnomaly", "scoreAnomaly", vae_pb2.ScoreAnomalyRequest, vae_pb2.ScoreAnomalyResponse),
    _post("Interpolate", "interpolate", vae_pb2.InterpolateRequest, vae_pb2.InterpolateResponse),
    _get("GetModelInfo", "/info", vae_pb2.GetModelInfoRequest, vae_pb2.ModelInfo),
    # GET /v1/monitoring: every model's monitors (GetMonitoring with no model).
    VaeRoute(
        "GetMonitoring",
        "GET",
        (MODEL_PATH + "/monitoring", VERSION_PATH + "/monitoring", MONITORING_PATH),
        vae_pb2.GetMonitoringRequest,
        vae_pb2.MonitoringResponse,
    ),
)
