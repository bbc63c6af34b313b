"""The Open Inference Protocol beside VaeService on one port: readiness, metadata, config, and
inference equal to VaeService's answers; with the project's stubs, and with Triton's own
``tritonclient`` (run from its own venv, since it pins protobuf < 5 and numpy < 2).
"""

import json

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from tests.server_process import SERVING, tensor
from tests.venv_probe import TRITONCLIENT_PYTHON, run_probe
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2


def array(message: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype="<f4").reshape(tuple(message.shape))


def raw_request(model: str, name: str, values: np.ndarray, **parameters) -> oip_pb2.ModelInferRequest:
    values = np.ascontiguousarray(values, dtype="<f4")
    request = oip_pb2.ModelInferRequest(model_name=model, id="call-1")
    request.inputs.add(name=name, datatype="FP32", shape=values.shape)
    request.raw_input_contents.append(values.tobytes())
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return request


def outputs(response: oip_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": "<f4", "FP64": "<f8"}
    return {
        spec.name: np.frombuffer(raw, dtype=dtypes[spec.datatype]).reshape(tuple(spec.shape))
        for spec, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


@pytest.fixture
def oip(server) -> oip_pb2_grpc.GRPCInferenceServiceStub:
    return oip_pb2_grpc.GRPCInferenceServiceStub(server.channel)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(5).random((7, 64), dtype=np.float32)


def test_live_ready_metadata_and_config(server, oip):
    assert oip.ServerLive(oip_pb2.ServerLiveRequest()).live
    assert oip.ServerReady(oip_pb2.ServerReadyRequest()).ready
    health = server.health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
    assert health.status == SERVING
    for part in ("encoder", "decoder", "elbo"):
        assert oip.ModelReady(oip_pb2.ModelReadyRequest(name=f"digits-{part}")).ready
    assert not oip.ModelReady(oip_pb2.ModelReadyRequest(name="digits-encoder", version="99")).ready
    assert not oip.ModelReady(oip_pb2.ModelReadyRequest(name="nothing-encoder")).ready
    metadata = oip.ServerMetadata(oip_pb2.ServerMetadataRequest())
    assert metadata.name == "vae-serve" and "model_configuration" in metadata.extensions

    encoder = oip.ModelMetadata(oip_pb2.ModelMetadataRequest(name="digits-encoder"))
    assert list(encoder.versions) == ["1"] and encoder.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in encoder.inputs] == [("x", "FP32", [-1, 64])]
    info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
    latent = info.latent_dim
    assert [(t.name, list(t.shape)) for t in encoder.outputs] == [("z_mean", [-1, latent]), ("z_logvar", [-1, latent])]
    decoder = oip.ModelMetadata(oip_pb2.ModelMetadataRequest(name="digits-decoder"))
    assert [(t.name, list(t.shape)) for t in decoder.outputs] == [("probs", [-1, 64])]
    elbo = oip.ModelMetadata(oip_pb2.ModelMetadataRequest(name="digits-elbo"))
    assert [t.name for t in elbo.outputs][:3] == ["elbo", "reconstruction", "kl"]
    assert {t.datatype for t in elbo.outputs} == {"FP64"}

    config = oip.ModelConfig(oip_pb2.ModelConfigRequest(name="digits-encoder")).config
    assert config.max_batch_size == info.max_rows and config.platform == "onnxruntime_onnx"
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", oip_pb2.TYPE_FP32, [64])]
    assert config.HasField("dynamic_batching")


def test_infer_equals_vae_service(server, oip, rows):
    encoded = oip.ModelInfer(raw_request("digits-encoder", "x", rows))
    assert encoded.model_version == "1" and encoded.id == "call-1"
    reference = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows)))
    got = outputs(encoded)
    assert np.array_equal(got["z_mean"], array(reference.z_mean))
    assert np.array_equal(got["z_logvar"], array(reference.z_logvar))

    z = np.random.default_rng(6).standard_normal((4, reference.z_mean.shape[1])).astype(np.float32)
    decoded = outputs(oip.ModelInfer(raw_request("digits-decoder", "z", z)))
    probs = server.stub.Decode(vae_pb2.DecodeRequest(z=tensor(z))).bernoulli.probs
    assert np.array_equal(decoded["probs"], array(probs))

    request = raw_request("digits-elbo", "x", rows, k=20, seed=11)
    request.parameters["triton_enable_empty_final_response"].bool_param = False  # as perf_analyzer sends
    response = oip.ModelInfer(request)
    assert response.parameters["seed"].uint64_param == 11
    bounds = outputs(response)
    elbo = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(rows), k=20, seed=11))
    for name in ("elbo", "reconstruction", "kl", "iwae", "iwae_standard_error"):
        assert bounds[name].shape == (7,) and np.array_equal(bounds[name], np.array(getattr(elbo, name))), name


def test_typed_contents_and_requested_outputs(server, oip, rows):
    request = oip_pb2.ModelInferRequest(model_name="digits-encoder", outputs=[{"name": "z_logvar"}])
    request.inputs.add(name="x", datatype="FP64", shape=rows.shape).contents.fp64_contents.extend(rows.ravel().tolist())
    response = oip.ModelInfer(request)
    assert [spec.name for spec in response.outputs] == ["z_logvar"]
    reference = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows)))
    assert np.array_equal(outputs(response)["z_logvar"], array(reference.z_logvar))


def bad_requests(rows: np.ndarray) -> list[tuple[oip_pb2.ModelInferRequest, grpc.StatusCode, str]]:
    two_inputs = raw_request("digits-encoder", "x", rows)
    two_inputs.inputs.add(name="y", datatype="FP32", shape=[1, 64])
    both = raw_request("digits-encoder", "x", rows)
    both.inputs[0].contents.fp32_contents.append(1.0)
    int_input = raw_request("digits-encoder", "x", rows)
    int_input.inputs[0].datatype = "INT64"
    short = raw_request("digits-encoder", "x", rows)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    string_k = raw_request("digits-elbo", "x", rows)
    string_k.parameters["k"].string_param = "ten"
    nan = rows.copy()
    nan[2, 5] = np.nan
    wrong_output = raw_request("digits-encoder", "x", rows)
    wrong_output.outputs.add(name="logits")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        (raw_request("digits-encoder", "x", rows[:, :10]), invalid, "does not fit this model"),
        (raw_request("digits-encoder", "z", rows), invalid, "exactly one input named 'x'"),
        (two_inputs, invalid, "exactly one input"),
        (both, invalid, "both contents and raw_input_contents"),
        (int_input, invalid, "datatype 'INT64' not supported"),
        (short, invalid, "bytes"),
        (raw_request("digits-elbo", "x", rows, k=0), invalid, "k: 0 is out of range"),
        (string_k, invalid, "must be an integer"),
        (raw_request("digits-encoder", "x", rows, k=3), invalid, "not understood"),
        (raw_request("digits-encoder", "x", nan), invalid, "non-finite value"),
        (wrong_output, invalid, "unknown outputs ['logits']"),
        (raw_request("digits-generator", "x", rows), grpc.StatusCode.NOT_FOUND, "unknown model"),
        (raw_request("other-encoder", "x", rows), grpc.StatusCode.NOT_FOUND, "unknown model 'other'"),
    ]


def test_bad_infer_requests_get_clear_statuses(oip, rows):
    for request, code, text in bad_requests(rows):
        with pytest.raises(grpc.RpcError) as caught:
            oip.ModelInfer(request, timeout=10)
        assert caught.value.code() == code and text in caught.value.details(), (caught.value.details(), text)


def test_tritonclient_drives_it(server, tmp_path, rows):
    np.save(tmp_path / "x.npy", rows)
    address = f"127.0.0.1:{server.port}"
    result = run_probe(TRITONCLIENT_PYTHON, "tritonclient", "tritonclient_probe.py", address, "digits", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["live"] and report["ready"] and report["models_ready"] == [True, True, True]
    assert report["config"]["max_batch_size"] == 1024 and report["config"]["input"][0]["dims"] == ["64"]
    assert report["metadata"]["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}
    assert report["seed"] == 11
    got = np.load(tmp_path / "outputs.npz")
    encoded = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows)))
    assert np.array_equal(got["z_mean"], array(encoded.z_mean))
    bounds = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(rows), k=20, seed=11))
    assert np.array_equal(got["iwae"], np.array(bounds.iwae)) and np.array_equal(got["elbo"], np.array(bounds.elbo))
    assert report["not_found_status"] == "StatusCode.NOT_FOUND"
