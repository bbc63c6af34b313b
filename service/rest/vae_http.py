"""``vae.v1.VaeService`` over HTTP/JSON on the REST port (issue 24), transcoded as grpc-gateway does.

Each route (service/rest/vae_routes.py) parses its JSON body into the rpc's request message
(service/rest/vae_json.py), names the model from the path, and calls the very handler gRPC calls,
``VaeServicer``'s method, with a small stand-in for the gRPC context: the deadline of a
``Grpc-Timeout`` header, and the HTTP headers as the call's metadata (so ``x-request-id`` and
``traceparent`` work as over gRPC). The reply is the same message, written in the proto3 JSON
mapping: the bytes of every Tensor are those gRPC sends. Tokens, the drain, the concurrency limit,
the call metrics (by rpc name, as gRPC's), the call span and the exception -> status table are
``HttpFront._call``'s, as for the Open Inference Protocol routes; errors are google.rpc.Status JSON,
``{"code": 3, "message": "...", "details": []}``, with the HTTP status grpc-gateway gives the code.
The call's span is named as gRPC's ("vae.v1.VaeService/Sample", with the same rpc.* attributes),
plus ``http.route``; its transport says "http". A reply larger than ``--max-send-message-bytes`` is
refused RESOURCE_EXHAUSTED, as gRPC refuses to send it (a stream's: the message that would be).

SampleStream is JSON Lines (one SampleResponse per line), or server-sent events when ``Accept`` asks
for ``text/event-stream``. An error before the first message is an ordinary error response; after
it, the stream ends with ``{"error": {google.rpc.Status}}`` (grpc-gateway's shape), and the call is
counted with that code. A client that goes away mid-stream closes the stream's generator and is
counted CANCELLED.
"""

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import orjson
from aiohttp import web
from google.protobuf.message import Message
from multidict import MultiMapping
from opentelemetry import trace

from vae_serve.api.v1 import vae_pb2
from vae_serve.core.errors import DeadlineExpired, InvalidInput, MalformedRequest, Overloaded
from vae_serve.service.observe import tracing
from vae_serve.service.rest.vae_json import parse_request, reply_json, status_document
from vae_serve.service.rest.vae_routes import VAE_ROUTES, VaeRoute
from vae_serve.service.status import Code, status_for

JSON = "application/json"
JSON_LINES = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
PREFIX = "/v1/"  # every VaeService route, and only those, starts so
SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VaeService"].full_name  # "vae.v1.VaeService"
# Tracing as the gRPC binding's calls: the span names the gRPC method; "network.protocol.name" (http)
# and "http.route" say how it came.
RPC_ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": SERVICE}
CALL_STATUS = web.ResponseKey("vae_call_status", Code)  # a stream's final code, for the call's metrics
TENSORS_PARAMETER = "tensors"
TENSOR_FORMS = {"base64": False, "array": True}  # ?tensors=...: write reply Tensors as arrays?
# gRPC's timeout header (grpc-gateway reads the same): up to 8 digits and a unit.
GRPC_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
TIMEOUT_UNITS_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
DEADLINE_MESSAGE = "the call's deadline (its Grpc-Timeout header) passed before it finished"
ROUTES_HINT = (
    "the VaeService routes are POST /v1/models/{name}[/versions/{version}]:{verb} (encode, decode, sample, "
    "sampleStream, elbo, scoreAnomaly, interpolate), GET .../info and .../monitoring, and GET /v1/monitoring"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorWriter = Callable[..., web.Response]
# HttpFront._call(metric label, handler, error writer, span name, span attributes).
CallWrapper = Callable[[str, Handler, ErrorWriter, str, Mapping[str, object]], Handler]


class ReplyTooLarge(Overloaded):
    """A reply over ``--max-send-message-bytes``: RESOURCE_EXHAUSTED, as gRPC refuses to send it;
    no ``Retry-After``: the same request would be as large again."""

    retry_after_ms = None


def status_response(status: int, code: Code, message: str, headers: dict | None = None) -> web.Response:
    """An error as google.rpc.Status JSON with HTTP ``status``; ``HttpFront._call``'s error writer here."""
    return web.Response(body=orjson.dumps(status_document(code, message)), status=status, content_type=JSON,
                        headers=headers)  # fmt: skip


def route_error(status: int, method: str, allow: str | None) -> web.Response:
    """aiohttp's own refusal of a /v1 path (no such route, a method it does not take) as google.rpc.Status."""
    if status == 404:
        return status_response(404, Code.NOT_FOUND, f"no such endpoint; {ROUTES_HINT}")
    if status == 405:
        text = f"{method} is not allowed on this path" + (f"; use {allow}" if allow else "")
        return status_response(405, Code.UNIMPLEMENTED, text, {"Allow": allow} if allow else None)
    return status_response(status, Code.INVALID_ARGUMENT if status < 500 else Code.INTERNAL, f"HTTP {status}")


def deadline_of(headers: Mapping[str, str], now: float) -> float | None:
    """The event-loop time a call must finish by, from its ``Grpc-Timeout`` header (None: no deadline).

    Raises:
        InvalidInput: the header is not gRPC's form (up to 8 digits and one of H M S m u n).
    """
    value = headers.get("Grpc-Timeout")
    if value is None:
        return None
    if (parsed := GRPC_TIMEOUT.fullmatch(value.strip())) is None:
        raise InvalidInput(
            "Grpc-Timeout: not a gRPC timeout; send up to 8 digits and a unit (H, M, S, m, u or n), e.g. 500m or 2S"
        )
    return now + int(parsed.group(1)) * TIMEOUT_UNITS_S[parsed.group(2)]


class HttpContext:
    """What ``VaeServicer``'s handlers ask of a gRPC context: the time left, and the call's metadata."""

    def __init__(self, headers: Mapping[str, str], deadline: float | None) -> None:
        self.deadline = deadline
        # gRPC lower-cases metadata keys; an HTTP header may come in any case.
        self._metadata = tuple((key.lower(), value) for key, value in headers.items())

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def tensor_form(query: MultiMapping[str]) -> bool:
    """Whether the reply's Tensors are written as arrays (``?tensors=array``) rather than base64.

    Raises:
        InvalidInput: an unknown query parameter, or an unknown or repeated ``tensors`` value.
    """
    if unknown := sorted(set(query) - {TENSORS_PARAMETER}):
        raise InvalidInput(f"unknown query parameters {unknown}; the only one is 'tensors' (base64 or array)")
    forms = query.getall(TENSORS_PARAMETER, ["base64"])
    if len(forms) > 1 or forms[0] not in TENSOR_FORMS:
        raise InvalidInput(f"tensors: {forms} is not one of {sorted(TENSOR_FORMS)}; give it once")
    return TENSOR_FORMS[forms[0]]


def name_model(message: Message, match_info: Mapping[str, str]) -> None:
    """Set the request's ``model`` from the path; a body that names another model is refused.

    Raises:
        InvalidInput: the body's ``model`` differs from the path's.
    """
    name, version = match_info.get("name", ""), match_info.get("version", "")
    given = message.model
    if (given.name and given.name != name) or (given.version and given.version != version):
        raise InvalidInput(
            f"model: the body names model {given.name!r} version {given.version!r}, the path {name!r} version "
            f"{version!r}; name the model in the path only"
        )
    message.model.name, message.model.version = name, version


async def within(awaitable: Awaitable, deadline: float | None):
    """``await awaitable`` by ``deadline`` (event-loop time; None: no limit).

    Raises:
        DeadlineExpired: the deadline passed first (the awaitable is cancelled); any other exception
            of the awaitable, a TimeoutError of its own too, propagates as it is.
    """
    if deadline is None:
        return await awaitable
    try:
        async with asyncio.timeout_at(deadline) as timer:
            return await awaitable
    except TimeoutError:
        if timer.expired():
            raise DeadlineExpired(DEADLINE_MESSAGE) from None
        raise


@dataclass
class VaeHttp:
    """The VaeService routes over ``servicer`` (the gRPC binding's ``VaeServicer``).

    ``executor``: where bodies of ``parse_inline_bytes`` or more are parsed, and such replies written,
    off the event loop. ``malformed(rpc, peer, http_status, text)``: counts (and logs, throttled) a
    body that is not the rpc's message.
    """

    servicer: object
    executor: Executor
    malformed: Callable[[str, object, int, str], None]
    body_read_timeout_s: float
    parse_inline_bytes: int
    max_rows: int  # the plane's per-request row limit: an array body of more rows is refused unconverted
    max_reply_bytes: int  # --max-send-message-bytes: gRPC's limit on one reply message

    def add_routes(self, app: web.Application, call: CallWrapper) -> None:
        """Add every route of ``VAE_ROUTES``, each path wrapped by ``call`` (``CallWrapper``): counted
        under the rpc's name, traced under the gRPC method's ("vae.v1.VaeService/Sample")."""
        for route in VAE_ROUTES:
            handler = functools.partial(self._stream if route.streaming else self._unary, route)
            span_name = f"{SERVICE}/{route.rpc}"
            for path in route.paths:
                attributes = {**RPC_ATTRIBUTES, "rpc.method": route.rpc, "http.route": path}
                app.router.add_route(route.http_method, path, call(route.rpc, handler, status_response, span_name,
                                                                   attributes))  # fmt: skip

    async def _off_loop(self, size: int, function: Callable, *args):
        """``function(*args)``, on an inference thread when ``size`` bytes would hold the loop too long."""
        if size < self.parse_inline_bytes:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _request(self, route: VaeRoute, request: web.Request) -> tuple[Message, bool, HttpContext]:
        """(request message, reply Tensors as arrays, context) of one call."""
        context = HttpContext(request.headers, deadline_of(request.headers, asyncio.get_running_loop().time()))
        arrays = tensor_form(request.query)
        if route.http_method == "GET":
            message = route.request()
        else:
            async with asyncio.timeout(self.body_read_timeout_s):
                body = await request.read()
            try:
                message = await self._off_loop(len(body), parse_request, body, route.request, self.max_rows)
            except MalformedRequest as error:
                self.malformed(route.rpc, request.remote, 400, str(error))
                raise
        name_model(message, request.match_info)
        return message, arrays, context

    def _sendable(self, reply: Message | None) -> Message | None:
        """``reply`` if gRPC would send it (None: the end of a stream).

        Raises:
            ReplyTooLarge: its wire size is over ``max_reply_bytes``.
        """
        if reply is not None and (size := reply.ByteSize()) > self.max_reply_bytes:
            raise ReplyTooLarge(
                f"the reply would be {size} bytes, over the server's limit of {self.max_reply_bytes} "
                "(--max-send-message-bytes); ask for fewer rows or samples"
            )
        return reply

    async def _unary(self, route: VaeRoute, request: web.Request) -> web.Response:
        message, arrays, context = await self._request(route, request)
        reply = self._sendable(await within(getattr(self.servicer, route.rpc)(message, context), context.deadline))
        body = await self._off_loop(reply.ByteSize(), reply_json, reply, arrays)
        return web.Response(body=body, content_type=JSON)

    async def _stream(self, route: VaeRoute, request: web.Request) -> web.StreamResponse:
        message, arrays, context = await self._request(route, request)
        replies = getattr(self.servicer, route.rpc)(message, context)
        try:  # before the first message, a failure is an ordinary error response (HttpFront._call's)
            reply = self._sendable(await within(anext(replies, None), context.deadline))
        except BaseException:
            await replies.aclose()
            raise
        events = EVENT_STREAM in request.headers.get("Accept", "")
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = EVENT_STREAM if events else JSON_LINES
        response[CALL_STATUS] = Code.OK
        try:
            await response.prepare(request)
            while reply is not None:
                await response.write(frame(reply_json(reply, arrays), events))
                reply = self._sendable(await within(anext(replies, None), context.deadline))
        except ConnectionError:  # the client went away: the generator is closed below
            response[CALL_STATUS] = Code.CANCELLED
            return response
        except Exception as error:  # after the first message: the stream's last line says why it ended
            code, text = status_for(error)
            response[CALL_STATUS] = code
            tracing.record_outcome(trace.get_current_span(), code.name, error, "http")
            if not await _written(response, frame(orjson.dumps({"error": status_document(code, text)}), events)):
                response[CALL_STATUS] = Code.CANCELLED
                return response
        finally:
            await replies.aclose()
        if not await _written(response, None):
            response[CALL_STATUS] = Code.CANCELLED
        return response


def frame(document: bytes, events: bool) -> bytes:
    """One stream message: a JSON line, or a server-sent event."""
    return b"data: " + document + b"\n\n" if events else document + b"\n"


async def _written(response: web.StreamResponse, data: bytes | None) -> bool:
    """Write ``data`` (None: the end of the stream); False when the client has gone away."""
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except ConnectionError:
        return False
    return True
