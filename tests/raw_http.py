"""Raw HTTP/1.1 over a socket, for the requests no HTTP client library would send; every wait bounded."""

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

READ_TIMEOUT_S = 10.0


@dataclass
class Reply:
    """One response as read off the socket: status None when the server closed without answering."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def error(self) -> str:
        """The JSON ``error`` text of an error reply (fails the test if it is not one)."""
        assert self.headers.get("content-type") == "application/json", self.raw[:300]
        return json.loads(self.body)["error"]


def address(http_url: str) -> tuple[str, int]:
    host, port = http_url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def connect(http_url: str, timeout_s: float = READ_TIMEOUT_S) -> socket.socket:
    return socket.create_connection(address(http_url), timeout=timeout_s)


def read_reply(sock: socket.socket, timeout_s: float = READ_TIMEOUT_S) -> Reply:
    """Read one response: its head, then Content-Length bytes of body, or up to the server's close."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        return Reply(None, {}, b"", data)
    lines = head.decode("latin-1").split("\r\n")
    headers = {key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", -1))
    while (length < 0 or len(body) < length) and time.monotonic() < deadline:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        body += chunk
    return Reply(int(lines[0].split()[1]), headers, body, data[: len(head) + 4] + body)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (TimeoutError, ConnectionError):
        return b""


def exchange(http_url: str, *chunks: bytes, pause_s: float = 0.3) -> Reply:
    """Send ``chunks`` on a new connection (``pause_s`` apart), then read one reply."""
    with connect(http_url) as sock:
        for index, chunk in enumerate(chunks):
            if index:
                time.sleep(pause_s)
            try:
                sock.sendall(chunk)
            except ConnectionError:  # the server answered and closed before the rest was sent
                break
        return read_reply(sock)


def closed_within(sock: socket.socket, bound_s: float) -> bool:
    """Whether the server closes ``sock`` within ``bound_s`` (whatever it sends before is read and dropped)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def get(url: str, headers: dict | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of a well-formed call, by urllib."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError) as error:  # refused or reset: no status
        return 0, str(error).encode()


def metric(metrics_url: str, name: str, **labels: str) -> float:
    """One sample of a real /metrics scrape, 0 when absent; labels left out are summed over."""
    with urllib.request.urlopen(metrics_url, timeout=READ_TIMEOUT_S) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def wait_for_metric_above(metrics_url: str, name: str, floor: float, timeout_s: float = 10.0, **labels) -> float:
    """The sample once it exceeds ``floor`` (some are counted just after the reply went out), or its last value."""
    deadline = time.monotonic() + timeout_s
    while (value := metric(metrics_url, name, **labels)) <= floor and time.monotonic() < deadline:
        time.sleep(0.05)
    return value
