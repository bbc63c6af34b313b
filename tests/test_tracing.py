"""OpenTelemetry tracing against a real server in this process and real gRPC stubs, with the SDK's
in-memory exporter: the caller's trace continues in the call span, batched calls link to their
batch, graph runs are children of the batch; off, nothing is made; the OTEL_* variables turn it on.
The tracer is an object handed to the server (``server.start(..., tracer=...)``), never a global.
"""

import asyncio
import contextlib
import os
from dataclasses import dataclass

import aiohttp
import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from tests.server_process import tensor
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.core.bundle import load_bundle
from vae_serve.core.errors import InvalidInput
from vae_serve.service import server
from vae_serve.service.observe import tracing
from vae_serve.service.observe.exporting import configure_from_env
from vae_serve.service.settings import Settings

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


def traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


@dataclass
class Recorded:
    """A tracer into memory, to hand to a server, and the exporter that holds what it recorded."""

    tracer: tracing.Tracer
    exporter: InMemorySpanExporter


@pytest.fixture
def spans():
    """Tracing on for one test, into memory: only what is handed ``spans.tracer`` traces."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Recorded(tracing.Tracer(provider), exporter)
    provider.shutdown()


def serve(bundle, scenario, tracer: tracing.Tracer, **overrides):
    """Run ``scenario(stub, running)`` against a real server started in this process with ``tracer``;
    returns its result."""

    async def main():
        settings = Settings(bundle=bundle, port=0, metrics_port=None, **overrides)
        running = await server.start(settings, CollectorRegistry(), tracer=tracer)
        try:
            await server.load_models(running, settings)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                return await scenario(vae_pb2_grpc.VaeServiceStub(channel), running)
        finally:
            await server.drain(running, 0)

    return asyncio.run(main())


def named(spans: Recorded, name: str) -> list:
    return [span for span in spans.exporter.get_finished_spans() if span.name == name]


def linked(span) -> set[int]:
    return {link.context.span_id for link in span.links}


def test_a_call_continues_its_callers_trace_and_its_batch_runs_its_graphs(digits_bundle, spans):
    x = tensor(np.full((2, 64), 0.5))

    async def scenario(stub, running):
        metadata = (("traceparent", traceparent(TRACE_ID, PARENT_ID)),)
        await stub.Elbo(vae_pb2.ElboRequest(x=x, k=3, seed=1), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Elbo(vae_pb2.ElboRequest(), metadata=metadata)

    serve(digits_bundle, scenario, spans.tracer)
    good, bad = named(spans, "vae.v1.VaeService/Elbo")
    for call in (good, bad):
        assert call.kind == SpanKind.SERVER
        assert call.context.trace_id == TRACE_ID and call.parent.span_id == PARENT_ID and call.parent.is_remote
        assert call.attributes["rpc.system"] == "grpc" and call.attributes["rpc.method"] == "Elbo"
        assert call.attributes["rpc.service"] == "vae.v1.VaeService"
    assert good.attributes["rpc.grpc.status_code"] == 0 and good.status.status_code == StatusCode.UNSET
    # The caller's mistake: its code on the span, but not a server error.
    assert bad.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert bad.status.status_code == StatusCode.UNSET
    # A lone small call runs inline, and still as a batch of one with its own span.
    [batch] = named(spans, "batch run")
    assert batch.parent is None and linked(batch) == {good.context.span_id}
    assert linked(good) == {batch.context.span_id}
    assert batch.attributes["vae.batch.size"] == 1 and batch.attributes["vae.batch.rows"] == 2 * 3
    assert batch.attributes["vae.batch.kind"] == "elbo" and batch.attributes["vae.model"] == "digits:1"
    graphs = named(spans, "graph run")
    assert graphs and all(graph.parent.span_id == batch.context.span_id for graph in graphs)
    assert all(graph.context.trace_id == batch.context.trace_id for graph in graphs)
    assert {graph.attributes["vae.graph"] for graph in graphs} <= {"encoder", "decoder", "bounds"}


def test_calls_batched_together_each_link_to_their_one_batch(digits_bundle, spans):
    calls = 6
    ids = [(TRACE_ID + index, PARENT_ID + index) for index in range(calls)]

    async def scenario(stub, running):
        # No inline runs, a fixed wait much longer than the test, and a batch of exactly `calls`
        # rows: the batch closes when the last call arrives, never earlier, never later.
        sent = [
            stub.Elbo(
                vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), k=1, seed=index),
                metadata=(("traceparent", traceparent(*ids[index])),),
            )
            for index in range(calls)
        ]
        await asyncio.gather(*sent)

    serve(
        digits_bundle,
        scenario,
        spans.tracer,
        inline_max_rows=0,
        batch_wait="fixed",
        max_batch_wait_s=30.0,
        max_batch_rows=calls,
    )
    call_spans = named(spans, "vae.v1.VaeService/Elbo")
    assert sorted((span.context.trace_id, span.parent.span_id) for span in call_spans) == ids
    [batch] = named(spans, "batch run")
    assert batch.attributes["vae.batch.size"] == calls and batch.attributes["vae.batch.rows"] == calls
    assert linked(batch) == {span.context.span_id for span in call_spans}
    for span in call_spans:
        assert linked(span) == {batch.context.span_id}
    waits = named(spans, "queue wait")
    assert sorted(wait.parent.span_id for wait in waits) == sorted(span.context.span_id for span in call_spans)
    graphs = named(spans, "graph run")
    assert len(graphs) >= 1 and {graph.parent.span_id for graph in graphs} == {batch.context.span_id}


def test_a_stream_continues_its_callers_trace_and_links_each_chunks_batch(digits_bundle, spans):
    async def scenario(stub, running):
        metadata = (("traceparent", traceparent(TRACE_ID, PARENT_ID)),)
        request = vae_pb2.SampleRequest(n=9, chunk_size=4, seed=2)
        return [reply async for reply in stub.SampleStream(request, metadata=metadata)]

    assert len(serve(digits_bundle, scenario, spans.tracer)) == 3
    [call] = named(spans, "vae.v1.VaeService/SampleStream")
    assert call.context.trace_id == TRACE_ID and call.parent.span_id == PARENT_ID
    batches = named(spans, "batch run")
    assert [batch.attributes["vae.batch.rows"] for batch in batches] == [4, 4, 1]
    assert linked(call) == {batch.context.span_id for batch in batches}


def test_a_stream_cancelled_while_sending_still_ends_its_span(digits_bundle, spans):
    cancelled = 20

    async def scenario(stub, running):
        # Large chunks and a client that stops reading fill the flow-control window: the cancel
        # lands while gRPC is sending, and gRPC closes the handler's generator later, from outside,
        # at its yield.
        for _ in range(cancelled):
            call = stub.SampleStream(vae_pb2.SampleRequest(n=100_000, chunk_size=1024))
            await call.read()
            await asyncio.sleep(0.05)
            call.cancel()
        for _ in range(200):
            if running.interceptor.active_calls == 0:
                return 0
            await asyncio.sleep(0.05)
        return running.interceptor.active_calls

    assert serve(digits_bundle, scenario, spans.tracer) == 0
    streams = named(spans, "vae.v1.VaeService/SampleStream")
    assert [span.attributes["rpc.grpc.status_code"] for span in streams] == [1] * cancelled


def test_call_span_for_other_protocols_reads_http_headers(spans):
    headers = {"traceparent": traceparent(TRACE_ID, PARENT_ID), "content-type": "application/json"}
    tracer = spans.tracer
    with tracer.call_span("ModelInfer", headers, "http", {"http.route": "/v2/models/{name}/infer"}) as span:
        assert trace.get_current_span() is span
    with pytest.raises(InvalidInput), tracer.call_span("ModelInfer", headers, "http"):
        raise InvalidInput("x: missing tensor")
    with pytest.raises(RuntimeError), tracer.call_span("ModelInfer", headers, "http"):
        raise RuntimeError("a bug")
    with tracer.call_span("ModelInfer", headers, "http") as span:  # an adapter that answers errors itself
        tracing.record_outcome(span, "UNAVAILABLE", None, "http")
        span.set_attribute("http.response.status_code", 503)
    ok, refused, failed, answered = named(spans, "ModelInfer")
    assert answered.status.status_code == StatusCode.ERROR and answered.attributes["http.response.status_code"] == 503
    assert ok.parent.span_id == PARENT_ID and ok.context.trace_id == TRACE_ID
    assert ok.attributes["network.protocol.name"] == "http" and ok.attributes["http.route"] == "/v2/models/{name}/infer"
    assert refused.status.status_code == StatusCode.UNSET and not refused.events
    assert failed.status.status_code == StatusCode.ERROR and failed.events[0].name == "exception"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_off_nothing_is_made(digits_bundle, monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    assert configure_from_env() is None and not tracing.OFF.enabled
    with tracing.OFF.call_span("vae.v1.VaeService/Elbo", {"traceparent": traceparent(TRACE_ID, PARENT_ID)}) as span:
        assert not span.is_recording()

    async def scenario(stub, running):
        # Off, the server's observer carries the off tracer, and the core is handed no hook at all.
        assert not running.observer.tracer.enabled and running.observer.graph_span is None
        metadata = (("traceparent", traceparent(TRACE_ID, PARENT_ID)),)
        return await stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), k=2), metadata=metadata)

    assert len(serve(digits_bundle, scenario, tracing.OFF).elbo) == 1
    # Nothing reached the process-wide provider either: it is still the API's placeholder.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_SERVICE_NAME": "vae-a"},
    ],
)
def test_variables_that_leave_tracing_off(monkeypatch, variables):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert configure_from_env() is None and not tracing.OFF.enabled


@pytest.mark.parametrize(
    ("variables", "service_name"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, "vae-serve"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SERVICE_NAME": "vae-a"}, "vae-a"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "service.name=vae-b,team=ml"}, "vae-b"),
    ],
)
def test_the_variables_turn_on_otlp_export(monkeypatch, variables, service_name):
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    setup = configure_from_env()
    try:
        assert isinstance(setup.provider, TracerProvider) and setup.tracer.enabled
        assert [type(exporter) for exporter in setup.exporters] == [OTLPSpanExporter]
        assert setup.provider.resource.attributes["service.name"] == service_name
    finally:
        setup.shutdown()  # nothing was recorded, so nothing is sent: no collector needed
    assert not setup.tracer.enabled  # stopped for every holder: the server's bindings, batchers, graph runs


def test_a_rest_call_continues_the_traceparent_header_and_shares_batches_with_grpc(digits_bundle, spans):
    async def scenario(stub, running):
        body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
        headers = {"traceparent": traceparent(TRACE_ID, PARENT_ID)}
        url = f"http://127.0.0.1:{running.http.port}/v2/models/digits-elbo/infer"
        async with aiohttp.ClientSession() as session:
            grpc_call = stub.Elbo(
                vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), k=1, seed=1),
                metadata=(("traceparent", traceparent(TRACE_ID + 1, PARENT_ID + 1)),),
            )
            async with session.post(url, json=body, headers=headers) as response:
                assert response.status == 200
            await grpc_call
            async with session.post(url, json={"inputs": []}, headers=headers) as response:
                assert response.status == 400

    # A batch of exactly two rows: the REST call and the gRPC call close it together.
    serve(
        digits_bundle, scenario, spans.tracer, http_port=0, inline_max_rows=0, batch_wait="fixed",
        max_batch_wait_s=30.0, max_batch_rows=2,
    )  # fmt: skip
    rest_ok, rest_bad = named(spans, "ModelInfer")
    for call in (rest_ok, rest_bad):
        assert call.kind == SpanKind.SERVER and call.attributes["http.request.method"] == "POST"
        assert call.context.trace_id == TRACE_ID and call.parent.span_id == PARENT_ID and call.parent.is_remote
    [grpc_call] = named(spans, "vae.v1.VaeService/Elbo")
    [batch] = named(spans, "batch run")
    assert batch.attributes["vae.batch.size"] == 2
    assert linked(batch) == {rest_ok.context.span_id, grpc_call.context.span_id}
    assert linked(rest_ok) == {batch.context.span_id}


def test_the_core_reports_graph_runs_only_to_the_hook_it_is_handed(digits_bundle):
    # core.runtime knows no tracing: a model observed with a hook calls it around each graph run
    # (name, rows), with the same outputs bit for bit; the loaded model itself stays unobserved.
    bundle = load_bundle(digits_bundle)
    runs = []

    @contextlib.contextmanager
    def graph_span(graph: str, rows: int):
        runs.append((graph, rows))
        yield

    observed = bundle.vae.observed(graph_span)
    x = np.full((3, 64), 0.5, np.float32)
    for plain, seen in zip(bundle.vae.encode(x), observed.encode(x), strict=True):
        assert np.array_equal(plain, seen)
    z = np.zeros((2, bundle.vae.latent_dim), np.float32)
    for name, values in bundle.vae.decode(z).items():
        assert np.array_equal(values, observed.decode(z)[name])
    assert runs == [("encoder", 3), ("decoder", 2)]
    assert bundle.vae.graph_span is None and observed.encoder is bundle.vae.encoder
    assert bundle.vae.observed(None) is bundle.vae


def test_each_server_traces_with_the_tracer_it_is_handed(digits_bundle, spans):
    async def scenario(stub, running):
        await stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), k=1, seed=1))

    serve(digits_bundle, scenario, tracing.OFF)  # a server without a tracer: nothing recorded anywhere
    assert spans.exporter.get_finished_spans() == ()
    serve(digits_bundle, scenario, spans.tracer)  # the next one, handed a tracer, records into it alone
    assert [len(named(spans, name)) for name in ("vae.v1.VaeService/Elbo", "batch run")] == [1, 1]
    assert named(spans, "graph run")


def test_two_servers_in_one_process_each_trace_with_their_own_tracer(digits_bundle, spans):
    # Nothing global: a traced and an untraced server side by side, each called once.
    async def main():
        servers = []
        try:
            for tracer in (spans.tracer, tracing.OFF):
                settings = Settings(bundle=digits_bundle, port=0, metrics_port=None)
                servers.append(await server.start(settings, CollectorRegistry(), tracer=tracer))
                await server.load_models(servers[-1], settings)
            for running in servers:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                    stub = vae_pb2_grpc.VaeServiceStub(channel)
                    await stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), k=1, seed=1))
        finally:
            for running in servers:
                await server.drain(running, 0)

    asyncio.run(main())
    assert [len(named(spans, name)) for name in ("vae.v1.VaeService/Elbo", "batch run")] == [1, 1]
    [call], [batch] = named(spans, "vae.v1.VaeService/Elbo"), named(spans, "batch run")
    assert linked(call) == {batch.context.span_id}


def test_an_http_json_call_is_traced_as_its_grpc_call(digits_bundle, spans):
    """VaeService over HTTP/JSON: the SERVER span gRPC makes (its name, rpc.* attributes), parented by
    the ``traceparent`` header, and how it came (http, its route); the metric label stays "Sample"."""

    async def scenario(stub, running):
        await stub.Sample(vae_pb2.SampleRequest(n=2, seed=1))
        headers = {"traceparent": traceparent(TRACE_ID, PARENT_ID)}
        base = f"http://127.0.0.1:{running.http.port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/v1/models/digits:sample", json={"n": 2}, headers=headers) as response:
                assert response.status == 200
            async with session.post(f"{base}/v1/models/digits/versions/1:sample", json={"n": 0}) as response:
                assert response.status == 400
            async with session.post(f"{base}/v2/models/digits-elbo/infer", json={"inputs": []}) as response:
                assert response.status == 400

    serve(digits_bundle, scenario, spans.tracer, http_port=0)
    over_grpc, over_http, refused = named(spans, "vae.v1.VaeService/Sample")
    assert not named(spans, "Sample")
    for call in (over_http, refused):
        assert call.kind == SpanKind.SERVER == over_grpc.kind
        for key in ("rpc.system", "rpc.service", "rpc.method"):
            assert call.attributes[key] == over_grpc.attributes[key], key
        assert call.attributes["network.protocol.name"] == "http" and call.attributes["http.request.method"] == "POST"
    assert over_http.context.trace_id == TRACE_ID and over_http.parent.span_id == PARENT_ID
    assert over_http.parent.is_remote and over_http.attributes["http.route"] == "/v1/models/{name}:sample"
    assert refused.parent is None and refused.attributes["http.route"] == "/v1/models/{name}/versions/{version}:sample"
    [oip] = named(spans, "ModelInfer")  # the Open Inference Protocol's routes keep their spans
    assert "rpc.system" not in oip.attributes and oip.attributes["network.protocol.name"] == "http"
