"""Secrets never logged: a real server with a bearer token is sent that token in every malformed form we
could think of, over HTTP and over gRPC metadata; then everything the process wrote (stdout and stderr,
at --log-level debug) and every reply is searched for it. None may hold it.

The redacting log filter (service/observe/redaction.py) is a safety net, not the fix: the log must not even
hold its mask, which shows that nothing tried to log the token; and replies never pass through it.
"""

import logging
import sys

import grpc
import numpy as np
import pytest

from tests.raw_http import exchange, get
from tests.server_process import start_server, tensor
from tests.test_security import TOKENS
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.service.observe.redaction import MASK, RedactingFilter, install

SECRET = TOKENS[0]
TOKEN = SECRET.encode()
MODEL = b"/v2/models/digits-encoder"


def get_line(path: bytes = MODEL, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + path + b" " + version + b"\r\nHost: x\r\n"


# Each: the chunks of one raw HTTP exchange, carrying the real token somewhere it does not belong.
HTTP_FORMS = {
    "space before colon": [get_line() + b"Authorization : Bearer " + TOKEN + b"\r\n\r\n"],
    "control byte after": [get_line() + b"Authorization: Bearer " + TOKEN + b"\x01\r\n\r\n"],
    "NUL after": [get_line() + b"Authorization: Bearer " + TOKEN + b"\x00\r\n\r\n"],
    "DEL inside": [get_line() + b"Authorization: Bearer " + TOKEN[:4] + b"\x7f" + TOKEN + b"\r\n\r\n"],
    "CR injection": [get_line() + b"Authorization: Bearer " + TOKEN + b"\rX-Injected: 1\r\n\r\n"],
    "LF injection": [get_line() + b"Authorization: Bearer\n" + TOKEN + b"\r\n\r\n"],
    "CRLF injection": [get_line() + b"X-A: 1\r\n Authorization: Bearer " + TOKEN + b"\r\n\r\n"],
    "non-UTF-8 after": [get_line() + b"Authorization: Bearer " + TOKEN + b"\xff\xfe\r\n\r\n"],
    "non-UTF-8 name": [get_line() + b"Authorization\xff: Bearer " + TOKEN + b"\r\n\r\n"],
    "huge header": [get_line() + b"Authorization: Bearer " + TOKEN + b"A" * 20_000 + b"\r\n\r\n"],
    "huge other header": [get_line() + b"X-Token: " + TOKEN * 2000 + b"\r\n\r\n"],
    "token in the path": [get_line(b"/v2/models/" + TOKEN + b"/ready") + b"\r\n"],
    "token as an unknown path": [get_line(b"/v3/" + TOKEN) + b"\r\n"],
    "token in the query": [get_line(MODEL + b"?access_token=" + TOKEN) + b"\r\n"],
    "token in a huge path": [get_line(b"/v2/models/" + TOKEN * 3000) + b"\r\n"],
    "token as the version": [get_line(version=TOKEN) + b"\r\n"],
    "token as the method": [TOKEN + b" / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "token in traceparent": [get_line() + b"traceparent: 00-" + TOKEN + b"-00\r\n\r\n"],
    "token in a huge traceparent": [get_line() + b"traceparent: 00-" + TOKEN * 1000 + b"\r\n\r\n"],
    "doubled, wrong first": [get_line() + b"Authorization: Bearer no\r\nAuthorization: Bearer " + TOKEN + b"\r\n\r\n"],
    "doubled, right first": [get_line() + b"Authorization: Bearer " + TOKEN + b"\r\nAuthorization: Basic x\r\n\r\n"],
    "tab after Bearer": [get_line() + b"Authorization: Bearer\t" + TOKEN + b"\r\n\r\n"],
    "lower case": [get_line() + b"authorization: bearer " + TOKEN + b"\r\n\r\n"],
    "upper case": [get_line() + b"AUTHORIZATION: BEARER " + TOKEN + b"\r\n\r\n"],
    "token changed in case": [get_line() + b"Authorization: Bearer " + TOKEN.upper() + b"\r\n\r\n"],
    "wrong scheme": [get_line() + b"Authorization: Basic " + TOKEN + b"\r\n\r\n"],
    "no scheme": [get_line() + b"Authorization: " + TOKEN + b"\r\n\r\n"],
    "token with a suffix": [get_line() + b"Authorization: Bearer " + TOKEN + b"x\r\n\r\n"],
    "token in a cookie": [get_line() + b"Cookie: session=" + TOKEN + b"\r\n\r\n"],
    "token in Expect": [get_line() + b"Authorization: Bearer " + TOKEN + b"\r\nExpect: " + TOKEN + b"\r\n\r\n"],
    "token as Host": [b"GET / HTTP/1.1\r\nHost: " + TOKEN + b"\r\nHost: y\r\n\r\n"],
    "token as Content-Length": [
        b"POST " + MODEL + b"/infer HTTP/1.1\r\nHost: x\r\nContent-Length: " + TOKEN + b"\r\n\r\n"
    ],
    "token as a chunk size": [
        b"POST " + MODEL + b"/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        TOKEN + b"\r\n{}\r\n0\r\n\r\n",
    ],
    "token in a chunk extension": [
        b"POST " + MODEL + b"/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;" + TOKEN + b"\x01\r\n"
    ],
    "token in a bad gzip body": [
        b"POST " + MODEL + b"/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: " + str(len(TOKEN)).encode() + b"\r\n\r\n" + TOKEN
    ],
    "token in a bad JSON body": [
        b"POST " + MODEL + b"/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\n"
        b"Content-Length: " + str(len(TOKEN) + 1).encode() + b"\r\n\r\n{" + TOKEN
    ],
    "HTTP/2 preface, then the token": [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + TOKEN],
    "TLS, then the token": [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + TOKEN],
}


def grpc_forms() -> dict[str, tuple[str, tuple]]:
    """Each: (rpc, metadata) carrying the token in a malformed or misplaced way."""
    return {
        "wrong scheme": ("Elbo", (("authorization", f"Basic {SECRET}"),)),
        "no scheme": ("Elbo", (("authorization", SECRET),)),
        "extra spaces": ("Elbo", (("authorization", f"Bearer   {SECRET}  x"),)),
        "suffix": ("Elbo", (("authorization", f"Bearer {SECRET}0"),)),
        "upper case": ("Elbo", (("authorization", f"BEARER {SECRET.upper()}"),)),
        "doubled": ("Elbo", (("authorization", "Bearer nope"), ("authorization", f"Bearer {SECRET}"))),
        "binary header": ("Elbo", (("authorization-bin", b"Bearer \xff" + TOKEN),)),
        "binary other key": ("Elbo", (("x-token-bin", b"\x00\xff" + TOKEN),)),
        "other keys": ("Elbo", (("x-api-key", SECRET), ("cookie", f"t={SECRET}"), ("traceparent", SECRET))),
        "too long a header": ("Elbo", (("authorization", f"Bearer {SECRET}" + "A" * 20_000),)),
        "too long other header": ("Elbo", (("x-token", SECRET * 2000),)),
        "token as the model": ("ModelReady", (("authorization", f"Bearer {SECRET}"),)),
        "token in a bad message": ("ElboRaw", (("authorization", f"Bearer {SECRET}"),)),
        "token as a method": ("Unknown", (("authorization", f"Bearer {SECRET}"),)),
    }


def call_grpc(channel: grpc.Channel, rpc: str, metadata: tuple) -> str:
    """Make the call; return everything the client saw of the answer (status text and metadata)."""
    elbo = vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)))
    try:
        if rpc == "Elbo":
            reply, call = vae_pb2_grpc.VaeServiceStub(channel).Elbo.with_call(elbo, metadata=metadata, timeout=10)
        elif rpc == "ModelReady":
            reply, call = oip_pb2_grpc.GRPCInferenceServiceStub(channel).ModelReady.with_call(
                oip_pb2.ModelReadyRequest(name=SECRET), metadata=metadata, timeout=10
            )
        elif rpc == "ElboRaw":  # bytes that are not an ElboRequest, holding the token
            raw = channel.unary_unary("/vae.v1.VaeService/Elbo", request_serializer=None, response_deserializer=None)
            reply, call = raw.with_call(b"\x0a\xff\xff\xff\xff" + TOKEN, metadata=metadata, timeout=10)
        else:
            unknown = channel.unary_unary(f"/vae.v1.VaeService/{SECRET}")
            reply, call = unknown.with_call(b"", metadata=metadata, timeout=10)
        return f"{reply} {call.initial_metadata()} {call.trailing_metadata()}"
    except grpc.RpcError as error:
        return f"{error.code()} {error.details()} {error.initial_metadata()} {error.trailing_metadata()}"


@pytest.fixture
def token_server(digits_bundle, tmp_path):
    (tmp_path / "tokens").write_text(f"{SECRET}\n")
    server = start_server(
        "--bundle", str(digits_bundle), "--http-port", "0", "--auth-tokens-file", str(tmp_path / "tokens"),
        "--log-level", "debug",
    )  # fmt: skip
    yield server
    server.stop()


def test_the_token_is_in_no_reply_and_no_log(token_server):
    server = token_server
    replies: dict[str, bytes] = {}
    for name, chunks in HTTP_FORMS.items():
        replies[f"http {name}"] = exchange(server.http_url, *chunks).raw
    for name, (rpc, metadata) in grpc_forms().items():
        replies[f"grpc {name}"] = call_grpc(server.channel, rpc, metadata).encode()
    # The server still serves, with the token in its place.
    status, body = get(server.http_url + "/v2/models/digits-encoder", {"Authorization": f"Bearer {SECRET}"})
    assert status == 200 and b"digits-encoder" in body
    assert server.stop() == 0
    written = server.log() + "\n" + server.stdout()

    assert b"once" in replies["grpc doubled"] and b"once" in replies["http doubled, right first"]  # refused
    leaked = [name for name, reply in replies.items() if TOKEN in reply or TOKEN.upper() in reply]
    assert not leaked, {name: replies[name][:400] for name in leaked}
    assert all(replies.values()), [name for name, reply in replies.items() if not reply]  # each got an answer
    assert SECRET not in written and SECRET.upper() not in written, written[-3000:]
    assert MASK not in written, "the redacting filter had to mask something: a path logs a token"
    assert "Traceback" not in written, written[-3000:]
    assert "vae-serve listening on" in written and "malformed HTTP request" in written  # the capture is real


def test_the_safety_net_masks_tokens_and_bearer_credentials_in_messages_and_tracebacks():
    record_filter = RedactingFilter([SECRET])
    try:
        raise ValueError(f"header b'Authorization : Bearer {SECRET}'")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "got %s and %s", (SECRET, "Bearer\tabc.def-123"), exc_info
    )
    assert record_filter.filter(record)
    text = logging.Formatter().format(record)
    assert SECRET not in text and "abc.def-123" not in text and text.count(MASK) >= 3, text
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "authentication: bearer tokens (1 accepted)", (), None)
    assert record_filter.filter(plain) and plain.getMessage() == "authentication: bearer tokens (1 accepted)"


def test_the_safety_net_is_on_the_root_handlers(tmp_path):
    handler = logging.FileHandler(tmp_path / "log")
    logging.getLogger().addHandler(handler)
    try:
        shared = install([TOKEN])
        assert shared in handler.filters and install([b"other"]) is shared and shared.secrets == ["other"]
    finally:
        logging.getLogger().removeHandler(handler)
        for one in (handler, logging.lastResort):
            if one is not None:
                one.removeFilter(shared)
        handler.close()
