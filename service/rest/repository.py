"""Triton's model repository index over HTTP: ``POST /v2/repository/index`` (issue 24).

The Open Inference Protocol has no list of models; Triton's model repository extension adds one, and
its index is what a client that must pick a model (the explorer page at ``/ui/``, a dashboard, curl)
needs. It answers ``[{"name", "version", "state", "reason"}, ...]``, one entry per Open Inference
Protocol model version (``<bundle>-encoder``, ``<bundle>-decoder``, ``<bundle>-elbo``): every version
served is loaded and verified, so each is ``READY``. The body may be empty, or Triton's
``{"ready": bool}``. Only the index is served: loading and unloading go through the model repository
folder (``--model-repository``), so the extension is not announced in the server metadata.
"""

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from vae_serve.core.errors import InvalidInput, NotReady
from vae_serve.service.plane.dataplane import NOT_LOADED
from vae_serve.service.plane.inference import PARTS, Inference
from vae_serve.service.rest.errors import JSON

REPOSITORY_INDEX_PATH = "/v2/repository/index"
REPOSITORY_INDEX_METHOD = "RepositoryIndex"  # the route's label in metrics and spans
READY = "READY"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def repository_index(inference: Inference) -> list[dict]:
    """Every Open Inference Protocol model version the server serves, in name then version order.

    Raises:
        NotReady: the server is still loading its models.
    """
    plane = inference.operations.plane
    if not plane.ready:
        raise NotReady(NOT_LOADED)
    return [
        {"name": f"{bundle_name}-{part}", "version": version, "state": READY, "reason": ""}
        for bundle_name in sorted(plane.models())
        for part in PARTS
        for version in plane.versions(bundle_name)
    ]


def index_request(body: bytes) -> bool:
    """Triton's ``ready`` flag of an index request body (empty: false).

    Raises:
        InvalidInput: the body is not a JSON object with at most a boolean ``ready``.
    """
    if not body.strip():
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput('the body must be empty or a JSON object such as {"ready": true}') from None
    if not isinstance(document, dict) or set(document) - {"ready"}:
        raise InvalidInput('the body may hold only {"ready": true|false} (Triton\'s repository index request)')
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(f'"ready" must be true or false, got {ready!r}')
    return ready


def add_repository_route(
    app: web.Application, call: Callable[[str, Handler], Handler], inference: Inference, body_timeout_s: float
) -> None:
    """Serve the index at ``POST /v2/repository/index``.

    Args:
        app: the REST application.
        call: wraps the handler as every other route's (token, drain, metrics, tracing, errors).
        inference: the plane's Open Inference Protocol models.
        body_timeout_s: how long the body may take to arrive once the call began.
    """

    async def index(request: web.Request) -> web.Response:
        async with asyncio.timeout(body_timeout_s):
            body = await request.read()  # at most the server's request limit, as every route's
        index_request(body)  # every version served is READY: "ready" selects all of them either way
        return web.Response(body=orjson.dumps(repository_index(inference)), content_type=JSON)

    app.router.add_post(REPOSITORY_INDEX_PATH, call(REPOSITORY_INDEX_METHOD, index))
