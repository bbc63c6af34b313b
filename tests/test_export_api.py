"""``export_bundle``: a user's own model becomes a verified bundle, and a model that cannot be
served is refused with a message that names the problem, leaving nothing behind."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from vae_serve.core.bounds import estimate_bounds, latent_generator
from vae_serve.core.bundle import load_bundle
from vae_serve.core.preprocessing import pixel_scaling, standardization
from vae_serve.core.scores import anomaly_scores
from vae_serve.export import export_bundle
from vae_serve.export.bundle.onnx_export import ExportError
from vae_serve.export.bundle.user_model import ModelError

LATENT = 4


class Encoder(nn.Module):
    def __init__(self, features: int = 64, latent: int = LATENT) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.Tanh())
        self.mean, self.logvar = nn.Linear(32, latent), nn.Linear(32, latent)

    def forward(self, x):
        hidden = self.body(x)
        return self.mean(hidden), self.logvar(hidden)


class Decoder(nn.Module):
    """Logits shaped like the input, or a Gaussian (mean, log_scale) with a learned shared scale."""

    def __init__(self, shape=(1, 8, 8), latent: int = LATENT, gaussian: bool = False) -> None:
        super().__init__()
        self.shape, self.gaussian = shape, gaussian
        self.net = nn.Sequential(nn.Linear(latent, 32), nn.Tanh(), nn.Linear(32, int(np.prod(shape))))
        self.log_scale = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        out = self.net(z).reshape(-1, *self.shape)
        return (out, self.log_scale) if self.gaussian else out


@pytest.fixture(scope="module")
def raw_digits() -> np.ndarray:
    """Raw grey levels 0..16 as [n, 1, 8, 8]."""
    return load_digits().images.astype(np.float32)[:300, None]


def export(out, encoder=None, decoder=None, data=None, **options):
    torch.manual_seed(0)
    settings = {"likelihood": "bernoulli", "input_shape": (1, 8, 8), "preprocessing": pixel_scaling(16), "iwae_k": 20}
    settings.update(options)
    return export_bundle(
        encoder or Encoder(),
        decoder or Decoder(),
        calibration_data=data,
        out=out,
        name="mine",
        **settings,
    )


def test_a_user_model_exports_to_a_bundle_the_server_loader_verifies(tmp_path, raw_digits):
    exported = export(tmp_path / "mine" / "1", data=raw_digits, training={"epochs": 0})
    bundle = load_bundle(exported.path)
    manifest = bundle.manifest
    assert manifest.input.shape == [1, 8, 8] and manifest.input.num_features == 64
    assert manifest.latent_dim == LATENT and manifest.training == {"epochs": 0}
    assert sorted(manifest.calibration.scores) == sorted(exported.calibration_scores)
    # The bundle's preprocessing is applied by the served model: raw rows score as the model-space
    # rows do without it (the same graphs, an independent division here).
    raw = raw_digits.reshape(len(raw_digits), -1)
    recomputed = anomaly_scores(
        bundle.vae, raw, list(manifest.calibration.scores), manifest.calibration.seed, manifest.calibration.scores
    )
    for name, values in recomputed.items():
        np.testing.assert_array_equal(values, exported.calibration_scores[name])
        quantiles = np.quantile(values, manifest.calibration.quantile_levels)
        np.testing.assert_allclose(manifest.calibration.scores[name].quantiles, quantiles, rtol=1e-9)
    bounds = estimate_bounds(bundle.vae, raw / np.float32(16.0), 20, latent_generator(0))
    assert manifest.metrics.validation.iwae_nll_nats == pytest.approx(-bounds.iwae.mean(), rel=1e-9)


def test_a_gaussian_model_with_a_shared_learned_scale_and_standardised_tables(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(100.0, 20.0, size=(200, 6)).astype(np.float32)
    exported = export(
        tmp_path / "table",
        Encoder(6),
        Decoder((6,), gaussian=True),
        table,
        likelihood="gaussian",
        input_shape=(6,),
        preprocessing=standardization(table.mean(0), table.std(0)),
    )
    bundle = load_bundle(exported.path)
    z = np.zeros((3, LATENT), np.float32)
    decoded = bundle.vae.decode(z)
    # The shared scale parameter (0) was broadcast to every row and feature inside the graph.
    np.testing.assert_array_equal(decoded["log_scale"], np.zeros((3, 6), np.float32))
    standardized = (table[:5] - table.mean(0)) / np.where(table.std(0) > 0, table.std(0), 1)
    np.testing.assert_allclose(bundle.vae.to_model(table[:5]), standardized, rtol=1e-5, atol=1e-5)


class TwoLatents(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :3]


class WrongLatent(Decoder):
    def __init__(self):
        super().__init__(latent=LATENT + 2)


class NotFinite(Decoder):
    def forward(self, z):
        return super().forward(z) * torch.inf


class Unexportable(Decoder):
    def forward(self, z):
        # torch's ONNX exporter has no lowering of histc over the data's own range. (Over the weights:
        # a histogram over the batch would mix rows, which is refused before the export.)
        logits = super().forward(z)
        return logits + torch.histc(self.net[0].weight, bins=4).sum()


class Random(Decoder):
    def forward(self, z):
        # Fresh noise at every call: refused in torch, before ONNX Runtime's draws could differ.
        return super().forward(z) + torch.rand_like(super().forward(z))


class ExportsDifferently(Decoder):
    def forward(self, z):
        # Deterministic and row by row in torch, but another graph is traced: ONNX Runtime disagrees.
        return super().forward(z) + (1.0 if torch.onnx.is_in_onnx_export() else 0.0)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"encoder": TwoLatents()}, ModelError, "encoder must return two tensors"),
        ({"decoder": WrongLatent()}, ModelError, "latent size"),
        ({"decoder": Decoder(shape=(1, 8, 7))}, ModelError, r"must be \[batch, \*input_shape\] = \[.*, 1, 8, 8\]"),
        ({"decoder": NotFinite()}, ModelError, "NaN or infinite on calibration row 0"),
        ({"preprocessing": None}, ModelError, r"values in \[0, 1\] after preprocessing.*pixel_scaling"),
        ({"input_shape": (1, 8, 9)}, ModelError, r"do not match input_shape \[1, 8, 9\]"),
        ({"likelihood": "poisson"}, ModelError, "likelihood 'poisson' is not supported"),
        ({"decoder": Unexportable()}, ExportError, "decoder does not export to ONNX at operation aten.histc"),
        ({"decoder": Random()}, ModelError, "differs by .* between two runs on the same input: .* deterministic"),
        ({"decoder": ExportsDifferently()}, ExportError, "ONNX Runtime disagrees with torch"),
    ],
)
def test_a_model_that_cannot_be_served_is_refused_and_leaves_nothing(tmp_path, raw_digits, options, error, message):
    out = tmp_path / "repo" / "mine" / "1"
    with pytest.raises(error, match=message):
        export(out, data=raw_digits, **options)
    assert not out.exists()
    assert list((tmp_path / "repo" / "mine").iterdir()) == [] if (tmp_path / "repo" / "mine").exists() else True


def test_bad_calibration_data_is_refused(tmp_path, raw_digits):
    with_nan = raw_digits.copy()
    with_nan[3, 0, 2, 2] = np.nan
    with pytest.raises(ModelError, match="NaN or infinite"):
        export(tmp_path / "a", data=with_nan)
    with pytest.raises(ModelError, match="at least 10 rows"):
        export(tmp_path / "b", data=raw_digits[:5])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
