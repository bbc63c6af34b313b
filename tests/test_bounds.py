"""Likelihood bounds through the exported graphs: IWAE >= ELBO, IWAE grows with k, and the served
(numpy + ONNX Runtime) and training (torch) implementations agree.
"""

import math

import numpy as np

from vae_serve.core.bounds import estimate_bounds
from vae_serve.core.bundle import load_bundle
from vae_serve.core.scores import anomaly_scores
from vae_serve.export.models.evaluate import binarize
from vae_serve.export.sources import load_source, make_splits


def validation_rows(count: int = 120) -> np.ndarray:
    splits = make_splits(load_source("digits")).in_model_space()
    return binarize(splits.validation.x[:count], seed=0)


def test_iwae_is_above_elbo_and_grows_with_k(digits_bundle):
    vae = load_bundle(digits_bundle).vae
    x = validation_rows()
    bounds = {k: estimate_bounds(vae, x, k, np.random.default_rng(k)) for k in (1, 10, 100)}
    # IWAE-1 is an unbiased single-sample ELBO estimate: it matches the 100-sample ELBO on average
    # within 4 standard errors of the per-example differences.
    difference = bounds[1].iwae - bounds[100].elbo
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(len(x))
    # Burda et al. Theorem 1: E[IWAE_k] is non-decreasing in k and above the ELBO. Per-example
    # gains are noisy, so the test is on means, with 4 standard errors of slack.
    for small, large in ((10, 100), (1, 10)):
        gain = bounds[large].iwae - bounds[small].iwae
        assert gain.mean() > -4 * gain.std() / math.sqrt(len(x))
        assert gain.mean() > 0
    gap = bounds[100].iwae - bounds[100].elbo
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(x))
    assert np.all(bounds[100].iwae_standard_error > 0)


def test_served_bounds_agree_with_the_training_metrics(digits_bundle):
    # The manifest's test metrics come from torch; the served path is numpy on ONNX Runtime.
    # Recompute the test-split bounds through the served path: the means must agree within the
    # Monte-Carlo error of the two independent estimates (ELBO: 4 SE; IWAE-200: 0.5 nats, its
    # per-example estimator spread being ~0.1 nats here).
    bundle = load_bundle(digits_bundle)
    splits = make_splits(load_source("digits")).in_model_space()
    x = binarize(splits.test.x, seed=20260)
    served = estimate_bounds(bundle.vae, x, 200, np.random.default_rng(11))
    recorded = bundle.manifest.metrics.test
    elbo_standard_error = served.elbo.std() / math.sqrt(len(x))
    assert abs(served.elbo.mean() - recorded.elbo_nats) < max(4 * elbo_standard_error, 0.05)
    assert abs(-served.iwae.mean() - recorded.iwae_nll_nats) < 0.5


def test_anomaly_scores_are_calibrated_on_validation_data(digits_bundle):
    bundle = load_bundle(digits_bundle)
    splits = make_splits(load_source("digits"))  # raw grey levels, as clients send them
    calibration = bundle.manifest.calibration
    recomputed = anomaly_scores(
        bundle.vae, splits.validation.x, list(calibration.scores), calibration.seed, calibration.scores
    )
    for name, values in recomputed.items():
        stored = calibration.scores[name]
        assert stored.num_examples == len(values)
        np.testing.assert_allclose(stored.quantiles[500], np.median(values), rtol=1e-4)
        np.testing.assert_allclose([stored.quantiles[0], stored.quantiles[-1]], [values.min(), values.max()], rtol=1e-4)
    # Noise images score as far more anomalous than the normal data's 99th percentile.
    noise = (16 * np.random.default_rng(0).random((20, 64))).astype(np.float32)
    noise_scores = anomaly_scores(bundle.vae, noise, ["negative_iwae"], seed=0)["negative_iwae"]
    assert np.all(noise_scores > calibration.scores["negative_iwae"].quantiles[990])


def test_far_out_of_distribution_rows_get_huge_finite_bounds_not_nan(gaussian_bundle):
    # Residuals beyond ~1e19 decoder scales overflow float32 when squared: the likelihood is then
    # recomputed in float64, so the bounds (and the scores built on them) stay finite, and ordered.
    vae = load_bundle(gaussian_bundle).vae
    elbos = []
    for value in (1e3, 1e18, 1e30):
        x = vae.to_model(np.full((2, 12), value, np.float32))
        bounds = estimate_bounds(vae, x, 10, np.random.default_rng(0))
        assert np.all(np.isfinite(bounds.elbo)) and np.all(np.isfinite(bounds.iwae))
        elbos.append(bounds.elbo[0])
    assert elbos[0] > elbos[1] > elbos[2]
