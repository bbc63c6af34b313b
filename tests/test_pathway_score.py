"""The ``pathway`` score (RaPP's normalized pathway, export/bundle/pathway_graph.py): served over real
gRPC by a real server, from a bundle of a small VAE trained here on part of the digits and exported
with ``export_bundle`` and a pathway; the pathway statistics are fitted on the training rows, the
calibration on others, and the held-out rows are neither."""

import copy
import json
import math
import shutil

import grpc
import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import nn

from tests.server_process import start_server, tensor
from tests.test_combined_score import CALIBRATION_ROWS, LATENT, TRAIN_ROWS, digit_splits, trained
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bundle import load_bundle
from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import MANIFEST_FILE, seal
from vae_serve.core.preprocessing import pixel_scaling
from vae_serve.export import export_bundle
from vae_serve.export.bundle.pathway_graph import RELATIVE_RANK_FLOOR
from vae_serve.export.bundle.user_model import ModelError

HIDDEN = (48, 32)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, HIDDEN[0]), nn.ReLU(), nn.Linear(*HIDDEN), nn.ReLU())
        self.mean, self.logvar = nn.Linear(HIDDEN[1], LATENT), nn.Linear(HIDDEN[1], LATENT)

    def forward(self, x):
        hidden = self.body(x)
        return self.mean(hidden), self.logvar(hidden)


class Pathway(nn.Module):
    """The encoder's two hidden layers, as RaPP reads them."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        first = self.encoder.body[2](self.encoder.body[1](self.encoder.body[0](x)))
        return first, self.encoder.body[4](self.encoder.body[3](first))


class Total(nn.Module):
    """Not a pathway: one number for the whole batch."""

    def forward(self, x):
        return x.sum()


@pytest.fixture(scope="module")
def digit_rows() -> dict[str, np.ndarray]:
    """test_combined_score's split of the digits: training, calibration and 400 held-out rows."""
    return digit_splits()


@pytest.fixture(scope="module")
def model(digit_rows) -> tuple[Encoder, nn.Module]:
    return trained(digit_rows["train"], encoder_class=Encoder)


def export(model, digit_rows, out, **options):
    encoder, decoder = model
    arguments = dict(
        likelihood="bernoulli",
        input_shape=(1, 8, 8),
        preprocessing=pixel_scaling(16),
        calibration_data=digit_rows["calibration"],
        out=out,
        name="pathway",
        iwae_k=20,
    )
    return export_bundle(encoder, decoder, **(arguments | options))


@pytest.fixture(scope="module")
def pathway_bundle(tmp_path_factory, model, digit_rows):
    out = tmp_path_factory.mktemp("pathway") / "digits-pathway"
    return export(model, digit_rows, out, pathway=Pathway(model[0]), pathway_data=digit_rows["train"])


@pytest.fixture(scope="module")
def pathway_server(pathway_bundle):
    process = start_server("--bundle", str(pathway_bundle.path))
    yield process
    assert process.stop() == 0, process.log()


def scored(server, rows: np.ndarray, score: int, seed: int = 0) -> vae_pb2.ScoreAnomalyResponse:
    request = vae_pb2.ScoreAnomalyRequest(x=tensor(rows.reshape(len(rows), -1)), score=score, seed=seed)
    return server.stub.ScoreAnomaly(request, timeout=60)


@torch.no_grad()
def layer_differences(model, x_raw: np.ndarray) -> list[np.ndarray]:
    """h_l(x) - h_l(x') per hidden layer in float64, x' = sigmoid(decoder(E[z|x])): computed here on
    float64 copies of the modules, not by the code under test."""
    encoder, decoder = (copy.deepcopy(part).double() for part in model)
    pathway = Pathway(encoder)
    x = torch.from_numpy(x_raw.reshape(len(x_raw), 1, 8, 8).astype(np.float64) / 16.0)
    reconstruction = torch.sigmoid(decoder(encoder(x)[0]))
    return [(a - b).numpy() for a, b in zip(pathway(x), pathway(reconstruction), strict=True)]


def reference_distances(model, fit_raw: np.ndarray, rows_raw: np.ndarray) -> np.ndarray:
    """sum_l (d_l - mean_l)^T Cov_l^+ (d_l - mean_l): each layer's Mahalanobis distance under the fit
    rows' covariance (ddof 1), its pseudo-inverse over the eigenvalues above RELATIVE_RANK_FLOOR^2 of
    the largest (the graph keeps singular values above RELATIVE_RANK_FLOOR of the largest)."""
    total = np.zeros(len(rows_raw))
    for fit, rows in zip(layer_differences(model, fit_raw), layer_differences(model, rows_raw), strict=True):
        eigenvalues, vectors = np.linalg.eigh(np.cov(fit, rowvar=False))
        keep = eigenvalues > RELATIVE_RANK_FLOOR**2 * eigenvalues.max()
        inverse = (vectors[:, keep] / eigenvalues[keep]) @ vectors[:, keep].T
        centred = rows - fit.mean(axis=0)
        total += np.einsum("ij,jk,ik->i", centred, inverse, centred)
    return total


def test_served_pathway_is_the_mahalanobis_distance_along_the_encoder(
    pathway_server, pathway_bundle, model, digit_rows
):
    noise = 16 * np.random.default_rng(1).random((8, 1, 8, 8), dtype=np.float32)
    rows = np.concatenate([digit_rows["held_out"][:40], noise])
    reply = scored(pathway_server, rows, vae_pb2.SCORE_TYPE_PATHWAY)
    assert reply.score == vae_pb2.SCORE_TYPE_PATHWAY
    expected = reference_distances(model, digit_rows["train"], rows)
    # The graph runs the layers in float32, the reference in float64.
    np.testing.assert_allclose(reply.scores, expected, rtol=1e-3)
    # On normal rows the distance is about the summed rank of the layers (each a chi-square-like sum).
    ranks = sum(layer.rank for layer in pathway_bundle.manifest.pathway_graph.layers)
    assert 0.5 * ranks < np.median(np.asarray(reply.scores)[:40]) < 2.0 * ranks
    # Deterministic: the seed plays no part.
    assert scored(pathway_server, rows, vae_pb2.SCORE_TYPE_PATHWAY, seed=9).scores == reply.scores


def test_pathway_p_values_are_uniform_on_held_out_normal_rows(pathway_server, digit_rows):
    held_out = digit_rows["held_out"]
    p_values = np.asarray(scored(pathway_server, held_out, vae_pb2.SCORE_TYPE_PATHWAY).p_value)
    # As in test_combined_score: given one calibration set, the p-values follow its empirical
    # distribution, so the KS distance is bounded as a two-sample test's (400 held out, 797
    # calibration rows) at alpha = 0.001: K^-1(0.001) sqrt(1/400 + 1/797) = 0.12.
    tolerance = special.kolmogi(0.001) * math.sqrt(1 / len(p_values) + 1 / CALIBRATION_ROWS)
    assert stats.kstest(p_values, "uniform").statistic < tolerance
    # And the score has power: the same digits upside down are not normal digits.
    flipped = np.ascontiguousarray(held_out[:, :, ::-1, :])
    flipped_p_values = scored(pathway_server, flipped, vae_pb2.SCORE_TYPE_PATHWAY).p_value
    assert stats.kstest(flipped_p_values, "uniform").statistic > tolerance


def test_the_manifest_records_the_pathway_graph(pathway_bundle):
    manifest = load_bundle(pathway_bundle.path).manifest
    graph = manifest.pathway_graph
    assert graph.fit_rows == TRAIN_ROWS
    assert [layer.features for layer in graph.layers] == list(HIDDEN)
    assert all(0 < layer.rank <= layer.features for layer in graph.layers)
    assert graph.graph.file in manifest.files
    assert manifest.calibration.scores["pathway"].num_examples == CALIBRATION_ROWS


def test_a_bundle_without_a_pathway_graph_refuses_the_score_and_serves_the_rest(tmp_path, model, digit_rows):
    plain = export(model, digit_rows, tmp_path / "plain")
    assert load_bundle(plain.path).manifest.pathway_graph is None
    assert "pathway" not in plain.manifest.calibration.scores
    server = start_server("--bundle", str(plain.path))
    try:
        rows = digit_rows["held_out"][:3]
        with pytest.raises(grpc.RpcError) as raised:
            scored(server, rows, vae_pb2.SCORE_TYPE_PATHWAY)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "score pathway: model pathway:1 has no pathway graph" in raised.value.details()
        assert len(scored(server, rows, vae_pb2.SCORE_TYPE_NEGATIVE_ELBO).scores) == 3
    finally:
        assert server.stop() == 0, server.log()


def test_a_changed_pathway_graph_or_golden_case_is_refused(tmp_path, pathway_bundle):
    copy_dir = shutil.copytree(pathway_bundle.path, tmp_path / "changed")
    document = json.loads((copy_dir / MANIFEST_FILE).read_text())
    document["pathway_graph"]["outputs"]["pathway_distance"][1] *= 1.5
    (copy_dir / MANIFEST_FILE).write_text(json.dumps(seal(document)))
    with pytest.raises(BundleError, match=r"pathway\.onnx: golden output 'pathway_distance' differs"):
        load_bundle(copy_dir)


def test_export_refuses_a_pathway_without_its_rows_or_one_that_does_not_run(tmp_path, model, digit_rows):
    with pytest.raises(ModelError, match="pathway and pathway_data go together"):
        export(model, digit_rows, tmp_path / "a", pathway=Pathway(model[0]))
    with pytest.raises(ModelError, match="the pathway must return the encoder's hidden activations"):
        export(model, digit_rows, tmp_path / "b", pathway=Total().eval(), pathway_data=digit_rows["train"])
    with pytest.raises(ModelError, match="pathway_data: need at least"):
        export(model, digit_rows, tmp_path / "c", pathway=Pathway(model[0]), pathway_data=digit_rows["train"][:3])
    assert not any((tmp_path / name).exists() for name in "abc")
