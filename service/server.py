"""Build the grpc.aio server (VaeService, Open Inference Protocol, health, reflection, metrics),
run it, drain it on SIGTERM.

Start-up order: bind the port (health NOT_SERVING), load and verify every bundle off the event
loop, then report SERVING. One of several processes sharing a port (``--processes``) loads first
and binds after, so no connection reaches it before it can serve. A bundle that fails verification
stops the server before it ever reports SERVING.
"""

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.core.runtime import providers_for
from vae_serve.service.grpc.grpc_log import quiet_gone_streams
from vae_serve.service.grpc.health import HealthService
from vae_serve.service.grpc.interceptors import ServiceInterceptor
from vae_serve.service.grpc.oip import OIP_SERVICE, InferenceServicer
from vae_serve.service.grpc.servicer import VaeServicer
from vae_serve.service.monitor.decisions import DecisionLog, DecisionLogError
from vae_serve.service.monitor.monitor import Monitor
from vae_serve.service.observe import tracing
from vae_serve.service.observe.calls import CallRecorder
from vae_serve.service.observe.exporting import configure_from_env
from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.observe.observer import Observer
from vae_serve.service.observe.redaction import install as install_redaction
from vae_serve.service.plane.dataplane import DataPlane
from vae_serve.service.plane.inference import Inference
from vae_serve.service.plane.operations import Operations
from vae_serve.service.plane.registry import ModelRegistry, load_registry
from vae_serve.service.plane.reload import RepositoryWatcher
from vae_serve.service.rest.server import HttpFront
from vae_serve.service.security import TokenAuthInterceptor, load_tokens, server_credentials
from vae_serve.service.settings import Settings

# Drain: how often to check for in-flight calls, and how long answers at the grace's end may take.
# The margin is spent only while answers are still going out (stop returns once no call is left):
# 0.5 s was once too short on a loaded CI machine, where an inference thread holding the GIL
# delayed the event loop's UNAVAILABLE answers and gRPC cancelled one call (a logged traceback).
DRAIN_POLL_S = 0.05
ANSWER_MARGIN_S = 2.0
log = logging.getLogger(__name__)
VAE_SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VaeService"].full_name
MODEL_SERVICES = (VAE_SERVICE, OIP_SERVICE)  # each reported by gRPC health, "" for the server


class StartupError(RuntimeError):
    """The server could not start (a port already in use, say); the message says which."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    health: HealthService
    plane: DataPlane
    interceptor: ServiceInterceptor
    metrics: ServerMetrics
    executor: ThreadPoolExecutor
    observer: Observer  # the metrics and the tracer, as handed to the plane
    metrics_httpd: object | None = None
    watcher: asyncio.Task | None = None  # the model-repository watcher, when hot reload is on
    http: HttpFront | None = None  # the REST binding, with --http-port
    monitor: Monitor | None = None  # the score monitor; None with --no-monitor
    decisions: DecisionLog | None = None  # the decision log, with --decision-log


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        # A second server on the same port must fail to bind, not silently share it, unless it is
        # one of this server's own processes (--processes).
        ("grpc.so_reuseport", int(settings.reuse_port)),
        ("grpc.keepalive_time_ms", milliseconds(settings.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", milliseconds(settings.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", milliseconds(settings.min_client_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_age_grace_ms", milliseconds(settings.max_connection_age_grace_s)),
    ]
    if settings.max_connection_age_s is not None:
        options.append(("grpc.max_connection_age_ms", milliseconds(settings.max_connection_age_s)))
    if settings.max_connection_idle_s is not None:
        options.append(("grpc.max_connection_idle_ms", milliseconds(settings.max_connection_idle_s)))
    return options


async def start(
    settings: Settings, registry: CollectorRegistry | None = None, tracer: tracing.Tracer = tracing.OFF
) -> RunningServer:
    """Bind and start serving health (NOT_SERVING) and, if enabled, metrics. Models load in ``load_models``.

    Args:
        settings: the server's settings.
        registry: the Prometheus registry its metrics are built on (a fresh one if None).
        tracer: the tracing of its calls, batches and graph runs (``tracing.OFF``: none), handed
            with the metrics to the plane, the batchers and the graph runs as one ``Observer``.

    Returns:
        The running server; its ``observer`` carries the metrics and the tracer.

    Raises:
        StartupError: a port could not be bound, or the decision log names no usable destination.
    """
    quiet_gone_streams()
    metrics = ServerMetrics(registry or CollectorRegistry())
    metrics.queue_limit_rows.set(settings.max_queue_rows)
    observer = Observer(metrics, tracer)
    try:
        decisions = DecisionLog.from_settings(settings, metrics.registry)
    except DecisionLogError as error:
        raise StartupError(str(error)) from None
    # Its series on the server's registry; its tests run in a background task started below.
    monitor = None if settings.monitor_window_rows is None else Monitor(settings, metrics.registry)
    executor = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="inference")
    plane = DataPlane(settings, observer, executor, monitor, decisions)
    protected = tuple(f"/{service}/" for service in MODEL_SERVICES)
    calls = CallRecorder(metrics, tracer)
    interceptor = ServiceInterceptor(metrics, calls, protected)
    tokens = load_tokens(settings)
    install_redaction(tokens)  # a safety net: nothing is meant to log a token in the first place
    # Authentication first: a refused call never reaches the handlers or their metrics.
    interceptors = [TokenAuthInterceptor(tokens, protected, metrics), interceptor] if tokens else [interceptor]
    log.info("authentication: %s", f"bearer tokens ({len(tokens)} accepted)" if tokens else "off")
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    operations = Operations(plane)
    vae_pb2_grpc.add_VaeServiceServicer_to_server(VaeServicer(operations, settings), server)
    health = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    inference = Inference(operations, settings, ready=lambda: plane.ready and not health.draining)
    oip_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(inference), server)
    for service in ("", *MODEL_SERVICES):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.reflection:
        names = (*MODEL_SERVICES, "grpc.health.v1.Health", reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    credentials = server_credentials(settings)
    log.info(
        "transport: %s",
        "plaintext" if credentials is None else "TLS" + (" with client certificates" if settings.tls_client_ca else ""),
    )
    try:
        address = f"{settings.host}:{settings.port}"
        port = (
            server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
        )
    except RuntimeError:
        address = f"{settings.host}:{settings.port}"
        raise StartupError(f"cannot bind gRPC to {address} (in use, or not a local address)") from None
    await server.start()
    running = RunningServer(server, port, None, health, plane, interceptor, metrics, executor, observer)
    running.monitor, running.decisions = monitor, decisions
    if settings.http_port is not None:
        running.http = HttpFront(inference, executor, calls, metrics, tokens, ready=inference.ready)
        try:
            # The drain waits for REST calls itself (grace + margin); what runs past that gets the margin.
            await running.http.start(settings, shutdown_timeout_s=ANSWER_MARGIN_S)
        except OSError as error:
            await server.stop(0)
            raise StartupError(f"cannot serve HTTP on {settings.host}:{settings.http_port}: {error.strerror}") from None
    if settings.metrics_port is not None:
        metrics_host = settings.metrics_host or settings.host
        try:
            httpd, _ = start_http_server(settings.metrics_port, metrics_host, metrics.registry)
        except OSError as error:
            await server.stop(0)
            if running.http is not None:
                await running.http.stop()
            address = f"{metrics_host}:{settings.metrics_port}"
            raise StartupError(f"cannot serve metrics on {address}: {error.strerror}") from None
        running.metrics_httpd, running.metrics_port = httpd, httpd.server_port
    # Started once every port is bound: a start-up error above leaves no task behind.
    if decisions is not None:
        await decisions.start()
    if monitor is not None:
        await monitor.start()
    return running


async def load_models(running: RunningServer, settings: Settings, registry: ModelRegistry | None = None) -> None:
    """Load and verify every bundle (unless ``registry`` is already loaded), then report SERVING."""
    if registry is None:
        registry = await asyncio.get_running_loop().run_in_executor(running.executor, load_registry, settings)
    running.plane.load(registry)
    for service in ("", *MODEL_SERVICES):
        await running.health.set(service, health_pb2.HealthCheckResponse.SERVING)
    running.metrics.serving.set(1)
    log.info("SERVING %s with providers %s", sorted(registry.models), registry.providers)
    if settings.model_repository is not None and settings.repository_poll_s is not None:
        watcher = RepositoryWatcher(settings, running.plane, running.metrics, running.executor)
        running.watcher = asyncio.ensure_future(watcher.run())


async def answer_leftovers(running: RunningServer, grace_s: float) -> None:
    """At the end of the grace, answer the calls still waiting on a batch UNAVAILABLE."""
    deadline = asyncio.get_running_loop().time() + grace_s
    while running.interceptor.active_calls and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
    if running.interceptor.active_calls:
        abandoned = running.plane.abandon_waiting(
            f"the server is shutting down and its {grace_s:g} s grace period ended before this call finished; retry"
        )
        log.info("grace period over: %d calls still waiting answered UNAVAILABLE", abandoned)


async def drain(running: RunningServer, grace_s: float) -> None:
    """NOT_SERVING at once, refuse new calls, let in-flight calls finish within ``grace_s``."""
    await running.health.drain()
    if running.http is not None:
        running.http.draining = True  # new REST calls: 503; ready: false
    if running.watcher is not None:
        running.watcher.cancel()
    running.metrics.serving.set(0)
    log.info("draining: %d in-flight calls have %.1f s to finish", running.interceptor.active_calls, grace_s)
    # gRPC refuses new calls at once. At the end of the grace, calls still waiting on a batch are
    # answered UNAVAILABLE by us (counted in the metrics, with a reason) rather than cancelled by
    # gRPC, which would log a CancelledError traceback per call; the margin lets those answers go out.
    leftovers = asyncio.ensure_future(answer_leftovers(running, grace_s))
    deadline = asyncio.get_running_loop().time() + grace_s + ANSWER_MARGIN_S
    await running.server.stop(grace_s + ANSWER_MARGIN_S)  # awaited here: refusal starts at once
    if running.http is not None:
        # REST calls count in active_calls (the leftovers answer theirs too). The port stays open
        # until they are answered, so probes read "not ready" and new calls a 503, not a refusal.
        while running.interceptor.active_calls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        await running.http.stop()
    leftovers.cancel()
    running.plane.close()
    if running.monitor is not None:
        await running.monitor.close()
    if running.decisions is not None:
        # No call is left to score: the log delivers what it holds within the answers' margin.
        await running.decisions.close(ANSWER_MARGIN_S)
    running.executor.shutdown(wait=False, cancel_futures=True)
    if running.metrics_httpd is not None:
        running.metrics_httpd.shutdown()


def announce(settings: Settings, running: RunningServer) -> None:
    """The bound addresses, each on a line of its own on stdout (what --port 0 callers read)."""
    print(f"vae-serve listening on {settings.host}:{running.port}", flush=True)
    if running.http is not None:
        scheme = "http" if settings.tls_cert is None else "https"
        print(f"vae-serve http on {scheme}://{settings.host}:{running.http.port}", flush=True)
    if running.metrics_port is not None:
        print(
            f"vae-serve metrics on http://{settings.metrics_host or settings.host}:{running.metrics_port}/metrics",
            flush=True,
        )


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; returns the process exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.device == "cuda":
        providers_for("cuda")  # refused before the port is bound: no "listening" line, then an error
    traces = configure_from_env()  # None unless the OTEL_* variables ask for an exporter
    preloaded = None
    if settings.reuse_port:
        # One of several processes on a shared port: bind only once the models are verified, so the
        # kernel never hands this process a connection that it would have to refuse as not ready.
        preloaded = await loop.run_in_executor(None, load_registry, settings)
    running = await start(settings, tracer=tracing.OFF if traces is None else traces.tracer)
    announce(settings, running)
    loading = asyncio.ensure_future(load_models(running, settings, preloaded))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is not None:
        log.error("refusing to serve: %s", loading.exception())
        print(f"vae-serve: error: {loading.exception()}", file=sys.stderr, flush=True)
        await drain(running, 0)
        return 1
    await stopping
    loading.cancel()
    await drain(running, settings.grace_s)
    if traces is not None:
        traces.shutdown()  # flush the spans still buffered
    log.info("stopped")
    return 0
