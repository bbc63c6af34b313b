"""The model explorer page at ``/ui/`` on the REST port (``--ui``; issue 24; docs/ui.md).

The page is static files shipped in the package (service/rest/ui/: HTML, CSS and JavaScript modules,
no framework and no build step). They hold no data and are served without a token: the page must
load before it can ask for one. Everything it shows comes from the HTTP APIs it calls from the
browser (VaeService over HTTP/JSON, and the Open Inference Protocol's repository index), with the
token the user gives it, so it sees what that token may see and nothing more.

Every file of the page is sent with a Content-Security-Policy that lets it load and call only its
own origin (no inline script, no third party), ``nosniff``, no referrer, and ``no-cache`` (a
browser revalidates, so a server upgrade is never mixed with old scripts).
"""

from pathlib import Path

from aiohttp import web

UI_PREFIX = "/ui"
UI_PATH = UI_PREFIX + "/"
UI_FOLDER = Path(__file__).with_name("ui")
INDEX = "index.html"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The files' types, fixed here rather than read from the machine's MIME database (which may lack .js or
# map it to something else): with nosniff, a browser runs a module script only if its type is JavaScript.
FILE_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_PAGE = {"text/html": {"schema": {"type": "string"}}}
# What the OpenAPI document (service/rest/openapi.py) says of the two routes that are not a folder of
# files: open (security []), as the files are; the files themselves are no API operation.
UI_OPERATIONS: dict[tuple[str, str], dict] = {
    ("GET", UI_PATH): {
        "operationId": "ExplorerPage",
        "tags": ["Explorer"],
        "summary": "The model explorer page (HTML; served with --ui). It holds no data and needs no token; "
        "it calls the /v1 and /v2 routes with the token the user enters.",
        "security": [],
        "responses": {"200": {"description": "The page.", "content": _PAGE}},
    },
    ("GET", UI_PREFIX): {
        "operationId": "ExplorerRedirect",
        "tags": ["Explorer"],
        "summary": "Redirects to /ui/ (served with --ui).",
        "security": [],
        "responses": {"308": {"description": "Permanent redirect to /ui/."}},
    },
}


def add_ui_routes(app: web.Application) -> None:
    """Serve the page at ``/ui/`` (and redirect ``/ui`` there), its files under ``/ui/``.

    Args:
        app: the REST application, before it starts.

    Raises:
        FileNotFoundError: the package lacks the page's files (an install without its package data).
    """
    page = (UI_FOLDER / INDEX).read_bytes()  # read once: the page is a few KB and never changes

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(UI_PATH)

    app.router.add_get(UI_PATH, index)
    app.router.add_get(UI_PREFIX, redirect)
    app.router.add_static(UI_PREFIX, UI_FOLDER, append_version=False)
    app.on_response_prepare.append(_security_headers)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == UI_PREFIX or request.path.startswith(UI_PATH):
        response.headers.update(SECURITY_HEADERS)
        file_type = FILE_TYPES.get(Path(request.path).suffix)
        if file_type and response.status == 200:
            response.headers["Content-Type"] = file_type
