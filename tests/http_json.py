"""Calls of VaeService over HTTP/JSON (service/rest/vae_http.py) with plain ``http.client``: the path
from the route table, the request message as its proto3 JSON, the reply as status, headers and body."""

import http.client
import json
import urllib.parse
from urllib.parse import quote

from google.protobuf import json_format
from google.protobuf.message import Message

from vae_serve.service.rest.vae_routes import VAE_ROUTES

ROUTES = {route.rpc: route for route in VAE_ROUTES}


def path_of(rpc: str, name: str, version: str = "") -> str:
    """The rpc's path for a model (percent-encoded: any name reaches the server as sent)."""
    paths = ROUTES[rpc].paths
    template = paths[1] if version else paths[0]
    return template.replace("{name}", quote(name, safe="")).replace("{version}", quote(version, safe=""))


def send(
    base_url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers in lower case, body) of one HTTP/1.1 request to the server at ``base_url``."""
    address = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        payload = response.read()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, payload
    finally:
        connection.close()


def body_of(request: Message) -> bytes:
    """The request as proto3 JSON, without its ``model`` (the path names it)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("model")
    return json_format.MessageToJson(copy).encode()


def call(
    base_url: str, rpc: str, request: Message, default_name: str, headers: dict | None = None, query: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One rpc over HTTP/JSON: the request's model (``default_name`` when it names none) goes in the path."""
    path = path_of(rpc, request.model.name or default_name, request.model.version) + query
    if ROUTES[rpc].http_method == "GET":
        return send(base_url, "GET", path, headers=headers)
    return send(base_url, "POST", path, body_of(request), headers)


def stream_lines(payload: bytes, content_type: str) -> list[dict]:
    """The documents of a SampleStream reply: JSON Lines, or server-sent events' ``data:`` lines."""
    if content_type.startswith("text/event-stream"):
        events = [event for event in payload.decode().split("\n\n") if event]
        assert all(event.startswith("data: ") for event in events), events[:2]
        return [json.loads(event.removeprefix("data: ")) for event in events]
    assert content_type.startswith("application/x-ndjson"), content_type
    return [json.loads(line) for line in payload.decode().splitlines()]
