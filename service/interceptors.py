"""One place that turns exceptions into gRPC statuses and records per-rpc metrics.

Handlers raise the core's exceptions; this interceptor aborts with the status ``status_for`` gives
(one table, in service/status.py). Metrics are recorded before the status is sent.
"""

import asyncio
import contextlib
import time

import grpc

from vae_serve.service.metrics import ServerMetrics
from vae_serve.service.status import status_for


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else code.name


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Error mapping and metrics for the methods of the services named in ``service_prefixes``."""

    def __init__(self, metrics: ServerMetrics, service_prefixes: tuple[str, ...]) -> None:
        self.metrics = metrics
        self.service_prefixes = service_prefixes
        self.active_calls = 0  # reported in the drain log
        # This interceptor is the last of the chain, so the handler behind a method never changes:
        # each method's wrapped handler is built once, not on every call.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def begin_call(self, method: str) -> float:
        """A call of ``method`` starts (either protocol): in-flight gauges; returns its start time."""
        self.active_calls += 1
        self.metrics.series(self.metrics.in_flight, method).inc()
        return time.perf_counter()

    async def intercept_service(self, continuation, handler_call_details):
        full_method = handler_call_details.method
        if (wrapped := self._handlers.get(full_method)) is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or not full_method.startswith(self.service_prefixes):
            return handler
        method = full_method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._handlers[full_method] = wrapped
        return wrapped

    def end_call(self, method: str, status_name: str, started: float) -> None:
        """The call ended with ``status_name`` (a gRPC status code name): counts and latency."""
        self.active_calls -= 1
        metrics = self.metrics
        metrics.series(metrics.in_flight, method).dec()
        metrics.series(metrics.requests, method, status_name).inc()
        metrics.series(metrics.request_duration, method).observe(time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, context: grpc.aio.ServicerContext):
        """Around one call: in-flight gauge, status mapping, and the metrics.

        Metrics are recorded before the status goes out, so a client that saw its answer and then
        scrapes /metrics always finds the call counted.
        """
        started = self.begin_call(method)
        try:
            yield
        except grpc.aio.AbortError:
            self.end_call(method, _status_name(context), started)  # the handler aborted itself
            raise
        except asyncio.CancelledError:
            self.end_call(method, "CANCELLED", started)  # the client went away or the deadline passed
            raise
        except Exception as error:
            code, message = status_for(error)
            self.end_call(method, code.name, started)
            if retry_after_ms := getattr(error, "retry_after_ms", None):
                context.set_trailing_metadata((("grpc-retry-pushback-ms", str(retry_after_ms)),))
            await context.abort(code, message)
        else:
            self.end_call(method, _status_name(context), started)

    def _wrap_unary(self, behavior, method: str):
        async def wrapper(request, context):
            async with self._guarded(method, context):
                return await behavior(request, context)

        return wrapper

    def _wrap_stream(self, behavior, method: str):
        async def wrapper(request, context):
            async with self._guarded(method, context):
                async for response in behavior(request, context):
                    yield response

        return wrapper
