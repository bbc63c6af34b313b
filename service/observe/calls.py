"""Per-call accounting shared by every binding: in-flight gauge, counts by status code name and
latency by method, recorded once a call has its answer (the gRPC interceptor and the REST routes
both record here, so a method's series count calls of either protocol). It carries the server's
``Tracer`` to the bindings too (``tracer``), so they make their call spans with the server's tracing."""

import time

from vae_serve.service.observe import tracing
from vae_serve.service.observe.metrics import ServerMetrics


class CallRecorder:
    """``begin`` and ``end`` around each call; ``active``: calls begun and not yet ended (the drain waits on it)."""

    def __init__(self, metrics: ServerMetrics, tracer: tracing.Tracer = tracing.OFF) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.active = 0

    def begin(self, method: str) -> float:
        """A call of ``method`` starts: in-flight gauge; returns its start time."""
        self.active += 1
        self.metrics.series(self.metrics.in_flight, method).inc()
        return time.perf_counter()

    def end(self, method: str, status_name: str, started: float, span=None, error: BaseException | None = None) -> None:
        """The call ended with ``status_name`` (a status code name): counts and latency; and its span
        (``Tracer.start_call``), if it has one, ends with that code and ``error``."""
        self.active -= 1
        metrics = self.metrics
        metrics.series(metrics.in_flight, method).dec()
        metrics.series(metrics.requests, method, status_name).inc()
        metrics.series(metrics.request_duration, method).observe(time.perf_counter() - started)
        if span is not None:
            tracing.end_call(span, status_name, error)
