"""The REST port's connection guard: every protocol-level fault answered as JSON, counted, and logged as
one throttled line; slow and surplus connections closed.

aiohttp parses HTTP/1.1 in ``web.RequestHandler`` (one per connection). Left alone, a request it
cannot parse (a space before a header's colon, a bad chunk size, the HTTP/2 preface, a 20 KB header)
gets ``handle_error``'s plain-text 400 that quotes the offending bytes, and an ERROR traceback in the
log that quotes them again, bearer token included. ``GuardedRequestHandler`` overrides the two hooks
aiohttp routes those through, ``handle_error`` and ``log_exception`` (both on ``RequestHandler``
throughout aiohttp 3.x; the signatures below are 3.14's), so that:

- the client gets ``{"error": "..."}`` with a text of our own (service/rest/errors.py), chosen by the
  exception's class and llhttp's fixed reason (never the message, which quotes the request);
- the fault is counted in ``vae_malformed_requests_total{method="http"}`` and written as at most one
  line per ``LOG_INTERVAL_S``, with no traceback.

Everything else here is public API of aiohttp 3.x (``RequestHandler``'s constructor arguments, the
asyncio protocol methods, ``finish_response``), except one defensive read of its private message queue
in ``data_received`` (see there).

It also bounds what aiohttp leaves open: a request's line and headers must arrive within
``--http-header-timeout`` of the connection opening or of the request's first byte (slowloris), idle
keep-alive connections close after ``--http-keepalive-timeout`` (aiohttp's own timer), and beyond
``--http-max-connections`` open connections a new one gets a 503 and is closed.
"""

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError

from vae_serve.service.observe.logs import LogThrottle
from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.rest.errors import (
    BODY_UNREADABLE,
    JSON,
    body_error,
    error_response,
    protocol_error,
    raw_json_reply,
)
from vae_serve.service.settings import Settings

log = logging.getLogger(__name__)
LOG_INTERVAL_S = 10.0
METHOD_LABEL = "http"  # vae_malformed_requests_total's method for faults below any route


@dataclass(frozen=True)
class HttpLimits:
    """The REST port's bounds, from ``Settings`` (see the ``http_*`` fields there)."""

    max_request_line_bytes: int
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "HttpLimits":
        return cls(
            settings.http_max_request_line_bytes,
            settings.http_max_header_bytes,
            settings.http_max_headers,
            settings.http_header_timeout_s,
            settings.http_keepalive_timeout_s,
            settings.http_max_connections,
        )


@dataclass
class HttpGuard:
    """What the connections of one REST port share: limits, the open count, metrics, the log throttle."""

    limits: HttpLimits
    metrics: ServerMetrics
    open_connections: int = 0
    throttle: LogThrottle = field(default_factory=lambda: LogThrottle(LOG_INTERVAL_S))

    def malformed(self, method: str, peer: object, status: int, text: str) -> None:
        """Count a malformed request; log it, at most one line per interval, with no traceback."""
        self.metrics.series(self.metrics.malformed, method).inc()
        if (held_back := self.throttle.admit()) is not None:
            log.warning(
                "malformed HTTP request from %s answered %d: %s; %d more since the last such line (written at "
                "most once per %g s; vae_malformed_requests_total counts every one)",
                peer,
                status,
                text,
                held_back,
                self.throttle.interval_s,
            )

    def closed(self, reason: str, peer: object) -> None:
        """Count a connection the guard closed (``connection_limit``, ``header_timeout``); throttled log."""
        self.metrics.http_connections_closed.labels(reason).inc()
        if (held_back := self.throttle.admit()) is not None:
            log.warning(
                "HTTP connection from %s closed: %s; %d more faults since the last such line",
                peer,
                reason.replace("_", " "),
                held_back,
            )

    def protocol_factory(self, server: web.Server, loop: asyncio.AbstractEventLoop):
        """The ``loop.create_server`` factory: a guarded handler per connection, for ``server``'s app."""
        return lambda: GuardedRequestHandler(server, self, loop=loop)


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol with JSON errors, throttled logs, a header deadline and a cap.

    ``busy`` is True from the start of a request's handling (``request_began``, called by the app's
    first middleware, or ``handle_error``) to the end of its response (``finish_response``). The
    header deadline runs only while not busy: from the connection's start, or from the first byte
    that arrives after a response.
    """

    def __init__(self, manager: web.Server, guard: HttpGuard, *, loop: asyncio.AbstractEventLoop) -> None:
        limits = guard.limits
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=limits.keepalive_timeout_s,
            max_line_size=limits.max_request_line_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            access_log=None,
        )
        self.guard = guard
        self.admitted = False
        self.busy = False
        self.current: web.BaseRequest | None = None
        self.header_deadline: asyncio.TimerHandle | None = None

    # --- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        if guard.open_connections >= guard.limits.max_connections:
            message = f"more than {guard.limits.max_connections} open HTTP connections; retry with backoff"
            # Counted before the reply is written: a client that reads it and scrapes /metrics at once
            # must see it counted (the write can reach it before this thread runs another line).
            guard.closed("connection_limit", transport.get_extra_info("peername"))
            transport.write(raw_json_reply(503, "Service Unavailable", message))
            transport.close()  # never reaches aiohttp: no parser, no task
            return
        self.admitted = True
        guard.open_connections += 1
        guard.metrics.http_connections.inc()
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.guard.open_connections -= 1
        self.guard.metrics.http_connections.dec()
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if data and not self.busy:
            self._arm_header_deadline()  # the first byte of a request: its headers are now due
        # A framing error in a body that arrives after its headers (a bad chunk size in a later
        # packet) becomes a queued 400 for *after* the running handler, which would wait for the
        # rest of its body. aiohttp keeps that queue in the private ``_messages``; read defensively.
        queued = getattr(self, "_messages", None)
        before = len(queued) if queued is not None else 0
        super().data_received(data)
        if self.current is not None and queued is not None and len(queued) > before:
            arrived = itertools.islice(queued, before, None)
            broken = any(not isinstance(message, RawRequestMessage) for message, _ in arrived)
            if broken and not self.current.content.is_eof():
                self.current.content.set_exception(web.RequestPayloadError(BODY_UNREADABLE))

    # --- the header deadline -------------------------------------------------------------------

    def _arm_header_deadline(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self._loop.call_later(self.guard.limits.header_timeout_s, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_late(self) -> None:
        self.header_deadline = None
        if self.busy or self.transport is None:
            return
        # Closed without a reply: the bytes may be the unread rest of a body whose reply is sent.
        self.guard.closed("header_timeout", self.peername)
        self.force_close()

    def request_began(self, request: web.BaseRequest) -> None:
        """The app's first middleware calls this: the request's head is in, its handling starts."""
        self.busy, self.current = True, request
        self._cancel_header_deadline()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Every error leaves as JSON: aiohttp's own HTTPExceptions raised outside the app's middlewares
        (the Expect handler's 417 quotes the header) are replaced by their reason phrase."""
        self._cancel_header_deadline()  # the head is in (also for replies made before any middleware)
        if resp.status >= 400 and resp.content_type != JSON and not resp.prepared:
            resp = error_response(resp.status, resp.reason or "the request was refused")
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.busy, self.current = False, None

    # --- aiohttp's error hooks -----------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (400) or a handler's escaped error."""
        self.busy = True
        self._cancel_header_deadline()
        if request.writer.output_size > 0:  # as aiohttp: a reply is partly sent, the connection is broken
            raise ConnectionError("a response is already partly sent; cannot send an error")
        if isinstance(exc, HttpProcessingError):
            status, text = protocol_error(exc, self.guard.limits)
            self.guard.malformed(METHOD_LABEL, request.remote, status, text)
        elif status == 504:
            text = "the request timed out"
        else:  # a bug below our handlers' own error mapping: the traceback goes to the log only
            log.error("unhandled %s answered %d", type(exc).__name__, status, exc_info=exc)
            status, text = 500, "internal error; the server log has the details"
        response = error_response(status, text)
        response.force_close()
        return response

    def log_exception(self, *args, **kwargs) -> None:
        """aiohttp's traceback lines ("Unhandled exception" when an unread, broken body is drained after
        its reply): a malformed body is counted and logged in one line; anything else keeps its traceback."""
        error = kwargs.get("exc_info")
        if isinstance(error, (HttpProcessingError, web.RequestPayloadError)):
            self.guard.malformed(METHOD_LABEL, self.peername, 400, body_error(error))
        elif isinstance(error, ConnectionError):
            log.debug("client went away: %s", type(error).__name__)
        else:
            super().log_exception(*args, **kwargs)
