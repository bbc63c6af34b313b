"""Tracing from the standard OpenTelemetry variables: a provider with its exporters, built once at
server start, and its flush at the end of the drain. Off, and free, unless OTEL_* asks for it."""

import logging
import os
import threading
from dataclasses import dataclass, field

from opentelemetry import trace

from vae_serve.service.observe.tracing import Tracer

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 2.0  # at exit, after the drain: within the 10 s between VAE_GRACE_S and the pod's grace
DEFAULT_SERVICE_NAME = "vae-serve"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


@dataclass
class Tracing:
    """What ``configure_from_env`` set up: the provider, the exporters behind its processors, and the
    ``Tracer`` to hand to the server (``server.start(..., tracer=tracing.tracer)``)."""

    provider: trace.TracerProvider
    exporters: list
    tracer: Tracer = field(init=False)

    def __post_init__(self) -> None:
        self.tracer = Tracer(self.provider)

    def shutdown(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Stop tracing and flush the spans still buffered (at the end of a drain), for at most
        ``timeout_s``: an unreachable collector must not hold the exit past the pod's grace period
        (the exporter's own retries could take far longer)."""
        self.tracer.stop()
        flushing = threading.Thread(target=self.provider.shutdown, name="trace-flush", daemon=True)
        flushing.start()
        flushing.join(timeout_s)
        if flushing.is_alive():
            log.warning("tracing: spans not exported within %g s of the drain's end were dropped", timeout_s)


def _exporters(names: list[str]) -> list:
    exporters = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            protocol = next((os.environ[var] for var in PROTOCOL_VARIABLES if os.environ.get(var)), "grpc")
            if protocol != "grpc":
                log.warning("tracing: OTLP protocol %r is not installed; spans are exported with OTLP/gRPC", protocol)
            exporters.append(OTLPSpanExporter())  # endpoint, headers, TLS, timeout: from OTEL_EXPORTER_OTLP_*
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            log.warning("tracing: OTEL_TRACES_EXPORTER names %r, which is not one of otlp, console, none", name)
    return exporters


def configure_from_env() -> Tracing | None:
    """Start tracing if the standard OpenTelemetry variables ask for it, once, at server start.

    On when OTEL_TRACES_EXPORTER names ``otlp`` (or ``console``), or when
    OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set and
    OTEL_TRACES_EXPORTER does not say ``none``; off when OTEL_SDK_DISABLED is true. The exporter
    reads its endpoint, headers and TLS settings from OTEL_EXPORTER_OTLP_*, the sampler comes from
    OTEL_TRACES_SAMPLER, the batching of exports from OTEL_BSP_*, and ``service.name`` is
    "vae-serve" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names another.

    Returns:
        The provider, its exporters and its ``Tracer`` (call ``shutdown()`` at the drain to flush
        them), or None when tracing stays off.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not names and any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        names = ["otlp"]
    if "none" in names or not (exporters := _exporters(names)):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The variables' service.name, if any, wins over the default (a later merge overrides).
    resource = Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info(
        "tracing: on, exporting to %s as service.name %s",
        ", ".join(type(exporter).__name__ for exporter in exporters),
        resource.attributes[SERVICE_NAME],
    )
    return Tracing(provider, exporters)
