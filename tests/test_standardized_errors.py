"""Reconstruction errors in standardized units (issue 23): a bundle whose manifest says
``reconstruction_units: "standardized"`` serves squared residuals divided by feature_scale**2.

Everything is checked over gRPC against a real vae-serve process, recomputed independently in numpy
from the server's own Encode (z_mean) and Decode (Gaussian mean) replies and the manifest's JSON.
"""

import copy
import csv
import json
import re
import shutil

import numpy as np
import pytest

from tests.server_process import start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bounds import reconstruction_errors_batch
from vae_serve.core.bundle import load_bundle
from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import MANIFEST_FILE, seal
from vae_serve.core.runtime import reconstruction_error_weights
from vae_serve.export import cli
from vae_serve.export.bundle.exporter import export_bundle
from vae_serve.export.bundle.manifest_builder import likelihood_spec
from vae_serve.export.models.config import TrainConfig
from vae_serve.export.models.training import train_vae
from vae_serve.export.sources import load_source, make_splits

# The table's columns: "area" is in units 1000 times larger than the others (as the breast-cancer
# table's area features are), so in model units its squared residuals outweigh all the others.
COLUMNS = ["radius", "texture", "smoothness", "symmetry", "area", "ratio"]
LARGE = COLUMNS.index("area")
LARGE_UNIT = 1000.0
ROWS = 400


def array(message: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype="<f4").reshape(tuple(message.shape))


def table_values(seed: int, rows: int) -> np.ndarray:
    """Six columns driven by two latent factors plus noise; "area" scaled by 1000 and offset."""
    rng = np.random.default_rng(23)
    loadings = rng.normal(size=(2, len(COLUMNS)))
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, 2)) @ loadings + 0.3 * rng.normal(size=(rows, len(COLUMNS)))
    values[:, LARGE] = LARGE_UNIT * values[:, LARGE] + 5000.0
    return values.astype(np.float32)


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    """The training table as a CSV file with a header."""
    path = tmp_path_factory.mktemp("table") / "table.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(table_values(0, ROWS).tolist())
    return path


@pytest.fixture(scope="module")
def table_rows() -> np.ndarray:
    """Fresh rows of the same table, as clients send them."""
    return table_values(1, 60)


@pytest.fixture(scope="module")
def unit_bundles(tmp_path_factory, table_csv) -> dict:
    """One trained torch VAE (vae-train's own training) exported twice, in model and in standardized
    units ("model", "standardized": each an ExportedBundle), and the calibration rows ("calibration_rows")."""
    splits = make_splits(load_source(f"csv:{table_csv}"), validation_fraction=0.2, test_fraction=0.0)
    config = TrainConfig(
        likelihood="gaussian",
        binarize="none",
        hidden=(32,),
        latent_dim=2,
        epochs=20,
        batch_size=64,
        lr=3e-3,
        kl_warmup_epochs=0.0,
        patience=20,
        seed=0,
    )
    vae = train_vae(config, splits.train.x, splits.validation.x, False).vae
    folder = tmp_path_factory.mktemp("units")
    bundles = {"calibration_rows": splits.validation.x}
    for units in ("model", "standardized"):
        bundles[units] = export_bundle(
            vae.encoder,
            vae.decoder,
            likelihood="gaussian",
            input_shape=(len(COLUMNS),),
            calibration_data=splits.validation.x,
            out=folder / units,
            name=f"table-{units}",
            iwae_k=20,
            progress=False,
            likelihood_spec=likelihood_spec(vae),
            reconstruction_units=units,
        )
    return bundles


@pytest.fixture(scope="module")
def servers(unit_bundles):
    processes = {
        units: start_server("--bundle", str(unit_bundles[units].path), metrics=False)
        for units in ("model", "standardized")
    }
    yield processes
    for process in processes.values():
        assert process.stop() == 0, process.log()


def manifest_document(bundle) -> dict:
    return json.loads((bundle / MANIFEST_FILE).read_text())


def served_errors(server, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction_error scores [n] float64, per-feature errors [n, D]) as the server replies."""
    reply = server.stub.ScoreAnomaly(
        vae_pb2.ScoreAnomalyRequest(
            x=tensor(x), score=vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR, return_feature_errors=True
        )
    )
    return np.asarray(reply.scores), array(reply.feature_errors)


def independent_squared_residuals(server, x: np.ndarray) -> np.ndarray:
    """(x - E[x | z = z_mean])**2 in float64, from the server's Encode and Decode rpcs (identity
    preprocessing: the rows are in the model's space as sent)."""
    z_mean = array(server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(x))).z_mean)
    decoded = server.stub.Decode(vae_pb2.DecodeRequest(z=tensor(z_mean)))
    assert decoded.WhichOneof("params") == "gaussian"
    mean = array(decoded.gaussian.mean).astype(np.float64)
    return (x.astype(np.float64) - mean) ** 2


def feature_scale(document: dict) -> np.ndarray:
    return np.asarray(document["likelihood"]["parameters"]["feature_scale"], dtype=np.float64)


def large_column_share(errors: np.ndarray) -> float:
    """The share of the total error carried by the large-unit column."""
    return float(errors[:, LARGE].sum() / errors.sum())


def test_standardized_errors_are_squared_residuals_over_feature_scale_squared(servers, unit_bundles, table_rows):
    document = manifest_document(unit_bundles["standardized"].path)
    assert document["reconstruction_units"] == "standardized"
    scale = feature_scale(document)
    assert scale[LARGE] > 100 * np.median(scale)  # the construction: one column in large units
    scores, errors = served_errors(servers["standardized"], table_rows)
    expected = independent_squared_residuals(servers["standardized"], table_rows) / scale**2
    assert errors.shape == table_rows.shape
    np.testing.assert_allclose(errors, expected, rtol=1e-4, atol=1e-6)
    # (b) the score is the row sum of the per-feature errors (float64 on the server's side).
    np.testing.assert_allclose(scores, expected.sum(axis=1), rtol=1e-4)
    np.testing.assert_allclose(scores, errors.astype(np.float64).sum(axis=1), rtol=1e-5)


def test_model_units_bundle_keeps_raw_squared_errors(servers, unit_bundles, table_rows):
    document = manifest_document(unit_bundles["model"].path)
    assert "reconstruction_units" not in document  # written as before the field existed
    assert load_bundle(unit_bundles["model"].path).manifest.reconstruction_units == "model"
    scores, errors = served_errors(servers["model"], table_rows)
    expected = independent_squared_residuals(servers["model"], table_rows)
    np.testing.assert_allclose(errors, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores, expected.sum(axis=1), rtol=1e-4)


def test_same_model_differs_only_by_the_weights(servers, unit_bundles, table_rows):
    """The two bundles hold the same graphs: standardized = model-units errors / feature_scale**2."""
    scale = feature_scale(manifest_document(unit_bundles["standardized"].path))
    _, model_errors = served_errors(servers["model"], table_rows)
    _, standardized_errors = served_errors(servers["standardized"], table_rows)
    np.testing.assert_allclose(standardized_errors, model_errors.astype(np.float64) / scale**2, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("units", ["model", "standardized"])
def test_calibration_comes_from_the_served_computation(servers, unit_bundles, units):
    """Export calibrates with the same errors the server answers: the calibration rows' served
    reconstruction_error scores are the ones the exporter recorded (and its quantiles describe)."""
    rows = unit_bundles["calibration_rows"]
    scores, _ = served_errors(servers[units], rows)
    recorded = unit_bundles[units].calibration_scores["reconstruction_error"]
    np.testing.assert_allclose(scores, recorded, rtol=1e-5)


def test_large_unit_column_no_longer_carries_the_error(servers, table_rows):
    """In model units the column with 1000x units carries most of the error; standardized, it
    carries about its share of the columns, since the model fits every column in standardized units."""
    model_share = large_column_share(served_errors(servers["model"], table_rows)[1].astype(np.float64))
    standardized_share = large_column_share(served_errors(servers["standardized"], table_rows)[1].astype(np.float64))
    assert model_share > 0.9
    assert standardized_share < 0.5
    assert standardized_share < model_share


def test_a_far_out_row_gets_a_finite_huge_standardized_score(servers, table_rows):
    x = table_rows[:2].copy()
    x[0, :] = np.finfo(np.float32).max / 2
    x[1, LARGE] = -np.finfo(np.float32).max / 2
    scores, errors = served_errors(servers["standardized"], x)
    assert np.isfinite(scores).all() and (scores > 1e60).all()
    assert np.isfinite(errors).all()  # beyond float32's range they are sent saturated, never infinite


def test_the_smallest_positive_scale_keeps_errors_finite(unit_bundles, table_rows):
    """Weights up to 1 / (1.4e-45)**2 (the smallest positive float32 scale) on float32's largest
    residuals: float64 keeps the errors finite, and 1e-3 (vae-train's floor) is far from that edge."""
    vae = copy.copy(load_bundle(unit_bundles["standardized"].path).vae)
    tiny = np.nextafter(np.float32(0), np.float32(1))
    vae.error_weights = reconstruction_error_weights("standardized", {"feature_scale": [tiny] * 6}, 6)
    x = table_rows[:3].copy()
    x[0, :] = np.finfo(np.float32).max
    x[1, :] = -np.finfo(np.float32).max
    (errors,) = reconstruction_errors_batch(vae, [x])
    assert errors.dtype == np.float64 and np.isfinite(errors).all() and errors.max() > 1e150
    floor = reconstruction_error_weights("standardized", {"feature_scale": [1e-3] * 6}, 6)
    np.testing.assert_allclose(floor, 1e6)


@pytest.mark.parametrize(
    "feature_scale, message",
    [
        (None, "has none"),
        ([1.0] * 5, "shape [5]"),
        ([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], "zero, negative or not a finite float32"),
        ([1.0, 1.0, 1e39, 1.0, 1.0, 1.0], "zero, negative or not a finite float32"),
        ([1.0, 1.0, "wide", 1.0, 1.0, 1.0], "not a list of numbers"),
    ],
)
def test_standardized_bundle_without_usable_feature_scale_is_refused(tmp_path, unit_bundles, feature_scale, message):
    bundle = shutil.copytree(unit_bundles["standardized"].path, tmp_path / "copy")
    path = bundle / MANIFEST_FILE
    document = json.loads(path.read_text())
    document["likelihood"]["parameters"].pop("feature_scale")
    if feature_scale is not None:
        document["likelihood"]["parameters"]["feature_scale"] = feature_scale
    path.write_text(json.dumps(seal(document)))
    with pytest.raises(BundleError, match=re.escape(message)) as error:
        load_bundle(bundle)
    assert "feature_scale" in str(error.value) and "reconstruction_units" in str(error.value)


def test_vae_train_table_bundle_serves_errors_in_its_declared_units(tmp_path, table_csv, table_rows):
    """``vae-train train --dataset csv:FILE --likelihood gaussian``: tables get errors in standardized
    units (issue 23's recipe), and the served errors are the squared residuals / feature_scale**2."""
    out = tmp_path / "csv-table"
    arguments = ["train", "--dataset", f"csv:{table_csv}", "--likelihood", "gaussian", "--out", str(out)]
    assert cli.main([*arguments, "--epochs", "10", "--iwae-k", "20", "--no-progress"]) == 0
    document = manifest_document(out)
    assert document["reconstruction_units"] == "standardized"  # the tables recipe (contract section 4)
    weights = 1.0 / feature_scale(document) ** 2
    server = start_server("--bundle", str(out), metrics=False)
    try:
        scores, errors = served_errors(server, table_rows)
        expected = independent_squared_residuals(server, table_rows) * weights
    finally:
        assert server.stop() == 0, server.log()
    np.testing.assert_allclose(errors, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores, expected.sum(axis=1), rtol=1e-4)
