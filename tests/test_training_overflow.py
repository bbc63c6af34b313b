"""A validation bound that overflows float32 (a validation row far outside the training rows) is
recorded as null, never counts as an improvement, and leaves the training record valid JSON: found by
bench/protocol.py, where a digits-table class whose training rows never lit a pixel failed at export
with "training must be JSON-serialisable with finite numbers"."""

import json
import math

import numpy as np
from sklearn.datasets import load_digits

from vae_serve.export.models.config import TrainConfig
from vae_serve.export.models.training import train_vae


def test_an_overflowing_validation_bound_is_recorded_as_null():
    rows = load_digits().data.astype(np.float32)
    train, validation = rows[:300], rows[300:340].copy()
    # Pixel 0 is 0 in every training row (its scale is floored); a value of 1e30 there makes every
    # validation bound overflow to -inf in float32.
    assert np.all(train[:, 0] == 0)
    validation[:, 0] = 1e30
    config = TrainConfig("gaussian", "none", (16,), 4, 3, 64, 1e-3, 0.0, 50, 0)
    result = train_vae(config, train, validation, False, (64,))
    assert [entry["validation_elbo_nats"] for entry in result.history] == [None, None, None]
    assert all(math.isfinite(entry["train_elbo_nats"]) for entry in result.history)
    # No epoch improved on -inf: the initial model is kept, and the record is strict JSON.
    assert result.best_epoch == 0
    json.dumps(result.history, allow_nan=False)
