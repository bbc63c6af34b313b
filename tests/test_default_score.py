"""A bundle's own default score (manifest ``default_score``) and reconstruction units: recorded by
``export_bundle``, used by a real server for ScoreAnomaly without a score and reported by GetModelInfo;
a bundle without them behaves as before; what cannot be honoured is refused at export."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from tests.server_process import start_server, tensor
from tests.test_client import VAE_CLIENT
from tests.test_combined_score import Decoder, Encoder
from vae_serve.api.v1 import vae_pb2
from vae_serve.client import VaeClient
from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import MANIFEST_FILE, seal
from vae_serve.core.preprocessing import pixel_scaling
from vae_serve.core.scores import DEFAULT_SCORE, anomaly_scores
from vae_serve.export import export_bundle
from vae_serve.export.bundle.exporter import check_default_score
from vae_serve.export.bundle.manifest_builder import generic_likelihood_spec
from vae_serve.export.bundle.user_model import ModelError


@pytest.fixture(scope="module")
def raw_digits() -> np.ndarray:
    return load_digits().images.astype(np.float32)[:200, None]


def export(out, data, **options):
    torch.manual_seed(0)
    settings = {"likelihood": "bernoulli", "input_shape": (1, 8, 8), "preprocessing": pixel_scaling(16), "iwae_k": 5}
    settings |= {"calibration_data": data, "out": out, "name": out.parent.name}
    return export_bundle(Encoder(), Decoder(), **settings | options)


@pytest.fixture(scope="module")
def repository(tmp_path_factory, raw_digits):
    """A model repository: "elbo" (exported with default_score negative_elbo), and "older", the same
    bundle as a writer before default_score made it (no key), and without test metrics."""
    root = tmp_path_factory.mktemp("repository")
    export(root / "elbo" / "1", raw_digits, default_score="negative_elbo")
    older = shutil.copytree(root / "elbo" / "1", root / "older" / "1")
    document = json.loads((older / MANIFEST_FILE).read_text())
    del document["default_score"]
    del document["metrics"]["test"]  # a run that kept no test rows
    (older / MANIFEST_FILE).write_text(json.dumps(seal(document)))
    return root


@pytest.fixture(scope="module")
def repository_server(repository):
    process = start_server("--model-repository", str(repository))
    yield process
    assert process.stop() == 0, process.log()


def score(server, model: str, rows: np.ndarray, score_type: int, seed: int) -> vae_pb2.ScoreAnomalyResponse:
    request = vae_pb2.ScoreAnomalyRequest(
        model=vae_pb2.ModelRef(name=model), x=tensor(rows.reshape(len(rows), -1)), score=score_type, seed=seed
    )
    return server.stub.ScoreAnomaly(request, timeout=60)


def info(server, model: str) -> vae_pb2.ModelInfo:
    return server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(model=vae_pb2.ModelRef(name=model)), timeout=30)


def test_an_unnamed_score_is_the_bundles_default(repository_server, raw_digits):
    rows = raw_digits[:20]
    unnamed = score(repository_server, "elbo", rows, vae_pb2.SCORE_TYPE_UNSPECIFIED, seed=5)
    named = score(repository_server, "elbo", rows, vae_pb2.SCORE_TYPE_NEGATIVE_ELBO, seed=5)
    assert unnamed.score == vae_pb2.SCORE_TYPE_NEGATIVE_ELBO
    assert list(unnamed.scores) == list(named.scores) and list(unnamed.p_value) == list(named.p_value)
    assert info(repository_server, "elbo").default_score == vae_pb2.SCORE_TYPE_NEGATIVE_ELBO
    # The typed client names the score used, and costs it by the model's default (10 draws per row).
    with VaeClient(f"127.0.0.1:{repository_server.port}") as client:
        result = client.score(rows.reshape(20, -1), seed=5, model="elbo")
    assert result.score == "negative_elbo"
    np.testing.assert_array_equal(result.scores, named.scores)


def test_a_bundle_without_a_default_keeps_the_servers(repository_server, raw_digits):
    rows = raw_digits[:20]
    unnamed = score(repository_server, "older", rows, vae_pb2.SCORE_TYPE_UNSPECIFIED, seed=5)
    assert DEFAULT_SCORE == "reconstruction_error"
    assert unnamed.score == vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR
    named = score(repository_server, "older", rows, vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR, seed=5)
    assert list(unnamed.scores) == list(named.scores)
    assert info(repository_server, "older").default_score == vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR


def test_model_info_without_test_rows(repository_server):
    older = info(repository_server, "older")
    assert not older.HasField("test") and older.HasField("validation")
    assert info(repository_server, "elbo").HasField("test")
    target = ["--target", f"127.0.0.1:{repository_server.port}"]
    human = subprocess.run(
        [VAE_CLIENT, *target, "info", "--model", "older"], capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0, human.stderr
    assert "no test rows" in human.stdout
    assert "score        reconstruction_error (0 draws per row, the default)" in human.stdout
    as_json = subprocess.run(
        [VAE_CLIENT, *target, "--json", "info", "--model", "elbo"], capture_output=True, text=True, timeout=60
    )
    payload = json.loads(as_json.stdout)
    assert payload["default_score"] == "negative_elbo" and payload["test"]["num_examples"] == 200


def test_export_refuses_a_default_score_it_cannot_serve(tmp_path, raw_digits):
    with pytest.raises(ModelError, match=r"default_score 'best' is not an anomaly score; use one of \[") as refused:
        export(tmp_path / "bad" / "1", raw_digits, default_score="best")
    assert "combined" in str(refused.value)
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    calibration = load_bundle(export(tmp_path / "good" / "1", raw_digits).path).manifest.calibration
    without = calibration.model_copy(
        update={"scores": {name: entry for name, entry in calibration.scores.items() if name != "negative_iwae"}}
    )
    with pytest.raises(ModelError, match="default_score 'negative_iwae' is not calibrated in this bundle"):
        check_default_score("negative_iwae", without)


class GaussianDecoder(nn.Module):
    """(mean, log_scale) over 5 features, one learned log-scale shared by all."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 5)
        self.log_scale = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        return self.net(z), self.log_scale


class TableEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean, self.logvar = nn.Linear(5, 2), nn.Linear(5, 2)

    def forward(self, x):
        return self.mean(x), self.logvar(x)


def test_standardized_reconstruction_units_are_recorded_and_calibrated(tmp_path):
    # Columns in very different units; the errors are divided by each column's scale squared.
    scale = np.array([1.0, 10.0, 100.0, 0.5, 3.0], dtype=np.float32)
    x = (np.random.default_rng(0).normal(size=(60, 5)) * scale).astype(np.float32)
    torch.manual_seed(0)
    encoder, decoder = TableEncoder(), GaussianDecoder()
    settings = {"likelihood": "gaussian", "input_shape": (5,), "calibration_data": x, "iwae_k": 5, "name": "t"}
    with pytest.raises(ModelError, match="the likelihood's parameters have no feature_scale"):
        export_bundle(encoder, decoder, out=tmp_path / "plain", reconstruction_units="standardized", **settings)
    with pytest.raises(ModelError, match=r"reconstruction_units 'raw': use one of \['model', 'standardized'\]"):
        export_bundle(encoder, decoder, out=tmp_path / "plain", reconstruction_units="raw", **settings)
    assert not (tmp_path / "plain").exists()
    spec = generic_likelihood_spec("gaussian", feature_scale=scale.tolist())
    exported = export_bundle(
        encoder,
        decoder,
        out=tmp_path / "standardized",
        reconstruction_units="standardized",
        likelihood_spec=spec,
        default_score="combined",
        **settings,
    )
    manifest = load_bundle(exported.path).manifest
    assert manifest.reconstruction_units == "standardized" and manifest.default_score == "combined"
    # Independently, in torch: the posterior mean's squared residuals over feature_scale**2.
    with torch.no_grad():
        mean, _ = decoder(encoder(torch.from_numpy(x))[0])
    expected = (((x - mean.numpy()) / scale) ** 2).sum(axis=1)
    np.testing.assert_allclose(exported.calibration_scores["reconstruction_error"], expected, rtol=1e-4)
    # The loaded bundle scores as it was calibrated (the same computation on both sides).
    served = anomaly_scores(load_bundle(exported.path).vae, x, ["reconstruction_error"], 0)
    np.testing.assert_array_equal(served["reconstruction_error"], exported.calibration_scores["reconstruction_error"])
