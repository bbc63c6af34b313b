"""VaeService over HTTP/JSON (service/rest/vae_http.py): every rpc answers, bit for bit, what gRPC
answers to the same request; Tensors as arrays in and out; SampleStream as JSON Lines and as
server-sent events, with a final error line; google.rpc.Status errors; tokens; the same metrics."""

import asyncio
import json
import socket
import time
import urllib.parse

import aiohttp
import grpc
import numpy as np
import pytest
from aiohttp import web
from google.protobuf import json_format

from tests.http_json import ROUTES, body_of, call, path_of, send, stream_lines
from tests.server_process import start_server, tensor
from tests.test_server_lifecycle import samples, scrape
from tests.test_tracing import serve
from vae_serve.api.v1 import vae_pb2
from vae_serve.service.observe import tracing
from vae_serve.service.rest.vae_http import status_response
from vae_serve.service.rest.vae_routes import VAE_ROUTES

TOKEN = "http-json-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METADATA = (("authorization", f"Bearer {TOKEN}"),)
SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VaeService"]
ROWS = np.random.default_rng(3).integers(0, 17, size=(3, 64)).astype(np.float32)
Z = np.random.default_rng(4).normal(size=(3, 8)).astype(np.float32)
REQUESTS = {
    "Encode": vae_pb2.EncodeRequest(x=tensor(ROWS), num_samples=2, seed=5),
    "Decode": vae_pb2.DecodeRequest(z=tensor(Z), num_samples=2, seed=6),
    "Sample": vae_pb2.SampleRequest(n=3, seed=7, temperature=0.8),
    "SampleStream": vae_pb2.SampleRequest(n=5, chunk_size=2, seed=8),
    "Elbo": vae_pb2.ElboRequest(x=tensor(ROWS), k=3, seed=9),
    "ScoreAnomaly": vae_pb2.ScoreAnomalyRequest(
        x=tensor(ROWS), score=vae_pb2.SCORE_TYPE_NEGATIVE_ELBO, seed=10, return_feature_errors=True
    ),
    "Interpolate": vae_pb2.InterpolateRequest(
        x_start=tensor(ROWS),
        z_end=tensor(Z),
        steps=3,
        path=vae_pb2.INTERPOLATION_PATH_SPHERICAL,
        num_samples=1,
        seed=11,
    ),
    "GetModelInfo": vae_pb2.GetModelInfoRequest(),
    "GetMonitoring": vae_pb2.GetMonitoringRequest(),
}


@pytest.fixture(scope="module")
def server(digits_bundle):
    process = start_server("--bundle", str(digits_bundle), "--http-port", "0", env={"VAE_AUTH_TOKENS": TOKEN})
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


def grpc_reply(server, rpc: str, request) -> bytes:
    """gRPC's reply, serialized deterministically (a stream: its messages, concatenated)."""
    method = getattr(server.stub, rpc)
    if rpc == "SampleStream":
        return b"".join(reply.SerializeToString(deterministic=True) for reply in method(request, metadata=METADATA))
    return method(request, metadata=METADATA).SerializeToString(deterministic=True)


def http_reply(server, rpc: str, request, version: str = "") -> bytes:
    """The HTTP/JSON reply parsed back into its message(s), serialized the same way."""
    named = type(request)()
    named.CopyFrom(request)
    named.model.version = version
    status, headers, payload = call(server.http_url, rpc, named, "digits", AUTH)
    assert status == 200, payload
    response = ROUTES[rpc].response
    if rpc == "SampleStream":
        documents = stream_lines(payload, headers["content-type"])
        return b"".join(json_format.ParseDict(document, response()).SerializeToString(deterministic=True)
                        for document in documents)  # fmt: skip
    assert headers["content-type"].startswith("application/json")
    return json_format.Parse(payload, response()).SerializeToString(deterministic=True)


def test_the_routes_cover_every_rpc_once():
    assert sorted(route.rpc for route in VAE_ROUTES) == sorted(SERVICE.methods_by_name)
    for route in VAE_ROUTES:
        method = SERVICE.methods_by_name[route.rpc]
        assert route.request.DESCRIPTOR is method.input_type and route.response.DESCRIPTOR is method.output_type
        assert route.streaming == method.server_streaming
    assert set(REQUESTS) == set(SERVICE.methods_by_name)


@pytest.mark.parametrize("rpc", list(REQUESTS))
def test_every_rpc_equals_grpc_bit_for_bit(server, rpc):
    request = REQUESTS[rpc]
    for version in ("", "1"):
        for _ in range(5):  # GetMonitoring: the monitor may move between two calls; then ask again
            before = grpc_reply(server, rpc, request)
            over_http = http_reply(server, rpc, request, version)
            if grpc_reply(server, rpc, request) == before:
                break
        assert over_http == before, rpc


def test_json_arrays_in_give_the_same_bits_as_base64(server):
    names = {"x": ROWS.tolist(), "k": 4, "seed": "12"}  # the proto's own field names work too
    status, _, payload = send(server.http_url, "POST", path_of("Elbo", "digits"), json.dumps(names).encode(), AUTH)
    assert status == 200, payload
    reference = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(ROWS), k=4, seed=12), metadata=METADATA)
    reply = json_format.Parse(payload, vae_pb2.ElboResponse())
    assert reply.SerializeToString(deterministic=True) == reference.SerializeToString(deterministic=True)
    images = {"x": ROWS.reshape(3, 8, 8).tolist(), "returnFeatureErrors": True, "seed": 1}  # the natural shape
    status, _, payload = send(server.http_url, "POST", path_of("ScoreAnomaly", "digits"), json.dumps(images).encode(),
                              AUTH)  # fmt: skip
    reference = server.stub.ScoreAnomaly(
        vae_pb2.ScoreAnomalyRequest(x=tensor(ROWS), return_feature_errors=True, seed=1), metadata=METADATA
    )
    assert status == 200 and json_format.Parse(payload, vae_pb2.ScoreAnomalyResponse()) == reference


def test_tensors_as_arrays_out_keep_every_float32_bit(server):
    request = vae_pb2.DecodeRequest(z=tensor(Z * 3), num_samples=1, seed=2)
    query = "?tensors=array"
    status, _, payload = call(server.http_url, "Decode", request, "digits", AUTH, query)
    assert status == 200, payload
    document = json.loads(payload)
    reference = server.stub.Decode(request, metadata=METADATA)
    for name, field in (("probs", reference.bernoulli.probs), ("xSamples", reference.x_samples)):
        values = document["bernoulli"]["probs"] if name == "probs" else document[name]
        sent = np.frombuffer(field.data, "<f4").reshape(tuple(field.shape))
        got = np.array(values, dtype=np.float32)
        assert got.shape == sent.shape and got.tobytes() == sent.tobytes(), name
    assert document["seed"] == "2" and document["model"] == {"name": "digits", "version": "1"}


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson", "*/*"])
def test_sample_stream_as_events_or_json_lines(server, accept):
    request = vae_pb2.SampleRequest(n=7, chunk_size=3, seed=4)
    status, headers, payload = call(server.http_url, "SampleStream", request, "digits", {**AUTH, "Accept": accept})
    assert status == 200
    expected = "text/event-stream" if accept == "text/event-stream" else "application/x-ndjson"
    assert headers["content-type"].startswith(expected)
    documents = stream_lines(payload, headers["content-type"])
    assert [document["offset"] for document in documents] == ["0", "3", "6"]  # 3 + 3 + 1 draws
    replies = list(server.stub.SampleStream(request, metadata=METADATA))
    assert [json_format.ParseDict(document, vae_pb2.SampleResponse()) for document in documents] == replies


def test_a_stream_that_fails_midway_ends_with_an_error_line(server):
    """A deadline (Grpc-Timeout) that passes once the stream has begun: the last line is google.rpc.Status.

    The stream (a million draws, one per message) runs far longer than either deadline. Only a
    machine too loaded to send the first message within 3 s answers a plain 504 instead; then the
    call is made once more with a longer deadline, so what is checked is always a stream that began.
    """
    request = vae_pb2.SampleRequest(n=1_000_000, chunk_size=1, seed=3)
    for timeout in ("3S", "20S"):
        before = samples(scrape(server.metrics_url))
        status, headers, payload = call(server.http_url, "SampleStream", request, "digits",
                                        {**AUTH, "Grpc-Timeout": timeout})  # fmt: skip
        if status != 504:
            break
        error_of(status, payload, 504, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline")
    documents = stream_lines(payload, headers["content-type"])
    assert status == 200 and len(documents) >= 2 and "x" in documents[0]
    assert documents[-1]["error"]["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "deadline" in documents[-1]["error"]["message"]
    after = samples(scrape(server.metrics_url))
    key = ("vae_requests_total", (("code", "DEADLINE_EXCEEDED"), ("method", "SampleStream")))
    assert after[key] == before.get(key, 0) + 1


def test_a_client_that_leaves_mid_stream_is_counted_cancelled(server):
    key = ("vae_requests_total", (("code", "CANCELLED"), ("method", "SampleStream")))
    before = samples(scrape(server.metrics_url)).get(key, 0)
    address = urllib.parse.urlsplit(server.http_url)
    body = body_of(vae_pb2.SampleRequest(n=1_000_000, chunk_size=1, seed=3))
    head = (
        f"POST {path_of('SampleStream', 'digits')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head.encode() + body)
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")  # the stream has begun
    for _ in range(300):  # the server sees the close at its next write
        if samples(scrape(server.metrics_url)).get(key, 0) == before + 1:
            break
        time.sleep(0.05)
    assert samples(scrape(server.metrics_url)).get(key, 0) == before + 1
    assert "Traceback" not in server.log()


def error_of(status: int, payload: bytes, http_status: int, code: grpc.StatusCode, pattern: str) -> dict:
    document = json.loads(payload)
    assert (status, set(document)) == (http_status, {"code", "message", "details"}), payload
    assert document["code"] == code.value[0] and document["details"] == [], payload
    assert pattern in document["message"] and "Traceback" not in document["message"], payload
    return document


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    status, _, payload = send(server.http_url, "POST", path, body, AUTH if headers is None else headers)
    return status, payload


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_BODIES = [
    ("not json", b"{x: 1", "the request body is not valid JSON"),
    ("not an object", b"[1, 2]", "must be a JSON object"),
    ("unknown field", b'{"rows": 3}', 'has no field named "rows"'),
    ("wrong type", b'{"k": "many"}', "Failed to parse k field"),
    ("duplicate key", b'{"k": 2, "k": 3}', "given twice"),
    ("ragged array", b'{"x": [[1, 2], [3]]}', "x: the array is not rectangular"),
    ("strings in array", b'{"x": [["1", "2"]]}', "must hold only numbers"),
    ("booleans in array", b'{"x": [[true, 1]]}', "must hold only numbers"),
    ("bad base64", b'{"x": {"shape": ["1", "64"], "data": "a"}}', "Invalid base64-encoded string"),
    ("unknown dtype", b'{"x": {"shape": [1, 64], "dtype": "DATA_TYPE_INT8"}}', "Invalid enum value DATA_TYPE_INT8"),
    ("too many rows", json.dumps({"x": [[0.5] * 64] * 1025}).encode(), "1025 rows exceeds the limit of 1024"),
    ("other model in body", b'{"model": {"name": "mnist"}}', "name the model in the path only"),
]


@pytest.mark.parametrize("body, pattern", [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES])
def test_a_bad_body_is_invalid_argument_with_the_reason(server, body, pattern):
    status, payload = post(server, path_of("Elbo", "digits"), body)
    error_of(status, payload, 400, INVALID, pattern)


def test_errors_are_google_rpc_status(server):
    status, payload = post(server, path_of("Sample", "nosuch"), b"{}")
    error_of(status, payload, 404, grpc.StatusCode.NOT_FOUND, "unknown model 'nosuch'")
    status, payload = post(server, path_of("Sample", "digits", "9"), b'{"n": 1}')
    error_of(status, payload, 404, grpc.StatusCode.NOT_FOUND, "no version '9'")
    status, payload = post(server, "/v1/models/digits:guess", b"{}")
    error_of(status, payload, 404, grpc.StatusCode.NOT_FOUND, "no such endpoint")
    status, _, payload = send(server.http_url, "GET", path_of("Sample", "digits"), headers=AUTH)
    error_of(status, payload, 405, grpc.StatusCode.UNIMPLEMENTED, "use POST")
    status, payload = post(server, path_of("Sample", "digits") + "?tensors=hex", b'{"n": 1}')
    error_of(status, payload, 400, INVALID, "tensors: ['hex'] is not one of")
    status, payload = post(server, path_of("Sample", "digits") + "?n=3", b'{"n": 1}')
    error_of(status, payload, 400, INVALID, "unknown query parameters ['n']")
    status, payload = post(server, path_of("Sample", "digits"), b'{"n": 1}', {**AUTH, "Grpc-Timeout": "soon"})
    error_of(status, payload, 400, INVALID, "Grpc-Timeout: not a gRPC timeout")


def test_tokens_and_metrics_as_on_grpc(server):
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    status, payload = post(server, path_of("Sample", "digits"), b'{"n": 1}', headers={})
    error_of(status, payload, 401, unauthenticated, "")
    status, payload = post(server, path_of("Sample", "digits"), b'{"n": 1}', {"Authorization": "Bearer wrong"})
    error_of(status, payload, 401, unauthenticated, "")
    status, _, _ = send(server.http_url, "GET", path_of("GetModelInfo", "digits"), headers={"Authorization": "x"})
    assert status == 401
    before = samples(scrape(server.metrics_url))
    assert post(server, path_of("Sample", "digits"), b'{"n": 2, "seed": 1}')[0] == 200
    assert post(server, path_of("Elbo", "nosuch"), b"{}")[0] == 404
    assert post(server, path_of("Elbo", "digits"), b"{not json")[0] == 400
    after = samples(scrape(server.metrics_url))
    malformed = ("vae_malformed_requests_total", (("method", "Elbo"),))
    assert after[malformed] == before.get(malformed, 0) + 1
    for method, code in (("Sample", "OK"), ("Elbo", "NOT_FOUND")):
        key = ("vae_requests_total", (("code", code), ("method", method)))
        assert after[key] == before.get(key, 0) + 1, (method, code)
    examples = ("vae_examples_total", (("method", "Sample"),))
    assert after[examples] == before.get(examples, 0) + 2


def test_monitoring_of_every_model_has_a_path_without_a_model(server):
    status, _, payload = send(server.http_url, "GET", "/v1/monitoring", headers=AUTH)
    assert status == 200, payload
    reference = server.stub.GetMonitoring(vae_pb2.GetMonitoringRequest(), metadata=METADATA)
    reply = json_format.Parse(payload, vae_pb2.MonitoringResponse())
    assert reply.enabled == reference.enabled and reply.alpha == reference.alpha
    assert {monitor.model.name for monitor in reply.scores} == {monitor.model.name for monitor in reference.scores}


# --- limits as gRPC applies them -------------------------------------------------------------------

REPLY_LIMIT_BYTES = 4096  # a digits sample is ~600 bytes a row: 1 row fits, 20 do not
LIMIT_ROWS = 8


@pytest.fixture(scope="module")
def limited(digits_bundle):
    process = start_server(
        "--bundle", str(digits_bundle), "--http-port", "0",
        "--max-send-message-bytes", str(REPLY_LIMIT_BYTES), "--max-rows", str(LIMIT_ROWS),
    )  # fmt: skip
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


def test_a_reply_over_the_send_limit_is_refused_as_on_grpc(limited):
    small, large = vae_pb2.SampleRequest(n=1, seed=1), vae_pb2.SampleRequest(n=20, seed=1)
    assert limited.stub.Sample(small).ByteSize() <= REPLY_LIMIT_BYTES
    status, _, payload = call(limited.http_url, "Sample", small, "digits")
    assert status == 200 and json_format.Parse(payload, vae_pb2.SampleResponse()) == limited.stub.Sample(small)
    with pytest.raises(grpc.RpcError) as refused:
        limited.stub.Sample(large)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status, headers, payload = call(limited.http_url, "Sample", large, "digits")
    document = error_of(status, payload, 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "(--max-send-message-bytes)")
    assert f"over the server's limit of {REPLY_LIMIT_BYTES}" in document["message"]
    assert "retry-after" not in headers  # the same request would be as large again
    # A stream: each message is held to the limit; the first one over it is refused before the stream begins.
    stream = vae_pb2.SampleRequest(n=20, chunk_size=20, seed=1)
    with pytest.raises(grpc.RpcError) as refused:
        list(limited.stub.SampleStream(stream))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status, _, payload = call(limited.http_url, "SampleStream", stream, "digits")
    error_of(status, payload, 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "(--max-send-message-bytes)")
    fitting = vae_pb2.SampleRequest(n=20, chunk_size=1, seed=1)
    status, headers, payload = call(limited.http_url, "SampleStream", fitting, "digits")
    assert status == 200 and len(stream_lines(payload, headers["content-type"])) == 20


def test_an_array_of_too_many_rows_is_refused_before_it_is_read(limited):
    """The server's row limit, and its message, before a number of the array is looked at: rows of
    strings are refused for their count, not for the strings (which a read would find first)."""
    message = f"x: {LIMIT_ROWS + 1} rows exceeds the limit of {LIMIT_ROWS} per request"
    body = json.dumps({"x": [["not a number"]] * (LIMIT_ROWS + 1)}).encode()
    status, _, payload = send(limited.http_url, "POST", path_of("Elbo", "digits"), body)
    error_of(status, payload, 400, INVALID, message)
    with pytest.raises(grpc.RpcError) as refused:  # gRPC's words for the same count
        limited.stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.zeros((LIMIT_ROWS + 1, 64), np.float32))))
    assert message in refused.value.details()
    body = json.dumps({"x": [[0.5] * 64] * LIMIT_ROWS}).encode()  # at the limit: served
    assert send(limited.http_url, "POST", path_of("Elbo", "digits"), body)[0] == 200


def test_only_a_body_that_did_not_arrive_is_answered_408(digits_bundle):
    """A TimeoutError once the body is in is the call's own failure (INTERNAL, as any exception the
    status table does not list), not "the request body did not arrive"; a body still coming is 408."""

    async def stray(request: web.Request) -> web.Response:
        await request.read()
        raise TimeoutError("a timer of the handler's own")

    async def slow_body(request: web.Request) -> web.Response:
        async with asyncio.timeout(0.5):  # the routes' body read, with a shorter wait
            await request.read()
        return web.Response()

    async def scenario(stub, running):
        app = web.Application()  # the server's own call wrapper, around two handlers of this test's
        app.router.add_post("/stray", running.http._call("Probe", stray, status_response))
        app.router.add_post("/slow", running.http._call("Probe", slow_body, status_response))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{port}/stray",
                                                                        data=b"{}") as response:  # fmt: skip
                stray_answer = response.status, await response.read()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}")  # 2 bytes of 10
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            slow_answer = head, await reader.readexactly(length)
            writer.close()  # and the server stops waiting for the rest of the body (aiohttp's lingering)
            await writer.wait_closed()
            return stray_answer, slow_answer
        finally:
            await runner.cleanup()

    (status, payload), (head, body) = serve(digits_bundle, scenario, tracing.OFF, http_port=0)
    error_of(status, payload, 500, grpc.StatusCode.INTERNAL, "internal error")
    assert head.startswith(b"HTTP/1.1 408"), head
    error_of(408, body, 408, grpc.StatusCode.DEADLINE_EXCEEDED, "the request body did not arrive")
