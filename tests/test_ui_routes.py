"""The explorer page's routes and the model list it reads (issue 24), without a browser: ``--ui`` is
off by default, the page's files are served without a token and with their security headers,
Triton's repository index lists every served model version (with the token, like every model route),
and the OpenAPI document describes the page's routes as open and lists none of its files.
"""

import json
import urllib.error
import urllib.request

import pytest
from openapi_spec_validator import validate
from pydantic import ValidationError

from tests.server_process import start_server
from vae_serve.service.rest.ui_routes import UI_FOLDER
from vae_serve.service.settings import Settings

TOKEN = "ui-routes-5f0a17"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the test reads the redirect itself


def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, follow: bool = True):
    """(status, headers, body bytes) of one call."""
    opener = OPENER if follow else urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def repository(tmp_path_factory, digits_bundle):
    """Two versions of the digits model, as a --model-repository folder."""
    folder = tmp_path_factory.mktemp("ui-repository")
    for version in ("1", "2"):
        (folder / "digits").mkdir(exist_ok=True)
        (folder / "digits" / version).symlink_to(digits_bundle, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def explorer(repository):
    process = start_server(
        "--model-repository", str(repository), "--http-port", "0", "--ui", env={"VAE_AUTH_TOKENS": TOKEN}
    )
    yield process
    assert process.stop() == 0, process.log()


def test_the_page_is_off_by_default(digits_bundle):
    plain = start_server("--bundle", str(digits_bundle), "--http-port", "0")
    try:
        for path in ("/ui/", "/ui/app.js", "/ui"):
            status, _, body = http(plain.http_url + path)
            assert status == 404, (path, body)
        status, _, body = http(plain.http_url + "/v2/repository/index", "POST")  # the model list is always served
        assert status == 200 and [entry["name"] for entry in json.loads(body)] == [
            "digits-encoder",
            "digits-decoder",
            "digits-elbo",
        ]
    finally:
        assert plain.stop() == 0, plain.log()


def test_ui_needs_the_rest_port(digits_bundle):
    with pytest.raises(ValidationError, match="--http-port"):
        Settings(bundle=digits_bundle, ui=True)


def test_the_page_and_its_files_need_no_token_and_carry_their_headers(explorer):
    status, headers, body = http(explorer.http_url + "/ui/")
    assert status == 200 and headers.get_content_type() == "text/html"
    assert body == (UI_FOLDER / "index.html").read_bytes()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name, content_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, body = http(f"{explorer.http_url}/ui/{name}")
        assert status == 200 and headers.get_content_type() == content_type, name
        assert body == (UI_FOLDER / name).read_bytes()
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, headers, _ = http(explorer.http_url + "/ui", follow=False)
    assert status == 308 and headers["Location"] == "/ui/"
    assert http(explorer.http_url + "/ui/nosuch.js")[0] == 404


def test_the_repository_index_lists_every_version_with_the_token(explorer):
    url = explorer.http_url + "/v2/repository/index"
    status, headers, body = http(url, "POST")
    assert status == 401 and "token" in json.loads(body)["error"] and headers["WWW-Authenticate"] == "Bearer"
    for request_body in (None, b"{}", b'{"ready": true}'):
        status, _, body = http(url, "POST", request_body, BEARER)
        assert status == 200, body
        index = json.loads(body)
        expected = [(f"digits-{part}", version) for part in ("encoder", "decoder", "elbo") for version in ("1", "2")]
        assert [(entry["name"], entry["version"]) for entry in index] == expected
        assert {entry["state"] for entry in index} == {"READY"}
    for bad in (b"[1]", b'{"ready": 1}', b'{"other": true}', b"{"):
        status, _, body = http(url, "POST", bad, BEARER)
        assert status == 400 and "ready" in json.loads(body)["error"], bad
    # Each listed name answers the protocol's model route: the index names what the server serves.
    for name, version in expected:
        assert http(f"{explorer.http_url}/v2/models/{name}/versions/{version}/ready", headers=BEARER)[0] == 200


def test_the_document_describes_the_page_as_open_and_lists_no_file(explorer):
    status, _, body = http(explorer.http_url + "/openapi.json", headers=BEARER)
    assert status == 200
    document = json.loads(body)
    validate(document)
    paths = document["paths"]
    assert paths["/ui/"]["get"]["security"] == [] and paths["/ui"]["get"]["security"] == []
    assert "text/html" in paths["/ui/"]["get"]["responses"]["200"]["content"]
    assert not [path for path in paths if path.startswith("/ui/") and path != "/ui/"]  # the files are no API
    index = paths["/v2/repository/index"]["post"]
    assert index["operationId"] == "RepositoryIndex" and "security" not in index  # the token, as every model route
    undocumented = [path for path, methods in paths.items() for op in methods.values() if "x-undocumented" in op]
    assert not undocumented
