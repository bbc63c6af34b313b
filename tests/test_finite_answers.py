"""Every valid input gets a finite answer, on every rpc, likelihood and ``--decoder-scale``, with and
without the bounds graph (issue 20, section 3): a Hypothesis property test against a real server.

Valid (docs/anomaly.md, "Finite answers"): finite float32 values in the declared shape; for a
Bernoulli model, raw values inside the range its preprocessing maps onto [0, 1]; latent codes
within +-LATENT_LIMIT. Each valid input gets finite numbers, p-values in [0, 1] and a decision; a
far-out row of a Gaussian model (a value 1e8 or more) is an extreme anomaly: above every
calibration row's score, at the smallest p-value. Before the root fixes in core (the encoder's
input and posterior held to a box, float64 reconstruction errors), float32 max, 1e20 or, for a
shared-scale model, all pixels at 1e6 were answered INTERNAL, and z = 3.4e38 too.
"""

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.server_process import start_server, tensor
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bundle import read_manifest
from vae_serve.core.manifest import MANIFEST_FILE, seal
from vae_serve.core.vae_math import LATENT_LIMIT
from vae_serve.export import cli
from vae_serve.service.grpc.score_types import SCORE_TYPES

F32_MAX = float(np.finfo(np.float32).max)
EXTREME_RAW = 1e8  # a Gaussian row with a value this far out is an extreme anomaly for every model here
TINY_ARGS = ["--epochs", "3", "--hidden", "32", "--latent-dim", "4", "--iwae-k", "20", "--no-progress"]
PROPERTY = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)


def repository_entry(source: Path, repository: Path, name: str, bounds_graph: bool) -> None:
    """``source`` as ``repository/name/1``; without ``bounds_graph`` as exporters wrote it before the
    graph, so the server takes the numpy path."""
    target = Path(shutil.copytree(source, repository / name / "1"))
    document = json.loads((target / MANIFEST_FILE).read_text())
    document.update(name=name, version="1")
    if not bounds_graph:
        del document["bounds_graph"], document["files"]["bounds.onnx"]
        (target / "bounds.onnx").unlink()
    (target / MANIFEST_FILE).write_text(json.dumps(seal(document), indent=2))


@pytest.fixture(scope="module")
def repository(tmp_path_factory, digits_bundle, gaussian_bundle) -> dict[str, dict]:
    """Every likelihood and decoder scale, each with and without the bounds graph, by model name."""
    work = tmp_path_factory.mktemp("finite")
    sources = {"bernoulli": digits_bundle, "per-feature": gaussian_bundle}
    for scale in ("shared", "standardized"):
        out = work / scale
        args = ["train", "--dataset", "digits", "--likelihood", "gaussian", "--decoder-scale", scale]
        assert cli.main([*args, "--out", str(out), *TINY_ARGS]) == 0
        sources[scale] = out
    repository, models = work / "repository", {}
    for kind, source in sources.items():
        for graph in (True, False):
            name = f"{kind}-{'graph' if graph else 'numpy'}"
            repository_entry(source, repository, name, graph)
            calibration = read_manifest(repository / name / "1").calibration.scores
            # (calibration rows, the largest calibration score) by score: all the test needs, and
            # short in Hypothesis's report of a failing case.
            models[name] = {score: (entry.num_examples, entry.quantiles[-1]) for score, entry in calibration.items()}
    return {"path": repository, "models": models}


@pytest.fixture(scope="module")
def served(repository):
    server = start_server("--model-repository", str(repository["path"]), metrics=False)
    yield server, repository["models"]
    assert server.stop() == 0, server.log()


def array(message: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype="<f4").reshape(tuple(message.shape))


def oip_outputs(response: oip_pb2.ModelInferResponse) -> list[np.ndarray]:
    dtypes = {"FP32": "<f4", "FP64": "<f8"}
    return [
        np.frombuffer(raw, dtype=dtypes[spec.datatype])
        for spec, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    ]


def oip_request(model: str, name: str, values: np.ndarray, **parameters) -> oip_pb2.ModelInferRequest:
    request = oip_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=values.shape)
    request.raw_input_contents.append(np.ascontiguousarray(values, dtype="<f4").tobytes())
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return request


def finite(*values) -> bool:
    return all(np.isfinite(np.asarray(value, np.float64)).all() for value in values)


MODEL_NAMES = [
    f"{kind}-{path}" for kind in ("bernoulli", "per-feature", "shared", "standardized") for path in ("graph", "numpy")
]


@st.composite
def model_rows(draw) -> tuple[str, np.ndarray]:
    """A model and 1-3 valid rows for it: [0, 16] pixels for Bernoulli, any finite float32 else."""
    name = draw(st.sampled_from(MODEL_NAMES))
    width = 12 if name.startswith("per-feature") else 64
    if name.startswith("bernoulli"):
        elements = st.floats(0.0, 16.0, width=32)
    else:
        elements = st.one_of(
            st.floats(width=32, allow_nan=False, allow_infinity=False),
            st.sampled_from([0.0, 1.0, 16.0, 1e6, -1e6, 1e20, 1e30, -1e30, F32_MAX, -F32_MAX]),
        )
    rows = draw(st.integers(1, 3))
    return name, draw(arrays(np.float32, (rows, width), elements=elements))


def extreme_images() -> list[tuple[str, np.ndarray]]:
    """The inputs built to overflow: all-black, all-white, lit corners, huge and float32-max rows."""
    cases = []
    for name in MODEL_NAMES:
        width = 12 if name.startswith("per-feature") else 64
        values = (0.0, 16.0) if name.startswith("bernoulli") else (16.0, 1e6, 1e30, -1e30, F32_MAX, -F32_MAX)
        for value in values:
            corners = np.zeros(width, np.float32)
            corners[[0, width - 1]] = value
            cases += [(name, np.full((1, width), value, np.float32)), (name, corners[None])]
    return cases


def with_extreme_examples(test):
    for case in extreme_images():
        test = example(case)(test)
    return test


@PROPERTY
@with_extreme_examples
@given(model_rows())
def test_every_valid_input_gets_a_finite_answer_on_every_rpc(served, case):
    server, models = served
    name, x = case
    model = vae_pb2.ModelRef(name=name)
    encoded = server.stub.Encode(vae_pb2.EncodeRequest(model=model, x=tensor(x), num_samples=2, seed=1), timeout=30)
    assert finite(array(encoded.z_mean), array(encoded.z_logvar), array(encoded.z_samples))
    bounds = server.stub.Elbo(vae_pb2.ElboRequest(model=model, x=tensor(x), k=5, seed=1), timeout=30)
    assert finite(bounds.elbo, bounds.reconstruction, bounds.kl, bounds.iwae, bounds.iwae_standard_error)
    assert finite(bounds.elbo_bits_per_dim, bounds.iwae_bits_per_dim) and len(bounds.iwae) == len(x)
    extreme = np.abs(x).max(axis=1) >= EXTREME_RAW if not name.startswith("bernoulli") else np.zeros(len(x), bool)
    for score, score_type in SCORE_TYPES.items():
        request = vae_pb2.ScoreAnomalyRequest(
            model=model, x=tensor(x), score=score_type, seed=1, return_feature_errors=True
        )
        reply = server.stub.ScoreAnomaly(request, timeout=30)
        errors = array(reply.feature_errors)
        assert finite(reply.scores, reply.percentile, errors, reply.threshold) and np.all(errors >= 0), score
        assert all(0.0 <= p <= 1.0 for p in [*reply.p_value, *reply.percentile]), score
        assert len(reply.is_anomaly) == len(x)
        # An extreme row: above every calibration row's score, at the smallest p-value, flagged.
        calibration_rows, highest = models[name][score]
        for row in np.flatnonzero(extreme):
            assert reply.scores[row] > highest, score
            assert reply.is_anomaly[row] and reply.p_value[row] == pytest.approx(1.0 / (1.0 + calibration_rows)), score
    oip = oip_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    assert finite(*oip_outputs(oip.ModelInfer(oip_request(f"{name}-encoder", "x", x), timeout=30)))
    assert finite(*oip_outputs(oip.ModelInfer(oip_request(f"{name}-elbo", "x", x, k=3, seed=2), timeout=30)))
    path = vae_pb2.InterpolateRequest(
        model=model,
        x_start=tensor(x),
        x_end=tensor(x[::-1]),
        steps=3,
        num_samples=1,
        seed=1,
        path=vae_pb2.INTERPOLATION_PATH_SPHERICAL,
    )
    interpolated = server.stub.Interpolate(path, timeout=30)
    assert finite(array(interpolated.z), array(interpolated.x_mean), array(interpolated.x_samples))


@st.composite
def model_codes(draw) -> tuple[str, np.ndarray]:
    """A model and 1-3 latent codes inside +-LATENT_LIMIT, extremes included."""
    name = draw(st.sampled_from(MODEL_NAMES))
    latent_dim = 3 if name.startswith("per-feature") else (8 if name.startswith("bernoulli") else 4)
    limit = float(np.float32(LATENT_LIMIT))
    elements = st.one_of(st.floats(-limit, limit, width=32), st.sampled_from([1e4, -1e4, limit, -limit]))
    return name, draw(arrays(np.float32, (draw(st.integers(1, 3)), latent_dim), elements=elements))


@PROPERTY
@example(case=("shared-numpy", np.full((1, 4), 1e4, np.float32)), seed=0)
@example(case=("bernoulli-graph", np.full((2, 8), -np.float32(LATENT_LIMIT))), seed=1)
@given(model_codes(), st.integers(0, 2**32))
def test_every_valid_latent_code_and_sample_gets_a_finite_answer(served, case, seed):
    server, _ = served
    name, z = case
    model = vae_pb2.ModelRef(name=name)
    decoded = server.stub.Decode(vae_pb2.DecodeRequest(model=model, z=tensor(z), num_samples=2, seed=seed), timeout=30)
    parameters = (
        (decoded.bernoulli.probs,) if decoded.HasField("bernoulli") else (decoded.gaussian.mean, decoded.gaussian.scale)
    )
    assert finite(*(array(value) for value in parameters), array(decoded.x_samples))
    for path in (vae_pb2.INTERPOLATION_PATH_LINEAR, vae_pb2.INTERPOLATION_PATH_SPHERICAL):
        request = vae_pb2.InterpolateRequest(model=model, z_start=tensor(z), z_end=tensor(-z[::-1]), steps=4, path=path)
        reply = server.stub.Interpolate(request, timeout=30)
        assert finite(array(reply.z), array(reply.x_mean))
    oip = oip_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    assert finite(*oip_outputs(oip.ModelInfer(oip_request(f"{name}-decoder", "z", z), timeout=30)))
    sample = server.stub.Sample(vae_pb2.SampleRequest(model=model, n=32, temperature=10.0, seed=seed), timeout=30)
    assert finite(array(sample.z), array(sample.x_mean), array(sample.x))


@pytest.mark.parametrize("value", [2 * LATENT_LIMIT, 1e30, F32_MAX, -F32_MAX])
def test_a_latent_code_beyond_the_limit_is_refused_as_invalid_not_internal(served, value):
    server, _ = served
    z = np.zeros((1, 4), np.float32)
    z[0, 1] = value
    model = vae_pb2.ModelRef(name="standardized-numpy")
    with pytest.raises(grpc.RpcError) as refused:
        server.stub.Decode(vae_pb2.DecodeRequest(model=model, z=tensor(z)), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside [-1e+06, 1e+06], the range of latent codes this server decodes" in refused.value.details()
    oip = oip_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as refused:
        oip.ModelInfer(oip_request("standardized-numpy-decoder", "z", z), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
