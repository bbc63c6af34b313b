"""The Open Inference Protocol over REST (``--http-port``): driven by plain curl and by Triton's own
``tritonclient.http``; answers equal to gRPC's, JSON errors with the protocol's status codes, the
same metrics, tokens and TLS as gRPC, and a drain that refuses new calls but finishes running ones.
"""

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.server_process import start_server, tensor
from tests.test_hot_reload import samples, scrape
from tests.test_oip import array
from tests.test_security import TOKENS, authority, signed
from tests.venv_probe import ROOT, TRITONCLIENT_PYTHON, run_probe
from vae_serve.api.v1 import vae_pb2

MAX_BODY_BYTES = 256 * 1024  # the test server's request limit, so that a too-large body is cheap to send
BOUND_NAMES = ("elbo", "reconstruction", "kl", "iwae", "iwae_standard_error")

if shutil.which("curl") is None:
    pytest.skip("curl is not installed (apt-get install curl)", allow_module_level=True)


def curl(url: str, *args: str | bytes, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers in lower case, body) of one curl call; ``body`` goes in through stdin."""
    command = ["curl", "-sS", "-D", "-", "-o", "-", "-H", "Expect:", *args, url]  # no "100 Continue" head
    if body is not None:
        command[1:1] = ["--data-binary", "@-"]
    out = subprocess.run(command, input=body, capture_output=True, timeout=60, check=True).stdout
    head, _, payload = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {key.lower(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def post_json(url: str, document, *args: str) -> tuple[int, dict]:
    status, _, payload = curl(url, "-H", "Content-Type: application/json", *args, body=json.dumps(document).encode())
    return status, json.loads(payload)


def infer_body(values: np.ndarray, name: str = "x", **parameters) -> dict:
    document = {"id": "r-1", "inputs": [{"name": name, "shape": list(values.shape), "datatype": "FP32"}]}
    document["inputs"][0]["data"] = values.tolist()
    if parameters:
        document["parameters"] = parameters
    return document


def by_name(reply: dict) -> dict[str, np.ndarray]:
    return {out["name"]: np.array(out["data"]).reshape(out["shape"]) for out in reply["outputs"]}


@pytest.fixture(scope="module")
def rest(digits_bundle):
    server = start_server(
        "--bundle", str(digits_bundle), "--http-port", "0", "--max-receive-message-bytes", str(MAX_BODY_BYTES)
    )
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(8).random((5, 64), dtype=np.float32)


def test_curl_health_metadata_and_config(rest):
    url = rest.http_url
    assert curl(url + "/v2/health/live")[0] == 200
    status, headers, payload = curl(url + "/v2/health/ready")
    assert (status, headers["content-type"], json.loads(payload)) == (200, "application/json", {"ready": True})
    server = json.loads(curl(url + "/v2")[2])
    assert server["name"] == "vae-serve" and "model_configuration" in server["extensions"]
    encoder = json.loads(curl(url + "/v2/models/digits-encoder")[2])
    assert encoder["versions"] == ["1"] and encoder["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert json.loads(curl(url + "/v2/models/digits-elbo/versions/1")[2])["outputs"][0]["datatype"] == "FP64"
    assert curl(url + "/v2/models/digits-decoder/ready")[0] == 200
    status, _, payload = curl(url + "/v2/models/digits-decoder/versions/9/ready")
    assert status == 400 and "version" in json.loads(payload)["error"]
    status, _, payload = curl(url + "/v2/models/nosuch/ready")  # unknown: the protocol's 400, and why
    reply = json.loads(payload)
    assert (status, reply["name"], reply["ready"]) == (400, "nosuch", False) and "unknown model" in reply["error"]
    config = json.loads(curl(url + "/v2/models/digits-encoder/config")[2])
    assert config["max_batch_size"] == 1024 and config["input"] == [
        {"name": "x", "data_type": "TYPE_FP32", "dims": [64]}
    ]


def test_curl_infer_equals_grpc(rest, rows):
    url = rest.http_url + "/v2/models/digits-elbo/infer"
    status, reply = post_json(url, infer_body(rows, k=20, seed=11))
    assert status == 200 and reply["id"] == "r-1" and reply["parameters"] == {"seed": 11}
    assert reply["model_name"] == "digits-elbo" and reply["model_version"] == "1"
    reference = rest.stub.Elbo(vae_pb2.ElboRequest(x=tensor(rows), k=20, seed=11))
    got = by_name(reply)
    for name in BOUND_NAMES:
        assert np.array_equal(got[name], np.array(getattr(reference, name))), name  # JSON keeps every float64 bit

    nested = infer_body(rows.reshape(5, 8, 8))  # the 8x8 image shape, as nested arrays
    status, reply = post_json(rest.http_url + "/v2/models/digits-encoder/infer", nested)
    encoded = rest.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows)))
    assert status == 200 and np.array_equal(by_name(reply)["z_mean"].astype(np.float32), array(encoded.z_mean))


def test_curl_binary_data_extension(rest, rows):
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [5, 64], "datatype": "FP32", "parameters": {"binary_data_size": rows.nbytes}}
            ],
            "outputs": [{"name": "z_logvar", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, payload = curl(
        rest.http_url + "/v2/models/digits-encoder/infer",
        "-H", "Content-Type: application/octet-stream",
        "-H", f"Inference-Header-Content-Length: {len(header)}",
        body=header + rows.tobytes(),
    )  # fmt: skip
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    reply = json.loads(payload[:length])
    [output] = reply["outputs"]
    assert (output["name"], output["datatype"], output["shape"][0]) == ("z_logvar", "FP32", 5)
    assert output["parameters"] == {"binary_data_size": len(payload) - length} and "data" not in output
    z_logvar = np.frombuffer(payload[length:], dtype="<f4").reshape(reply["outputs"][0]["shape"])
    encoded = rest.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows)))
    assert np.array_equal(z_logvar, array(encoded.z_logvar))

    # binary_data_output for all, overridden by one output's own binary_data: false (Triton's rule)
    document = {
        "model_name": "digits-encoder",  # as Triton's examples write it; the URL decides
        "inputs": infer_body(rows)["inputs"],
        "outputs": [{"name": "z_mean", "parameters": {"binary_data": False}}, {"name": "z_logvar"}],
        "parameters": {"binary_data_output": True},
    }
    status, headers, payload = curl(
        rest.http_url + "/v2/models/digits-encoder/infer", body=json.dumps(document).encode()
    )
    length = int(headers["inference-header-content-length"])
    z_mean, z_logvar = json.loads(payload[:length])["outputs"]
    assert status == 200 and "data" in z_mean and "data" not in z_logvar
    assert z_logvar["parameters"]["binary_data_size"] == len(payload) - length
    assert np.array_equal(np.array(z_mean["data"], dtype=np.float32).reshape(5, -1), array(encoded.z_mean))


def bad_calls(rows: np.ndarray) -> list[tuple[str, str, bytes | None, int, str]]:
    """(method, path, body, HTTP status, text the error must contain)."""
    infer = "/v2/models/digits-elbo/infer"
    nan = json.dumps(infer_body(rows)).replace(str(rows[1, 3].tolist()), "1e999", 1)  # JSON has no NaN: 1e999 is inf

    def body(document) -> bytes:
        return json.dumps(document).encode()

    def changed_input(**changes) -> bytes:
        document = infer_body(rows)
        document["inputs"][0].update(changes)
        return body(document)

    return [
        ("POST", infer, b"{not json", 400, "Invalid JSON"),
        ("POST", infer, body({"input": []}), 400, "inputs: Field required"),
        ("POST", infer, changed_input(data=None), 400, "no data"),
        ("POST", infer, body(infer_body(rows[:, :10])), 400, "does not fit this model"),
        ("POST", infer, changed_input(datatype="INT8"), 400, "datatype 'INT8' not supported"),
        ("POST", infer, changed_input(data=[["a"] * 64] * 5), 400, "array of numbers"),
        ("POST", infer, changed_input(data=[["0.5"] * 64] * 5), 400, "array of numbers"),  # numpy would take it
        ("POST", infer, changed_input(data=[[True] * 64] * 5), 400, "array of numbers"),
        ("POST", infer, changed_input(data=[[None] * 64] * 5), 400, "array of numbers"),
        ("POST", infer, changed_input(data=[[0.5] * 63 + [True]] * 5), 400, "true or false among its numbers"),
        ("POST", infer, changed_input(data=[[0.5] * 64] * 4 + [[False] + [1] * 63]), 400, "true or false"),
        ("POST", infer, changed_input(data=[[[1, 0.5]] * 32] * 4 + [[[True, 0.5]] * 32]), 400, "true or false"),
        ("POST", infer, changed_input(shape=["5", 64]), 400, "inputs.0.shape.0: Input should be a valid integer"),
        ("POST", infer, changed_input(shape=[2**64, 64]), 400, "inputs.0.shape.0: Input should be less than"),
        ("POST", infer, changed_input(shape=[-5, 64]), 400, "inputs.0.shape.0: Input should be greater than"),
        ("POST", infer, body(infer_body(rows, timeout=0)), 400, "'timeout': 0 must be a positive integer"),
        ("POST", infer, body(infer_body(rows, k=250, timeout=1)), 504, "deadline"),
        ("POST", infer, changed_input(parameters={"binary_data_size": 99}), 400, "both 'data' and 'binary_data_size'"),
        ("POST", infer, body(infer_body(rows, k=0)), 400, "k: 0 is out of range"),
        ("POST", infer, body(infer_body(rows, k="ten")), 400, "must be an integer"),
        ("POST", infer, body(infer_body(rows, temperature=2)), 400, "not understood"),
        ("POST", infer, nan.encode(), 400, "non-finite value"),
        ("POST", infer, b"[" + b"0," * (MAX_BODY_BYTES // 2) + b"0]", 413, f"limit of {MAX_BODY_BYTES} bytes"),
        ("POST", "/v2/models/digits-nothing/infer", body(infer_body(rows)), 404, "unknown model"),
        ("POST", "/v2/models/other-elbo/infer", body(infer_body(rows)), 404, "unknown model 'other'"),
        ("GET", "/v2/models/digits-elbo/versions/7", None, 404, "version"),
        ("GET", "/v3/anything", None, 404, "no such endpoint"),
        ("GET", infer, None, 405, "GET is not allowed"),
    ]


def test_bad_requests_get_json_errors_with_protocol_status_codes(rest, rows):
    for method, path, body, status, text in bad_calls(rows):
        args = ["-X", method] + (["-H", "Content-Type: application/json"] if body is not None else [])
        got_status, headers, payload = curl(rest.http_url + path, *args, body=body)
        assert headers["content-type"] == "application/json", (path, payload)
        error = json.loads(payload)["error"]
        assert (got_status, text in error) == (status, True), (path, got_status, error, text)
        assert not any(leak in error for leak in ("Traceback", ".py", "/tmp", str(ROOT))), error
    assert "Traceback" not in rest.log()


def test_rest_calls_count_in_the_same_metrics(rest, rows):
    before = samples(scrape(rest.metrics_url))
    ok = ("vae_requests_total", (("code", "OK"), ("method", "ModelInfer")))
    invalid = ("vae_requests_total", (("code", "INVALID_ARGUMENT"), ("method", "ModelInfer")))
    for _ in range(3):
        assert post_json(rest.http_url + "/v2/models/digits-encoder/infer", infer_body(rows))[0] == 200
    assert post_json(rest.http_url + "/v2/models/digits-encoder/infer", infer_body(rows[:, :3]))[0] == 400
    after = samples(scrape(rest.metrics_url))
    assert after.get(ok, 0) - before.get(ok, 0) == 3
    assert after.get(invalid, 0) - before.get(invalid, 0) == 1
    examples = ("vae_examples_total", (("method", "ModelInfer"),))
    assert after[examples] - before.get(examples, 0) == 15


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("pki")
    authority(folder, "ca")
    signed(folder, "ca", "server", server=True)
    return folder


def test_tokens_and_tls_as_on_grpc(digits_bundle, pki, tmp_path, rows):
    (tmp_path / "tokens").write_text(f"{TOKENS[0]}\n")
    server = start_server(
        "--bundle", str(digits_bundle), "--http-port", "0", "--auth-tokens-file", str(tmp_path / "tokens"),
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        credentials=grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes()),
    )  # fmt: skip
    try:
        url = server.http_url
        assert url.startswith("https://")
        tls = ("--cacert", str(pki / "ca.pem"))
        assert curl(url + "/v2/health/ready", *tls)[0] == 200  # probes need no token
        status, headers, payload = curl(url + "/v2/models/digits-encoder", *tls)
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        assert "missing credentials" in json.loads(payload)["error"]
        wrong = curl(url + "/v2/models/digits-encoder", *tls, "-H", "Authorization: Bearer nope")
        assert wrong[0] == 401 and json.loads(wrong[2])["error"] == "invalid token"
        undecodable = curl(url + "/v2/models/digits-encoder", *tls, "-H", b"Authorization: Bearer \xff\xfe")
        assert undecodable[0] == 401 and "malformed" in json.loads(undecodable[2])["error"]
        token = ("-H", f"Authorization: Bearer {TOKENS[0]}")
        status, reply = post_json(url + "/v2/models/digits-encoder/infer", infer_body(rows), *tls, *token)
        assert status == 200 and by_name(reply)["z_mean"].shape[0] == 5
        refused = subprocess.run(["curl", "-sS", url + "/v2/health/live"], capture_output=True, timeout=30)
        assert refused.returncode != 0  # TLS only: no certificate the client trusts, no answer
        failures = samples(scrape(server.metrics_url))
        assert failures[("vae_auth_failures_total", (("method", "ModelMetadata"), ("reason", "missing")))] == 1
    finally:
        assert server.stop() == 0


def test_drain_refuses_new_rest_calls_and_finishes_running_ones(digits_bundle):
    server = start_server("--bundle", str(digits_bundle), "--http-port", "0", "--grace", "30")
    heavy = np.random.default_rng(2).random((1024, 64), dtype=np.float32)
    url = server.http_url + "/v2/models/digits-elbo/infer"
    answers: list = []
    # Four calls at the per-request limit of rows x samples: each runs alone, about a second in all.
    callers = [
        threading.Thread(target=lambda: answers.append(post_json(url, infer_body(heavy, k=256, seed=3))))
        for _ in range(4)
    ]
    in_flight = ("vae_requests_in_flight", (("method", "ModelInfer"),))
    try:
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 10
        while samples(scrape(server.metrics_url)).get(in_flight, 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        while curl(server.http_url + "/v2/health/ready")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, _, payload = curl(server.http_url + "/v2/models/digits-encoder")
        assert status == 503 and "shutting down" in json.loads(payload)["error"]
        for caller in callers:
            caller.join(timeout=60)
        assert [status for status, _ in answers] == [200] * 4
        assert all(len(reply["outputs"][0]["data"]) == 1024 for _, reply in answers)
    finally:
        assert server.stop() == 0, server.log()


def test_tritonclient_http_drives_it(rest, tmp_path, rows):
    np.save(tmp_path / "x.npy", rows)
    address = rest.http_url.split("://")[1]
    result = run_probe(
        TRITONCLIENT_PYTHON, "tritonclient", "tritonclient_http_probe.py", address, "digits", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["live"] and report["ready"] and report["models_ready"] == [True, True, True]
    assert report["unknown_ready"] is False
    assert report["server"]["name"] == "vae-serve"
    assert report["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert report["config"]["max_batch_size"] == 1024
    assert report["seed"] == 11 and report["json_outputs"] == ["z_mean"]
    assert report["bad_shape"][0] == "400" and "does not fit this model" in report["bad_shape"][1]
    got = np.load(tmp_path / "outputs.npz")
    encoded = rest.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows)))
    assert np.array_equal(got["z_mean"], array(encoded.z_mean)) and np.array_equal(got["z_mean_json"], got["z_mean"])
    assert np.array_equal(got["z_logvar"], array(encoded.z_logvar))
    bounds = rest.stub.Elbo(vae_pb2.ElboRequest(x=tensor(rows), k=20, seed=11))
    assert np.array_equal(got["iwae"], np.array(bounds.iwae)) and np.array_equal(got["elbo"], np.array(bounds.elbo))


def test_call_slots_stalled_and_dropped_uploads(digits_bundle):
    """--max-concurrent-rpcs bounds REST calls too; a call whose client vanishes mid-upload is answered
    and counted, never an INTERNAL error with a traceback."""
    server = start_server("--bundle", str(digits_bundle), "--http-port", "0", "--max-concurrent-rpcs", "1")
    try:
        host, port = server.http_url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)), timeout=10)
        stalled.sendall(b"POST /v2/models/digits-elbo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        deadline = time.monotonic() + 10
        while (status := curl(server.http_url + "/v2/models/digits-elbo")[0]) != 429 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the stalled call holds the one slot
        status, _, payload = curl(server.http_url + "/v2/models/digits-elbo")
        assert status == 429 and "more than 1 calls at once" in json.loads(payload)["error"]
        assert curl(server.http_url + "/v2/health/ready")[0] == 200  # probes are never refused
        stalled.close()  # the client goes away mid-upload
        while curl(server.http_url + "/v2/models/digits-elbo")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        counted = samples(scrape(server.metrics_url))
        assert counted[("vae_requests_total", (("code", "CANCELLED"), ("method", "ModelInfer")))] == 1
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log() and "INTERNAL" not in server.log()


def test_rest_tls_follows_renewed_files_and_survives_a_half_done_rotation(digits_bundle, pki, tmp_path):
    authority(pki, "other-ca")
    signed(pki, "other-ca", "server2", server=True)
    shutil.copy(pki / "server.pem", tmp_path / "tls.pem")
    shutil.copy(pki / "server.key", tmp_path / "tls.key")
    server = start_server(
        "--bundle", str(digits_bundle), "--http-port", "0", "--tls-cert", str(tmp_path / "tls.pem"),
        "--tls-key", str(tmp_path / "tls.key"), credentials=grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes()),
    )  # fmt: skip
    ready = server.http_url + "/v2/health/ready"
    try:
        assert curl(ready, "--cacert", str(pki / "ca.pem"))[0] == 200
        (tmp_path / "tls.pem").write_bytes((pki / "server2.pem").read_bytes())  # new certificate, old key: mid-rotation
        time.sleep(0.05)
        assert curl(ready, "--cacert", str(pki / "ca.pem"))[0] == 200  # the working files keep serving
        (tmp_path / "tls.key").write_bytes((pki / "server2.key").read_bytes())
        assert curl(ready, "--cacert", str(pki / "other-ca.pem"))[0] == 200  # the renewal, without a restart
        old = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), ready], capture_output=True, timeout=30)
        assert old.returncode != 0
    finally:
        assert server.stop() == 0
    assert "TLS certificate of the REST port reloaded" in server.log()
    assert server.log().count("cannot be loaded for the REST port") == 1  # once per change, not per handshake
