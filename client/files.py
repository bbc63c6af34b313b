"""Local files for the CLI: read INPUT.npy, write .npy/.npz outputs and PNG image grids."""

import math
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
# Tiny images (8x8 digits) are enlarged to about this many pixels per side so the grid is viewable.
_MIN_CELL_PIXELS = 64


class InputError(Exception):
    """Bad local input: a missing or unreadable file, or an option that cannot apply (exit status 2)."""


def load_rows(path: str) -> np.ndarray:
    """Read a .npy file as float32 rows: [n, *shape] becomes [n, product(shape)].

    Args:
        path: The file; any integer, float or bool dtype, at least 2-D, at least one row.

    Returns:
        A float32 array [n, D].

    Raises:
        InputError: If the file is missing, not a .npy file, or holds the wrong kind of array.
    """
    try:
        with open(path, "rb") as file:
            magic = file.read(len(_NPY_MAGIC))
    except OSError as err:
        raise InputError(f"{path}: {err.strerror or err}") from None
    if magic.startswith(_ZIP_MAGIC):
        raise InputError(f"{path}: an .npz archive; expected a .npy file holding one array")
    if magic != _NPY_MAGIC:
        raise InputError(f"{path}: not a .npy file")
    try:
        # No pickles: an object array from an untrusted file could run code on load.
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{path}: dtype {array.dtype} is not a real number type")
    if array.ndim < 2 or len(array) == 0:
        raise InputError(f"{path}: shape {list(array.shape)}; expected [n, ...] with one row per example, n >= 1")
    return array.reshape(len(array), -1).astype(np.float32)


def save(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Call ``write`` on ``path`` opened for binary writing; returns ``path``.

    Through a file object so numpy does not append .npy/.npz: the file lands where the user said.

    Raises:
        InputError: If the file cannot be written.
    """
    try:
        with open(path, "wb") as file:
            write(file)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _matplotlib():
    """(Figure, FigureCanvasAgg), or InputError if matplotlib is missing.

    Imported here: matplotlib is slow to import and only --png needs it. The Agg canvas renders
    off-screen, with no GUI backend and no pyplot global state.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("--png needs matplotlib: pip install 'vae-serve[plot]'") from None
    return Figure, FigureCanvasAgg


def write_png_grid(path: str, images: np.ndarray, columns: int | None = None) -> str:
    """Tile grey images [n, height, width] with values in [0, 1] into one PNG, ``columns`` per row
    (default: a near-square grid).

    Returns:
        ``path``.

    Raises:
        InputError: If matplotlib is missing or the file cannot be written.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    count, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    gap = 1
    # Mid-grey gaps: distinct from both background (0) and ink (1).
    grid = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap), 0.5, dtype=np.float32)
    for index, image in enumerate(images):
        top = gap + (index // columns) * (height + gap)
        left = gap + (index % columns) * (width + gap)
        grid[top : top + height, left : left + width] = image
    scale = max(1, math.ceil(_MIN_CELL_PIXELS / max(height, width)))
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    figure = Figure(dpi=100)
    figure.figimage(grid, cmap="gray", vmin=0.0, vmax=1.0, origin="upper", resize=True)
    return save(path, FigureCanvasAgg(figure).print_png)


def write_png_heatmaps(path: str, images: np.ndarray, errors: np.ndarray, captions: list[str]) -> str:
    """Each input image beside the heat map of its per-pixel reconstruction error, one row each.

    Args:
        path: The PNG to write.
        images: Inputs [n, height, width], values in [0, 1].
        errors: Squared errors [n, height, width]; one colour scale for all rows, so rows compare.
        captions: One title per row (its score and decision).

    Returns:
        ``path``.

    Raises:
        InputError: If matplotlib is missing or the file cannot be written.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    count = len(images)
    figure = Figure(figsize=(4.4, 2.1 * count), dpi=100)
    axes = figure.subplots(count, 2, squeeze=False)
    top = float(errors.max()) or 1.0
    for row, (image, error, caption) in enumerate(zip(images, errors, captions, strict=True)):
        axes[row, 0].imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        shown = axes[row, 1].imshow(error, cmap="inferno", vmin=0.0, vmax=top)
        axes[row, 0].set_title(caption, fontsize=8, loc="left")
        for side in axes[row]:
            side.set_axis_off()
    figure.colorbar(shown, ax=axes[:, 1].tolist(), label="squared error", shrink=0.8)
    return save(path, FigureCanvasAgg(figure).print_png)
