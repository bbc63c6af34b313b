"""The Open Inference Protocol over HTTP/REST (``--http-port``), beside gRPC on the same event loop.

Routes (KServe v2 / Triton): ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
``GET /v2/models/{name}[/versions/{version}]``, ``.../ready``, ``.../config``, ``POST .../infer``, and
Triton's statistics, ``GET /v2/models[/{name}[/versions/{version}]]/stats``.
Triton's repository index, ``POST /v2/repository/index`` (service/rest/repository.py); with ``--ui``, the
model explorer page at ``/ui/`` (service/rest/ui_routes.py).
Every model call goes to the plane's ``Inference`` (service/plane/inference.py), as the gRPC
binding's calls do, so REST and gRPC share the plane's checks, limits and batchers; the calls are
counted in the same metric series (method ``ModelInfer`` and so on, by gRPC status code name),
traced the same way, and refused the same way without a bearer token. The health routes stay open
to probes; the rest need the token when tokens are configured. TLS uses the same certificate files
as gRPC, re-read when they change.

Why aiohttp: it serves HTTP/1.1 from C-accelerated parsing on the asyncio loop that grpc.aio
already runs, so a REST call reaches the batchers without a thread hop or a second loop, and it
needs no ASGI server and framework pair (uvicorn + Starlette/FastAPI, as MLServer and KServe use)
for a dozen routes. Errors are JSON ``{"error": "..."}`` with the protocol's status codes; no
traceback ever reaches a client. Requests that are not valid HTTP, slow clients and surplus
connections are handled below the routes, by service/rest/guard.py.
"""

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from vae_serve.core.errors import NotFound
from vae_serve.service.grpc.servicer import VaeServicer
from vae_serve.service.observe.calls import CallRecorder
from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.plane.inference import Inference
from vae_serve.service.rest import codec as http_codec
from vae_serve.service.rest.errors import body_error, error_response, json_response
from vae_serve.service.rest.guard import METHOD_LABEL, GuardedRequestHandler, HttpGuard, HttpLimits
from vae_serve.service.rest.openapi import add_openapi_route
from vae_serve.service.rest.repository import add_repository_route
from vae_serve.service.rest.ui_routes import add_ui_routes
from vae_serve.service.rest.vae_http import CALL_STATUS, PREFIX, VaeHttp, route_error
from vae_serve.service.security import REFUSALS, HttpTls, Refusal, bearer_refusal, http_tls
from vae_serve.service.settings import Settings
from vae_serve.service.status import Code, status_for

log = logging.getLogger(__name__)
JSON = "application/json"
DOUBLED_AUTHORIZATION = Refusal("malformed", REFUSALS["malformed"] + ", once")
DRAINING_MESSAGE = "the server is shutting down; retry on another replica"
# gRPC status -> HTTP status, as Triton and KServe answer the same failures.
HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}
MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
# A body must arrive within this long once its call started: a stalled upload neither holds a call
# slot nor the drain for longer. The request line and headers have --http-header-timeout (rest/guard.py).
BODY_READ_TIMEOUT_S = 30.0
PARSE_INLINE_BYTES = 1024 * 1024  # larger request bodies are parsed on an inference thread


def oip_error(status: int, code: Code, message: str, headers: dict | None = None) -> web.Response:
    """An Open Inference Protocol error: ``{"error": message}`` (the code only labels the call)."""
    return error_response(status, message, headers)


def _authorization_refusal(request: web.Request, tokens: list[bytes]) -> Refusal | None:
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:  # a singleton header (RFC 9110): which one would count is a guess
        return DOUBLED_AUTHORIZATION
    return bearer_refusal(values[0] if values else None, tokens)


@dataclass
class HttpFront:
    """The REST routes over the plane's ``Inference``; ``start`` binds them, ``stop`` closes them.

    ``executor``: the inference threads, where large JSON bodies are parsed off the event loop.
    """

    inference: Inference
    executor: Executor
    calls_recorder: CallRecorder
    metrics: ServerMetrics
    tokens: list[bytes]
    ready: Callable[[], bool]
    draining: bool = False
    runner: web.AppRunner | None = None
    listener: asyncio.Server | None = None
    guard: HttpGuard | None = None  # made with the application, from its settings
    port: int | None = None
    tls: HttpTls | None = None
    max_body_bytes: int = 0
    max_calls: int | None = None  # --max-concurrent-rpcs, as gRPC applies it to its own calls
    calls: int = 0

    def application(self, settings: Settings) -> web.Application:
        self.max_body_bytes = settings.max_receive_message_bytes
        self.max_calls = settings.max_concurrent_rpcs
        self.guard = HttpGuard(HttpLimits.from_settings(settings), self.metrics)
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._began, self._errors])
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/v2", self._call("ServerMetadata", self._server_metadata))
        # Before the model routes: aiohttp takes the first route that matches, and "stats" would be a name.
        app.router.add_get("/v2/models/stats", self._call("ModelStatistics", self._model_statistics))
        for path in MODEL_PATHS:
            app.router.add_get(path, self._call("ModelMetadata", self._model_metadata))
            app.router.add_get(path + "/ready", self._call("ModelReady", self._model_ready))
            app.router.add_get(path + "/config", self._call("ModelConfig", self._model_config))
            app.router.add_post(path + "/infer", self._call("ModelInfer", self._infer))
            app.router.add_get(path + "/stats", self._call("ModelStatistics", self._model_statistics))
        # VaeService over HTTP/JSON (rest/vae_http.py): the gRPC binding's own handlers, through _call.
        servicer = VaeServicer(self.inference.operations, settings)
        vae = VaeHttp(
            servicer,
            self.executor,
            self.guard.malformed,
            BODY_READ_TIMEOUT_S,
            PARSE_INLINE_BYTES,
            max_rows=self.inference.operations.limits.max_rows,
            max_reply_bytes=settings.max_send_message_bytes,
        )
        vae.add_routes(app, self._call)
        add_repository_route(app, self._call, self.inference, BODY_READ_TIMEOUT_S)  # Triton's model list
        add_openapi_route(app, self._call)  # the token, metrics and tracing of the /v2 routes
        if settings.ui:
            add_ui_routes(app)  # static files, open: the page asks for the token it then sends
        return app

    async def start(self, settings: Settings, shutdown_timeout_s: float) -> int:
        """Bind ``--host``:``--http-port`` (TLS when configured) and serve; returns the bound port.

        ``shutdown_timeout_s``: how long ``stop`` waits for calls still running.
        """
        self.runner = web.AppRunner(self.application(settings), access_log=None, shutdown_timeout=shutdown_timeout_s)
        await self.runner.setup()
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.create_server(
            (settings.host, settings.http_port), family=family, reuse_port=settings.reuse_port, backlog=1024
        )
        self.port = sock.getsockname()[1]
        self.tls = http_tls(settings)
        # Our own listener instead of web.SockSite, whose protocol is aiohttp's plain RequestHandler:
        # each connection gets a GuardedRequestHandler of the runner's server (the app, its routes).
        loop = asyncio.get_running_loop()
        factory = self.guard.protocol_factory(self.runner.server, loop)
        self.listener = await loop.create_server(
            factory, sock=sock, ssl=None if self.tls is None else self.tls.context, backlog=1024
        )
        return self.port

    async def stop(self) -> None:
        """Close the port and wait for the calls still running (the drain bounds how long)."""
        if self.listener is not None:
            self.listener.close()
        if self.runner is not None:
            await self.runner.cleanup()  # closes idle connections, waits for running calls

    # --- one call: auth, drain, metrics, tracing, errors -----------------------------------------

    def _call(
        self,
        method: str,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        write_error: Callable[..., web.Response] = oip_error,
        span_name: str | None = None,
        span_attributes: Mapping[str, object] | None = None,
    ):
        """``handler`` as one call of ``method`` (its metric label); ``write_error(http_status, code,
        message, headers)`` writes its errors (the protocol's error shape). The call's span is named
        ``span_name`` (default ``method``), with ``span_attributes`` besides the HTTP method."""
        span_name = span_name or method
        span_attributes = {**(span_attributes or {})}

        async def call(request: web.Request) -> web.StreamResponse:
            if self.tokens and (refusal := _authorization_refusal(request, self.tokens)):
                self.metrics.auth_failures.labels(method, refusal.reason).inc()
                return write_error(401, Code.UNAUTHENTICATED, refusal.message, {"WWW-Authenticate": "Bearer"})
            if self.draining:
                return write_error(503, Code.UNAVAILABLE, DRAINING_MESSAGE, {"Connection": "close"})
            if self.max_calls is not None and self.calls >= self.max_calls:  # before the body is read
                message = f"more than {self.max_calls} calls at once; retry with backoff"
                return write_error(429, Code.RESOURCE_EXHAUSTED, message)
            self.calls += 1
            started = self.calls_recorder.begin(method)
            code = Code.OK
            try:
                tracer = self.calls_recorder.tracer
                attributes = {**span_attributes, "http.request.method": request.method}
                with tracer.call_span(span_name, request.headers, "http", attributes):
                    response = await handler(request)
                code = response.get(CALL_STATUS, Code.OK)  # a stream that ended in an error says which
                return response
            except web.HTTPRequestEntityTooLarge:  # from reading the body; gRPC answers the same
                code = Code.RESOURCE_EXHAUSTED
                message = f"the request body is larger than the server's limit of {self.max_body_bytes} bytes"
                return write_error(413, code, message)
            except TimeoutError as error:
                if request.content.is_eof():  # the body is in: not its read's timeout, a failure of the call
                    code, message = status_for(error)
                    return write_error(HTTP_STATUS.get(code, 500), code, message)
                # The routes' body reads are timed (BODY_READ_TIMEOUT_S); the call's own deadline is
                # DeadlineExpired (vae_http.within), never a TimeoutError.
                code = Code.DEADLINE_EXCEEDED
                return write_error(408, code, f"the request body did not arrive within {BODY_READ_TIMEOUT_S:g} s")
            except ConnectionError:
                code = Code.CANCELLED  # the client went away mid-upload
                return write_error(400, code, "the request body could not be read: the connection closed")
            except (web.RequestPayloadError, HttpProcessingError) as error:  # a body that breaks its framing
                code, text = Code.INVALID_ARGUMENT, body_error(error)
                self.guard.malformed(method, request.remote, 400, text)
                response = write_error(400, code, text)
                response.force_close()  # the rest of the stream cannot be trusted to frame a next request
                return response
            except asyncio.CancelledError:
                code = Code.CANCELLED  # the client went away
                raise
            except Exception as error:
                code, message = status_for(error)
                headers = {}
                if retry_after_ms := getattr(error, "retry_after_ms", None):
                    headers["Retry-After"] = str(max(1, round(retry_after_ms / 1000)))
                return write_error(HTTP_STATUS.get(code, 500), code, message, headers)
            finally:
                self.calls -= 1
                self.calls_recorder.end(method, code.name, started)

        return call

    @web.middleware
    async def _began(self, request: web.Request, handler) -> web.StreamResponse:
        """Tell the connection's guard that this request's head is in (its header deadline stops)."""
        if isinstance(request.protocol, GuardedRequestHandler):
            request.protocol.request_began(request)
        if request.version < (1, 0):  # llhttp takes "GET /path" alone as HTTP/0.9
            text = "HTTP/0.9 is not served; send HTTP/1.1"
            self.guard.malformed(METHOD_LABEL, request.remote, 400, text)
            response = error_response(400, text)
            response.force_close()
            return response
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        """aiohttp's own refusals (no such route, body too large) as JSON errors too."""
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            # The path is never quoted back: it is the client's bytes, and may hold anything.
            message = error.reason
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            if request.path.startswith(PREFIX):  # VaeService's routes answer google.rpc.Status
                return route_error(error.status, request.method, allow and allow["Allow"])
            if error.status == 404:
                message = "no such endpoint; see the Open Inference Protocol's /v2 routes"
            elif error.status == 405:
                message = f"{request.method} is not allowed on this path" + (f"; use {allow['Allow']}" if allow else "")
            return error_response(error.status, message, allow)

    # --- the routes ------------------------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self.ready() and not self.draining
        return json_response({"ready": ready}, 200 if ready else 400)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        document = self.inference.server_metadata()
        document["extensions"].append("binary_tensor_data")  # the REST binding's own extension
        return json_response(document)

    @staticmethod
    def _model(request: web.Request) -> tuple[str, str]:
        return request.match_info["name"], request.match_info.get("version", "")

    async def _model_metadata(self, request: web.Request) -> web.Response:
        return json_response(self.inference.model_metadata(*self._model(request)))

    async def _model_ready(self, request: web.Request) -> web.Response:
        name, version = self._model(request)
        ready = self.inference.model_ready(name, version)
        document = {"name": name, "ready": ready}
        if not ready and self.ready() and not self.draining:
            try:  # the server serves: not ready means unknown; say so, as a known model's 400 would not
                self.inference.model(name, version)
            except NotFound as error:
                document["error"] = str(error)
        return json_response(document, 200 if ready else 400)

    async def _model_config(self, request: web.Request) -> web.Response:
        return json_response(self.inference.model_config(*self._model(request)))

    async def _model_statistics(self, request: web.Request) -> web.Response:
        name, version = request.match_info.get("name", ""), request.match_info.get("version", "")
        return json_response({"model_stats": self.inference.model_statistics(name, version)})

    async def _infer(self, request: web.Request) -> web.Response:
        name, version = self._model(request)
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            body = await request.read()
        header_length = request.headers.get(http_codec.HEADER_LENGTH)
        if len(body) < PARSE_INLINE_BYTES:
            infer = http_codec.infer_request(body, header_length)
        else:  # a large JSON body takes ~40 ms per MiB to parse: not on the loop every gRPC call shares
            parse = functools.partial(http_codec.infer_request, body, header_length)
            infer = await asyncio.get_running_loop().run_in_executor(self.executor, parse)
        result = await self.inference.infer(
            name, version, infer.inputs, infer.parameters, infer.outputs, infer.timeout_s
        )
        document, header_length = http_codec.infer_response(result, name, infer.id, infer.binary)
        if header_length is None:
            return web.Response(body=document, content_type=JSON)
        headers = {http_codec.HEADER_LENGTH: str(header_length)}
        return web.Response(body=document, content_type="application/octet-stream", headers=headers)
