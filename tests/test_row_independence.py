"""Rows must be independent: a model whose output for a row depends on the other rows of its batch
is refused by export_bundle before anything is written, and a bundle made elsewhere with such a graph
is refused by the loader and by vae-serve (issue 20, section 2). The server batches different
clients' requests together: with such a model one client's reply would depend on another's data."""

import subprocess

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from tests.server_process import VAE_SERVE
from tests.test_export_api import Decoder, Encoder, export
from vae_serve.core.bundle import load_bundle, read_manifest, verify_files, verify_golden
from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import GoldenCase
from vae_serve.core.runtime import DECODER_INPUT, OnnxVae
from vae_serve.export.bundle.onnx_export import export_graph
from vae_serve.export.bundle.user_model import FlatDecoder, ModelError
from vae_serve.export.bundle.writer import write_manifest

ROWS_MIX = (
    r"the (encoder|decoder)'s output \w+ for calibration row \d+ changes by [0-9.e-]+ when it is batched with "
    r"other rows .*outputs must not depend on other rows of the batch.*model\.eval\(\).*batch statistics"
)


@pytest.fixture(scope="module")
def raw_digits() -> np.ndarray:
    """Raw grey levels 0..16 as [n, 1, 8, 8], as tests/test_export_api.py exports them."""
    return load_digits().images.astype(np.float32)[:300, None]


class BatchMeanDecoder(Decoder):
    """Adds the batch mean of its logits: the issue's first example (0.023 apart, alone vs in 8 rows)."""

    def forward(self, z):
        logits = super().forward(z)
        return logits + logits.mean(dim=0, keepdim=True)


class NonZeroCountDecoder(Decoder):
    """Shifts by a count of non-zero values over the batch: the issue's second example."""

    def forward(self, z):
        return super().forward(z) + (z > 0).sum().float() / 50.0


class BatchNormEncoder(Encoder):
    """An encoder with a BatchNorm1d after its hidden layer."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x):
        hidden = self.norm(self.body(x))
        return self.mean(hidden), self.logvar(hidden)


class AlwaysTraining(nn.BatchNorm1d):
    """A BatchNorm1d that stays in training mode whatever eval() says (as some wrappers do)."""

    def train(self, mode: bool = True):
        return super().train(True)


@pytest.mark.parametrize(
    ("encoder", "decoder"),
    [
        (None, BatchMeanDecoder()),
        (None, NonZeroCountDecoder()),
        (BatchNormEncoder(nn.BatchNorm1d(32, track_running_stats=False)), None),
        (BatchNormEncoder(AlwaysTraining(32)), None),
    ],
    ids=["batch-mean decoder", "non-zero count over the batch", "BatchNorm1d batch statistics", "BatchNorm1d train"],
)
def test_a_model_that_mixes_rows_is_refused_before_anything_is_written(tmp_path, raw_digits, encoder, decoder):
    out = tmp_path / "repo" / "mine" / "1"
    with pytest.raises(ModelError, match=ROWS_MIX):
        export(out, encoder=encoder, decoder=decoder, data=raw_digits)
    assert not out.exists()
    assert not (tmp_path / "repo").exists() or list((tmp_path / "repo").rglob("*")) == []


def test_a_batchnorm_model_left_in_training_mode_exports_in_eval_mode_and_serves_rows_independently(
    tmp_path, raw_digits
):
    # Running statistics make BatchNorm per-row in eval mode; export_bundle puts the modules in it.
    encoder = BatchNormEncoder(nn.BatchNorm1d(32))
    encoder.train()
    with torch.no_grad():
        encoder(torch.from_numpy(raw_digits / np.float32(16)))  # running statistics of the data
    exported = export(tmp_path / "bn", encoder=encoder, data=raw_digits)
    vae = load_bundle(exported.path).vae
    x = (raw_digits[:8] / np.float32(16)).reshape(8, -1)
    together = vae.encoder.run(None, {"x": x})[0]
    alone = np.concatenate([vae.encoder.run(None, {"x": x[row : row + 1]})[0] for row in range(8)])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def batch_mixing_copy(tmp_path, raw_digits):
    """A real bundle whose decoder.onnx was replaced by one that adds the batch mean, with the golden
    outputs recomputed from the new graph and the manifest resealed: every check but the batch one passes."""
    torch.manual_seed(0)
    decoder = Decoder()
    bundle = export(tmp_path / "made-elsewhere", decoder=decoder, data=raw_digits).path
    mixing = BatchMeanDecoder()
    mixing.load_state_dict(decoder.state_dict())
    flat = FlatDecoder(mixing, "bernoulli", (1, 8, 8))
    manifest = read_manifest(bundle)
    z = np.asarray(manifest.golden.decoder.inputs[DECODER_INPUT], dtype=np.float32)
    export_graph(flat, torch.from_numpy(z), bundle / "decoder.onnx", DECODER_INPUT, flat.output_names)
    vae = OnnxVae.from_files(bundle / "encoder.onnx", bundle / "decoder.onnx", "bernoulli")
    outputs = dict(zip(flat.output_names, vae.decoder.run(list(flat.output_names), {DECODER_INPUT: z}), strict=True))
    golden = manifest.golden.model_copy(
        update={
            "decoder": GoldenCase(
                inputs={DECODER_INPUT: z.tolist()}, outputs={k: v.tolist() for k, v in outputs.items()}
            )
        }
    )
    resealed = write_manifest(bundle, manifest.body().model_copy(update={"golden": golden}))
    # What the loader checked before the batch case: the seal, the files, the golden outputs. All pass.
    verify_files(bundle, read_manifest(bundle))
    verify_golden(vae, resealed)
    return bundle


def test_a_bundle_whose_graph_mixes_rows_is_refused_by_the_loader_and_the_server(tmp_path, raw_digits):
    bundle = batch_mixing_copy(tmp_path, raw_digits)
    expected = (
        r"decoder.onnx: output 'logits' of golden row \d+ is .* in a batch of 4 rows and .* (alone|in reversed order)"
    )
    with pytest.raises(BundleError, match=expected + r".*depend on other rows of the batch"):
        load_bundle(bundle)
    result = subprocess.run(
        [VAE_SERVE, "--bundle", str(bundle), "--host", "127.0.0.1", "--port", "0", "--no-metrics"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "decoder.onnx" in result.stderr and "depend on other rows of the batch" in result.stderr
    assert "golden output" not in result.stderr and "Traceback" not in result.stderr
