"""Bytes that are not the rpc's request message: INVALID_ARGUMENT with a plain message, counted, and
logged at most once per interval, for VaeService's unary and streaming rpcs and the OIP service.
A real server runs in this process (its log reaches caplog); raw channels send the bytes.
"""

import asyncio
import logging

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import CollectorRegistry

from tests.server_process import tensor
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.service import server
from vae_serve.service.grpc.interceptors import MALFORMED_LOG_INTERVAL_S
from vae_serve.service.observe.logs import LogThrottle
from vae_serve.service.settings import Settings

GARBAGE = b"\xff\xff\xff\xff not a protobuf message"
CASES = [
    # (rpc, streaming, message type)
    ("/vae.v1.VaeService/Elbo", False, "vae.v1.ElboRequest"),
    ("/vae.v1.VaeService/GetModelInfo", False, "vae.v1.GetModelInfoRequest"),
    ("/vae.v1.VaeService/GetMonitoring", False, "vae.v1.GetMonitoringRequest"),
    ("/vae.v1.VaeService/SampleStream", True, "vae.v1.SampleRequest"),
    ("/inference.GRPCInferenceService/ModelInfer", False, "inference.ModelInferRequest"),
    ("/inference.GRPCInferenceService/ServerLive", False, "inference.ServerLiveRequest"),
]


async def send_raw(channel: grpc.aio.Channel, rpc: str, streaming: bool, payload: bytes):
    """The call's reply bytes, or the AioRpcError it ended with."""
    try:
        if streaming:
            return [reply async for reply in channel.unary_stream(rpc)(payload, timeout=30)]
        return await channel.unary_unary(rpc)(payload, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error


def serve(bundle, scenario):
    """Run ``scenario(channel)`` against a real server in this process; returns (its result, metrics)."""
    registry = CollectorRegistry()

    async def main():
        settings = Settings(bundle=bundle, port=0, metrics_port=None)
        running = await server.start(settings, registry)
        try:
            await server.load_models(running, settings)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                return await scenario(channel)
        finally:
            await server.drain(running, 0)

    return asyncio.run(main()), registry


def test_garbage_is_invalid_argument_counted_and_logged_once(digits_bundle, caplog):
    repeats = 20

    async def scenario(channel):
        outcomes = {}
        for rpc, streaming, _ in CASES:
            outcomes[rpc] = [await send_raw(channel, rpc, streaming, GARBAGE) for _ in range(repeats)]
        # The server is unharmed, and a good request's bytes still parse on the same path.
        good = vae_pb2.ElboRequest(x=tensor(np.full((2, 64), 0.5)), k=2, seed=1).SerializeToString()
        reply = vae_pb2.ElboResponse.FromString(await send_raw(channel, "/vae.v1.VaeService/Elbo", False, good))
        return outcomes, reply

    with caplog.at_level(logging.INFO):
        (outcomes, reply), registry = serve(digits_bundle, scenario)
    assert len(reply.elbo) == 2
    for rpc, _, message_type in CASES:
        for error in outcomes[rpc]:
            assert isinstance(error, grpc.aio.AioRpcError), rpc
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details().startswith(f"the request is not a valid {message_type} message")
            assert "Traceback" not in error.details() and "DecodeError" not in error.details()
        method = rpc.rsplit("/", 1)[1]
        assert (
            registry.get_sample_value("vae_requests_total", {"method": method, "code": "INVALID_ARGUMENT"}) == repeats
        )
        assert registry.get_sample_value("vae_malformed_requests_total", {"method": method}) == repeats
    # One line for 100 bad calls (all within the interval), and no traceback anywhere.
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "malformed request" in warnings[0].getMessage()
    assert not any(record.exc_info for record in caplog.records)


def test_the_log_throttle_counts_what_it_held_back():
    now = [100.0]
    throttle = LogThrottle(MALFORMED_LOG_INTERVAL_S, clock=lambda: now[0])
    assert throttle.admit() == 0
    assert [throttle.admit() for _ in range(5)] == [None] * 5
    now[0] += MALFORMED_LOG_INTERVAL_S - 0.001
    assert throttle.admit() is None
    now[0] += 0.001
    assert throttle.admit() == 6
    assert throttle.admit() is None


@pytest.mark.parametrize("payload", [b"", b"\x98\x06\x01"], ids=["empty", "unknown field"])
def test_bytes_that_parse_are_not_malformed(digits_bundle, payload):
    # An empty message is a valid one (every field default) and unknown fields are skipped: both
    # reach the handler, which answers for the request's content.
    async def scenario(channel):
        return await send_raw(channel, "/vae.v1.VaeService/Elbo", False, payload)

    error, registry = serve(digits_bundle, scenario)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("x: missing tensor")
    assert registry.get_sample_value("vae_malformed_requests_total", {"method": "Elbo"}) is None


def test_streams_dropped_while_sending_log_one_line_without_a_traceback(digits_bundle, caplog):
    """grpc.aio logs a traceback for each stream whose client went away mid-send; the server makes
    that one throttled INFO line (service/grpc/grpc_log.py)."""
    dropped = 8

    async def scenario(channel):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        for _ in range(dropped):
            call = stub.SampleStream(vae_pb2.SampleRequest(n=100_000, chunk_size=1024))
            await call.read()  # the server is now writing large chunks into a window nobody reads
            await asyncio.sleep(0.05)
            call.cancel()
        await asyncio.sleep(0.5)

    with caplog.at_level(logging.INFO):
        serve(digits_bundle, scenario)
    grpc_lines = [record for record in caplog.records if record.name == "grpc._cython.cygrpc"]
    assert len(grpc_lines) <= 1 and all(record.exc_info is None for record in grpc_lines)
    assert all("went away while its stream [/vae.v1.VaeService/SampleStream]" in r.getMessage() for r in grpc_lines)
    assert "Traceback" not in caplog.text and "ExecuteBatchError" not in caplog.text


def test_health_and_reflection_answer_garbage_the_same_way(digits_bundle, caplog):
    """Open to anyone (probes, tools): bytes that do not parse are INVALID_ARGUMENT there too, counted,
    with no traceback, and the services still answer good requests."""
    repeats = 10
    open_cases = [
        ("/grpc.health.v1.Health/Check", "unary", "grpc.health.v1.HealthCheckRequest"),
        ("/grpc.health.v1.Health/Watch", "stream", "grpc.health.v1.HealthCheckRequest"),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "bidi",
         "grpc.reflection.v1alpha.ServerReflectionRequest"),
    ]  # fmt: skip

    async def send(channel, rpc, shape, payload):
        try:
            if shape == "unary":
                return await channel.unary_unary(rpc)(payload, timeout=30)
            if shape == "stream":
                return [reply async for reply in channel.unary_stream(rpc)(payload, timeout=30)]
            return [reply async for reply in channel.stream_stream(rpc)(iter([payload]), timeout=30)]
        except grpc.aio.AioRpcError as error:
            return error

    async def scenario(channel):
        outcomes = {
            rpc: [await send(channel, rpc, shape, GARBAGE) for _ in range(repeats)] for rpc, shape, _ in open_cases
        }
        good = health_pb2.HealthCheckRequest(service="").SerializeToString()
        status = health_pb2.HealthCheckResponse.FromString(await send(channel, open_cases[0][0], "unary", good))
        listing = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
        services = await send(channel, open_cases[2][0], "bidi", listing)
        return outcomes, status, reflection_pb2.ServerReflectionResponse.FromString(services[0])

    with caplog.at_level(logging.INFO):
        (outcomes, status, services), registry = serve(digits_bundle, scenario)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert "vae.v1.VaeService" in {service.name for service in services.list_services_response.service}
    for rpc, _, message_type in open_cases:
        for error in outcomes[rpc]:
            assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
            assert error.details().startswith(f"the request is not a valid {message_type} message")
        method = rpc.rsplit("/", 1)[1]
        assert registry.get_sample_value("vae_malformed_requests_total", {"method": method}) == repeats
    assert "Traceback" not in caplog.text and not any(record.exc_info for record in caplog.records)
