"""Every rpc of a real vae-serve process, checked against an independent numpy computation on the
same ONNX graphs (own ONNX Runtime sessions, own formulas; nothing from service/ is imported).
"""

import json
import math
import zlib

import numpy as np
import onnxruntime as ort
import pytest
from scipy import special

from tests.server_process import SERVING, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.export.sources import load_source, make_splits


def array(message: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype="<f4").reshape(tuple(message.shape))


class Reference:
    """The bundle's graphs run directly, with the formulas written out here."""

    def __init__(self, bundle_dir):
        self.encoder = ort.InferenceSession(str(bundle_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(bundle_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
        self.manifest = json.loads((bundle_dir / "manifest.json").read_text())

    def to_model(self, x):
        """The manifest's preprocessing, written out: raw rows -> the model's space."""
        spec = self.manifest["preprocessing"]
        return ((x - np.float32(spec["loc"])) / np.float32(spec["scale"])).astype(np.float32)

    def encode(self, x):
        return self.encoder.run(["z_mean", "z_logvar"], {"x": self.to_model(x)})

    def logits(self, z):
        return self.decoder.run(["logits"], {"z": z})[0]

    def log_weights(self, x, eps):
        """log p(x|z) + log p(z) - log q(z|x) for z = mean + sigma * eps, eps [k, n, L]."""
        mean, logvar = self.encode(x)
        x = self.to_model(x)
        z = mean + np.exp(0.5 * logvar) * eps
        logits = self.logits(z.reshape(-1, z.shape[-1]).astype(np.float32)).reshape(*z.shape[:2], -1)
        log_px = np.sum(x * logits - np.logaddexp(0, logits), axis=-1)
        log_pz = np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * z**2, axis=-1)
        log_qz = np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * logvar - 0.5 * eps**2, axis=-1)
        return log_px, log_px + log_pz - log_qz, 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=-1)


@pytest.fixture(scope="module")
def reference(digits_bundle):
    return Reference(digits_bundle)


@pytest.fixture(scope="module")
def digits_x():
    return make_splits(load_source("digits")).test.x[:40]


def test_health_serving_for_server_and_service(server):
    assert server.health_status("") == SERVING
    assert server.health_status("vae.v1.VaeService") == SERVING


def test_encode_matches_the_graph_and_the_documented_noise(server, reference, digits_x):
    reply = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(digits_x), num_samples=3, seed=17))
    mean, logvar = reference.encode(digits_x)
    np.testing.assert_array_equal(array(reply.z_mean), mean)
    np.testing.assert_array_equal(array(reply.z_logvar), logvar)
    eps = np.random.default_rng([17, 0]).standard_normal((3, *mean.shape), dtype=np.float32)
    np.testing.assert_allclose(array(reply.z_samples), mean + np.exp(0.5 * logvar) * eps, rtol=1e-6, atol=1e-6)
    assert (reply.model.name, reply.model.version, reply.seed) == ("digits", "1", 17)


def test_encode_accepts_the_natural_image_shape(server, digits_x):
    flat = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(digits_x)))
    images = server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(digits_x.reshape(-1, 8, 8))))
    assert flat.z_mean.data == images.z_mean.data


def test_decode_probabilities_and_draws(server, reference):
    z = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    reply = server.stub.Decode(vae_pb2.DecodeRequest(z=tensor(z), num_samples=4, seed=3))
    assert reply.WhichOneof("params") == "bernoulli"
    probs = special.expit(reference.logits(z))
    np.testing.assert_allclose(array(reply.bernoulli.probs), probs, rtol=1e-6, atol=1e-7)
    uniforms = np.random.default_rng([3, 1]).random((4, 5, 64), dtype=np.float32)
    np.testing.assert_array_equal(array(reply.x_samples), (uniforms < array(reply.bernoulli.probs)).astype(np.float32))


def test_elbo_k1_is_exact_for_the_documented_noise(server, reference, digits_x):
    reply = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(digits_x), k=1, seed=5))
    eps = np.random.default_rng([5, 0]).standard_normal((1, len(digits_x), 8), dtype=np.float32)
    log_px, _, kl = reference.log_weights(digits_x, eps)
    np.testing.assert_allclose(reply.reconstruction, log_px[0], rtol=1e-5)
    np.testing.assert_allclose(reply.kl, kl, rtol=1e-5)
    np.testing.assert_allclose(reply.elbo, log_px[0] - kl, rtol=1e-5)
    np.testing.assert_allclose(reply.elbo_bits_per_dim, -(log_px[0] - kl) / (64 * math.log(2)), rtol=1e-5)
    assert len(reply.iwae) == 0 and reply.k == 1


def test_iwae_agrees_with_an_independent_monte_carlo_estimate(server, reference, digits_x):
    k, repeats = 400, 20
    reply = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(digits_x), k=k, seed=8))
    # The sampling distribution of the IWAE-k estimator, per example, from 20 independent runs
    # of our own: the server's estimate must lie within 5 of its standard deviations of their mean
    # (importance weights are heavy-tailed, so the spread is measured rather than assumed normal).
    rng = np.random.default_rng(12345)
    estimates = []
    for _ in range(repeats):
        eps = rng.standard_normal((k, len(digits_x), 8)).astype(np.float32)
        _, log_w, _ = reference.log_weights(digits_x, eps)
        estimates.append(special.logsumexp(log_w, axis=0) - math.log(k))
    estimates = np.asarray(estimates)
    spread = estimates.std(axis=0, ddof=1)
    assert np.all(np.abs(np.asarray(reply.iwae) - estimates.mean(axis=0)) < 5 * spread + 1e-3)
    # The reported delta-method standard error is of the right size (median within a factor of 2).
    assert 0.5 < np.median(np.asarray(reply.iwae_standard_error) / spread) < 2.0
    assert np.mean(np.asarray(reply.iwae) - np.asarray(reply.elbo)) > 0
    np.testing.assert_allclose(reply.iwae_bits_per_dim, -np.asarray(reply.iwae) / (64 * math.log(2)))


def test_sample_unary_and_stream_are_the_same_draws(server, reference):
    unary = server.stub.Sample(vae_pb2.SampleRequest(n=50, seed=9, temperature=0.7))
    chunks = list(server.stub.SampleStream(vae_pb2.SampleRequest(n=50, seed=9, temperature=0.7, chunk_size=16)))
    assert [chunk.offset for chunk in chunks] == [0, 16, 32, 48]
    for name in ("z", "x_mean", "x"):
        streamed = np.concatenate([array(getattr(chunk, name)) for chunk in chunks])
        np.testing.assert_array_equal(streamed, array(getattr(unary, name)))
    z = array(unary.z)
    np.testing.assert_allclose(
        z, 0.7 * np.random.default_rng([9, 0]).standard_normal((50, 8), dtype=np.float32), rtol=1e-6
    )
    np.testing.assert_allclose(array(unary.x_mean), special.expit(reference.logits(z)), rtol=1e-6, atol=1e-7)
    assert set(np.unique(array(unary.x))) <= {0.0, 1.0}


def test_temperature_scales_the_prior(server):
    reply = server.stub.Sample(vae_pb2.SampleRequest(n=4000, seed=1, temperature=2.0))
    # std of 32,000 N(0, 4) draws: within 3 % of 2 (its relative standard error is 0.4 %).
    assert np.std(array(reply.z)) == pytest.approx(2.0, rel=0.03)


def test_reconstruction_score_percentiles_and_threshold(server, reference, digits_x):
    reply = server.stub.ScoreAnomaly(
        vae_pb2.ScoreAnomalyRequest(
            x=tensor(digits_x), score=vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR, false_positive_rate=0.05
        )
    )
    mean, _ = reference.encode(digits_x)
    expected = np.sum((reference.to_model(digits_x) - special.expit(reference.logits(mean))) ** 2, axis=1)
    np.testing.assert_allclose(reply.scores, expected, rtol=1e-5)
    calibration = reference.manifest["calibration"]
    levels = np.asarray(calibration["quantile_levels"])
    quantiles = np.asarray(calibration["scores"]["reconstruction_error"]["quantiles"])
    assert reply.threshold == pytest.approx(np.interp(0.95, levels, quantiles))
    assert reply.false_positive_rate == pytest.approx(0.05)
    np.testing.assert_allclose(reply.percentile, np.interp(reply.scores, quantiles, levels))
    count = calibration["scores"]["reconstruction_error"]["num_examples"]
    np.testing.assert_allclose(reply.p_value, (1 + count * (1 - np.asarray(reply.percentile))) / (1 + count))
    assert list(reply.is_anomaly) == list(np.asarray(reply.scores) > reply.threshold)
    assert not reply.HasField("feature_errors")


def test_feature_errors_on_request(server, reference, digits_x):
    reply = server.stub.ScoreAnomaly(
        vae_pb2.ScoreAnomalyRequest(
            x=tensor(digits_x), score=vae_pb2.SCORE_TYPE_NEGATIVE_ELBO, return_feature_errors=True
        )
    )
    mean, _ = reference.encode(digits_x)
    expected = (reference.to_model(digits_x) - special.expit(reference.logits(mean))) ** 2
    errors = array(reply.feature_errors)
    assert errors.shape == digits_x.shape
    np.testing.assert_allclose(errors, expected, rtol=1e-5, atol=1e-7)


def test_reconstruction_probability_and_complexity_corrected_scores(server, reference, digits_x):
    seed = 5
    request = vae_pb2.ScoreAnomalyRequest(
        x=tensor(digits_x), score=vae_pb2.SCORE_TYPE_NEGATIVE_RECONSTRUCTION_PROBABILITY, seed=seed
    )
    reply = server.stub.ScoreAnomaly(request)
    latent = reference.encode(digits_x[:1])[0].shape[1]

    def eps(k):  # the documented noise of a request: default_rng([seed, 0]), one [k, n, L] block
        return np.random.default_rng([seed, 0]).standard_normal((k, len(digits_x), latent), dtype=np.float32)

    log_px, _, _ = reference.log_weights(digits_x, eps(10))
    np.testing.assert_allclose(reply.scores, -log_px.mean(axis=0), rtol=1e-5)

    corrected = server.stub.ScoreAnomaly(
        vae_pb2.ScoreAnomalyRequest(x=tensor(digits_x), score=vae_pb2.SCORE_TYPE_COMPLEXITY_CORRECTED, seed=seed)
    )
    _, log_w, _ = reference.log_weights(digits_x, eps(100))
    iwae_bits = -(special.logsumexp(log_w, axis=0) - np.log(100)) / np.log(2)
    quantized = np.clip(np.rint(reference.to_model(digits_x) * 255), 0, 255).astype(np.uint8)
    compressed = np.array([8 * len(zlib.compress(row.tobytes(), 9)) for row in quantized])
    np.testing.assert_allclose(corrected.scores, iwae_bits - compressed, rtol=1e-5)
    assert np.isfinite(corrected.threshold) and 0 < corrected.p_value[0] <= 1


def test_explicit_threshold_and_default_score(server, digits_x):
    noise = (16 * np.random.default_rng(0).random((8, 64))).astype(np.float32)  # raw grey levels 0..16
    x = np.concatenate([digits_x[:8], noise])
    request = vae_pb2.ScoreAnomalyRequest(x=tensor(x), score=vae_pb2.SCORE_TYPE_NEGATIVE_IWAE, score_threshold=40.0)
    reply = server.stub.ScoreAnomaly(request)
    assert reply.score == vae_pb2.SCORE_TYPE_NEGATIVE_IWAE and reply.threshold == 40.0
    assert list(reply.is_anomaly) == list(np.asarray(reply.scores) > 40.0)
    assert all(reply.is_anomaly[8:]), "uniform noise must look anomalous to a digits model"
    assert 0 <= reply.false_positive_rate <= 1
    assert min(reply.p_value[8:]) > 0
    # No score named: the reconstruction error, the best score measured (docs/anomaly.md).
    default = server.stub.ScoreAnomaly(vae_pb2.ScoreAnomalyRequest(x=tensor(x), seed=2))
    assert default.score == vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR
    assert all(default.is_anomaly[8:]) and not any(default.is_anomaly[:8])


def test_model_info_matches_the_manifest(server, reference):
    info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
    manifest = reference.manifest
    assert (info.model.name, info.model.version) == (manifest["name"], manifest["version"])
    assert list(info.input_shape) == [8, 8] and info.num_features == 64 and info.latent_dim == 8
    assert info.likelihood == "bernoulli" and info.test.iwae_k == manifest["metrics"]["test"]["iwae_k"]
    assert info.test.iwae_nll_nats == manifest["metrics"]["test"]["iwae_nll_nats"]
    assert {entry.score for entry in info.calibration} == {1, 2, 3, 4, 5, 6, 7}
    assert list(info.available_versions) == ["1"] and list(info.providers) == ["CPUExecutionProvider"]
    assert info.max_rows == 1024
    # Score facts, as vae.proto's ScoreType documents each score's draws; the default is the one an
    # unnamed ScoreAnomaly uses (test_explicit_threshold_and_default_score).
    draws = {entry.score: entry.draws for entry in info.scores}
    assert draws == {1: 10, 2: 100, 3: 0, 4: 10, 5: 100, 6: 10, 7: 0}
    assert all(entry.description for entry in info.scores)
    assert info.default_score == vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR


@pytest.mark.parametrize(
    "rpc, request_message",
    [
        ("Elbo", vae_pb2.ElboRequest(k=30)),
        ("Encode", vae_pb2.EncodeRequest(num_samples=2)),
        ("ScoreAnomaly", vae_pb2.ScoreAnomalyRequest(score=vae_pb2.SCORE_TYPE_NEGATIVE_ELBO)),
    ],
)
def test_same_seed_same_bytes_and_unset_seed_is_reported(server, digits_x, rpc, request_message):
    request_message.x.CopyFrom(tensor(digits_x[:10]))
    call = getattr(server.stub, rpc)
    first = call(request_message)
    request_message.seed = first.seed
    assert call(request_message).SerializeToString() == first.SerializeToString()
    request_message.seed = 77
    assert call(request_message).SerializeToString() == call(request_message).SerializeToString()


def test_sample_same_seed_same_bytes(server):
    request = vae_pb2.SampleRequest(n=20, seed=4)
    assert server.stub.Sample(request).SerializeToString() == server.stub.Sample(request).SerializeToString()
