"""The ``combined`` score: Fisher's combination of the calibrated p-values of negative_elbo and
reconstruction_error, itself calibrated. Served over real gRPC by a real server, from a bundle of a
small VAE trained here on part of the digits and exported with ``export_bundle``; the rest of the
digits are calibration rows and held-out normal rows that neither training nor calibration saw."""

import contextlib
import json
import math
import shutil

import grpc
import numpy as np
import pytest
import torch
from scipy import special, stats
from sklearn.datasets import load_digits
from torch import nn

from tests.server_process import start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import MANIFEST_FILE, seal
from vae_serve.core.preprocessing import pixel_scaling
from vae_serve.core.scores import ScoreRequest, score_batch
from vae_serve.export import cli, export_bundle

LATENT = 4
TRAIN_ROWS, CALIBRATION_ROWS = 600, 797  # and the remaining 400 of the 1797 digits are held out
COMPONENTS = (vae_pb2.SCORE_TYPE_NEGATIVE_ELBO, vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh())
        self.mean, self.logvar = nn.Linear(64, LATENT), nn.Linear(64, LATENT)

    def forward(self, x):
        hidden = self.body(x)
        return self.mean(hidden), self.logvar(hidden)


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(LATENT, 64), nn.Tanh(), nn.Linear(64, 64))

    def forward(self, z):
        return self.net(z).reshape(-1, 1, 8, 8)


def trained(x_raw: np.ndarray, epochs: int = 40, encoder_class=Encoder) -> tuple[nn.Module, Decoder]:
    """A Bernoulli VAE (``encoder_class()`` and a Decoder) fitted to grey levels / 16 by the usual ELBO
    (a fixed seed)."""
    torch.manual_seed(0)
    encoder, decoder = encoder_class(), Decoder()
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=3e-3)
    x = torch.from_numpy(x_raw / np.float32(16.0))
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            mean, logvar = encoder(x[batch])
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            logits = decoder(z)
            nll = nn.functional.binary_cross_entropy_with_logits(logits, x[batch], reduction="sum")
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum()
            optimizer.zero_grad()
            ((nll + kl) / len(batch)).backward()
            optimizer.step()
    return encoder.eval(), decoder.eval()


@pytest.fixture(scope="module")
def digit_rows() -> dict[str, np.ndarray]:
    return digit_splits()


def digit_splits() -> dict[str, np.ndarray]:
    """The digits' raw grey levels [n, 1, 8, 8], shuffled once and split three ways."""
    images = load_digits().images.astype(np.float32)[:, None]
    images = images[np.random.default_rng(0).permutation(len(images))]
    calibration_end = TRAIN_ROWS + CALIBRATION_ROWS
    return {
        "train": images[:TRAIN_ROWS],
        "calibration": images[TRAIN_ROWS:calibration_end],
        "held_out": images[calibration_end:],
    }


@pytest.fixture(scope="module")
def combined_bundle(tmp_path_factory, digit_rows):
    encoder, decoder = trained(digit_rows["train"])
    exported = export_bundle(
        encoder,
        decoder,
        likelihood="bernoulli",
        input_shape=(1, 8, 8),
        preprocessing=pixel_scaling(16),
        calibration_data=digit_rows["calibration"],
        out=tmp_path_factory.mktemp("combined") / "digits-combined",
        name="combined",
        iwae_k=20,
        default_score="combined",
    )
    return exported


@pytest.fixture(scope="module")
def combined_server(combined_bundle):
    process = start_server("--bundle", str(combined_bundle.path))
    yield process
    assert process.stop() == 0, process.log()


def scored(server, rows: np.ndarray, score: int, seed: int, **options) -> vae_pb2.ScoreAnomalyResponse:
    request = vae_pb2.ScoreAnomalyRequest(x=tensor(rows.reshape(len(rows), -1)), score=score, seed=seed, **options)
    return server.stub.ScoreAnomaly(request, timeout=60)


def stored_calibration(bundle_path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(levels, quantiles) of score ``name`` as the bundle's manifest.json stores them (read as JSON;
    GetModelInfo serves a coarser set of levels)."""
    manifest = json.loads((bundle_path / MANIFEST_FILE).read_text())
    calibration = manifest["calibration"]
    return np.array(calibration["quantile_levels"]), np.array(calibration["scores"][name]["quantiles"])


def test_combined_is_fisher_over_the_served_component_p_values(combined_server, combined_bundle, digit_rows):
    # Normal rows and noise images, so that both small and large p-values are covered.
    noise = 16 * np.random.default_rng(1).random((16, 64), dtype=np.float32)
    rows = np.concatenate([digit_rows["held_out"][:48].reshape(48, -1), noise])
    seed = 7
    components = [scored(combined_server, rows, score, seed) for score in COMPONENTS]
    # Independent of the implementation: Fisher's statistic of the p-values the server answers, each
    # extended beyond the largest calibration score q_max by exp(-(s - q_max) / b), b the mean excess
    # over the 0.9 quantile, computed here from the manifest's stored quantiles.
    fisher = np.zeros(len(rows))
    beyond = np.zeros(len(rows), dtype=bool)
    for name, reply in zip(("negative_elbo", "reconstruction_error"), components, strict=True):
        levels, quantiles = stored_calibration(combined_bundle.path, name)
        top = quantiles[-1]
        scale = quantiles[levels >= 0.9].mean() - quantiles[levels >= 0.9][0]
        excess = np.maximum(np.asarray(reply.scores) - top, 0.0) / scale
        beyond |= excess > 0
        fisher += -2.0 * (np.log(reply.p_value) - excess)
    combined = scored(combined_server, rows, vae_pb2.SCORE_TYPE_COMBINED, seed, return_feature_errors=True)
    assert combined.score == vae_pb2.SCORE_TYPE_COMBINED and combined.seed == seed
    np.testing.assert_allclose(combined.scores, fisher, rtol=1e-9, atol=0)
    # Its feature errors are the reconstruction pass's, as a reconstruction_error request returns them.
    errors = scored(combined_server, rows, vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR, seed, return_feature_errors=True)
    assert combined.feature_errors.data == errors.feature_errors.data
    # Noise is far more anomalous than any digit: the smallest p-value the calibration can give ...
    assert np.max(combined.p_value[48:]) <= 2.0 / (1 + CALIBRATION_ROWS)
    # ... and, beyond every calibration row, the noise images still rank by how far out they are:
    # no ties at the p-value floor (which plain p-values would give them).
    assert beyond[48:].all()
    assert len(np.unique(np.asarray(combined.scores)[48:])) == 16
    _, combined_quantiles = stored_calibration(combined_bundle.path, "combined")
    assert np.min(np.asarray(combined.scores)[48:]) > combined_quantiles[-1]


def test_combined_p_values_are_uniform_on_held_out_normal_rows(combined_server, digit_rows):
    held_out = digit_rows["held_out"]
    assert len(held_out) >= 300
    reply = scored(combined_server, held_out, vae_pb2.SCORE_TYPE_COMBINED, seed=11)
    p_values = np.asarray(reply.p_value)
    statistic = stats.kstest(p_values, "uniform").statistic
    # Tolerance: the p-values are uniform over the draw of the calibration rows too, but given one set
    # of n calibration rows they follow that set's empirical distribution, which is itself ~1/sqrt(n)
    # from the truth. So the KS distance is that of a two-sample test (m held-out rows against n
    # calibration rows): under the null it stays below K^-1(alpha) sqrt(1/m + 1/n) with probability
    # 1 - alpha. alpha = 0.001: a false failure once in a thousand seeds, while a calibration off by
    # more than K^-1(0.001) sqrt(1/400 + 1/797) = 0.11 anywhere in [0, 1] still fails.
    alpha = 0.001
    tolerance = special.kolmogi(alpha) * math.sqrt(1 / len(p_values) + 1 / CALIBRATION_ROWS)
    assert statistic < tolerance, (statistic, tolerance)
    # The naive one-sample test (as if the calibration were exact) agrees at this alpha.
    assert stats.kstest(p_values, "uniform").pvalue > alpha
    # And the test has power: the same rows with noise of one grey level (of 16) are not normal.
    noisy = np.clip(held_out + np.random.default_rng(2).normal(0.0, 1.0, held_out.shape), 0, 16)
    noisy_p_values = scored(combined_server, noisy, vae_pb2.SCORE_TYPE_COMBINED, seed=11).p_value
    assert stats.kstest(noisy_p_values, "uniform").statistic > tolerance


def test_the_bundle_records_the_combined_calibration(combined_bundle):
    manifest = load_bundle(combined_bundle.path).manifest
    entry = manifest.calibration.scores["combined"]
    assert entry.params == {"num_samples": 10, "components": ["negative_elbo", "reconstruction_error"]}
    assert entry.num_examples == CALIBRATION_ROWS
    # Its quantiles are over Fisher's statistic of the components' p-values against their own calibration.
    scores = combined_bundle.calibration_scores
    levels = manifest.calibration.quantile_levels
    p_values = [
        (1 + CALIBRATION_ROWS * (1 - np.interp(scores[name], manifest.calibration.scores[name].quantiles, levels)))
        / (1 + CALIBRATION_ROWS)
        for name in ("negative_elbo", "reconstruction_error")
    ]
    fisher = -2.0 * np.log(p_values).sum(axis=0)
    np.testing.assert_allclose(entry.quantiles, np.quantile(fisher, levels), rtol=1e-12)


def test_an_older_bundle_without_a_combined_calibration_is_not_calibrated_for_it(tmp_path, combined_bundle):
    copy = shutil.copytree(combined_bundle.path, tmp_path / "older")
    document = json.loads((copy / MANIFEST_FILE).read_text())
    del document["calibration"]["scores"]["combined"]  # as in a bundle made before the score
    del document["default_score"]
    (copy / MANIFEST_FILE).write_text(json.dumps(seal(document)))
    older = start_server("--bundle", str(copy))
    try:
        rows = np.full((2, 64), 8.0, dtype=np.float32)
        with pytest.raises(grpc.RpcError) as raised:
            scored(older, rows, vae_pb2.SCORE_TYPE_COMBINED, seed=1)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "score combined" in raised.value.details()
        assert "no calibration for it; recalibrate it with `vae-train calibrate`" in raised.value.details()
        # Its components still work, and with no default_score, the unnamed score is reconstruction_error.
        assert len(scored(older, rows, vae_pb2.SCORE_TYPE_NEGATIVE_ELBO, seed=1).scores) == 2
        assert scored(older, rows, vae_pb2.SCORE_TYPE_UNSPECIFIED, seed=1).score == (
            vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR
        )
    finally:
        assert older.stop() == 0, older.log()


def test_vae_train_calibrate_calibrates_the_combined_score(tmp_path, combined_bundle, capsys):
    out = tmp_path / "recalibrated"
    arguments = ["calibrate", "--bundle", str(combined_bundle.path), "--dataset", "digits", "--out", str(out)]
    assert cli.main([*arguments, "--no-progress"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = load_bundle(out).manifest
    entry = manifest.calibration.scores["combined"]
    assert entry.num_examples == summary["calibration_examples"] != CALIBRATION_ROWS
    assert entry.params["components"] == ["negative_elbo", "reconstruction_error"]
    assert manifest.default_score == "combined"  # kept from the bundle it recalibrates


def test_combined_shares_one_bounds_pass_and_one_reconstruction_pass(combined_bundle, digit_rows):
    runs: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def span(graph: str, rows: int):
        runs.append((graph, rows))
        yield

    bundle = load_bundle(combined_bundle.path)
    vae, calibrations = bundle.vae.observed(span), bundle.manifest.calibration.scores
    x = digit_rows["held_out"][:8].reshape(8, -1)
    both = [ScoreRequest(x, "negative_elbo", 3), ScoreRequest(x, "reconstruction_error", 3)]
    score_batch(vae, [*both, *both])
    components_twice = sorted(runs)
    runs.clear()
    score_batch(vae, [ScoreRequest(x, "combined", 3, calibrations=calibrations), *both])
    # A combined request costs exactly its two components' work, in the batch's shared passes: the
    # reconstruction pass (one encoder and one decoder run) serves all, and the bounds graph runs once
    # per sampled request, as it does for any (core.bounds: a reply bit-identical however batched).
    assert sorted(runs) == components_twice
    assert [graph for graph, _ in components_twice] == ["bounds", "bounds", "decoder", "encoder"]
