"""What a REST client is told when its request is not valid HTTP: texts of our own, chosen by the
exception's class and llhttp's fixed reason, never aiohttp's message (which quotes the request's
bytes, a bearer token included); and the JSON error responses every REST error is sent as.
"""

import re
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)

if TYPE_CHECKING:
    from vae_serve.service.rest.guard import HttpLimits

JSON = "application/json"
NOT_HTTP = "the request is not valid HTTP/1.1 (its request line, a header or its framing); send HTTP/1.1"
# llhttp's reasons (fixed strings of the C parser, never request bytes) -> what the client is told.
LLHTTP_REASONS = {
    "Invalid header token": "a header name is not valid (a space before the colon, or a character not allowed "
    "in a header name)",
    "Invalid header value char": "a header value holds a control character",
    "Missing expected CR after header value": "a header line does not end with CRLF",
    "Missing expected LF after header value": "a header line does not end with CRLF",
    "Invalid character in Content-Length": "Content-Length is not a number",
    "Duplicate Content-Length": "Content-Length is given more than once",
    "Content-Length overflow": "Content-Length is too large",
    "Invalid character in chunk size": "a chunk size of the chunked body is not a hexadecimal number",
    "Chunk size overflow": "a chunk size of the chunked body is too large",
    "Content-Length can't be present with Transfer-Encoding": "Content-Length and Transfer-Encoding are given "
    "together; send one",
    "Invalid `Transfer-Encoding` header value": "Transfer-Encoding is not valid; send chunked or nothing",
    "Invalid method encountered": "the request line does not start with a known HTTP method",
    "Pause on PRI/Upgrade": "HTTP/2 is not served on this port: send HTTP/1.1 (gRPC clients: use the gRPC port)",
    "Invalid HTTP version": "the request line's HTTP version is not valid; send HTTP/1.1",
    "Expected CRLF after version": "the request line does not end with CRLF after its HTTP version",
}
DUPLICATE = re.compile(r"Duplicate '([A-Za-z-]{1,40})' header found\.")  # aiohttp's singleton-header check
BODY_REASONS = {
    ContentEncodingError: "the request body does not decode as its Content-Encoding says",
    TransferEncodingError: "the chunked request body is malformed",
    ContentLengthError: "the request body ended before its Content-Length",
}
BODY_UNREADABLE = "the request body could not be read (malformed framing or encoding)"


def json_response(document: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type=JSON, headers=headers)


def error_response(status: int, message: str, headers: dict | None = None) -> web.Response:
    return json_response({"error": message}, status, headers)


def protocol_error(error: BaseException | None, limits: "HttpLimits") -> tuple[int, str]:
    """(HTTP status, client text) for a request aiohttp could not parse; the text quotes nothing of it."""
    if isinstance(error, LineTooLong):
        limit = error.args[1] if len(error.args) > 1 else None
        if limit == limits.max_request_line_bytes != limits.max_header_bytes:
            return 414, f"the request line is longer than the server's limit of {limit} bytes"
        return 431, (
            f"a header line (or the request line) is longer than the server's limit of {limits.max_header_bytes} "
            f"bytes per header line ({limits.max_request_line_bytes} for the request line)"
        )
    if isinstance(error, BadHttpMethod) and "HTTPS traffic" in error.message:
        return 400, "TLS was sent to this plaintext HTTP port; use http://, not https://"
    if isinstance(error, InvalidURLError):
        return 400, "the request target (the path) is not a valid URL path"
    if isinstance(error, InvalidHeader):
        return 400, "a header value holds a NUL byte"
    message = getattr(error, "message", "")
    if message == "Too many headers received":
        return 431, f"the request has more than the server's limit of {limits.max_headers} headers"
    if message == "Missing 'Host' header in request.":
        return 400, "an HTTP/1.1 request needs a Host header"
    if duplicate := DUPLICATE.fullmatch(message):
        return 400, f"the header {duplicate.group(1)} is given more than once"
    reason = message.partition(":\n")[0] if isinstance(message, str) else ""
    reason = reason.removeprefix("Bad status line:\n  ")
    if reason in LLHTTP_REASONS:
        return 400, LLHTTP_REASONS[reason]
    if isinstance(error, BadStatusLine):
        return 400, "the request line is not 'METHOD /path HTTP/1.1'"
    return 400, NOT_HTTP


def body_error(error: BaseException) -> str:
    """The client text for a request body that could not be read (aiohttp's payload errors)."""
    for cause in (error, error.__cause__):
        for kind, text in BODY_REASONS.items():
            if isinstance(cause, kind):
                return text
    return BODY_UNREADABLE


def raw_json_reply(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response, for a connection that no ``RequestHandler`` serves."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {JSON}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\nRetry-After: 1\r\n\r\n"
    )
    return head.encode() + body
