"""Bad input gets its exact status and a message that says what was wrong; the server stays healthy.

The server here runs with small limits, set partly by flags and partly by VAE_* variables, so the
limit checks are reached with small messages.
"""

import json
import re

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import http_json, malformed
from tests.server_process import SERVING, start_server
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2
from vae_serve.service.rest.server import HTTP_STATUS
from vae_serve.service.status import Code

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
LIMITS = ["--max-rows", "16", "--max-k", "50", "--max-row-samples", "400", "--max-sample-n", "64"]
LIMIT_ENV = {"VAE_MAX_STREAM_SAMPLE_N": "200", "VAE_MAX_RECEIVE_MESSAGE_BYTES": "65536"}


def tensor(shape, data: bytes | None = None, fill: float = 0.5) -> vae_pb2.Tensor:
    if data is None:
        data = np.full(shape, fill, dtype="<f4").tobytes()
    return vae_pb2.Tensor(shape=shape, data=data)


def with_value(value: float, shape=(3, 64)) -> vae_pb2.Tensor:
    values = np.full(shape, 0.5, dtype="<f4")
    values[1, 7] = value
    return tensor(shape, values.tobytes())


GOOD_X = tensor([3, 64])
CASES = [
    # (id, rpc, request, status, message pattern)
    ("no tensor", "Elbo", vae_pb2.ElboRequest(), INVALID, r"x: missing tensor"),
    ("empty batch", "Elbo", vae_pb2.ElboRequest(x=tensor([0, 64], b"")), INVALID, r"x: empty batch"),
    ("wrong width", "Elbo", vae_pb2.ElboRequest(x=tensor([3, 63])), INVALID, r"x: shape \[3, 63\] does not fit"),
    ("rank 1", "Encode", vae_pb2.EncodeRequest(x=tensor([64])), INVALID, r"x: shape \[64\] does not fit"),
    ("wrong image", "Encode", vae_pb2.EncodeRequest(x=tensor([2, 8, 7])), INVALID, r"does not fit this model"),
    ("negative dim", "Encode", vae_pb2.EncodeRequest(x=vae_pb2.Tensor(shape=[2, -64])), INVALID, r"does not fit"),
    (
        "short data",
        "Elbo",
        vae_pb2.ElboRequest(x=tensor([3, 64], b"\0" * 700)),
        INVALID,
        r"700 bytes of data, shape \[3, 64\] needs 768",
    ),
    (
        "float64 data",
        "Encode",
        vae_pb2.EncodeRequest(x=tensor([3, 64], np.zeros((3, 64)).tobytes())),
        INVALID,
        r"1536 bytes.*needs 768 \(float32",
    ),
    (
        "unknown dtype",
        "Encode",
        vae_pb2.EncodeRequest(x=vae_pb2.Tensor(shape=[3, 64], data=b"\0" * 768, dtype=7)),
        INVALID,
        r"x: dtype 7 is not supported; send DATA_TYPE_FLOAT32",
    ),
    (
        "float64 declared, float32 bytes",
        "Encode",
        vae_pb2.EncodeRequest(x=vae_pb2.Tensor(shape=[3, 64], data=b"\0" * 768, dtype=vae_pb2.DATA_TYPE_FLOAT64)),
        INVALID,
        r"768 bytes.*needs 1536 \(float64",
    ),
    (
        "float64 beyond float32",
        "Decode",
        vae_pb2.DecodeRequest(
            z=vae_pb2.Tensor(shape=[1, 8], data=np.full((1, 8), 1e300).tobytes(), dtype=vae_pb2.DATA_TYPE_FLOAT64)
        ),
        INVALID,
        r"z: non-finite value .* in row 0",
    ),
    ("nan", "Elbo", vae_pb2.ElboRequest(x=with_value(np.nan)), INVALID, r"non-finite value .* in row 1"),
    (
        "above 16",
        "Elbo",
        vae_pb2.ElboRequest(x=with_value(16.5)),
        INVALID,
        r"value 16.5 in row 1, feature \d+ is outside \[0, 16\]",
    ),
    (
        "below 0",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=with_value(-0.25)),
        INVALID,
        r"-0.25 .* outside \[0, 16\]",
    ),
    (
        "inf",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=with_value(np.inf)),
        INVALID,
        r"non-finite value .* in row 1",
    ),
    ("-inf z", "Decode", vae_pb2.DecodeRequest(z=with_value(-np.inf, (3, 8))), INVALID, r"z: non-finite"),
    (
        "z width",
        "Decode",
        vae_pb2.DecodeRequest(z=tensor([3, 64])),
        INVALID,
        r"z: shape \[3, 64\] does not fit.*\['n', 8\]",
    ),
    ("too many rows", "Elbo", vae_pb2.ElboRequest(x=tensor([17, 64])), INVALID, r"17 rows exceeds the limit of 16"),
    ("k too big", "Elbo", vae_pb2.ElboRequest(x=GOOD_X, k=51), INVALID, r"k: 51 is out of range; allowed 1\.\.50"),
    (
        "rows x k",
        "Elbo",
        vae_pb2.ElboRequest(x=tensor([10, 64]), k=50),
        INVALID,
        r"10 rows x 50 samples = 500 exceeds the limit of 400",
    ),
    (
        "encode samples",
        "Encode",
        vae_pb2.EncodeRequest(x=GOOD_X, num_samples=51),
        INVALID,
        r"num_samples: 51 is out of range",
    ),
    (
        "decode samples",
        "Decode",
        vae_pb2.DecodeRequest(z=tensor([16, 8]), num_samples=30),
        INVALID,
        r"16 rows x 30 samples",
    ),
    (
        "iwae score cost",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=tensor([5, 64]), score=vae_pb2.SCORE_TYPE_NEGATIVE_IWAE),
        INVALID,
        r"score samples: 100 is out of range",
    ),
    ("n zero", "Sample", vae_pb2.SampleRequest(n=0), INVALID, r"n: 0 is out of range; allowed 1\.\.64"),
    ("n too big", "Sample", vae_pb2.SampleRequest(n=65), INVALID, r"n: 65 is out of range"),
    ("stream n", "SampleStream", vae_pb2.SampleRequest(n=201), INVALID, r"n: 201 is out of range; allowed 1\.\.200"),
    (
        "chunk size",
        "SampleStream",
        vae_pb2.SampleRequest(n=100, chunk_size=65),
        INVALID,
        r"chunk_size: 65 is out of range",
    ),
    ("temperature 0", "Sample", vae_pb2.SampleRequest(n=2, temperature=0.0), INVALID, r"temperature: 0\.0 must be"),
    (
        "temperature nan",
        "SampleStream",
        vae_pb2.SampleRequest(n=2, temperature=float("nan")),
        INVALID,
        r"temperature: nan",
    ),
    (
        "fpr 0",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=GOOD_X, score=3, false_positive_rate=0.0),
        INVALID,
        r"false_positive_rate: 0\.0 must be strictly",
    ),
    (
        "fpr 1.5",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=GOOD_X, score=3, false_positive_rate=1.5),
        INVALID,
        r"false_positive_rate",
    ),
    (
        "threshold nan",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=GOOD_X, score=3, score_threshold=float("nan")),
        INVALID,
        r"score_threshold: nan",
    ),
    (
        "unknown score",
        "ScoreAnomaly",
        vae_pb2.ScoreAnomalyRequest(x=GOOD_X, score=99),
        INVALID,
        r"score: unknown score type 99",
    ),
    (
        "unknown model",
        "Elbo",
        vae_pb2.ElboRequest(x=GOOD_X, model=vae_pb2.ModelRef(name="mnist")),
        NOT_FOUND,
        r"unknown model 'mnist'.*\['digits'\]",
    ),
    (
        "unknown version",
        "Encode",
        vae_pb2.EncodeRequest(x=GOOD_X, model=vae_pb2.ModelRef(name="digits", version="7")),
        NOT_FOUND,
        r"no version '7'; available: \['1'\]",
    ),
    (
        "traversal name",
        "GetModelInfo",
        vae_pb2.GetModelInfoRequest(model=vae_pb2.ModelRef(name="../../etc")),
        NOT_FOUND,
        r"unknown model '\.\./\.\./etc'",
    ),
]


@pytest.fixture(scope="module")
def limited_server(digits_bundle):
    process = start_server("--bundle", str(digits_bundle), *LIMITS, "--http-port", "0", env=LIMIT_ENV)
    yield process
    assert process.stop() == 0, process.log()


def call(server, rpc: str, request):
    method = getattr(server.stub, rpc)
    if rpc == "SampleStream":
        return list(method(request, timeout=30))
    return method(request, timeout=30)


@pytest.mark.parametrize(
    "rpc, request_message, status, pattern", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_input_gets_its_status_and_message(limited_server, rpc, request_message, status, pattern):
    with pytest.raises(grpc.RpcError) as raised:
        call(limited_server, rpc, request_message)
    assert raised.value.code() == status, raised.value.details()
    assert raised.value.details() and re.search(pattern, raised.value.details()), raised.value.details()
    assert "Traceback" not in raised.value.details() and "/" not in raised.value.details().replace("../../etc", "")


def test_float64_input_is_answered_like_its_float32_rounding(limited_server):
    x64 = np.random.default_rng(5).random((3, 64))
    as_float64 = vae_pb2.Tensor(shape=[3, 64], data=x64.astype("<f8").tobytes(), dtype=vae_pb2.DATA_TYPE_FLOAT64)
    as_float32 = tensor([3, 64], x64.astype("<f4").tobytes())
    replies = [
        limited_server.stub.Elbo(vae_pb2.ElboRequest(x=x, k=5, seed=3), timeout=30) for x in (as_float64, as_float32)
    ]
    assert replies[0].SerializeToString() == replies[1].SerializeToString()


def test_oversize_message_is_resource_exhausted(limited_server):
    huge = tensor([16, 64], b"\0" * 70_000)  # above VAE_MAX_RECEIVE_MESSAGE_BYTES=65536
    with pytest.raises(grpc.RpcError) as raised:
        limited_server.stub.Elbo(vae_pb2.ElboRequest(x=huge), timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_is_healthy_and_correct_after_the_battery(limited_server):
    for _, rpc, request_message, _, _ in CASES:
        with pytest.raises(grpc.RpcError):
            call(limited_server, rpc, request_message)
    assert limited_server.health_status() == SERVING
    reply = limited_server.stub.Elbo(vae_pb2.ElboRequest(x=GOOD_X, k=10, seed=1), timeout=30)
    assert len(reply.elbo) == 3 and all(np.isfinite(reply.iwae))
    assert "Traceback" not in limited_server.log()


def call_any(server, rpc: str, request):
    """VaeService and Open Inference Protocol rpcs alike."""
    if rpc in ("ModelInfer", "ModelMetadata", "ModelConfig", "ModelStatistics"):
        return getattr(oip_pb2_grpc.GRPCInferenceServiceStub(server.channel), rpc)(request, timeout=30)
    return call(server, rpc, request)


@pytest.mark.parametrize(
    "rpc, request_message, status, pattern",
    [case[1:] for case in malformed.CASES],
    ids=[case[0] for case in malformed.CASES],
)
def test_malformed_battery(limited_server, rpc, request_message, status, pattern):
    with pytest.raises(grpc.RpcError) as raised:
        call_any(limited_server, rpc, request_message)
    assert raised.value.code() == status, raised.value.details()
    assert re.search(pattern, raised.value.details()), raised.value.details()
    for leak in ("Traceback", "/tmp/", ".py", "site-packages"):  # no server paths or stack traces
        assert leak not in raised.value.details()


@pytest.mark.parametrize(
    "rpc, request_message, status, pattern",
    [case[1:] for case in malformed.vae_cases()],
    ids=[case[0] for case in malformed.vae_cases()],
)
def test_malformed_battery_over_http_json(limited_server, rpc, request_message, status, pattern):
    """The same requests as JSON on the REST port (service/rest/vae_http.py): the same code, as
    google.rpc.Status with its HTTP status, and the same message."""
    http_status, _, payload = http_json.call(limited_server.http_url, rpc, request_message, "digits")
    document = json.loads(payload)
    assert (http_status, document["code"]) == (HTTP_STATUS[Code[status.name]], status.value[0]), payload
    assert re.search(pattern, document["message"]), document["message"]
    for leak in ("Traceback", "/tmp/", ".py", "site-packages"):
        assert leak not in document["message"]


def test_the_battery_is_large_and_covers_every_rpc():
    assert len(malformed.CASES) + len(CASES) >= 200
    assert len({case[0] for case in malformed.CASES}) == len(malformed.CASES)
    covered = {case[1] for case in malformed.CASES}
    assert covered == {
        *vae_pb2.DESCRIPTOR.services_by_name["VaeService"].methods_by_name,
        "ModelInfer",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
    }


# Property tests: whatever a client sends, the answer is a documented status, never UNKNOWN or
# INTERNAL, and an OK answer carries finite numbers.
ANY_TENSOR = st.one_of(
    st.builds(
        lambda shape, data: vae_pb2.Tensor(shape=shape, data=data),
        st.lists(st.integers(-3, 70), max_size=4),
        st.binary(max_size=1024),
    ),
    st.builds(
        lambda rows, width, values: tensor([rows, width], np.resize(np.asarray(values, "<f4"), rows * width).tobytes()),
        st.integers(1, 17),
        st.sampled_from([8, 64]),
        st.lists(st.floats(-0.5, 1.5, width=32), min_size=1, max_size=64),
    ),
)
PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def floats_in(message):
    """Every float array of a reply: its Tensors and repeated doubles, nested messages included."""
    for field, value in message.ListFields():
        if isinstance(value, vae_pb2.Tensor):
            yield np.frombuffer(value.data, "<f4")
        elif field.type == field.TYPE_DOUBLE:
            yield np.asarray(value, float)
        elif field.type == field.TYPE_MESSAGE and not field.is_repeated:
            yield from floats_in(value)


def status_of(server, rpc: str, request) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, call_any(server, rpc, request)
    except grpc.RpcError as error:
        return error.code(), error


@PROPERTY_SETTINGS
@given(x=ANY_TENSOR, rpc=st.sampled_from(["Encode", "Elbo", "ScoreAnomaly", "Decode"]), k=st.integers(0, 60))
def test_any_tensor_is_answered_ok_or_invalid_argument(limited_server, x, rpc, k):
    request = {
        "Encode": lambda: vae_pb2.EncodeRequest(x=x, num_samples=k % 3),
        "Elbo": lambda: vae_pb2.ElboRequest(x=x, k=k, seed=1),
        "ScoreAnomaly": lambda: vae_pb2.ScoreAnomalyRequest(x=x, score=1 + k % 3, seed=1),
        "Decode": lambda: vae_pb2.DecodeRequest(z=x, num_samples=k % 3),
    }[rpc]()
    code, reply = status_of(limited_server, rpc, request)
    assert code in (grpc.StatusCode.OK, INVALID), (code, reply)
    if code == grpc.StatusCode.OK:
        numbers = list(floats_in(reply))
        assert numbers and all(np.isfinite(value).all() for value in numbers)


@PROPERTY_SETTINGS
@given(
    datatype=st.one_of(st.sampled_from(["FP32", "FP64", "INT8", "BYTES"]), st.text(max_size=8)),
    shape=st.lists(st.integers(-2, 70), max_size=3),
    raw=st.lists(st.binary(max_size=600), max_size=2),
    model=st.one_of(st.sampled_from(["digits-encoder", "digits-decoder", "digits-elbo"]), st.text(max_size=20)),
)
def test_any_oip_infer_is_answered_with_a_documented_status(limited_server, datatype, shape, raw, model):
    request = oip_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="z" if model.endswith("decoder") else "x", datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    code, reply = status_of(limited_server, "ModelInfer", request)
    assert code in (grpc.StatusCode.OK, INVALID, NOT_FOUND), (code, reply)


@PROPERTY_SETTINGS
@given(name=st.text(max_size=40), version=st.text(max_size=10))
def test_any_model_reference_is_found_or_not_found(limited_server, name, version):
    code, reply = status_of(
        limited_server, "GetModelInfo", vae_pb2.GetModelInfoRequest(model={"name": name, "version": version})
    )
    expected_ok = name in ("", "digits") and version in ("", "1")
    assert code == (grpc.StatusCode.OK if expected_ok else NOT_FOUND), (code, reply)
