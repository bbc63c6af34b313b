"""The IWAE-k training objective (--train-samples) against an independent numpy computation, and
a real vae-train run with it."""

import numpy as np
import pytest
import torch

from tests.conftest import run_vae_train
from vae_serve.core import vae_math
from vae_serve.core.bundle import load_bundle
from vae_serve.export import cli
from vae_serve.export.models.vae import build_vae
from vae_serve.export.sources import load_source, make_splits


def numpy_iwae_objective(vae, x: np.ndarray, noise: np.ndarray, kl_weight: float) -> tuple[float, float]:
    """(mean annealed IWAE bound, mean single-draw ELBO) from the graphs' outputs, in numpy."""
    with torch.no_grad():
        mean, logvar = (value.double().numpy() for value in vae.encoder(torch.from_numpy(x)))
        z = vae_math.reparameterize(mean, logvar, noise)
        (logits,) = vae.decoder(torch.from_numpy(z.astype(np.float32)))
    log_px_z = vae_math.bernoulli_log_prob(x, logits.double().numpy())
    log_prior_ratio = vae_math.standard_normal_log_prob(z) - vae_math.diag_normal_log_prob(z, mean, logvar)
    bound = vae_math.logmeanexp(log_px_z + kl_weight * log_prior_ratio, axis=0)
    return float(bound.mean()), float((log_px_z + log_prior_ratio).mean())


@pytest.mark.parametrize("kl_weight", [1.0, 0.3])
def test_iwae_loss_matches_numpy(kl_weight):
    torch.manual_seed(0)
    vae = build_vae(6, (5,), 3, "bernoulli")
    x = (np.random.default_rng(0).random((7, 6)) < 0.5).astype(np.float32)
    samples = 4
    torch.manual_seed(11)
    with torch.no_grad():
        loss, elbo = vae.loss(torch.from_numpy(x), kl_weight, samples)
    # The objective draws its noise as torch.randn(samples, batch, latent) after the seed.
    torch.manual_seed(11)
    noise = torch.randn(samples, 7, 3).double().numpy()
    expected_bound, expected_elbo = numpy_iwae_objective(vae, x, noise, kl_weight)
    # float32 graphs against float64 numpy on ~4-nat values: agree to 1e-5 relative.
    assert -float(loss) == pytest.approx(expected_bound, rel=1e-5)
    assert float(elbo) == pytest.approx(expected_elbo, rel=1e-5)


def test_iwae_bound_is_above_the_elbo_objective():
    # Same draws: log-mean-exp of the log weights >= their mean (Jensen), for every example.
    torch.manual_seed(1)
    vae = build_vae(6, (5,), 3, "bernoulli")
    x = torch.from_numpy((np.random.default_rng(1).random((32, 6)) < 0.5).astype(np.float32))
    torch.manual_seed(2)
    with torch.no_grad():
        loss, elbo = vae.loss(x, 1.0, 8)
    assert -float(loss) >= float(elbo)


def test_vae_train_with_iwae_objective_writes_a_verified_bundle(tmp_path, capsys):
    out = tmp_path / "iwae"
    summary = run_vae_train(
        capsys, "--dataset", "digits", "--out", str(out), "--train-samples", "3", "--test-fraction", "0.2"
    )
    training = load_bundle(out).manifest.training
    assert training["train_samples"] == 3
    history = training["history"]
    assert all(entry["validation_iwae10_nats"] >= entry["validation_elbo_nats"] - 0.05 for entry in history)
    # Selected on its validation IWAE-10 bound: the best epoch holds the highest one.
    best = max(history, key=lambda entry: entry["validation_iwae10_nats"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["test_iwae_nll_nats"] <= -summary["test_elbo_nats"]


def test_train_samples_must_be_positive(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--train-samples", "0"]) != 0
    assert "--train-samples" in capsys.readouterr().err


def test_gaussian_decoder_with_one_shared_scale(tmp_path, capsys):
    out = tmp_path / "shared"
    run_vae_train(
        capsys, "--dataset", "digits", "--likelihood", "gaussian", "--decoder-scale", "shared", "--out", str(out)
    )
    bundle = load_bundle(out)
    assert bundle.manifest.training["decoder_scale"] == "shared"
    z = np.random.default_rng(3).normal(size=(5, bundle.manifest.latent_dim)).astype(np.float32)
    log_scale = bundle.vae.decode(z)["log_scale"]
    # One sigma for every pixel and every z: the calibrated decoder of Rybkin et al. 2021.
    assert log_scale.shape == (5, 64) and np.ptp(log_scale) == 0.0
    parameters = bundle.manifest.likelihood.parameters
    assert "shared by every feature" in parameters["scale"] and np.ptp(parameters["feature_scale"]) == 0.0
    # That sigma is the maximum-likelihood one, the root mean squared error of reconstructions from
    # posterior draws on the training rows. It was set from the last epoch's batches while the weights
    # still moved, so agreement within 5 % is expected (0.5 % measured).
    x = make_splits(load_source("digits", None, None), None, validation_fraction=0.1).in_model_space().train.x
    z_mean, z_logvar = bundle.vae.encode(x)
    z = z_mean + np.exp(0.5 * z_logvar) * np.random.default_rng(4).standard_normal(z_mean.shape).astype(np.float32)
    rmse = float(np.sqrt(((x - bundle.vae.decode(z)["mean"]) ** 2).mean()))
    assert float(np.exp(log_scale[0, 0])) == pytest.approx(rmse, rel=0.05)


def test_gaussian_decoder_with_one_scale_in_standardized_units(tmp_path, capsys):
    out = tmp_path / "standardized"
    run_vae_train(
        capsys, "--dataset", "digits", "--likelihood", "gaussian", "--decoder-scale", "standardized", "--out", str(out)
    )
    bundle = load_bundle(out)
    parameters = bundle.manifest.likelihood.parameters
    assert "standardized units" in parameters["scale"] and np.ptp(parameters["feature_scale"]) > 0
    z = np.random.default_rng(3).normal(size=(5, bundle.manifest.latent_dim)).astype(np.float32)
    log_scale = bundle.vae.decode(z)["log_scale"]
    # sigma_d = sigma * feature_scale_d: one sigma in standardized units, the same for every z.
    log_sigma = log_scale - np.log(np.asarray(parameters["feature_scale"], np.float32))
    assert np.ptp(log_sigma) < 1e-5
    # That sigma is the root mean squared *standardized* error of reconstructions from posterior
    # draws on the training rows, set from the last epoch's batches (5 %, as the shared scale above).
    x = make_splits(load_source("digits", None, None), None, validation_fraction=0.1).in_model_space().train.x
    z_mean, z_logvar = bundle.vae.encode(x)
    z = z_mean + np.exp(0.5 * z_logvar) * np.random.default_rng(4).standard_normal(z_mean.shape).astype(np.float32)
    standardized = (x - bundle.vae.decode(z)["mean"]) / np.asarray(parameters["feature_scale"], np.float32)
    assert float(np.exp(log_sigma[0, 0])) == pytest.approx(float(np.sqrt((standardized**2).mean())), rel=0.05)


def test_decoder_scale_needs_a_gaussian_likelihood(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--decoder-scale", "shared"]) == 2
    assert "--decoder-scale applies to --likelihood gaussian only" in capsys.readouterr().err
