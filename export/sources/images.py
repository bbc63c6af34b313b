"""``images:DIR``: a folder of PNG/JPEG images, one subfolder per class optionally.

Returns ``SourceData`` with raw rows, as clients will send them to the server, and no official
test split (``make_splits`` makes one). Anything the loader cannot represent faithfully is refused
with a ``DataError`` that names the file and says how to fix it: a silently skipped or altered file
would train a model on data the user never saw.

PNG and JPEG (by content), 8 bits per channel, rows are pixels 0..255 flattened in channel-first
order [C, H, W] (the PyTorch convention the conv models take); the bundle records pixel / 255.
Refused: other file extensions, 16-bit or float images, CMYK and other modes without a faithful
8-bit grey/RGB form, animated images, EXIF-rotated images, images with real transparency (see
``_drop_alpha``), and images of more than ``MAX_IMAGE_PIXELS`` pixels, which are refused before they
are decoded (Pillow's own decompression-bomb warning and error never reach the user). Pillow's
other warnings are dropped: every case they warn of is either refused here or harmless.
"""

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vae_serve.core.preprocessing import pixel_scaling
from vae_serve.export.sources.base import DataError, Part, SourceData, SourceOptions

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")  # Pillow decoders tried; no other format parser sees the files
EXIF_ORIENTATION = 0x0112
# Modes with a faithful 8-bit grey or RGB form. Not here: "I;16*" (16-bit; Pillow's conversion
# to "L" clips at 255 instead of scaling), "I" and "F" (32-bit), "CMYK" (no ICC-aware conversion).
CONVERTIBLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
GREY_MODES = ("1", "L", "LA")  # "P" counts as colour: PNG palettes are a colour type
MIN_EXAMPLES = 10
# Largest image read, in pixels: Pillow's own decompression-bomb threshold (89,478,485, about
# 9,459 x 9,459), above which it warns. An image that large is refused by name before it is decoded
# (a 12000 x 12000 image is 432 MB as RGB): a model is trained on far smaller images (--size).
MAX_IMAGE_PIXELS = 89_478_485


def load(location: str, options: SourceOptions) -> SourceData:
    """``images:DIR``, with ``--channels`` and ``--size``: see ``load_images``."""
    return load_images(Path(location), options.channels, options.size)


def load_images(directory: Path, channels: int | None = None, size: tuple[int, int] | None = None) -> SourceData:
    """A folder of PNG/JPEG images: all directly in ``directory`` (no labels), or one subfolder per class.

    Args:
        directory: the folder; hidden entries (names starting with ".") are ignored.
        channels: 1 (grey) or 3 (RGB); None infers 1 if every image is grey, else 3.
        size: (height_px, width_px) to resize every image to; None requires all images to share one size.

    Returns:
        Rows of raw pixels 0..255 (float32, [C, H, W] flattened), labels = index of the class
        folder in sorted name order, ``pixel_scaling(255)`` as the bundle's preprocessing.

    Raises:
        DataError: the folder, an option or a file cannot be used; the message names it and the fix.
    """
    _check_image_options(channels, size)
    files, labels, class_names = _list_images(Path(directory))
    images = [_read_image(path, size) for path in files]
    if size is None:
        _check_same_size(files, images)
    if channels is None:
        channels = 1 if all(image.mode == "L" for image in images) else 3
    rows = np.stack([_chw_pixels(image, channels) for image in images]).astype(np.float32)
    width_px, height_px = images[0].size
    preprocessing = pixel_scaling(255.0)
    description = {
        "source": "images",
        "location": str(directory),
        "preprocessing": preprocessing.description,
        "channels": channels,
        "size": [height_px, width_px],
    }
    if class_names is not None:
        description["class_names"] = class_names
    return SourceData(
        train=Part(rows, None if labels is None else np.asarray(labels, np.int64)),
        test=None,
        example_shape=(channels, height_px, width_px),
        value_range=(0.0, 255.0),
        description=description,
        preprocessing=preprocessing,
    )


def _check_image_options(channels: int | None, size: tuple[int, int] | None) -> None:
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise DataError(f"size must be (height, width) in pixels, both >= 1, got {size!r}")


def _visible(directory: Path) -> list[Path]:
    return sorted(entry for entry in directory.iterdir() if not entry.name.startswith("."))


def _check_image_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path}: a folder inside a class folder; class folders must hold only image files")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(
            f"{path}: not an image file (only {', '.join(IMAGE_EXTENSIONS)} are read); move it out of the folder"
        )


def _list_images(directory: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The image files in sorted order, with class labels and names when the layout has class folders."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; images:DIR takes a folder of PNG/JPEG files")
    entries = _visible(directory)
    folders = [entry for entry in entries if entry.is_dir()]
    files = [entry for entry in entries if not entry.is_dir()]
    if folders and files:
        raise DataError(
            f"{directory}: mixes files ({files[0].name}) and class folders ({folders[0].name}); "
            "put every image in a class folder, or all of them directly in the folder"
        )
    labels, class_names = None, None
    if folders:
        labels, class_names = [], [folder.name for folder in folders]
        for label, folder in enumerate(folders):
            members = _visible(folder)
            if not members:
                raise DataError(f"{folder}: empty class folder; add its images or remove it")
            files.extend(members)
            labels.extend([label] * len(members))
    for path in files:
        _check_image_file(path)
    if len(files) < MIN_EXAMPLES:
        raise DataError(f"{directory}: holds {len(files)} images; at least {MIN_EXAMPLES} are needed")
    return files, labels, class_names


def _png_bit_depth(path: Path) -> int:
    """Bits per channel from the IHDR chunk (byte 24 of every PNG file, by the PNG specification).

    Read here because Pillow opens 16-bit RGB PNGs as 8-bit "RGB" without saying so.
    """
    with open(path, "rb") as stream:
        header = stream.read(25)
    return header[24] if len(header) == 25 else 0


def _read_image(path: Path, size: tuple[int, int] | None):
    """One image as a Pillow image in mode "L" or "RGB", resized to ``size`` if given."""
    from PIL import Image  # imported here: only this source needs Pillow

    try:
        with _quiet_pillow(), Image.open(path, formats=IMAGE_FORMATS) as image:
            _check_pixels(path, image.size)
            image.load()
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            frames = getattr(image, "n_frames", 1)
            is_16_bit = image.format == "PNG" and _png_bit_depth(path) == 16
            mode = image.mode
            if frames > 1:
                raise DataError(f"{path}: animated or multi-frame ({frames} frames); save one frame as PNG/JPEG")
            if orientation != 1:
                raise DataError(
                    f"{path}: EXIF-rotated (Orientation {orientation}): apply the rotation "
                    "(e.g. PIL.ImageOps.exif_transpose) and save it again"
                )
            if is_16_bit or mode not in CONVERTIBLE_MODES:
                raise DataError(
                    f"{path}: mode {mode}{' (16 bits per channel)' if is_16_bit else ''} has no faithful "
                    "8-bit grey or RGB form; save it as 8-bit grey or RGB"
                )
            opaque = _drop_alpha(path, image)
    except Image.DecompressionBombError:  # Pillow refuses images over twice its limit as it opens them
        raise DataError(
            f"{path}: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the {MAX_IMAGE_PIXELS:,} vae-train reads "
            "(a guard against decompression bombs); shrink the image and save it again"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports truncated and corrupt files as OSError (UnidentifiedImageError included),
        # some decoders as SyntaxError or ValueError.
        raise DataError(f"{path}: cannot be read as PNG or JPEG ({error}); replace or remove the file") from None
    if size is not None and opaque.size != (size[1], size[0]):
        # Bilinear: Pillow widens the kernel when shrinking (antialiased), the kernel is never
        # negative so no ringing pushes values out of the image's range (as Lanczos can), and it
        # matches torchvision's default Resize, which a client preparing inputs is likely to use.
        opaque = opaque.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return opaque


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Pillow's warnings dropped while one image is read. Its decompression-bomb warning is one of
    them: ``_check_pixels`` refuses those images itself, with a message that says what to do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image over ``MAX_IMAGE_PIXELS`` by its header, before its pixels are decoded."""
    width_px, height_px = size
    if width_px * height_px > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{path}: {height_px}x{width_px} pixels ({width_px * height_px:,}), over the {MAX_IMAGE_PIXELS:,} "
            "vae-train reads (a guard against decompression bombs); shrink the image and save it again"
        )


def _drop_alpha(path: Path, image):
    """``image`` as "L" or "RGB"; an alpha channel (or transparency key) is dropped only if fully opaque.

    Dropping real transparency would expose whatever colour sits under the transparent pixels
    (often black or garbage), and compositing onto a background would invent one: either way the
    model learns pixels no one sees. So images with real transparency are refused.
    """
    target = "L" if image.mode in GREY_MODES else "RGB"
    if image.mode in ("LA", "RGBA", "PA") or "transparency" in image.info:
        with_alpha = image.convert(target + "A")
        if with_alpha.getchannel("A").getextrema()[0] < 255:
            raise DataError(f"{path}: has transparent pixels; flatten it onto a background and save it again")
        return with_alpha.convert(target)
    return image.convert(target)


def _check_same_size(files: list[Path], images: list) -> None:
    width_px, height_px = images[0].size
    for path, image in zip(files, images, strict=True):
        if image.size != (width_px, height_px):
            raise DataError(
                f"{path}: {image.size[1]}x{image.size[0]} pixels (height x width), but {files[0]} is "
                f"{height_px}x{width_px}; pass --size HEIGHT,WIDTH to resize every image"
            )


def _chw_pixels(image, channels: int) -> np.ndarray:
    """Pixels flattened channel-first; "RGB" -> "L" uses Pillow's ITU-R 601-2 luma (channels=1 asked for it)."""
    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return pixels.reshape(-1) if channels == 1 else pixels.transpose(2, 0, 1).reshape(-1)
