"""``fashion-mnist`` and ``idx:DIR``: a folder of MNIST-format IDX files (train/t10k images and labels,
gzip-compressed or not)."""

import gzip
import struct
from pathlib import Path

import numpy as np

from vae_serve.core.manifest import Preprocessing
from vae_serve.core.preprocessing import IDENTITY, pixel_scaling
from vae_serve.export.sources.base import DataError, Part, SourceData, SourceOptions

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = (
    "install the Debian package with `apt-get install -y dataset-fashion-mnist` "
    f"(it puts the IDX files under {FASHION_MNIST_DIR}), or pass --data-dir DIR"
)
IDX_DIR_HINT = "point idx:DIR at a directory of MNIST-format IDX files"
# IDX type codes (http://yann.lecun.com/exdb/mnist/): third byte of the magic number.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def load_fashion_mnist(location: str, options: SourceOptions) -> SourceData:
    """``fashion-mnist``: the IDX files of the Debian package, or of ``--data-dir``."""
    return load_idx_dir(options.data_dir or FASHION_MNIST_DIR, FASHION_MNIST_HINT, "fashion-mnist")


def load_idx(location: str, options: SourceOptions) -> SourceData:
    """``idx:DIR``: any folder of MNIST-format IDX files."""
    return load_idx_dir(Path(location), IDX_DIR_HINT, "idx")


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
