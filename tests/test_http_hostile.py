"""The REST port against a hostile client, over raw sockets: every kind of malformed HTTP gets a JSON 4xx
that quotes none of its bytes, is counted in vae_malformed_requests_total, leaves no traceback and no
token in the log, and the next good call succeeds; slow clients are cut off after the configured
times, and connections beyond the cap are refused with a 503.
"""

import json
import re

import pytest

from tests.raw_http import closed_within, connect, exchange, get, metric, read_reply, wait_for_metric_above
from tests.server_process import start_server
from tests.test_security import TOKENS

TOKEN = TOKENS[0].encode()
MARK = b"zqOFFEND"  # in every offending part, so that an echo of it is easy to find
AUTH = b"Authorization: Bearer " + TOKEN + b"\r\n"
READY = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"
INFER = b"POST /v2/models/digits-encoder/infer HTTP/1.1\r\nHost: x\r\n" + AUTH
CHUNKED = INFER + b"Transfer-Encoding: chunked\r\n\r\n"
HEADER_TIMEOUT_S = 1.0
KEEPALIVE_S = 2.0
CLOSE_BOUND_S = 15.0  # generous: "closed before this", never "closed at"
LOG_LEAKS = ("Traceback", "site-packages/aiohttp", "Error handling request", TOKENS[0], MARK.decode())

# (id, chunks sent ``pause`` apart, the HTTP status due)
CASES = [
    ("space before colon", [READY + b"Authorization : Bearer " + TOKEN + MARK + b"\r\n\r\n"], 400),
    ("control byte in a value", [READY + b"X-A: " + MARK + b"\x01\r\n\r\n"], 400),
    ("NUL in a value", [READY + b"X-A: " + MARK + b"\x00\r\n\r\n"], 400),
    ("DEL in a value", [READY + b"X-A: " + MARK + b"\x7f\r\n\r\n"], 400),
    ("bare CR in a value", [READY + b"X-A: " + MARK + b"\rX-B: 1\r\n\r\n"], 400),
    ("obsolete line folding", [READY + b"X-A: a\r\n " + MARK + b"\r\n\r\n"], 400),
    ("header without a colon", [READY + MARK + b"\r\n\r\n"], 400),
    ("bad character in a name", [READY + b"X(" + MARK + b"): 1\r\n\r\n"], 400),
    ("non-UTF-8 name", [READY + b"\xff\xfe" + MARK + b": 1\r\n\r\n"], 400),
    ("no Host in HTTP/1.1", [b"GET /v2/health/ready?" + MARK + b" HTTP/1.1\r\n\r\n"], 400),
    ("two Hosts", [READY + b"Host: " + MARK + b"\r\n\r\n"], 400),
    ("Content-Length not a number", [INFER + b"Content-Length: 1" + MARK + b"\r\n\r\n"], 400),
    ("Content-Length twice", [INFER + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"], 400),
    ("negative Content-Length", [INFER + b"Content-Length: -1\r\n\r\n"], 400),
    ("Content-Length of 2^70", [INFER + b"Content-Length: " + str(2**70).encode() + b"\r\n\r\n"], 400),
    ("Content-Length list", [INFER + b"Content-Length: 1, 2\r\n\r\n"], 400),
    ("chunk size not hex", [CHUNKED + b"zz" + MARK + b"\r\n{}\r\n0\r\n\r\n"], 400),
    ("chunk size 2^72", [CHUNKED + format(2**72, "x").encode() + b"\r\n{}\r\n0\r\n\r\n"], 400),
    (
        "chunked and Content-Length",
        [INFER + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n"],
        400,
    ),
    ("chunked not last", [INFER + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"], 400),
    ("unknown transfer coding", [INFER + b"Transfer-Encoding: chunked" + MARK + b"\r\n\r\n"], 400),
    ("control byte in a chunk extension", [CHUNKED + b"2;" + MARK + b"\x01\r\n{}\r\n0\r\n\r\n"], 400),
    ("chunk without its CRLF", [CHUNKED + b"2\r\n{}" + MARK + b"0\r\n\r\n"], 400),
    ("chunk size not hex, later packet", [CHUNKED, b"zz" + MARK + b"\r\n{}\r\n0\r\n\r\n"], 400),
    ("chunk size 2^72, later packet", [CHUNKED, format(2**72, "x").encode() + b"\r\n{}\r\n"], 400),
    ("garbage request line", [b"GARBAGE" + MARK + b"\r\n\r\n"], 400),
    ("bad method", [b"G@T" + MARK + b" / HTTP/1.1\r\nHost: x\r\n\r\n"], 400),
    ("lower-case method", [b"get /" + MARK + b" HTTP/1.1\r\nHost: x\r\n\r\n"], 400),
    ("token as the method", [TOKEN + b" / HTTP/1.1\r\nHost: x\r\n\r\n"], 400),
    ("HTTP/9.9", [b"GET /" + MARK + b" HTTP/9.9\r\nHost: x\r\n\r\n"], 400),
    ("garbage version", [b"GET / HTTP/1." + MARK + b"\r\nHost: x\r\n\r\n"], 400),
    ("space in the path", [b"GET /v2/" + MARK + b" x HTTP/1.1\r\nHost: x\r\n\r\n"], 400),
    ("control byte in the path", [b"GET /v2/" + MARK + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n"], 400),
    ("HTTP/0.9 request", [b"GET /v2/health/ready?" + MARK + b"\r\n\r\n"], 400),
    ("HTTP/2 preface", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + MARK + TOKEN], 400),
    ("TLS on the plaintext port", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK + bytes(40)], 400),
    ("20 KB header", [READY + b"X-Big: " + MARK + b"a" * 20_000 + b"\r\n\r\n"], 431),
    ("2,000 headers", [READY + b"".join(b"X-%d: %s\r\n" % (i, MARK) for i in range(2000)) + b"\r\n"], 431),
    ("100 KB model name", [b"GET /v2/models/" + MARK + b"m" * 100_000 + b"/ready HTTP/1.1\r\nHost: x\r\n\r\n"], 414),
    ("10 KB traceparent", [READY + b"traceparent: 00-" + MARK + b"0" * 10_000 + b"\r\n\r\n"], 431),
    ("20 KB Authorization", [READY + b"Authorization: Bearer " + TOKEN + MARK * 3000 + b"\r\n\r\n"], 431),
    (
        "gzip body that is not gzip",
        [INFER + b"Content-Encoding: gzip\r\nContent-Length: 13\r\n\r\n" + MARK + b"hello"],
        400,
    ),
    (
        "gzip body, no token",
        [INFER.replace(AUTH, b"") + b"Content-Encoding: gzip\r\nContent-Length: 8\r\n\r\n" + MARK],
        401,
    ),
]


def infer_body() -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.5] * 128}]}).encode()


def good_calls_succeed(server) -> None:
    assert get(server.http_url + "/v2/health/ready") == (200, b'{"ready":true}')
    status, body = get(
        server.http_url + "/v2/models/digits-encoder/infer",
        {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/json"},
        infer_body(),
    )
    assert status == 200 and len(json.loads(body)["outputs"][0]["data"]) > 0, body


def malformed_total(server) -> float:
    return metric(server.metrics_url, "vae_malformed_requests_total")


def assert_log_clean(server) -> None:
    log = server.log()
    for leak in LOG_LEAKS:
        assert leak not in log, (leak, log[-3000:])


@pytest.fixture(scope="module")
def hostile(digits_bundle, tmp_path_factory):
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"{TOKENS[0]}\n")
    server = start_server(
        "--bundle", str(digits_bundle), "--http-port", "0", "--auth-tokens-file", str(tokens),
        "--http-header-timeout", str(HEADER_TIMEOUT_S), "--http-keepalive-timeout", str(KEEPALIVE_S),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()
    assert_log_clean(server)


def test_there_are_at_least_30_kinds():
    assert len({name for name, _, _ in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize(("chunks", "status"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_malformed_http_gets_a_json_4xx_is_counted_and_leaves_no_trace(hostile, chunks, status):
    before = malformed_total(hostile)
    reply = exchange(hostile.http_url, *chunks)
    assert reply.status == status, reply.raw[:300]
    error = reply.error()
    assert error and MARK not in reply.raw and TOKEN not in reply.raw, reply.raw
    assert not re.search(r"Traceback|\.py\b|aiohttp", error), error
    assert wait_for_metric_above(hostile.metrics_url, "vae_malformed_requests_total", before) > before
    assert_log_clean(hostile)
    good_calls_succeed(hostile)


def test_the_log_has_at_most_one_line_per_interval(hostile):
    for _ in range(5):
        assert exchange(hostile.http_url, b"GARBAGE\r\n\r\n").status == 400
    lines = [line for line in hostile.log().splitlines() if "malformed HTTP request" in line]
    assert 1 <= len(lines) < len(CASES), lines  # throttled: not one line per request
    assert all("answered" in line and "more since the last such line" in line for line in lines)


def test_aiohttps_own_refusals_are_json_and_quote_nothing(hostile):
    """The Expect handler runs outside the app's middlewares and quotes the header in text/plain."""
    reply = exchange(
        hostile.http_url,
        b"GET /v2/models/digits-encoder HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Expect: " + MARK + b"\r\n\r\n",
    )
    assert reply.status == 417 and MARK not in reply.raw and reply.error() == "Expectation Failed"
    reply = exchange(hostile.http_url, b"GET /v3/" + MARK + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 404 and MARK not in reply.raw and "no such endpoint" in reply.error()


def test_slow_clients_are_cut_off(hostile):
    before = metric(hostile.metrics_url, "vae_http_connections_closed_total", reason="header_timeout")
    half_line = connect(hostile.http_url)
    half_line.sendall(b"GET /v2/hea")
    silent = connect(hostile.http_url)
    assert closed_within(half_line, CLOSE_BOUND_S) and closed_within(silent, CLOSE_BOUND_S)

    dribbler = connect(hostile.http_url)
    dribbler.sendall(READY)
    closed = False
    for _ in range(int(CLOSE_BOUND_S / 0.1)):  # one header byte per 0.1 s, never finishing
        try:
            dribbler.sendall(b"X")
        except ConnectionError:
            closed = True
            break
        if closed_within(dribbler, 0.1):
            closed = True
            break
    assert closed

    kept_alive = connect(hostile.http_url)
    kept_alive.sendall(READY + b"\r\n")
    assert read_reply(kept_alive).status == 200  # a good request, then nothing: idle keep-alive ends
    assert closed_within(kept_alive, CLOSE_BOUND_S)
    for sock in (half_line, silent, dribbler, kept_alive):
        sock.close()
    after = metric(hostile.metrics_url, "vae_http_connections_closed_total", reason="header_timeout")
    assert after - before >= 3
    good_calls_succeed(hostile)


def test_connections_beyond_the_cap_get_a_503(digits_bundle):
    server = start_server("--bundle", str(digits_bundle), "--http-port", "0", "--http-max-connections", "3")
    held = [connect(server.http_url) for _ in range(3)]
    try:
        with connect(server.http_url) as surplus:
            reply = read_reply(surplus)
        assert reply.status == 503 and "more than 3 open HTTP connections" in reply.error()
        assert reply.headers["connection"] == "close"
        assert metric(server.metrics_url, "vae_http_connections_closed_total", reason="connection_limit") == 1
        assert metric(server.metrics_url, "vae_http_connections") == 3
        held.pop().close()
        for _ in range(100):  # until the server has seen the close: bounded
            if get(server.http_url + "/v2/health/ready")[0] == 200:
                break
        assert get(server.http_url + "/v2/health/ready")[0] == 200
    finally:
        for sock in held:
            sock.close()
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()
