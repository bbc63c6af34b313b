"""Data sources and the deterministic split."""

import gzip
import struct

import numpy as np
import pytest

from vae_serve.export import cli
from vae_serve.export.sources import DataError, Part, SourceData, load_source, make_splits, parse_classes
from vae_serve.export.sources.idx import FASHION_MNIST_HINT, read_idx


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """Write an IDX file exactly as the format's specification describes it (independent of read_idx)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(50, 6, 5)),
        "train-labels-idx1-ubyte": np.arange(50) % 4,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(12, 6, 5)),
        "t10k-labels-idx1-ubyte": np.arange(12) % 4,
    }
    for index, (stem, array) in enumerate(files.items()):
        compress = index % 2 == 0  # both the .gz and the plain form must be found
        write_idx(tmp_path / (stem + (".gz" if compress else "")), array, compress)
    return tmp_path, files


def test_idx_directory_loads_raw_rows_that_the_bundle_scales(idx_dir):
    directory, files = idx_dir
    source = load_source(f"idx:{directory}")
    assert source.example_shape == (6, 5)
    np.testing.assert_array_equal(source.train.x, files["train-images-idx3-ubyte"].reshape(50, 30))
    np.testing.assert_array_equal(source.test.y, files["t10k-labels-idx1-ubyte"])
    assert source.value_range == (0.0, 255.0) and source.preprocessing.scale == [255.0]
    model_space = make_splits(source).in_model_space()
    expected = files["t10k-images-idx3-ubyte"].reshape(-1, 30) / 255.0
    np.testing.assert_allclose(model_space.test.x, expected, rtol=1e-6)


def test_bad_idx_magic_is_a_clear_error(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x50\x4b\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_fashion_mnist_without_files_names_the_package(tmp_path):
    with pytest.raises(DataError) as error:
        load_source("fashion-mnist", data_dir=tmp_path)
    assert "apt-get install -y dataset-fashion-mnist" in str(error.value)
    assert "train-images-idx3-ubyte" in str(error.value)
    assert FASHION_MNIST_HINT in str(error.value)


def test_fashion_mnist_cli_error(tmp_path, capsys):
    exit_code = cli.main(
        ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert exit_code == 2
    assert "dataset-fashion-mnist" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_digits_is_embedded_raw_and_scaled_by_the_bundle():
    source = load_source("digits")
    assert source.train.x.shape == (1797, 64) and source.test is None
    assert source.train.x.min() == 0.0 and source.train.x.max() == 16.0
    assert (source.preprocessing.loc, source.preprocessing.scale) == ([0.0], [16.0])
    model_space = make_splits(source).in_model_space()
    assert model_space.train.x.min() == 0.0 and model_space.train.x.max() == 1.0


def numbered_source(count: int, classes: int = 3) -> SourceData:
    """Rows whose single feature is their own index, so splits can be checked for overlap."""
    rows = np.arange(count, dtype=np.float32).reshape(-1, 1)
    return SourceData(Part(rows, np.arange(count) % classes), None, (1,), (None, None), {"preprocessing": "none"})


def test_split_is_deterministic_disjoint_and_complete():
    first = make_splits(numbered_source(1000), split_seed=5)
    second = make_splits(numbered_source(1000), split_seed=5)
    ids = [set(part.x[:, 0].astype(int)) for part in (first.train, first.validation, first.test)]
    assert [len(part) for part in ids] == [720, 80, 200]
    assert set.union(*ids) == set(range(1000)) and sum(map(len, ids)) == 1000
    np.testing.assert_array_equal(first.validation.x, second.validation.x)
    other_seed = make_splits(numbered_source(1000), split_seed=6)
    assert not np.array_equal(first.validation.x, other_seed.validation.x)


def test_classes_keep_only_those_labels_in_every_split():
    splits = make_splits(numbered_source(900), classes=(0, 2))
    for part in (splits.train, splits.validation, splits.test):
        assert set(np.unique(part.y)) == {0, 2}
    assert splits.description["classes"] == [0, 2]


def test_parse_classes():
    assert parse_classes("3") == (3,)
    assert parse_classes("3,0,3") == (0, 3)
    assert parse_classes(None) is None
    with pytest.raises(DataError, match="comma-separated integer"):
        parse_classes("shirt")


def test_npy_source_with_labels(sensor_npy):
    records, labels = sensor_npy
    source = load_source(f"npy:{records}", labels_path=labels)
    assert source.train.x.shape == (600, 12) and source.train.y.shape == (600,)
    splits = make_splits(source, classes=(1,))
    assert set(splits.train.y) == {1}


def test_npy_rejects_non_finite_values(tmp_path):
    values = np.ones((20, 3), dtype=np.float32)
    values[4, 1] = np.nan
    np.save(tmp_path / "bad.npy", values)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_source(f"npy:{tmp_path / 'bad.npy'}")


def test_classes_without_labels_is_a_clear_error(sensor_npy):
    records, _ = sensor_npy
    with pytest.raises(DataError, match="--classes needs labels"):
        make_splits(load_source(f"npy:{records}"), classes=(1,))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_source("mnist")
