"""vae_serve.core.vae_math against independent computations: scipy's densities and Monte-Carlo estimates."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from vae_serve.core import vae_math
from vae_serve.export.models import vae as torch_model


def test_kl_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 5))
    logvar = rng.normal(scale=0.7, size=(3, 5))
    draws = 400_000
    z = vae_math.sample_posterior(mean, logvar, draws, rng)
    log_ratio = vae_math.diag_normal_log_prob(z, mean, logvar) - vae_math.standard_normal_log_prob(z)
    estimate = log_ratio.mean(axis=0)
    standard_error = log_ratio.std(axis=0) / math.sqrt(draws)
    closed_form = vae_math.kl_to_standard_normal(mean, logvar)
    # A correct closed form sits within 4 standard errors of the estimate (p ~ 6e-5 per row).
    assert np.all(np.abs(estimate - closed_form) < 4 * standard_error), (estimate, closed_form)


def test_kl_is_zero_only_at_the_prior():
    assert vae_math.kl_to_standard_normal(np.zeros((1, 4)), np.zeros((1, 4)))[0] == 0.0
    assert vae_math.kl_to_standard_normal(np.full((1, 4), 0.1), np.zeros((1, 4)))[0] > 0.0


def test_torch_and_numpy_kl_agree():
    rng = np.random.default_rng(1)
    mean, logvar = rng.normal(size=(2, 6, 4))
    expected = vae_math.kl_to_standard_normal(mean, logvar)
    actual = torch_model.kl_to_standard_normal(torch.from_numpy(mean), torch.from_numpy(logvar)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_bernoulli_log_prob_matches_scipy():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=8.0, size=(4, 30))
    x = (rng.random((4, 30)) < 0.5).astype(np.float64)
    expected = stats.bernoulli.logpmf(x, special.expit(logits)).sum(axis=1)
    np.testing.assert_allclose(vae_math.bernoulli_log_prob(x, logits), expected, rtol=1e-9)


def test_bernoulli_log_prob_is_finite_for_saturated_logits():
    logits = np.array([[-800.0, 800.0]])
    assert vae_math.bernoulli_log_prob(np.array([[0.0, 1.0]]), logits)[0] == pytest.approx(0.0, abs=1e-12)
    assert vae_math.bernoulli_log_prob(np.array([[1.0, 1.0]]), logits)[0] == pytest.approx(-800.0)


def test_gaussian_log_prob_matches_scipy():
    rng = np.random.default_rng(3)
    x, mean = rng.normal(size=(2, 5, 7))
    log_scale = rng.normal(scale=0.5, size=(5, 7))
    expected = stats.norm.logpdf(x, loc=mean, scale=np.exp(log_scale)).sum(axis=1)
    np.testing.assert_allclose(vae_math.gaussian_log_prob(x, mean, log_scale), expected, rtol=1e-9)


def test_logmeanexp_matches_scipy_far_from_zero():
    values = np.array([[-1000.0, 2000.0], [-1001.0, 2001.0], [-1002.0, 1999.0]])
    expected = special.logsumexp(values, axis=0) - math.log(3)
    np.testing.assert_allclose(vae_math.logmeanexp(values, axis=0), expected, rtol=1e-12)


def test_iwae_standard_error_matches_repeated_estimates():
    # Log-weights ~ N(0, 0.5^2): the spread of log(mean w) over many independent K-sample
    # estimates is the standard error the delta method predicts; agree within 15 %.
    rng = np.random.default_rng(4)
    count, repeats = 200, 4000
    log_weights = rng.normal(scale=0.5, size=(count, repeats))
    spread = vae_math.logmeanexp(log_weights, axis=0).std()
    predicted = vae_math.iwae_standard_error(log_weights, axis=0).mean()
    assert predicted == pytest.approx(spread, rel=0.15)


def test_log_q_from_the_noise_matches_scipy_and_survives_a_collapsed_posterior():
    rng = np.random.default_rng(2)
    mean, logvar = rng.normal(size=(4, 3)), rng.normal(scale=2.0, size=(4, 3))
    noise = rng.standard_normal((5, 4, 3))
    z = mean + np.exp(0.5 * logvar) * noise
    expected = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(axis=-1)
    np.testing.assert_allclose(vae_math.reparameterized_log_prob(noise, logvar), expected, rtol=1e-10)
    # A posterior so narrow that its standard deviation underflows float32: z equals the mean, and
    # (z - mean)^2 / var is 0 * inf = NaN; from the noise the density stays finite (and huge).
    collapsed = np.full((1, 3), -250.0, np.float32)
    eps = np.ones((1, 1, 3), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(vae_math.diag_normal_log_prob(np.zeros((1, 1, 3), np.float32), np.zeros((1, 3)), collapsed))
    value = vae_math.reparameterized_log_prob(eps, collapsed)
    assert np.isfinite(value).all() and value[0, 0] > 300
