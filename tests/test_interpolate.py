"""Interpolate through a real server, checked against closed forms computed here: the straight line,
the great circle (constant norm, angle linear in t) and the decoder run on its own ONNX session."""

import subprocess

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from scipy import special

from tests.server_process import tensor
from tests.test_client import VAE_CLIENT
from vae_serve.api.v1 import vae_pb2
from vae_serve.client import VaeClient, VaeClientError
from vae_serve.export.sources import load_source, make_splits

LINEAR, SPHERICAL = vae_pb2.INTERPOLATION_PATH_LINEAR, vae_pb2.INTERPOLATION_PATH_SPHERICAL


def array(message: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype="<f4").reshape(tuple(message.shape))


@pytest.fixture(scope="module")
def decoder(digits_bundle):
    session = ort.InferenceSession(str(digits_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    return lambda z: special.expit(session.run(["logits"], {"z": z.reshape(-1, z.shape[-1])})[0])


@pytest.fixture(scope="module")
def ends():
    rng = np.random.default_rng(11)
    return rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32)


def interpolate(server, **fields) -> vae_pb2.InterpolateResponse:
    return server.stub.Interpolate(vae_pb2.InterpolateRequest(**fields), timeout=30)


def test_linear_path_is_the_straight_line_decoded(server, ends, decoder):
    start, end = ends
    reply = interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=6)
    t = np.linspace(0, 1, 6)
    np.testing.assert_allclose(reply.t, t)
    z = array(reply.z)
    assert z.shape == (3, 6, 8)
    expected = start[:, None, :] * (1 - t)[None, :, None] + end[:, None, :] * t[None, :, None]
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(z[:, 0], start)
    np.testing.assert_array_equal(z[:, -1], end)
    np.testing.assert_allclose(array(reply.x_mean), decoder(z).reshape(3, 6, 64), rtol=1e-5, atol=1e-6)
    assert not reply.HasField("x_samples") and reply.model.name == "digits"


def test_spherical_path_keeps_the_norm_and_turns_at_a_constant_rate(server, ends):
    start, end = ends
    end = end / np.linalg.norm(end, axis=1, keepdims=True) * np.linalg.norm(start, axis=1, keepdims=True)
    reply = interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=9, path=SPHERICAL)
    z = array(reply.z).astype(np.float64)
    t = np.asarray(reply.t)
    # Equal norms at both ends: a great circle, so every point has that norm ...
    np.testing.assert_allclose(
        np.linalg.norm(z, axis=2), np.linalg.norm(start, axis=1)[:, None].repeat(9, 1), rtol=1e-5
    )
    # ... and the angle from the start grows linearly, reaching the angle between the ends.
    unit = z / np.linalg.norm(z, axis=2, keepdims=True)
    angle = np.arccos(np.clip(np.einsum("npl,nl->np", unit, unit[:, 0]), -1, 1))
    total = np.arccos(np.clip(np.sum(unit[:, 0] * unit[:, -1], axis=1), -1, 1))
    np.testing.assert_allclose(angle, total[:, None] * t[None, :], atol=2e-3)
    linear = array(interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=9).z)
    assert np.all(np.linalg.norm(linear[:, 4], axis=1) < np.linalg.norm(start, axis=1))  # the chord dips inside


def test_spherical_path_between_ends_of_different_lengths_stays_between_them(server):
    # Nearly opposite ends of lengths 1 and 2: the directions turn through the perpendicular, the
    # length goes linearly from 1 to 2, and nothing blows up.
    start, end = np.zeros((1, 8), np.float32), np.zeros((1, 8), np.float32)
    start[0, 0], end[0, 0], end[0, 1] = 1.0, -2.0, 1e-5
    reply = interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=5, path=SPHERICAL)
    np.testing.assert_allclose(np.linalg.norm(array(reply.z)[0], axis=1), [1.0, 1.25, 1.5, 1.75, 2.0], rtol=1e-6)
    huge = np.full((1, 8), 2e38, np.float32)
    with pytest.raises(grpc.RpcError) as raised:
        interpolate(server, z_start=tensor(huge), z_end=tensor(-huge), steps=3, path=SPHERICAL)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Codes this far out are refused before any path is drawn: every end lies within +-1e6.
    assert "the range of latent codes this server decodes" in raised.value.details()


def test_the_examples_metric_counts_the_decoded_points_once(server):
    from tests.test_server_lifecycle import samples, scrape

    key = ("vae_examples_total", (("method", "Interpolate"),))
    before = samples(scrape(server.metrics_url)).get(key, 0.0)
    x = np.full((2, 64), 0.5, np.float32)
    interpolate(server, x_start=tensor(x), x_end=tensor(x), steps=4)  # an encoder step, then 8 points decoded
    assert samples(scrape(server.metrics_url))[key] == before + 8


def test_inputs_start_at_their_posterior_means(server, decoder):
    x = make_splits(load_source("digits")).test.x[:4]
    encoded = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(x)))
    z_mean = array(encoded.z_mean)
    # Inputs at one end and latent codes at the other, in the natural [n, 8, 8] shape.
    reply = interpolate(server, x_start=tensor(x[:2].reshape(2, 8, 8)), z_end=tensor(z_mean[2:]), steps=3)
    z = array(reply.z)
    np.testing.assert_allclose(z[:, 0], z_mean[:2], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(z[:, -1], z_mean[2:])
    np.testing.assert_allclose(z[:, 1], (z_mean[:2] + z_mean[2:]) / 2, rtol=1e-5, atol=1e-6)


def test_draws_are_seeded_bernoulli_draws_and_paths_batch_bit_identically(server, ends, decoder):
    start, end = ends
    reply = interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=4, num_samples=5, seed=21)
    draws = array(reply.x_samples)
    assert draws.shape == (5, 3, 4, 64) and reply.seed == 21
    probs = decoder(array(reply.z)).reshape(3, 4, 64)
    uniform = np.random.default_rng([21, 1]).random((5, 12, 64), dtype=np.float32).reshape(5, 3, 4, 64)
    np.testing.assert_array_equal(draws, (uniform < probs).astype(np.float32))
    again = interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=4, num_samples=5, seed=21)
    assert again.SerializeToString() == reply.SerializeToString()
    # Each path alone gives the same bytes as within the batch of three (no draws: they are per request).
    together = array(interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=4, path=SPHERICAL).x_mean)
    for row in range(3):
        alone = interpolate(
            server, z_start=tensor(start[row : row + 1]), z_end=tensor(end[row : row + 1]), steps=4, path=SPHERICAL
        )
        np.testing.assert_array_equal(array(alone.x_mean)[0], together[row])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": 4}, "start: missing"),
        ({"z_start": np.zeros((2, 8)), "steps": 4}, "end: missing"),
        ({"z_start": np.zeros((2, 8)), "z_end": np.zeros((3, 8)), "steps": 4}, "2 rows at the start, 3 at the end"),
        (
            {"z_start": np.zeros((2, 8)), "z_end": np.zeros((2, 8)), "steps": 1},
            "steps: 1 is out of range",
        ),
        ({"z_start": np.zeros((2, 7)), "z_end": np.zeros((2, 8)), "steps": 4}, "z_start: shape [2, 7] does not fit"),
        ({"x_start": np.full((1, 64), 17.0), "z_end": np.zeros((1, 8)), "steps": 4}, "outside [0, 16]"),
        ({"z_start": np.zeros((2, 8)), "z_end": np.zeros((2, 8)), "steps": 4, "path": 7}, "path: unknown"),
        (
            {"z_start": np.zeros((1, 8)), "z_end": np.zeros((1, 8)), "steps": 1000, "num_samples": 300},
            "exceeds the limit",
        ),
    ],
)
def test_bad_requests_are_invalid_argument(server, fields, message):
    fields = {key: tensor(value) if isinstance(value, np.ndarray) else value for key, value in fields.items()}
    with pytest.raises(grpc.RpcError) as raised:
        interpolate(server, **fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()


def test_reflection_alone_is_enough_to_call_it(server, ends):
    # What grpcurl does: learn the method and its messages from the server, build the request from
    # those descriptors (not from our generated code), call it by name.
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(server.channel))
    method = pool.FindServiceByName("vae.v1.VaeService").FindMethodByName("Interpolate")
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    start, end = ends
    request = request_class(
        steps=5,
        path=pool.FindEnumTypeByName("vae.v1.InterpolationPath").values_by_name["INTERPOLATION_PATH_SPHERICAL"].number,
    )
    for field, values in (("z_start", start), ("z_end", end)):
        getattr(request, field).shape.extend(values.shape)
        getattr(request, field).data = values.tobytes()
    call = server.channel.unary_unary(
        "/vae.v1.VaeService/Interpolate",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=reply_class.FromString,
    )
    reply = call(request, timeout=30)
    assert list(reply.z.shape) == [3, 5, 8] and list(reply.x_mean.shape) == [3, 5, 64] and len(reply.t) == 5
    typed = interpolate(server, z_start=tensor(start), z_end=tensor(end), steps=5, path=SPHERICAL)
    assert reply.z.data == typed.z.data and reply.x_mean.data == typed.x_mean.data


def test_client_and_cli_draw_the_row_of_images(server, tmp_path, ends):
    from matplotlib import image

    x = make_splits(load_source("digits")).test.x[:2]
    np.save(tmp_path / "a.npy", x[:1])
    np.save(tmp_path / "b.npy", x[1:])
    with VaeClient(f"127.0.0.1:{server.port}") as client:
        result = client.interpolate(x[:1], x[1:], steps=8, path="spherical", num_samples=2, seed=3)
        assert result.z.shape == (1, 8, 8) and result.x_mean.shape == (1, 8, 64)
        assert result.x_samples.shape == (2, 1, 8, 64) and result.seed == 3 and len(result.t) == 8
        latent = client.interpolate(*ends, steps=3, latent=True)
        np.testing.assert_array_equal(latent.z[:, 0], ends[0])
        with pytest.raises(VaeClientError) as raised:
            client.interpolate(x[:1], x[1:], steps=1)
        assert raised.value.code_name == "INVALID_ARGUMENT"
    png = tmp_path / "path.png"
    done = subprocess.run(
        [
            VAE_CLIENT,
            "--target",
            f"127.0.0.1:{server.port}",
            "interpolate",
            str(tmp_path / "a.npy"),
            str(tmp_path / "b.npy"),
            "--steps",
            "8",
            "--png",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {png}" in done.stdout
    height, width = image.imread(png).shape[:2]
    assert width > 6 * height  # one row of eight images side by side
