"""Data sources behind one interface, and the deterministic train / validation / test split.

Every source yields float32 rows [examples, features] (row-major flattening of each example) with
optional integer labels. Rows are raw values, as clients will send them to the server (0-255
pixels, table rows as stored); the source also names the preprocessing that maps them into the
model's space, which the bundle records and the server applies. Sources: ``digits`` (embedded),
``fashion-mnist``, ``idx:DIR``, ``npy:PATH``.
"""

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_serve.core.manifest import Preprocessing
from vae_serve.core.preprocessing import IDENTITY, Affine, pixel_scaling, to_model
from vae_serve.export.npy_source import load_npy_source
from vae_serve.export.source_data import DataError, Part, SourceData
from vae_serve.export.split_plan import split_indices, too_few_validation_rows

__all__ = ["DataError", "Part", "SourceData", "SourceOptions", "Splits", "load_source", "make_splits"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = (
    "install the Debian package with `apt-get install -y dataset-fashion-mnist` "
    f"(it puts the IDX files under {FASHION_MNIST_DIR}), or pass --data-dir DIR"
)
# IDX type codes (http://yann.lecun.com/exdb/mnist/): third byte of the magic number.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Splits:
    train: Part
    validation: Part
    test: Part
    example_shape: tuple[int, ...]
    value_range: tuple[float | None, float | None]
    description: dict
    preprocessing: Preprocessing = IDENTITY

    def in_model_space(self) -> "Splits":
        """The same splits with every row mapped through the preprocessing: what the model trains on."""
        affine = Affine.of(self.preprocessing)

        def mapped(part: Part) -> Part:
            return Part(to_model(affine, part.x).astype(np.float32), part.y)

        return Splits(
            mapped(self.train),
            mapped(self.validation),
            mapped(self.test),
            self.example_shape,
            self.value_range,
            self.description,
            self.preprocessing,
        )


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array of its own shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in IDX_DTYPES:
                raise DataError(f"{path}: not an IDX file (bad magic number {header.hex()})")
            rank = header[3]
            shape = struct.unpack(f">{rank}I", stream.read(4 * rank))
            data = np.frombuffer(stream.read(), dtype=IDX_DTYPES[header[2]])
    except (OSError, EOFError, struct.error) as error:
        raise DataError(f"{path}: cannot be read as IDX ({error})") from None
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but holds {data.size} values")
    return data.reshape(shape)


def _find_idx(directory: Path, stem: str, hint: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: no {stem}[.gz] found; {hint}")


def _raw_rows(images: np.ndarray) -> tuple[np.ndarray, Preprocessing, tuple[float | None, float | None]]:
    """Rows of raw values; uint8 pixels are scaled to [0, 1] by the bundle, other types kept as they are."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    if images.dtype == np.uint8:
        return flat, pixel_scaling(255.0), (0.0, 255.0)
    return flat, IDENTITY, (None, None)


def load_idx_dir(directory: Path, hint: str, name: str) -> SourceData:
    """An MNIST-format directory: train/t10k images and labels, gzip-compressed or not."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; {hint}")
    arrays = {key: read_idx(_find_idx(directory, stem, hint)) for key, stem in IDX_FILES.items()}
    train_x, preprocessing, value_range = _raw_rows(arrays["train_x"])
    test_x, _, _ = _raw_rows(arrays["test_x"])
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(f"{directory}: {split} images and labels differ in count")
    return SourceData(
        train=Part(train_x, arrays["train_y"].astype(np.int64)),
        test=Part(test_x, arrays["test_y"].astype(np.int64)),
        example_shape=tuple(arrays["train_x"].shape[1:]),
        value_range=value_range,
        description={"source": name, "location": str(directory), "preprocessing": preprocessing.description},
        preprocessing=preprocessing,
    )


def load_digits_source() -> SourceData:
    """scikit-learn's bundled 8x8 digits (1,797 images, grey levels 0..16); the bundle scales them to [0, 1]."""
    from sklearn.datasets import load_digits  # imported here: only this source needs scikit-learn

    digits = load_digits()
    preprocessing = pixel_scaling(16.0)
    return SourceData(
        train=Part(digits.data.astype(np.float32), digits.target.astype(np.int64)),
        test=None,
        example_shape=(8, 8),
        value_range=(0.0, 16.0),
        description={
            "source": "digits",
            "location": "sklearn.datasets.load_digits",
            "preprocessing": preprocessing.description,
        },
        preprocessing=preprocessing,
    )


@dataclass(frozen=True)
class SourceOptions:
    """Flags that apply to some sources only: images:DIR (``channels``, ``size``), csv:/parquet: (``label_column``)."""

    channels: int | None = None
    size: tuple[int, int] | None = None
    label_column: str | None = None


def _check_options(spec: str, options: SourceOptions, labels_path: Path | None, data_dir: Path | None) -> None:
    if data_dir is not None and spec != "fashion-mnist":
        raise DataError("--data-dir applies only to --dataset fashion-mnist (idx:DIR, images:DIR name their folder)")
    if labels_path is not None and not spec.startswith("npy:"):
        raise DataError("--labels applies only to npy:PATH datasets")
    if (options.channels is not None or options.size is not None) and not spec.startswith("images:"):
        raise DataError("--channels and --size apply only to images:DIR datasets")
    if options.label_column is not None and not spec.startswith(("csv:", "parquet:")):
        raise DataError("--label-column applies only to csv:PATH and parquet:PATH datasets")


def load_source(
    spec: str, data_dir: Path | None = None, labels_path: Path | None = None, options: SourceOptions | None = None
) -> SourceData:
    """Resolve a ``--dataset`` value to its data. Raises ``DataError`` with a fix on failure."""
    options = options or SourceOptions()
    _check_options(spec, options, labels_path, data_dir)
    if spec == "digits":
        return load_digits_source()
    if spec == "fashion-mnist":
        return load_idx_dir(data_dir or FASHION_MNIST_DIR, FASHION_MNIST_HINT, "fashion-mnist")
    if spec.startswith("idx:"):
        return load_idx_dir(Path(spec[4:]), "point idx:DIR at a directory of MNIST-format IDX files", "idx")
    if spec.startswith("npy:"):
        return load_npy_source(Path(spec[4:]), labels_path)
    if spec.startswith("images:"):
        from vae_serve.export.image_source import load_images  # Pillow only where images are read

        return load_images(Path(spec[len("images:") :]), options.channels, options.size)
    for file_format in ("csv", "parquet"):
        if spec.startswith(f"{file_format}:"):
            from vae_serve.export.table_source import load_table  # pyarrow only where tables are read

            return load_table(Path(spec[len(file_format) + 1 :]), file_format, options.label_column)
    raise DataError(
        f"unknown dataset {spec!r}; use digits, fashion-mnist, idx:DIR, npy:PATH, images:DIR, csv:PATH or parquet:PATH"
    )


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """``"3"`` or ``"0,3"`` -> (3,) or (0, 3)."""
    if text is None or text.strip() == "":
        return None
    try:
        return tuple(sorted({int(item) for item in text.split(",")}))
    except ValueError:
        raise DataError(f"--classes takes comma-separated integer labels, got {text!r}") from None


def _check_classes_present(source: SourceData, classes: tuple[int, ...]) -> None:
    """``--classes`` must name at least one label the data has."""
    if source.train.y is None:
        return  # _keep_classes says that labels are needed
    present = np.unique(source.train.y)
    if not np.isin(classes, present).any():
        shown = ", ".join(map(str, present[:20])) + (", ..." if len(present) > 20 else "")
        raise DataError(f"--classes {','.join(map(str, classes))} selects no rows: the labels in the data are {shown}")


def _keep_classes(part: Part, classes: tuple[int, ...], what: str) -> Part:
    if part.y is None:
        raise DataError(f"--classes needs labels, and the {what} data has none (npy: pass --labels)")
    return part.select(np.isin(part.y, classes))


def make_splits(
    source: SourceData,
    classes: tuple[int, ...] | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    min_validation_rows: int = 1,
) -> Splits:
    """Deterministic split: a fixed permutation (``split_seed``) of the training rows gives the
    validation rows (and test rows, for sources without an official test split).

    With ``classes``, every split keeps only those labels: the model, its early stopping, its
    calibration and its test metrics all describe the "normal" data.

    Raises:
        DataError: a split is empty, or the validation split holds fewer than ``min_validation_rows``
            rows (the message says how many rows, or which --validation-fraction, would be enough).
    """
    if classes is not None:
        _check_classes_present(source, classes)
    test_index, validation_index, train_index = split_indices(
        len(source.train), source.test is not None, validation_fraction, test_fraction, split_seed
    )
    test = source.test if test_index is None else source.train.select(test_index)
    validation = source.train.select(validation_index)
    train = source.train.select(train_index)
    if classes is not None:
        train = _keep_classes(train, classes, "training")
        validation = _keep_classes(validation, classes, "validation")
        test = _keep_classes(test, classes, "test")
    # Checked before the empty splits: its message says how many rows would be enough.
    too_few = too_few_validation_rows(
        source, classes, validation_fraction, test_fraction, split_seed, min_validation_rows
    )
    if min_validation_rows > 1 and too_few is not None:
        raise DataError(too_few)
    for name, part in (("training", train), ("validation", validation), ("test", test)):
        if len(part) == 0:
            raise DataError(f"the {name} split is empty (classes={classes}); check --classes and the data")
    description = {
        **source.description,
        "classes": None if classes is None else list(classes),
        "split_seed": split_seed,
        "validation_fraction": validation_fraction,
        "examples": {"train": len(train), "validation": len(validation), "test": len(test)},
    }
    return Splits(train, validation, test, source.example_shape, source.value_range, description, source.preprocessing)
