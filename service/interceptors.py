"""One place that turns exceptions into gRPC statuses and records per-rpc metrics.

Handlers raise ServiceError subclasses; this interceptor aborts with the class's status and its
message. Anything else is logged with its traceback and answered INTERNAL with a fixed text, so no
path or traceback reaches a client. Metrics are recorded in ``finally``, after the handler ran.
"""

import asyncio
import contextlib
import logging
import time

import grpc

from service.errors import ServiceError
from service.metrics import ServerMetrics

log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error; the server log has the details"


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    if isinstance(error, ServiceError):
        await context.abort(getattr(grpc.StatusCode, error.status_name), str(error))
    log.error("unhandled %s, answered INTERNAL", type(error).__name__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _status_name(context: grpc.aio.ServicerContext, cancelled: bool) -> str:
    if cancelled:
        return "CANCELLED"
    code = context.code()
    return "OK" if code is None else code.name


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Error mapping and metrics for the methods of the services named in ``service_prefixes``."""

    def __init__(self, metrics: ServerMetrics, service_prefixes: tuple[str, ...]) -> None:
        self.metrics = metrics
        self.service_prefixes = service_prefixes
        self.active_calls = 0  # reported in the drain log

    def _enter(self, method: str) -> float:
        self.active_calls += 1
        self.metrics.in_flight.labels(method).inc()
        return time.perf_counter()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full_method = handler_call_details.method
        if handler is None or not full_method.startswith(self.service_prefixes):
            return handler
        method = full_method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _record(self, method: str, context, started: float, cancelled: bool) -> None:
        self.active_calls -= 1
        self.metrics.in_flight.labels(method).dec()
        self.metrics.requests.labels(method, _status_name(context, cancelled)).inc()
        self.metrics.request_duration.labels(method).observe(time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, context: grpc.aio.ServicerContext):
        """Around one call: in-flight gauge, status mapping, and the metrics recorded at the end."""
        started, cancelled = self._enter(method), False
        try:
            yield
        except grpc.aio.AbortError:
            raise  # context.abort already set the status
        except asyncio.CancelledError:
            cancelled = True  # the client went away or the deadline passed
            raise
        except Exception as error:
            await _abort(context, error)
        finally:
            self._record(method, context, started, cancelled)

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
