"""The latent manifold map (issue 24): the principal plane of the posterior means that export records
in the manifest (``latent_map``), GetModelInfo's report of it, and ``vae-client manifold``, checked
against a real server and computations made here independently (eigh of the covariance, not an SVD;
scipy's normal quantiles, not the standard library's; the Decode rpc's own probabilities)."""

import json
import shutil

import numpy as np
import pytest
from matplotlib.image import imread
from pydantic import ValidationError
from scipy.stats import norm

from tests.server_process import start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.client.cli import main
from vae_serve.client.files import InputError
from vae_serve.client.manifold import choose_plane
from vae_serve.core.manifest import MANIFEST_FILE, Manifest, seal
from vae_serve.export.sources import load_source, make_splits, recorded_split

IMAGE_SIDE = 8  # the digits are 8 x 8
CELL_SCALE = 8  # files.write_png_grid enlarges 8-pixel tiles 8 times (to its 64-pixel minimum)


@pytest.fixture(scope="module")
def repository(tmp_path_factory, digits_bundle, gaussian_bundle):
    """digits and sensors as vae-train wrote them, and "older": digits as written before latent_map."""
    root = tmp_path_factory.mktemp("manifold")
    shutil.copytree(digits_bundle, root / "digits" / "1")
    shutil.copytree(gaussian_bundle, root / "sensors" / "1")
    older = shutil.copytree(digits_bundle, root / "older" / "1")
    document = json.loads((older / MANIFEST_FILE).read_text())
    del document["latent_map"]
    (older / MANIFEST_FILE).write_text(json.dumps(seal(document)))
    return root


@pytest.fixture(scope="module")
def manifold_server(repository):
    process = start_server("--model-repository", str(repository))
    yield process
    assert process.stop() == 0, process.log()


def info(server, model: str) -> vae_pb2.ModelInfo:
    return server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(model=vae_pb2.ModelRef(name=model)), timeout=30)


def array(message: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(message.data, dtype="<f4").reshape(tuple(message.shape))


def manifest_document(repository, model: str) -> dict:
    return json.loads((repository / model / "1" / MANIFEST_FILE).read_text())


def client(server, capsys, *args: str) -> tuple[int, str, str]:
    status = main(["--target", f"127.0.0.1:{server.port}", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_recorded_plane_is_the_pca_of_the_served_posterior_means(manifold_server, repository):
    document = manifest_document(repository, "digits")
    record = document["latent_map"]
    # vae-train calibrates on the validation rows of its recorded split, as clients send them.
    splits = make_splits(load_source("digits"), **recorded_split(document["training"]["data"]))
    rows = splits.validation.x.reshape(len(splits.validation.x), -1)
    request = vae_pb2.EncodeRequest(model=vae_pb2.ModelRef(name="digits"), x=tensor(rows))
    means = array(manifold_server.stub.Encode(request, timeout=60).z_mean).astype(np.float64)
    assert record["num_rows"] == len(rows) and "calibration rows" in record["rows"]
    np.testing.assert_allclose(record["mean"], means.mean(axis=0), atol=1e-6)
    variances, vectors = np.linalg.eigh(np.cov(means, rowvar=False))  # ascending; covariance ddof 1
    assert variances[-1] > variances[-2] > variances[-3]  # distinct: each direction is defined
    for rank, direction in enumerate(record["directions"]):
        expected = vectors[:, -1 - rank]
        expected = expected * np.sign(expected[np.argmax(np.abs(expected))])  # the recorded sign rule
        np.testing.assert_allclose(direction["unit"], expected, atol=1e-4)
        np.testing.assert_allclose(direction["sd"], np.sqrt(variances[-1 - rank]), rtol=1e-4)
        np.testing.assert_allclose(direction["variance_fraction"], variances[-1 - rank] / variances.sum(), rtol=1e-4)
    assert len(record["directions"]) == 2


def test_model_info_reports_the_plane_and_an_older_bundle_has_none(manifold_server, repository):
    record = manifest_document(repository, "digits")["latent_map"]
    reported = info(manifold_server, "digits").latent_map
    assert (reported.rows, reported.num_rows, list(reported.mean)) == (
        record["rows"],
        record["num_rows"],
        record["mean"],
    )
    assert [list(direction.unit) for direction in reported.directions] == [d["unit"] for d in record["directions"]]
    assert [direction.sd for direction in reported.directions] == [d["sd"] for d in record["directions"]]
    older = info(manifold_server, "older")
    assert not older.HasField("latent_map") and older.latent_dim == len(record["mean"])


def test_vae_client_info_shows_the_plane(manifold_server, repository, capsys):
    record = manifest_document(repository, "digits")["latent_map"]
    status, out, err = client(manifold_server, capsys, "--json", "info", "--model", "digits")
    assert status == 0, err
    assert json.loads(out)["latent_map"] == record
    status, out, err = client(manifold_server, capsys, "info", "--model", "digits")
    sd = record["directions"][0]["sd"]
    assert f"latent map   principal directions of {record['num_rows']} rows' posterior means: sd {sd:.3f}" in out
    status, out, err = client(manifold_server, capsys, "--json", "info", "--model", "older")
    assert status == 0 and json.loads(out)["latent_map"] is None


def test_a_latent_map_that_does_not_fit_the_latent_space_is_refused(repository):
    document = manifest_document(repository, "digits")
    document["latent_map"]["mean"] = document["latent_map"]["mean"][:-1]
    need = f"latent_map: mean and each direction need latent_dim = {document['latent_dim']} values"
    with pytest.raises(ValidationError, match=need):
        Manifest.model_validate(seal(document))


def expected_tiles(server, units: np.ndarray, grid: int) -> np.ndarray:
    """E[x|z] of each tile, by the Decode rpc, on the grid built here: row r, column c holds
    z = q[c] * units[0] + q[grid - 1 - r] * units[1], q the prior's quantiles."""
    quantiles = norm.ppf((np.arange(grid) + 0.5) / grid)
    z = np.array(
        [quantiles[c] * units[0] + quantiles[grid - 1 - r] * units[1] for r in range(grid) for c in range(grid)]
    )
    request = vae_pb2.DecodeRequest(model=vae_pb2.ModelRef(name="digits"), z=tensor(z))
    return array(server.stub.Decode(request, timeout=60).bernoulli.probs).reshape(grid, grid, IMAGE_SIDE, IMAGE_SIDE)


def png_tiles(path, grid: int) -> np.ndarray:
    """The tiles of a write_png_grid mosaic (1-pixel gaps, then enlarged CELL_SCALE times), one value
    per image pixel read at the centre of its enlarged block."""
    image = imread(path)[..., 0]  # grey: R = G = B
    side = (grid * (IMAGE_SIDE + 1) + 1) * CELL_SCALE
    assert image.shape == (side, side)
    tiles = np.empty((grid, grid, IMAGE_SIDE, IMAGE_SIDE))
    for row in range(grid):
        for column in range(grid):
            top, left = 1 + row * (IMAGE_SIDE + 1), 1 + column * (IMAGE_SIDE + 1)
            centres = (np.arange(IMAGE_SIDE) * CELL_SCALE) + CELL_SCALE // 2
            block = image[top * CELL_SCALE :, left * CELL_SCALE :]
            tiles[row, column] = block[np.ix_(centres, centres)]
    return tiles


def test_manifold_png_tiles_are_the_decoded_grid_on_the_principal_plane(manifold_server, tmp_path, capsys):
    units = np.array([list(d.unit) for d in info(manifold_server, "digits").latent_map.directions])
    png = tmp_path / "map.png"
    status, out, err = client(
        manifold_server, capsys, "manifold", "--model", "digits", "--grid", "5", "--png", str(png)
    )
    assert status == 0, err
    assert "principal plane" in out and f"wrote {png}" in out
    # 8-bit grey levels through the gray colormap, whose float rounding then truncates: within 2/255.
    tiles, expected = png_tiles(png, 5), expected_tiles(manifold_server, units, 5)
    np.testing.assert_allclose(tiles, expected, atol=2.5 / 255)
    # The tiles differ far more than that: a mosaic in another order (or of another plane) would fail.
    assert np.abs(tiles - expected[::-1]).max() > 0.1 and np.abs(tiles - expected[:, ::-1]).max() > 0.1


def test_manifold_on_two_dimensions_and_without_a_record(manifold_server, capsys):
    status, out, err = client(manifold_server, capsys, "--json", "manifold", "--model", "older", "--grid", "3")
    assert status == 0, err
    payload = json.loads(out)
    assert payload["plane"] == "dims 0,1" and "records no principal plane" in payload["note"]
    latent_dim = info(manifold_server, "older").latent_dim
    expected = expected_tiles(manifold_server, np.eye(latent_dim)[[0, 1]], 3).reshape(9, -1)
    np.testing.assert_allclose(payload["x_mean"], expected, atol=1e-6)
    np.testing.assert_allclose(payload["x_raw"], expected * 16, rtol=1e-6)  # digits: pixel / 16
    status, out, err = client(manifold_server, capsys, "--json", "manifold", "--model", "digits", "--dims", "3,5")
    assert status == 0 and json.loads(out)["plane"] == "dims 3,5"
    z = np.array(json.loads(out)["z"])
    assert np.count_nonzero(np.delete(z, [3, 5], axis=1)) == 0 and np.count_nonzero(z[:, [3, 5]]) > 0


def test_a_table_model_prints_its_rows_and_refuses_png(manifold_server, capsys, tmp_path):
    status, out, err = client(manifold_server, capsys, "--json", "manifold", "--model", "sensors", "--grid", "4")
    assert status == 0, err
    payload = json.loads(out)
    assert payload["plane"] == "principal" and np.array(payload["x_raw"]).shape == (16, 12)
    sensors = info(manifold_server, "sensors")
    request = vae_pb2.DecodeRequest(model=vae_pb2.ModelRef(name="sensors"), z=tensor(payload["z"]))
    means = array(manifold_server.stub.Decode(request, timeout=60).gaussian.mean)
    raw = means * np.array(sensors.preprocessing.scale, np.float32) + np.array(sensors.preprocessing.loc, np.float32)
    np.testing.assert_allclose(payload["x_raw"], raw, rtol=1e-6)
    status, out, err = client(
        manifold_server, capsys, "manifold", "--model", "sensors", "--png", str(tmp_path / "t.png")
    )
    assert status == 2 and "--png needs grey images; this model's input shape is [12]" in err
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "0"], "argument --grid: '0' is not an integer in [1, 100]"),
        (["--dims", "1,1"], "argument --dims: '1,1' names dimension 1 twice"),
        (["--dims", "0"], "argument --dims: '0' is not two latent dimensions I,J"),
        (["--dims", "0,1", "--plane", "principal"], "argument --plane: not allowed with argument --dims"),
    ],
)
def test_bad_arguments_are_refused_before_any_call(capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        main(["--target", "127.0.0.1:1", "manifold", *args])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_arguments_the_model_cannot_take_are_refused_clearly(manifold_server, capsys):
    last = info(manifold_server, "digits").latent_dim - 1
    status, _, err = client(manifold_server, capsys, "manifold", "--model", "digits", "--dims", "0,99")
    assert status == 2
    assert err.strip() == f"vae-client: --dims 0,99: dimension 99 is not a latent dimension of this model (0..{last})"
    status, _, err = client(manifold_server, capsys, "manifold", "--model", "older", "--plane", "principal")
    assert status == 2 and "older:1 records no principal plane" in err and "use --dims I,J" in err
    assert "Traceback" not in err


def test_one_latent_dimension_has_no_plane():
    # GetModelInfo of a model with L = 1 (its record holds one direction): refused before any Decode.
    one = vae_pb2.ModelInfo(latent_dim=1, latent_map=vae_pb2.LatentMap(directions=[vae_pb2.LatentDirection(unit=[1])]))
    for dims, plane in ((None, None), (None, "principal"), ((0, 1), None)):
        with pytest.raises(InputError, match="one latent dimension: a manifold map needs two"):
            choose_plane(one, dims, plane)
