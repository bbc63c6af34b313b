"""The OpenAPI 3.1 document of the REST port, served at ``GET /openapi.json``.

It is generated, not kept by hand: its paths are the routes the live aiohttp router serves (method
and path; aiohttp's ``{name}`` is OpenAPI's path template syntax already), so every route is listed
and nothing else is. The VaeService routes take their operations from the table in
service/rest/vae_routes.py and their schemas from the protobuf descriptors of their messages
(service/rest/openapi_proto.py); the Open Inference Protocol's routes from the table in
service/rest/openapi_oip.py. A route in neither table is listed with ``x-undocumented: true``
(the tests refuse that) rather than breaking the document for everyone.

``/openapi.json`` lists itself: it is a route the server serves, and clients that browse the
document find where it came from. It takes the same bearer token as every route but the health
probes (service/rest/server.py), so the document declares the bearer scheme globally and the two
health routes opt out, as do the explorer page's two routes with ``--ui`` (service/rest/ui_routes.py;
its folder of static files is no API operation and is not listed).
"""

import importlib.metadata
import logging
import re
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from vae_serve.service.rest.openapi_oip import BINARY_HEADER, OIP_OPERATIONS, OIP_SCHEMAS, OipOperation
from vae_serve.service.rest.openapi_proto import REF, ProtoSchemas
from vae_serve.service.rest.ui_routes import UI_OPERATIONS
from vae_serve.service.rest.vae_routes import VAE_ROUTES, VaeRoute

log = logging.getLogger(__name__)
OPENAPI_PATH = "/openapi.json"
OPENAPI_METHOD = "OpenApi"  # the route's label in metrics and spans
JSON = "application/json"
UNDOCUMENTED = "x-undocumented"
STATUS = "google.rpc.Status"
OIP_TAG, VAE_TAG, DOCUMENT_TAG = "Open Inference Protocol", "VaeService", "Document"
PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
ERRORS = {
    "400": "The request is not valid; the message says what was wrong.",
    "401": "No valid bearer token (when the server is started with tokens).",
    "404": "No such model or version.",
    "413": "The request body is larger than the server's limit.",
    "429": "Too many calls at once, or a full queue: retry with backoff.",
    "503": "Not serving yet, or shutting down: retry (on another replica).",
    "504": "The call's deadline passed before it ran.",
    "default": "An internal error; the server's log has the details.",
}
STATUS_SCHEMA = {
    "type": "object",
    "description": "The error of a VaeService route: google.rpc.Status in the proto3 JSON mapping.",
    "properties": {
        "code": {"type": "integer", "description": "The gRPC status code (e.g. 3, INVALID_ARGUMENT)."},
        "message": {"type": "string", "description": "What was wrong and what to change."},
        "details": {"type": "array", "items": {"type": "object", "properties": {"@type": {"type": "string"}}}},
    },
    "required": ["code", "message"],
}
PARAMETER_TEXT = {
    ("/v2", "name"): "An Open Inference Protocol model: <bundle>-encoder, <bundle>-decoder or <bundle>-elbo.",
    ("/v1", "name"): "The model's name, as GetModelInfo reports it.",
    ("/v2", "version"): 'A version the server holds, e.g. "1".',
    ("/v1", "version"): 'A version the server holds, e.g. "1".',
}
VAE_PARAMETERS = [  # service/rest/vae_http.py reads them
    {
        "name": "tensors",
        "in": "query",
        "schema": {"type": "string", "enum": ["base64", "array"], "default": "base64"},
        "description": "How the reply writes its Tensors: the mapping's {shape, data (base64), dtype}, or nested "
        "JSON arrays of numbers.",
    },
    {
        "name": "Grpc-Timeout",
        "in": "header",
        "schema": {"type": "string", "pattern": "^[0-9]{1,8}[HMSmun]$"},
        "description": "The call's deadline, as gRPC's header writes it: up to 8 digits and a unit, e.g. 500m.",
    },
]
VAE_OPERATIONS: dict[tuple[str, str], VaeRoute] = {
    (route.http_method, path): route for route in VAE_ROUTES for path in route.paths
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def served_routes(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    """(method, path) of every route ``router`` serves, in the order added, without the HEAD twin
    aiohttp adds to each GET (a HEAD is a GET without its body, as HTTP says), and without folders of
    static files (a tree of files is no API operation)."""
    routes = [
        (route.method, route.resource.canonical)
        for route in router.routes()
        if route.resource is not None and not isinstance(route.resource, web.StaticResource)
    ]
    gets = {path for method, path in routes if method == "GET"}
    return [(method, path) for method, path in routes if not (method == "HEAD" and path in gets)]


def openapi_document(router: web.UrlDispatcher) -> dict:
    """The OpenAPI 3.1 document of the routes ``router`` serves.

    Args:
        router: the application's router, with all its routes added.

    Returns:
        The document, as JSON-ready dicts and lists.
    """
    proto = ProtoSchemas()
    paths: dict[str, dict] = {}
    for method, path in served_routes(router):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, proto)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vae-serve",
            "version": importlib.metadata.version("vae-serve"),
            "summary": "Variational Autoencoders served over HTTP.",
            "description": "Two HTTP APIs on one port: the Open Inference Protocol (/v2; KServe v2 and Triton's "
            "REST binding), and vae.v1.VaeService over HTTP/JSON (/v1; the request and reply messages in the "
            "proto3 JSON mapping, as grpc-gateway transcodes them). Generated from the server's routes and "
            "its protobuf descriptors.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": OIP_TAG, "description": "Tensors in, tensors out, as every OIP server speaks it."},
            {"name": VAE_TAG, "description": "The typed VAE API: the rpcs of vae.v1.VaeService."},
            {"name": DOCUMENT_TAG, "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "schemas": {**proto.schemas, **OIP_SCHEMAS, STATUS: STATUS_SCHEMA},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the server's tokens (--auth-tokens-file, VAE_AUTH_TOKENS); needed "
                    "only when the server has tokens.",
                }
            },
        },
    }


def add_openapi_route(app: web.Application, call: Callable[[str, Handler], Handler]) -> None:
    """Serve the document of ``app``'s routes at ``GET /openapi.json``.

    Args:
        app: the application; the document, made at the first request, lists the routes it has then.
        call: wraps the handler as every other route's (the front's token check, metrics and tracing),
            given the method label and the handler.
    """
    made: list[bytes] = []  # the router is frozen once the app runs: one document for its lifetime

    async def serve(request: web.Request) -> web.Response:
        if not made:
            made.append(orjson.dumps(openapi_document(request.app.router)))
        return web.Response(body=made[0], content_type=JSON)

    app.router.add_get(OPENAPI_PATH, call(OPENAPI_METHOD, serve))


def _operation(method: str, path: str, proto: ProtoSchemas) -> dict:
    if (method, path) in VAE_OPERATIONS:
        return _vae_operation(VAE_OPERATIONS[method, path], path, proto)
    if (method, path) in OIP_OPERATIONS:
        return _oip_operation(OIP_OPERATIONS[method, path], path)
    if (method, path) in UI_OPERATIONS:  # the explorer page (--ui): open, as its files are
        return UI_OPERATIONS[method, path]
    if (method, path) == ("GET", OPENAPI_PATH):
        return {
            "operationId": OPENAPI_METHOD,
            "tags": [DOCUMENT_TAG],
            "summary": "This OpenAPI document.",
            "responses": {"200": _content("The document.", {"type": "object"}), **_errors("Error", ("401",))},
        }
    log.warning("the route %s %s has no OpenAPI description; add it to service/rest/openapi_oip.py", method, path)
    return {
        UNDOCUMENTED: True,
        "summary": "Not described yet.",
        "parameters": _path_parameters(path),
        "responses": {"default": {"description": "Not described."}},
    }


def _vae_operation(route: VaeRoute, path: str, proto: ProtoSchemas) -> dict:
    reply = proto.add(route.response.DESCRIPTOR, request=False)
    if route.streaming:
        last = {"type": "object", "properties": {"error": {"$ref": REF + STATUS}}, "required": ["error"]}
        line = {"anyOf": [reply, last]}
        events = {"type": "string", "description": "Server-sent events (Accept: text/event-stream): the same lines."}
        content = {"application/x-ndjson": {"schema": line}, "text/event-stream": {"schema": events}}
        success = {
            "description": "The reply messages, one JSON object per line. A failure after the first message ends "
            'the stream with a line {"error": google.rpc.Status}.',
            "content": content,
        }
    else:
        success = _content("The reply message.", reply)
    operation = {
        "operationId": route.rpc + _scope(path),
        "tags": [VAE_TAG],
        "summary": f"vae.v1.VaeService/{route.rpc}",
        "description": f"The rpc {route.rpc} over HTTP/JSON. "
        + (
            "The path names the model; a request body whose model field names another is refused."
            if "{name}" in path
            else "No model in the path: every model the server holds."
        ),
        "parameters": [*_path_parameters(path), *VAE_PARAMETERS],
        "responses": {"200": success, **_errors(STATUS, ("400", "401", "404", "413", "429", "503", "504"))},
    }
    if route.http_method == "POST":
        request = proto.add(route.request.DESCRIPTOR, request=True)
        operation["requestBody"] = {
            "description": f"The request message ({route.request.DESCRIPTOR.full_name}).",
            "content": {JSON: {"schema": request}},
        }
    return operation


def _oip_operation(entry: OipOperation, path: str) -> dict:
    responses = {"200": _content("The reply.", {"$ref": REF + entry.reply})}
    errors = ("400", "404", "429", "503") if entry.open else ("400", "401", "404", "413", "429", "503", "504")
    responses |= _errors("Error", errors)
    if entry.refusal:
        responses["400"] = _content("Not ready.", {"$ref": REF + entry.refusal})
    operation = {
        "operationId": entry.operation_id,
        "tags": [OIP_TAG],
        "summary": entry.summary,
        "parameters": _path_parameters(path),
        "responses": responses,
    }
    if entry.open:
        operation["security"] = []
    if entry.request:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": {"$ref": REF + entry.request}}}}
    if entry.binary:
        operation["parameters"].append(
            {
                "name": BINARY_HEADER,
                "in": "header",
                "schema": {"type": "integer", "minimum": 0},
                "description": "The binary data extension: the JSON's length in bytes; raw tensor bytes follow it.",
            }
        )
        raw = {"type": "string", "format": "binary", "description": "JSON, then the tensors' little-endian bytes."}
        operation["requestBody"]["content"]["application/octet-stream"] = {"schema": raw}
        responses["200"]["content"]["application/octet-stream"] = {"schema": raw}
        responses["200"]["headers"] = {
            BINARY_HEADER: {
                "schema": {"type": "integer"},
                "description": "With binary outputs: the JSON's length; the outputs' bytes follow it.",
            }
        }
    return operation


def _scope(path: str) -> str:
    """What an operation id adds to its rpc's name for one of the rpc's paths: ids are unique."""
    if "{version}" in path:
        return "Version"
    return "" if "{name}" in path else "AllModels"


def _path_parameters(path: str) -> list[dict]:
    api = path[:3]
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": PARAMETER_TEXT.get((api, name), name),
        }
        for name in PATH_PARAMETER.findall(path)
    ]


def _content(description: str, schema: dict) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(schema: str, statuses: tuple[str, ...]) -> dict:
    return {status: _content(ERRORS[status], {"$ref": REF + schema}) for status in (*statuses, "default")}
