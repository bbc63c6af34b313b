"""The score registry and the proto enum: one entry per score, names derived from the enum, and
anything unknown or unhandled fails loudly instead of falling through to another formula."""

import numpy as np
import pytest

from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bundle import load_bundle
from vae_serve.core.errors import InvalidInput
from vae_serve.core.scores import SCORES, ScoreRequest, score_batch, score_named
from vae_serve.service.grpc.score_types import SCORE_TYPES, check_agreement, score_name


def test_every_enum_value_has_exactly_one_registry_entry():
    enum_names = {name for name, value in vae_pb2.ScoreType.items() if value}
    assert {f"SCORE_TYPE_{name.upper()}" for name in SCORES} == enum_names
    for name, value in SCORE_TYPES.items():
        assert score_name(value) == name
    assert score_name(vae_pb2.SCORE_TYPE_UNSPECIFIED) == "reconstruction_error"


def test_a_registry_that_misses_or_adds_a_score_is_refused():
    partial = {name: score for name, score in SCORES.items() if name != "negative_iwae"}
    with pytest.raises(ImportError, match=r"enum only \['negative_iwae'\], registry only \[\]"):
        check_agreement(SCORE_TYPES, partial)
    with pytest.raises(ImportError, match=r"registry only \['extra'\]"):
        check_agreement(SCORE_TYPES, {**SCORES, "extra": SCORES["negative_elbo"]})


def test_unknown_names_and_enum_values_fail_loudly(digits_bundle):
    with pytest.raises(ValueError, match="unknown anomaly score 'negative_elb'"):
        score_named("negative_elb")
    with pytest.raises(InvalidInput, match="unknown score type 42"):
        score_name(42)
    vae = load_bundle(digits_bundle).vae
    with pytest.raises(ValueError, match="unknown anomaly score 'bogus'"):
        score_batch(vae, [ScoreRequest(np.full((2, 64), 0.5, np.float32), "bogus", 0)])


def test_each_entry_reads_its_own_evidence(digits_bundle):
    # Every score computed together equals the same score alone, and sampled scores are computed
    # from bounds with their own number of draws (the recorded calibration parameters).
    bundle = load_bundle(digits_bundle)
    vae, calibrations = bundle.vae, bundle.manifest.calibration.scores
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    together = score_batch(vae, [ScoreRequest(x, name, 5, True, calibrations) for name in SCORES])
    for (values, errors), name in zip(together, SCORES, strict=True):
        alone, _ = score_batch(vae, [ScoreRequest(x, name, 5, calibrations=calibrations)])[0]
        np.testing.assert_array_equal(values, alone)
        assert errors.shape == (4, 64) and np.all(errors >= 0)
        assert SCORES[name].params.get("num_samples", 0) == SCORES[name].num_samples
    scores, errors = together[list(SCORES).index("reconstruction_error")]
    np.testing.assert_allclose(errors.sum(axis=1), scores)  # the score is the sum of its feature errors
