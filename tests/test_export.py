"""ONNX export: checker-clean graphs with a dynamic batch axis that agree with torch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vae_serve.export.bundle.onnx_export import PARITY_TOLERANCE, export_graphs
from vae_serve.export.bundle.user_model import FlatDecoder, FlatEncoder
from vae_serve.export.models.vae import build_vae


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_exported_graphs_match_torch_for_any_batch_size(tmp_path, likelihood):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    loc = torch.from_numpy(rng.normal(50.0, 10.0, size=20).astype(np.float32))
    scale = torch.from_numpy(rng.uniform(0.5, 5.0, size=20).astype(np.float32))
    vae = build_vae(20, (32, 16), 4, likelihood, *((loc, scale) if likelihood == "gaussian" else (None, None)))
    center = loc.numpy() if likelihood == "gaussian" else 0.5
    x = (center + rng.normal(size=(64, 20))).astype(np.float32)
    graphs = export_graphs(FlatEncoder(vae.encoder, (20,)), FlatDecoder(vae.decoder, likelihood, (20,)), tmp_path, x)
    assert max(graphs["encoder"]["parity_max_abs_diff"].values()) <= PARITY_TOLERANCE
    assert max(graphs["decoder"]["parity_max_abs_diff"].values()) <= PARITY_TOLERANCE

    encoder = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [node.name for node in encoder.get_outputs()] == ["z_mean", "z_logvar"]
    expected_outputs = ["logits"] if likelihood == "bernoulli" else ["mean", "log_scale"]
    assert [node.name for node in decoder.get_outputs()] == expected_outputs
    for batch in (1, 7, 64):  # none of these is the batch size used to trace the graph (2)
        z_mean, z_logvar = encoder.run(None, {"x": x[:batch]})
        with torch.no_grad():
            want_mean, want_logvar = vae.encoder(torch.from_numpy(x[:batch]))
            want_decoded = vae.decoder(want_mean)
        np.testing.assert_allclose(z_mean, want_mean.numpy(), atol=PARITY_TOLERANCE)
        np.testing.assert_allclose(z_logvar, want_logvar.numpy(), atol=PARITY_TOLERANCE)
        for got, want in zip(decoder.run(None, {"z": z_mean}), want_decoded, strict=True):
            assert got.shape == (batch, 20)
            np.testing.assert_allclose(got, want.numpy(), atol=PARITY_TOLERANCE, rtol=1e-5)
    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(onnx.load(str(tmp_path / name)), full_check=True)
        assert graphs[name.split(".")[0]]["inputs"][0]["shape"][0] == "batch"


@pytest.mark.parametrize("bundle_fixture", ["digits_bundle", "gaussian_bundle"])
def test_training_writes_a_report_beside_the_bundle(request, bundle_fixture):
    import matplotlib.image

    from vae_serve.export.commands.report import report_dir_for

    bundle = request.getfixturevalue(bundle_fixture)
    report = report_dir_for(bundle)
    assert report.parent == bundle.parent and not (bundle / "report").exists()
    for name in ("training", "samples", "reconstructions", "scores"):
        path = report / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400 and pixels.std() > 0.01, name


@pytest.mark.parametrize("conv_decoder", ["transposed", "upsample"])
def test_conv_models_export_with_both_decoders_for_grey_and_colour(tmp_path, conv_decoder):
    torch.manual_seed(0)
    for shape in ((1, 8, 8), (3, 8, 12)):
        features = int(np.prod(shape))
        vae = build_vae(features, (4, 8), 3, "bernoulli", arch="conv", input_shape=shape, conv_decoder=conv_decoder)
        x = np.random.default_rng(0).random((16, features), dtype=np.float32)
        folder = tmp_path / f"{conv_decoder}-{shape[0]}"
        folder.mkdir()
        graphs = export_graphs(FlatEncoder(vae.encoder, shape), FlatDecoder(vae.decoder, "bernoulli", shape), folder, x)
        assert graphs["decoder"]["outputs"][0]["shape"] == ["batch", features]
        logits = ort.InferenceSession(str(folder / "decoder.onnx")).run(None, {"z": np.zeros((5, 3), np.float32)})[0]
        assert logits.shape == (5, features)
