"""The OpenAPI document at ``GET /openapi.json`` (issue 24): valid by openapi-spec-validator, every
``$ref`` resolves, its paths are exactly the routes the server serves, every route it lists answers
a real call with what it documents, and real replies validate against its schemas.
"""

import asyncio
import json
import math
import urllib.error
import urllib.request

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate

from tests.server_process import start_server
from vae_serve.service import server
from vae_serve.service.rest.vae_routes import VAE_ROUTES
from vae_serve.service.settings import Settings

MODEL, VERSION = "digits", "1"  # the digits bundle: its VaeService name, and its only version
OIP_MODEL = "digits-decoder"  # the Open Inference Protocol's name of its decoder
TOKEN = "openapi-9c41e2"
# What a minimal valid request needs beyond its tensors (a zero count is refused).
NEEDS = {"Sample": {"n": 2}, "SampleStream": {"n": 3, "chunkSize": 2}, "Interpolate": {"steps": 3}}
RPCS = {(route.http_method, path): route.rpc for route in VAE_ROUTES for path in route.paths}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def http(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    """(status, content type, body bytes) of one call."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(request, timeout=30) as reply:
            return reply.status, reply.headers.get_content_type(), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read()


@pytest.fixture(scope="module")
def rest(digits_bundle):
    process = start_server("--bundle", str(digits_bundle), "--http-port", "0")
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def document(rest) -> dict:
    status, content_type, body = http(rest.http_url + "/openapi.json")
    assert (status, content_type) == (200, "application/json"), body
    return json.loads(body)


@pytest.fixture(scope="module")
def widths(rest) -> dict[str, int]:
    """Values per row of an input x and of a latent z, from the protocol's model metadata."""
    found = {}
    for part, name in (("encoder", "x"), ("decoder", "z")):
        metadata = json.loads(http(f"{rest.http_url}/v2/models/{MODEL}-{part}")[2])
        found[name] = math.prod(metadata["inputs"][0]["shape"][1:])
    return found


def checker(document: dict, schema: dict) -> jsonschema.Draft202012Validator:
    """A validator of ``schema``, whose ``#/components/...`` references resolve in ``document``."""
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def reply_schema(operation: dict, status: str, content_type: str) -> dict:
    return operation["responses"][status]["content"][content_type]["schema"]


def vae_body(rpc: str, widths: dict[str, int]) -> dict:
    """A minimal valid request of ``rpc``: its counts, and one row of each Tensor (the first of a oneof)."""
    body, oneofs = dict(NEEDS.get(rpc, {})), set()
    request = next(route.request for route in VAE_ROUTES if route.rpc == rpc)
    for field in request.DESCRIPTOR.fields:
        if field.message_type is None or field.message_type.full_name != "vae.v1.Tensor":
            continue
        if field.containing_oneof is not None:
            if field.containing_oneof.name in oneofs:
                continue
            oneofs.add(field.containing_oneof.name)
        body[field.json_name] = [[0.5] * widths[field.name[0]]]  # x..., or z...
    return body


def infer_body(widths: dict[str, int]) -> dict:
    return {"inputs": [{"name": "z", "shape": [1, widths["z"]], "datatype": "FP32", "data": [0.0] * widths["z"]}]}


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method.upper(), operation


def refs(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_document_is_valid_openapi_and_every_ref_resolves(document):
    validate(document)  # raises on anything not OpenAPI 3.1 (duplicate operation ids and dangling refs too)
    assert document["openapi"].startswith("3.1")
    found = refs(document)
    assert len(found) > 50
    for ref in set(found):
        assert ref.startswith("#/"), ref
        node = document
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    schemas = document["components"]["schemas"]
    # The proto3 JSON mapping: lowerCamelCase names, uint64 as strings, enums by name, Tensors also as arrays.
    request = schemas["vae.v1.ScoreAnomalyRequest"]["properties"]
    assert {"returnFeatureErrors", "falsePositiveRate", "x", "seed"} <= set(request)
    assert request["seed"]["type"] == "string" and "SCORE_TYPE_COMBINED" in request["score"]["enum"]
    assert {"$ref": "#/components/schemas/NestedNumbers"} in request["x"]["oneOf"]


def test_the_paths_are_the_routes_the_server_serves(digits_bundle):
    # A real server, started in this process so that its live router can be read: every route it has
    # is in the document it serves, and nothing else is (the HEAD aiohttp adds to each GET is the GET's).
    async def scenario() -> tuple[set, dict]:
        settings = Settings(bundle=digits_bundle, port=0, http_port=0, metrics_port=None)
        running = await server.start(settings)
        try:
            routes = {(route.method, route.resource.canonical) for route in running.http.runner.app.router.routes()}
            url = f"http://127.0.0.1:{running.http.port}/openapi.json"
            async with aiohttp.ClientSession() as session, session.get(url) as reply:
                assert reply.status == 200
                return routes, await reply.json()
        finally:
            await server.drain(running, 0)

    routes, document = asyncio.run(scenario())
    heads = {path for method, path in routes if method == "HEAD"}
    assert heads <= {path for method, path in routes if method == "GET"}
    listed = {(method, path) for path, method, _ in operations(document)}
    assert listed == {(method, path) for method, path in routes if method != "HEAD"}
    assert {route.rpc for route in VAE_ROUTES} <= {operation["operationId"] for _, _, operation in operations(document)}
    undocumented = [(method, path) for path, method, operation in operations(document) if "x-undocumented" in operation]
    assert not undocumented, "routes without an OpenAPI description (service/rest/openapi_oip.py)"


def test_every_listed_route_answers_as_documented(rest, document, widths):
    for path, method, operation in operations(document):
        model = OIP_MODEL if path.startswith("/v2") else MODEL
        url = rest.http_url + path.replace("{name}", model).replace("{version}", VERSION)
        body = None
        if method == "POST":
            if path.endswith("/infer"):
                body = infer_body(widths)
            elif path == "/v2/repository/index":
                body = {"ready": True}  # Triton's repository index request
            else:
                body = vae_body(RPCS[method, path], widths)
            body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
            checker(document, body_schema).validate(body)  # what the test sends is what the document allows
        status, content_type, payload = http(url, method, body)
        assert status == 200, (method, path, payload[:300])
        schema = reply_schema(operation, "200", content_type)  # KeyError: an undocumented content type
        lines = payload.splitlines() if content_type == "application/x-ndjson" else [payload]
        for line in lines:
            checker(document, schema).validate(json.loads(line))


def test_sample_and_model_metadata_replies_validate_against_their_schemas(rest, document):
    url = rest.http_url
    operation = document["paths"]["/v1/models/{name}:sample"]["post"]
    sample = checker(document, reply_schema(operation, "200", "application/json"))
    for form in ("base64", "array"):
        status, _, payload = http(f"{url}/v1/models/{MODEL}:sample?tensors={form}", "POST", {"n": 2, "seed": "7"})
        assert status == 200, payload
        reply = json.loads(payload)
        sample.validate(reply)
        assert reply["seed"] == "7" and isinstance(reply["x"], list if form == "array" else dict)
        assert not sample.is_valid({**reply, "seed": 7})  # uint64 is a string in the mapping: the schema says so
    metadata = checker(document, reply_schema(document["paths"]["/v2/models/{name}"]["get"], "200", "application/json"))
    reply = json.loads(http(f"{url}/v2/models/{OIP_MODEL}")[2])
    metadata.validate(reply)
    assert not metadata.is_valid({key: value for key, value in reply.items() if key != "inputs"})


def test_errors_are_as_documented(rest, document):
    for path, name, shape in (
        ("/v2/models/{name}", "nosuch-decoder", "Error"),
        ("/v1/models/{name}/info", "nosuch", ""),
    ):
        status, content_type, payload = http(rest.http_url + path.replace("{name}", name))
        assert status == 404, payload
        error = json.loads(payload)
        checker(document, reply_schema(document["paths"][path]["get"], "404", content_type)).validate(error)
        assert ("error" in error) == (shape == "Error") and ("code" in error) == (shape != "Error")


def test_the_document_needs_the_token_as_the_api_does(digits_bundle):
    guarded = start_server("--bundle", str(digits_bundle), "--http-port", "0", env={"VAE_AUTH_TOKENS": TOKEN})
    try:
        status, _, payload = http(guarded.http_url + "/openapi.json")
        assert status == 401 and "token" in json.loads(payload)["error"]
        status, _, payload = http(guarded.http_url + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        document = json.loads(payload)
        assert status == 200 and document["security"] == [{"bearer": []}]
        # The health probes are the open routes, and the document says they are.
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert http(guarded.http_url + path)[0] == 200
            assert document["paths"][path]["get"]["security"] == []
        open_routes = [path for path, _, operation in operations(document) if operation.get("security") == []]
        assert sorted(open_routes) == ["/v2/health/live", "/v2/health/ready"]
    finally:
        assert guarded.stop() == 0, guarded.log()
