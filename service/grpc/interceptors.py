"""One place that turns exceptions into gRPC statuses and records per-rpc metrics and spans.

Handlers raise the core's exceptions; this interceptor aborts with the status ``status_for`` gives
(one table, in service/status.py). Metrics are recorded, and the call's span ended, before the
status is sent.

It also parses the request: gRPC hands the wrapped handler the raw bytes, and bytes that are not
the rpc's request message are answered INVALID_ARGUMENT with a plain message, counted, and logged
at most once per ``MALFORMED_LOG_INTERVAL_S`` (left to gRPC, each would be UNKNOWN with a logged
traceback: a cheap way to flood the log). The parse only moves here; it is not done twice.
"""

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError

from vae_serve.core.errors import MalformedRequest
from vae_serve.service.observe import tracing
from vae_serve.service.observe.calls import CallRecorder
from vae_serve.service.observe.logs import LogThrottle
from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.status import status_for

log = logging.getLogger(__name__)
MALFORMED_LOG_INTERVAL_S = 10.0
MAX_DETAIL_CHARS = 200


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else code.name


def _identity(raw):
    return raw


def message_name(deserializer: Callable) -> str:
    """The full name of the message a generated ``Message.FromString`` parses ("request" if unknown)."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "request")


def parse_request(parse: Callable, name: str, raw: bytes):
    """The request message ``parse`` makes of ``raw``; MalformedRequest when the bytes are not one."""
    try:
        return parse(raw)
    except DecodeError as error:
        raise malformed(name, error) from None


def malformed(name: str, error: DecodeError) -> MalformedRequest:
    """The client's error for bytes that are not a ``name`` message: protobuf's reason, no more."""
    # protobuf says "Error parsing message with type 'vae.v1.ElboRequest': Wire format was corrupt".
    _, found, reason = str(error).partition("': ")
    detail = f": {reason[:MAX_DETAIL_CHARS]}" if found and reason else ""
    return MalformedRequest(f"the request is not a valid {name} message{detail}")


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Error mapping, metrics and spans for the methods of the services named in ``service_prefixes``."""

    def __init__(self, metrics: ServerMetrics, calls: CallRecorder, service_prefixes: tuple[str, ...]) -> None:
        self.metrics = metrics
        self.calls = calls
        self.service_prefixes = service_prefixes
        self.malformed_log = LogThrottle(MALFORMED_LOG_INTERVAL_S)
        # This interceptor is the last of the chain, so the handler behind a method never changes:
        # each method's wrapped handler is built once, not on every call.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    @property
    def active_calls(self) -> int:
        """Calls of either protocol begun and not yet answered (the drain waits for them)."""
        return self.calls.active

    async def intercept_service(self, continuation, handler_call_details):
        full_method = handler_call_details.method
        if (wrapped := self._handlers.get(full_method)) is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if not full_method.startswith(self.service_prefixes):
            wrapped = self._parsing_only(handler, full_method)
            self._handlers[full_method] = wrapped
            return wrapped
        method = full_method.rsplit("/", 1)[-1]
        # request_deserializer=None: gRPC passes the bytes, which the wrapper parses (see above).
        parse = handler.request_deserializer or _identity
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, full_method, parse),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, full_method, parse),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._handlers[full_method] = wrapped
        return wrapped

    def _parsing_only(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        """Health and reflection: no metrics or spans of their own, but the same answer to bytes that
        do not parse (they are open to anyone, so a traceback per call would be the easier flood)."""
        parse = handler.request_deserializer or _identity
        name, method = message_name(parse), full_method.rsplit("/", 1)[-1]
        serializer = handler.response_serializer

        async def parsed(raw, context):
            try:
                return parse_request(parse, name, raw)
            except MalformedRequest as refusal:
                self._malformed(method, refusal, context)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(refusal))

        if handler.unary_unary is not None:

            async def unary(raw, context):
                return await handler.unary_unary(await parsed(raw, context), context)

            return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serializer)
        if handler.unary_stream is not None:
            if inspect.isasyncgenfunction(handler.unary_stream):

                async def stream(raw, context):
                    async for response in handler.unary_stream(await parsed(raw, context), context):
                        yield response

            else:  # a coroutine that writes with context.write (the health Watch)

                async def stream(raw, context):
                    await handler.unary_stream(await parsed(raw, context), context)

            return grpc.unary_stream_rpc_method_handler(stream, response_serializer=serializer)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):

            async def bidi(raw_requests, context):
                async def requests():
                    async for raw in raw_requests:
                        yield await parsed(raw, context)

                async for response in handler.stream_stream(requests(), context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(bidi, response_serializer=serializer)
        return handler

    def _malformed(self, method: str, error: MalformedRequest, context: grpc.aio.ServicerContext) -> None:
        self.metrics.series(self.metrics.malformed, method).inc()
        if (held_back := self.malformed_log.admit()) is not None:
            log.warning(
                "malformed request: %s from %s answered INVALID_ARGUMENT: %s; %d more since the last such "
                "line (written at most once per %g s; vae_malformed_requests_total counts every one)",
                method,
                context.peer(),
                error,
                held_back,
                self.malformed_log.interval_s,
            )

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, full_method: str, context: grpc.aio.ServicerContext):
        """Around one call: in-flight gauge, status mapping, the metrics, and the call's span (yielded,
        None when tracing is off).

        Metrics are recorded before the status goes out, so a client that saw its answer and then
        scrapes /metrics always finds the call counted.
        """
        tracer = self.calls.tracer
        span = tracer.start_call(full_method, context.invocation_metadata()) if tracer.enabled else None
        started = self.calls.begin(method)
        try:
            yield span
        except grpc.aio.AbortError:
            self.calls.end(method, _status_name(context), started, span)  # the handler aborted itself
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away or the deadline passed. GeneratorExit: a stream cancelled while
            # gRPC was sending its last reply is closed from outside, at its yield, later.
            self.calls.end(method, "CANCELLED", started, span)
            raise
        except Exception as error:
            code, message = status_for(error)
            self.calls.end(method, code.name, started, span, error)
            if isinstance(error, MalformedRequest):
                self._malformed(method, error, context)
            if retry_after_ms := getattr(error, "retry_after_ms", None):
                context.set_trailing_metadata((("grpc-retry-pushback-ms", str(retry_after_ms)),))
            await context.abort(grpc.StatusCode[code.name], message)
        else:
            self.calls.end(method, _status_name(context), started, span)

    def _wrap_unary(self, behavior, method: str, full_method: str, parse: Callable):
        name = message_name(parse)

        async def wrapper(raw, context):
            async with self._guarded(method, full_method, context) as span:
                request = parse_request(parse, name, raw)
                if span is None:
                    return await behavior(request, context)
                with tracing.current(span):
                    return await behavior(request, context)

        return wrapper

    def _wrap_stream(self, behavior, method: str, full_method: str, parse: Callable):
        name = message_name(parse)

        async def wrapper(raw, context):
            async with self._guarded(method, full_method, context) as span:
                request = parse_request(parse, name, raw)
                responses = behavior(request, context)
                if span is None:
                    async for response in responses:
                        yield response
                    return
                # The span is current only while the handler runs, never across a yield: the
                # generator may be finalised in another context, where detaching would fail.
                while True:
                    with tracing.current(span):
                        try:
                            response = await anext(responses)
                        except StopAsyncIteration:
                            break
                    yield response

        return wrapper
