"""OpenTelemetry tracing of calls, their queue wait, their batches and the graph runs, carried by a
``Tracer`` object that the server builds and hands to the bindings, the batchers and the graph runs.

The spans:
- one SERVER span per call, named after its rpc ("vae.v1.VaeService/Elbo"), a child of the
  caller's span when the call carries a W3C ``traceparent`` (gRPC metadata or an HTTP header);
- "queue wait": a child of the call span, from the submit to the start of the call's batch;
- "batch run": one per batch, a root span with a link to each call it serves, and each of those
  call spans links back to it (a batch serves many calls: links, not parents, as OpenTelemetry
  advises for batching). Attributes: ``vae.batch.size`` (requests), ``vae.batch.rows`` (rows the
  graphs process), ``vae.batch.kind``, ``vae.model``. A call run inline, alone, gets one too;
- "graph run": each ONNX Runtime session run, a child of its batch's span, made by the hook
  ``Tracer.graph_span`` that core.runtime is handed (the core imports no OpenTelemetry).

A ``Tracer`` without a provider (``OFF``) makes nothing: each hook is one test of an attribute, no
context is extracted, no attribute built, no span object made. The process-wide provider of the
OpenTelemetry API (settable once per process) is left alone, so each server, and each test, traces
with its own provider. The provider comes from the OTEL_* variables (service/observe/exporting.py)
or from a test (the SDK's in-memory exporter).
"""

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from vae_serve.service.status import Code, code_for

# Codes that are the server's failure, not the caller's: span status ERROR (OpenTelemetry's
# semantic conventions for gRPC servers). INVALID_ARGUMENT and the like leave the status unset.
SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
STATUS_NUMBERS = {code.name: code.value for code in Code}
_ROOT = otel_context.Context()  # no parent: a batch span starts a trace of its own
_NO_SPAN = contextlib.nullcontext()  # stateless, so one instance serves every untraced call


@dataclass(eq=False)
class Queued:
    """A traced call's spans while its work waits for a batch."""

    call: Span
    wait: Span | None  # "queue wait", open until the batch starts; None for a call run inline

    def end_wait(self) -> None:
        if self.wait is not None:
            self.wait.end()
            self.wait = None


class Tracer:
    """The server's tracing: spans from ``provider``, or none at all without one (``OFF``).

    One object, handed to whoever makes spans: the bindings (call spans), each batcher (queue waits,
    batch runs) and, through ``graph_span``, the core's graph runs. ``stop()`` turns it off for all
    of them at once (at the end of a drain, before the provider flushes).
    """

    __slots__ = ("_calls", "_graphs")

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._calls: trace.Tracer | None = None if provider is None else provider.get_tracer("vae_serve.service")
        self._graphs: trace.Tracer | None = None if provider is None else provider.get_tracer("vae_serve.core.runtime")

    @property
    def enabled(self) -> bool:
        """Whether spans are made at all (a provider is in use)."""
        return self._calls is not None

    def stop(self) -> None:
        """Make no more spans, here or in any holder of this object."""
        self._calls = self._graphs = None

    # --- one call ----------------------------------------------------------------------------------

    def start_call(
        self,
        method: str,
        carrier: Mapping[str, str] | Iterable[tuple[str, str]] | None,
        protocol: str = "grpc",
        attributes: Mapping[str, object] | None = None,
    ) -> Span | None:
        """The SERVER span of one call, not yet current; None when tracing is off.

        Args:
            method: the rpc, "/vae.v1.VaeService/Elbo" or "vae.v1.VaeService/Elbo" (the span's
                name), or any name the adapter gives its call.
            carrier: what carries the caller's ``traceparent`` / ``tracestate``: gRPC invocation
                metadata (pairs) or HTTP headers (a mapping with lower-case or case-insensitive keys).
            protocol: "grpc" or "http".
            attributes: more attributes for the span (an HTTP adapter's route, say).

        Returns:
            The span, or None when tracing is off.
        """
        tracer = self._calls
        if tracer is None:
            return None
        if carrier is not None and not isinstance(carrier, Mapping):
            carrier = dict(carrier)
        # The global propagator: W3C trace context and baggage unless OTEL_PROPAGATORS says otherwise.
        parent = propagate.extract(carrier) if carrier else _ROOT
        name = method.lstrip("/")
        service, _, rpc = name.rpartition("/")
        span_attributes = {"rpc.method": rpc}
        if service:
            span_attributes["rpc.service"] = service
        if protocol == "grpc":
            span_attributes["rpc.system"] = "grpc"
        else:
            span_attributes["network.protocol.name"] = protocol
        span_attributes.update(attributes or {})
        return tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=span_attributes)

    @contextlib.contextmanager
    def call_span(
        self,
        method: str,
        carrier: Mapping[str, str] | None,
        protocol: str = "grpc",
        attributes: Mapping[str, object] | None = None,
    ) -> Iterator[Span]:
        """One call's SERVER span, current inside the block, for an adapter (the REST one).

        The caller's span comes from ``carrier`` (``traceparent``). An exception leaving the block
        is recorded with its status code (``service.status``'s table; the server's own failures as
        span status ERROR) and re-raised. An adapter that answers errors inside the block records
        them itself with ``record_outcome`` (and its protocol's status, e.g.
        ``http.response.status_code`` on the span); a normal exit adds nothing more. Off, this
        yields the invalid span, nothing else.

        Args:
            method: the span's name, e.g. "vae.v1.VaeService/Elbo" or "ModelInfer".
            carrier: the request's headers or metadata (a mapping), or None.
            protocol: "grpc" or "http".
            attributes: more attributes for the span.

        Yields:
            The span (non-recording when tracing is off), to add attributes to.
        """
        span = self.start_call(method, carrier, protocol, attributes)
        if span is None:
            yield trace.INVALID_SPAN
            return
        try:
            with _Current(span):
                yield span
            if protocol == "grpc":
                record_outcome(span, "OK")
        except BaseException as error:
            cancelled = isinstance(error, (asyncio.CancelledError, GeneratorExit))
            record_outcome(span, "CANCELLED" if cancelled else code_for(error).name, error, protocol)
            raise
        finally:
            span.end()

    # --- the batcher -------------------------------------------------------------------------------

    def enqueue(self, waits: bool = True) -> Queued | None:
        """At submit: the current (call) span, and its "queue wait" span started now (``waits``).

        Returns:
            None when tracing is off or the current call is not recorded (sampled out, or not a call).
        """
        tracer = self._calls
        if tracer is None:
            return None
        call = trace.get_current_span()
        if not call.is_recording():
            return None
        return Queued(call, tracer.start_span("queue wait") if waits else None)

    def start_batch(
        self, calls: Iterable[Queued | None], attributes: Mapping[str, object], requests: int, rows: int
    ) -> Span | None:
        """The "batch run" span of a batch that starts now, linked both ways to each traced call in
        it; their queue waits end here. None when none of its calls is traced."""
        tracer = self._calls
        traced = [queued for queued in calls if queued is not None]
        if tracer is None or not traced:
            return None
        span = tracer.start_span(
            "batch run",
            context=_ROOT,
            links=[Link(queued.call.get_span_context()) for queued in traced],
            attributes={**attributes, "vae.batch.size": requests, "vae.batch.rows": rows},
        )
        batch = span.get_span_context()
        for queued in traced:
            queued.end_wait()
            if queued.call.is_recording():  # not if the call ended meanwhile (cancelled)
                queued.call.add_link(batch)
        return span

    # --- the graph runs (core.runtime's hook) ------------------------------------------------------

    def graph_span(self, graph: str, rows: int) -> contextlib.AbstractContextManager:
        """The "graph run" span (``vae.graph``, ``vae.graph.rows``) around one ONNX Runtime run, a
        child of the current (batch) span; nothing outside a recorded span, or when off.

        Matches ``core.runtime.GraphSpan``: the plane hands this method to the models it serves.
        """
        tracer = self._graphs
        if tracer is None or not trace.get_current_span().is_recording():
            return _NO_SPAN
        return tracer.start_span("graph run", attributes={"vae.graph": graph, "vae.graph.rows": rows})


OFF = Tracer()  # makes no spans; stateless once stopped, so one instance serves every untraced holder


# --- stateless helpers: they act on spans they are given -------------------------------------------


def record_outcome(span: Span, code_name: str, error: BaseException | None = None, protocol: str = "grpc") -> None:
    """Put a call's outcome on its span: the gRPC status code name (as ``rpc.grpc.status_code`` for
    gRPC), status ERROR for the server's own failures, and for those the exception behind it."""
    if not span.is_recording():
        return
    if protocol == "grpc":
        span.set_attribute("rpc.grpc.status_code", STATUS_NUMBERS.get(code_name, 2))
    if code_name in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code_name))
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            if code_name == "INTERNAL":
                span.record_exception(error)


def end_call(span: Span, code_name: str, error: BaseException | None = None, protocol: str = "grpc") -> None:
    """End a call's span with its outcome (``record_outcome``)."""
    record_outcome(span, code_name, error, protocol)
    span.end()


def current_trace_id() -> str:
    """The trace id (32 hex digits) of the current span if it is recording, else "" (tracing off,
    or a call that is not sampled): one context read when nothing is traced."""
    span = trace.get_current_span()
    if not span.is_recording():
        return ""
    return format(span.get_span_context().trace_id, "032x")


class _Current:
    """``span`` is the current span inside the block (attached, and detached after)."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc_info) -> None:
        otel_context.detach(self.token)


def current(span: Span | None) -> contextlib.AbstractContextManager:
    """A block in which ``span`` is the current span; nothing at all for None (tracing off)."""
    return _NO_SPAN if span is None else _Current(span)


class _Running(_Current):
    """A batch's run: its span is current (the graph runs become its children), ended on exit with
    the exception that escaped, if one did."""

    __slots__ = ()

    def __exit__(self, exc_type, error, traceback) -> None:
        super().__exit__(exc_type, error, traceback)
        if error is not None and self.span.is_recording():
            self.span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            self.span.record_exception(error)
        self.span.end()


def running(span: Span | None) -> contextlib.AbstractContextManager:
    """The block that runs a batch: ``span`` current, then ended; nothing at all for None."""
    return _NO_SPAN if span is None else _Running(span)
