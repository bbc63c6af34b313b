"""vae-train end to end on the data forms users keep (a folder of PNG images, a CSV table, a
Parquet table) and with ``--arch conv``, served by a real vae-serve that takes raw values."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.server_process import start_server, tensor
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bounds import estimate_bounds, latent_generator
from vae_serve.core.bundle import load_bundle
from vae_serve.export import cli

FAST = ["--epochs", "4", "--iwae-k", "20", "--no-progress"]


def bars(count: int, vertical: bool, seed: int) -> np.ndarray:
    """8x8 grey images 0..255 of one bright bar on a noisy background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(count, 8, 8)).astype(np.uint8)
    for image, position in zip(images, rng.integers(1, 7, size=count), strict=True):
        if vertical:
            image[:, position] = 230
        else:
            image[position, :] = 230
    return images


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two class folders of grey PNGs: horizontal bars (class 0) and vertical bars (class 1)."""
    root = tmp_path_factory.mktemp("images")
    for label, vertical in ((0, False), (1, True)):
        (root / f"class{label}").mkdir()
        for index, image in enumerate(bars(150, vertical, seed=label)):
            Image.fromarray(image, mode="L").save(root / f"class{label}" / f"{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("bundles") / "bars" / "1"
    args = ["train", "--dataset", f"images:{image_folder}", "--classes", "0", "--arch", "conv", "--out", str(out)]
    # Bernoulli (the images recipe is a Gaussian): the server then refuses pixels outside [0, 255].
    args += ["--likelihood", "bernoulli"]
    assert cli.main([*args, "--name", "bars", "--latent-dim", "4", *FAST, "--epochs", "40"]) == 0
    return out


def test_an_image_folder_trains_a_conv_model_that_serves_raw_pixels(image_bundle):
    bundle = load_bundle(image_bundle)
    manifest = bundle.manifest
    assert manifest.input.shape == [1, 8, 8] and manifest.preprocessing.scale == [255.0]
    assert manifest.training["arch"] == "conv" and manifest.training["data"]["class_names"] == ["class0", "class1"]
    raw = np.concatenate([bars(10, False, seed=9), bars(10, True, seed=9)]).reshape(20, 64).astype(np.float32)
    server = start_server("--bundle", str(image_bundle), metrics=False)
    try:
        reply = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(raw.reshape(20, 1, 8, 8)), k=5, seed=3), timeout=30)
        # Independent of the server's preprocessing code: divide by 255 here, run the bounds in-process.
        expected = estimate_bounds(bundle.vae, raw / np.float32(255.0), 5, latent_generator(3))
        np.testing.assert_allclose(reply.elbo, expected.elbo, rtol=1e-6)
        np.testing.assert_allclose(reply.iwae, expected.iwae, rtol=1e-6)
        scored = server.stub.ScoreAnomaly(vae_pb2.ScoreAnomalyRequest(x=tensor(raw), seed=1), timeout=30)
        # Trained on horizontal bars only: the vertical ones reconstruct worse.
        assert np.mean(scored.scores[10:]) > np.mean(scored.scores[:10])
        with pytest.raises(Exception) as raised:
            server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 300.0)), k=1), timeout=30)
        assert "outside [0, 255]" in raised.value.details()
    finally:
        server.stop()


def table(rows: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """Correlated readings on different scales, and a label (0 normal, 1 shifted)."""
    rng = np.random.default_rng(3)
    labels = (np.arange(rows) % 4 == 0).astype(np.int64)
    base = rng.normal(size=(rows, 1))
    values = np.hstack([base * 10 + 100, base * 0.1 - 5, rng.normal(size=(rows, 1)) * 1000])
    values[labels == 1, 0] += 40.0
    return values.astype(np.float32), labels


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_a_table_trains_a_gaussian_model_served_by_vaeservice_and_the_open_inference_protocol(tmp_path, file_format):
    values, labels = table()
    path = tmp_path / f"readings.{file_format}"
    columns = {"flow": values[:, 0], "pressure": values[:, 1], "noise": values[:, 2], "label": labels}
    if file_format == "csv":
        header = ",".join(columns)
        lines = [",".join(f"{column[i]:.6g}" for column in columns.values()) for i in range(len(labels))]
        path.write_text("\n".join([header, *lines]) + "\n")
    else:
        pq.write_table(pa.table(columns), path)
    out = tmp_path / "repo" / "readings" / "1"
    args = ["train", "--dataset", f"{file_format}:{path}", "--label-column", "label", "--classes", "0"]
    assert cli.main([*args, "--likelihood", "gaussian", "--out", str(out), "--name", "readings", *FAST]) == 0
    manifest = load_bundle(out).manifest
    assert manifest.input.shape == [3] and manifest.training["data"]["columns"] == ["flow", "pressure", "noise"]
    server = start_server("--model-repository", str(tmp_path / "repo"), metrics=False)
    try:
        raw = values[:8]  # raw readings, as stored
        reply = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(raw), k=1, seed=4), timeout=30)
        request = oip_pb2.ModelInferRequest(model_name="readings-elbo")
        request.inputs.add(name="x", datatype="FP32", shape=raw.shape)
        request.raw_input_contents.append(np.ascontiguousarray(raw, "<f4").tobytes())
        request.parameters["seed"].int64_param = 4
        response = oip_pb2_grpc.GRPCInferenceServiceStub(server.channel).ModelInfer(request, timeout=30)
        names = [spec.name for spec in response.outputs]
        oip_elbo = np.frombuffer(response.raw_output_contents[names.index("elbo")], "<f8")
        np.testing.assert_array_equal(oip_elbo, reply.elbo)
        assert np.all(np.isfinite(reply.elbo))
    finally:
        server.stop()


def test_conv_on_a_table_is_refused_with_what_to_do(tmp_path, capsys):
    values, _ = table(200)  # enough rows for the split: the refusal is about the shape
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in values) + "\n")
    args = ["train", "--dataset", f"csv:{path}", "--arch", "conv", "--likelihood", "gaussian"]
    code = cli.main([*args, "--out", str(tmp_path / "o"), *FAST])
    assert code == 2
    assert "--arch conv needs images [C, H, W] or [H, W]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_source_flags_on_the_wrong_source_are_refused(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "digits", "--label-column", "y", "--out", str(tmp_path / "o"), *FAST])
    assert code == 2 and "--label-column applies only to csv:PATH and parquet:PATH" in capsys.readouterr().err
