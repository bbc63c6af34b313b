"""The file sources: folders of images and CSV/Parquet tables, read from small files made here."""

import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pytest
from PIL import Image

from vae_serve.export.sources import DataError, make_splits
from vae_serve.export.sources.images import load_images
from vae_serve.export.sources.tables import load_table


def grey_pixels(seed: int, height_px: int = 4, width_px: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height_px, width_px), dtype=np.uint8)


def write_grey_folder(directory, count: int = 10, suffix: str = ".png") -> list[np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = [grey_pixels(index) for index in range(count)]
    for index, array in enumerate(arrays):
        Image.fromarray(array).save(directory / f"image_{index:02d}{suffix}")
    return arrays


def write_png_16_bit_rgb(path, height_px: int = 4, width_px: int = 5) -> None:
    """A 16-bit RGB PNG written by the PNG specification (Pillow cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    scanline = b"\x00" + np.full((width_px, 3), 0x1234, dtype=">u2").tobytes()  # filter byte 0, then pixels
    header = struct.pack(">IIBBBBB", width_px, height_px, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanline * height_px)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


# --- images: what is read ---


def test_grey_folder_gives_raw_pixels_in_sorted_file_order(tmp_path):
    arrays = write_grey_folder(tmp_path / "digits")
    (tmp_path / "digits" / ".DS_Store").write_text("ignored: hidden files are not data")
    source = load_images(tmp_path / "digits")
    assert source.example_shape == (1, 4, 5)
    assert source.train.x.dtype == np.float32
    np.testing.assert_array_equal(source.train.x, np.stack([array.reshape(-1) for array in arrays]))
    assert source.train.y is None and source.test is None
    assert source.value_range == (0.0, 255.0)
    assert source.preprocessing.scale == [255.0] and source.preprocessing.loc == [0.0]
    assert source.description == {
        "source": "images",
        "location": str(tmp_path / "digits"),
        "preprocessing": "pixel / 255",
        "channels": 1,
        "size": [4, 5],
    }
    assert len(make_splits(source).test) == 2


def test_rgb_rows_are_channel_first(tmp_path):
    # Each channel holds its own constant plus the pixel position, so any other order shows.
    height_px, width_px = 2, 3
    position = np.arange(height_px * width_px, dtype=np.uint8).reshape(height_px, width_px)
    pixels = np.stack([position, position + 100, position + 200], axis=-1)
    for index in range(10):
        Image.fromarray(pixels, "RGB").save(tmp_path / f"{index}.png")
    source = load_images(tmp_path)
    assert source.example_shape == (3, 2, 3)
    expected = np.concatenate([position.reshape(-1), position.reshape(-1) + 100, position.reshape(-1) + 200])
    np.testing.assert_array_equal(source.train.x[0], expected)
    assert source.description["channels"] == 3


def test_grey_and_colour_mixed_infer_three_channels_and_channels_1_takes_luma(tmp_path):
    write_grey_folder(tmp_path, count=9)
    Image.new("RGB", (5, 4), (255, 0, 0)).save(tmp_path / "red.png")
    assert load_images(tmp_path).example_shape == (3, 4, 5)
    grey = load_images(tmp_path, channels=1)
    assert grey.example_shape == (1, 4, 5)
    np.testing.assert_array_equal(grey.train.x[-1], np.full(20, 76.0))  # ITU-R 601-2: 255 * 299/1000


def test_class_folders_give_labels_in_sorted_name_order(tmp_path):
    write_grey_folder(tmp_path / "cat", count=6, suffix=".JPG")  # extensions are case-insensitive
    write_grey_folder(tmp_path / "ant", count=5, suffix=".jpeg")
    source = load_images(tmp_path)
    assert source.description["class_names"] == ["ant", "cat"]
    np.testing.assert_array_equal(source.train.y, [0] * 5 + [1] * 6)
    assert source.train.y.dtype == np.int64
    assert source.train.x.shape == (11, 20)


def test_size_resizes_every_image(tmp_path):
    for index in range(10):
        Image.new("L", (5 + index, 4 + index), 200).save(tmp_path / f"{index}.png")
    source = load_images(tmp_path, size=(3, 6))
    assert source.example_shape == (1, 3, 6)
    assert source.description["size"] == [3, 6]
    np.testing.assert_array_equal(source.train.x, 200.0)  # bilinear keeps a flat image flat


def test_opaque_alpha_and_palette_images_are_read(tmp_path):
    write_grey_folder(tmp_path, count=8)
    Image.new("RGBA", (5, 4), (10, 20, 30, 255)).save(tmp_path / "opaque.png")
    palette = Image.new("P", (5, 4), 1)
    palette.putpalette([0, 0, 0, 40, 50, 60])
    palette.save(tmp_path / "palette.png", transparency=0)  # a transparency key no pixel uses
    source = load_images(tmp_path)
    np.testing.assert_array_equal(source.train.x[-2].reshape(3, -1)[:, 0], [10, 20, 30])
    np.testing.assert_array_equal(source.train.x[-1].reshape(3, -1)[:, 0], [40, 50, 60])


# --- images: what is refused, and the message names the file ---


def exif_rotated(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.new("RGB", (5, 4)).save(path.with_suffix(".jpg"), exif=exif)
    return path.with_suffix(".jpg"), "EXIF-rotated"


def truncated(path):
    Image.fromarray(grey_pixels(0)).save(path)
    path.write_bytes(path.read_bytes()[:-30])
    return path, "cannot be read"


def not_an_image(path):
    path.with_suffix(".png").write_text("not a picture")
    return path.with_suffix(".png"), "cannot be read"


def stray_text(path):
    path.with_suffix(".txt").write_text("notes")
    return path.with_suffix(".txt"), "not an image file"


def grey_16_bit(path):
    Image.fromarray(np.full((4, 5), 40000, dtype=np.uint16)).save(path)
    return path, "I;16"


def rgb_16_bit(path):
    write_png_16_bit_rgb(path)
    return path, "16 bits per channel"


def transparent(path):
    Image.new("RGBA", (5, 4), (1, 2, 3, 128)).save(path)
    return path, "transparent"


def cmyk(path):
    Image.new("CMYK", (5, 4)).save(path.with_suffix(".jpg"))
    return path.with_suffix(".jpg"), "CMYK"


def animated(path):
    frames = [Image.new("L", (5, 4), value) for value in (0, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path, "2 frames"


def other_size(path):
    Image.new("L", (6, 4)).save(path)
    return path, "--size"


@pytest.mark.parametrize(
    "make_bad_file",
    [
        exif_rotated,
        truncated,
        not_an_image,
        stray_text,
        grey_16_bit,
        rgb_16_bit,
        transparent,
        cmyk,
        animated,
        other_size,
    ],
)
def test_bad_image_files_are_refused_by_name(tmp_path, make_bad_file):
    write_grey_folder(tmp_path, count=10)
    bad_path, expected = make_bad_file(tmp_path / "zz_bad.png")
    with pytest.raises(DataError) as error:
        load_images(tmp_path)
    assert bad_path.name in str(error.value)
    assert expected in str(error.value)


def test_bad_layouts_are_refused(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds 0 images"):
        load_images(tmp_path / "empty")
    write_grey_folder(tmp_path / "few", count=9)
    with pytest.raises(DataError, match="holds 9 images; at least 10"):
        load_images(tmp_path / "few")
    write_grey_folder(tmp_path / "mixed" / "cats", count=10)
    Image.new("L", (5, 4)).save(tmp_path / "mixed" / "loose.png")
    with pytest.raises(DataError, match=r"mixes files \(loose.png\) and class folders \(cats\)"):
        load_images(tmp_path / "mixed")
    write_grey_folder(tmp_path / "classes" / "cats", count=10)
    (tmp_path / "classes" / "dogs").mkdir()
    with pytest.raises(DataError, match="dogs: empty class folder"):
        load_images(tmp_path / "classes")
    with pytest.raises(DataError, match="channels must be 1"):
        load_images(tmp_path / "classes", channels=2)


# --- tables ---


def write_csv(path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, "a,label,b", [f"{index},{index % 3},{index * 0.5}" for index in range(12)])
    source = load_table(path, "csv", label_column="label")
    assert source.example_shape == (2,)
    assert source.train.x.dtype == np.float32
    np.testing.assert_array_equal(source.train.x[3], [3.0, 1.5])
    np.testing.assert_array_equal(source.train.y, np.arange(12) % 3)
    assert source.train.y.dtype == np.int64
    assert source.value_range == (0.0, 11.0)
    assert source.preprocessing.loc == [0.0] and source.preprocessing.scale == [1.0]
    assert source.description["columns"] == ["a", "b"]
    assert source.description["label_column"] == "label"
    assert source.description["source"] == "csv"
    assert source.test is None


def test_parquet_with_integer_valued_float_labels(tmp_path):
    path = tmp_path / "table.parquet"
    table = pa.table({"x": np.linspace(-1, 1, 10), "y": np.arange(10, dtype=np.int32), "kind": np.arange(10) % 2 * 1.0})
    pyarrow.parquet.write_table(table, path)
    source = load_table(path, "parquet", label_column="kind")
    np.testing.assert_array_equal(source.train.y, np.arange(10) % 2)
    np.testing.assert_allclose(source.train.x[:, 0], np.linspace(-1, 1, 10))
    assert source.value_range == (-1.0, 9.0)
    assert source.description["source"] == "parquet"
    assert load_table(path, "parquet").example_shape == (3,)  # no label column: every column is a feature


def good_rows(count: int = 12) -> list[str]:
    return [f"{index},{index + 1}" for index in range(count)]


def test_non_numeric_cell_is_named_by_row_and_column(tmp_path):
    path = tmp_path / "table.csv"
    rows = good_rows()
    rows[2] = "2,abc"  # data row 3 (the header is not counted)
    write_csv(path, "a,b", rows)
    with pytest.raises(DataError) as error:
        load_table(path, "csv")
    message = str(error.value)
    assert "table.csv" in message and "column 'b'" in message and "data row 3" in message and "'abc'" in message


@pytest.mark.parametrize("cell", ["", "NA", "nan"])
def test_missing_value_is_named_by_row_and_column(tmp_path, cell):
    path = tmp_path / "table.csv"
    rows = good_rows()
    rows[4] = f"{cell},5"
    rows[6] = f"6,{cell}"  # a later row with a missing value: the earliest is reported
    write_csv(path, "a,b", rows)
    with pytest.raises(DataError, match=r"table.csv: column 'a', data row 5: is a missing value"):
        load_table(path, "csv")


def test_nan_and_infinity_in_parquet_are_refused(tmp_path):
    path = tmp_path / "table.parquet"
    for value, expected in ((np.nan, "is NaN"), (np.inf, "is infinite")):
        column = np.arange(10.0)
        column[7] = value
        pyarrow.parquet.write_table(pa.table({"a": column}), path)
        with pytest.raises(DataError, match=rf"table.parquet: column 'a', data row 8: {expected}"):
            load_table(path, "parquet")


def test_bad_label_columns_are_refused(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, "a,b", good_rows())
    with pytest.raises(DataError, match=r"no column 'label'; the columns are \['a', 'b'\]"):
        load_table(path, "csv", label_column="label")
    rows = good_rows()
    rows[1] = "1,1.5"
    write_csv(path, "a,b", rows)
    with pytest.raises(DataError, match=r"column 'b', data row 2: label 1.5 is not an integer"):
        load_table(path, "csv", label_column="b")
    rows[1] = "1,cat"
    write_csv(path, "a,b", rows)
    with pytest.raises(DataError, match=r"column 'b', data row 2: 'cat' is not a number; labels must be integers"):
        load_table(path, "csv", label_column="b")


def test_booleans_and_other_types_are_refused(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, "a,flag", [f"{index},{'true' if index % 2 else 'false'}" for index in range(12)])
    with pytest.raises(DataError, match=r"column 'flag', data row 1: holds true/false"):
        load_table(path, "csv")
    write_csv(path, "a,day", [f"{index},2024-01-{index + 1:02d}" for index in range(12)])
    with pytest.raises(DataError, match=r"column 'day', data row 1: .* is date32\[day\], not a number"):
        load_table(path, "csv")


def test_unusable_tables_are_refused_by_name(tmp_path):
    with pytest.raises(DataError, match=r"missing\.csv: no such file"):
        load_table(tmp_path / "missing.csv", "csv")
    path = tmp_path / "table.csv"
    write_csv(path, "a,b", good_rows(9))
    with pytest.raises(DataError, match="9 data rows"):
        load_table(path, "csv")
    write_csv(path, "a", [str(index) for index in range(12)])
    with pytest.raises(DataError, match="0 feature columns"):
        load_table(path, "csv", label_column="a")
    write_csv(path, "a,b", [*good_rows(), "1,2,3"])
    with pytest.raises(DataError, match=r"table\.csv: cannot be read as CSV"):
        load_table(path, "csv")
    with pytest.raises(DataError, match=r"table\.csv: cannot be read as PARQUET"):
        load_table(path, "parquet")
