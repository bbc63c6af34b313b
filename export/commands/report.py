"""The training report written beside a bundle (``DIR-report/``): PNG pictures of how training went
and of what the exported model does, made from the ONNX graphs the server will run.

- training.png: train and validation ELBO per epoch, the best epoch marked, and the rows of each split;
- samples.png: E[x | z] for z drawn from the prior;
- reconstructions.png: validation inputs above their posterior-mean reconstructions;
- scores.png: each anomaly score's distribution on the validation split, with the threshold at the
  default 1 % false-positive rate.
Feature vectors that are not images are drawn as heat maps (rows x features).
"""

import math
from pathlib import Path

import numpy as np

from vae_serve.core.calibration import QUANTILE_LEVELS
from vae_serve.core.manifest import Calibration
from vae_serve.core.runtime import OnnxVae

GRID_SIDE = 8
REPORT_FALSE_POSITIVE_RATE = 0.01
# The pictures a report folder holds, and nothing else.
REPORT_PICTURES = ("training", "samples", "reconstructions", "scores")
REPORT_FILES = frozenset(f"{name}.png" for name in REPORT_PICTURES)


def report_dir_for(bundle: Path) -> Path:
    """Beside the bundle, not in it: the bundle's files are sealed by its manifest."""
    return bundle.with_name(f"{bundle.name}-report")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display
    import matplotlib.pyplot as plt

    return plt


def _image_layout(example_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(channels, height, width) of grey [H, W] / [1, H, W] or colour [3, H, W] examples; else None."""
    if len(example_shape) == 2:
        return (1, *example_shape)
    if len(example_shape) == 3 and example_shape[0] in (1, 3):
        return tuple(example_shape)
    return None


def _draw_rows(axes, rows: np.ndarray, example_shape: tuple[int, ...], title: str) -> None:
    """Images in a grid when examples are images (grey or [3, H, W] colour), else one heat map of
    rows x features. Rows are in the model's space, [0, 1] for images."""
    layout = _image_layout(tuple(example_shape))
    if layout is not None:
        channels, height, width = layout
        count = len(rows)
        columns = min(count, GRID_SIDE)
        lines = -(-count // columns)
        canvas = np.ones((lines * (height + 1), columns * (width + 1), channels))
        for index, row in enumerate(rows):
            top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
            canvas[top : top + height, left : left + width] = row.reshape(layout).transpose(1, 2, 0)
        if channels == 1:
            axes.imshow(canvas[..., 0], cmap="gray_r", interpolation="nearest")
        else:
            axes.imshow(np.clip(canvas, 0.0, 1.0), interpolation="nearest")
        axes.set_axis_off()
    else:
        image = axes.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest")
        axes.set_xlabel("feature")
        axes.set_ylabel("row")
        axes.figure.colorbar(image, ax=axes)
    axes.set_title(title)


def rows_title(rows: dict[str, int]) -> str:
    """``"rows: train 225, validation 25, test 0"``: the split the model was trained and checked on."""
    return "rows: " + ", ".join(f"{split} {count}" for split, count in rows.items())


def _training(plt, history: list[dict], best_epoch: int, rows: dict[str, int], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.set_title(rows_title(rows))
    epochs = [entry["epoch"] for entry in history]
    axes.plot(epochs, [entry["train_elbo_nats"] for entry in history], label="train ELBO")
    # None: the bound overflowed that epoch (training.finite_or_none); drawn as a gap.
    validation = [entry["validation_elbo_nats"] for entry in history]
    validation = [math.nan if value is None else value for value in validation]
    axes.plot(epochs, validation, label="validation ELBO")
    axes.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("ELBO per example (nats)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _samples(plt, vae: OnnxVae, latent_dim: int, example_shape, seed: int, path: Path) -> None:
    z = np.random.default_rng([seed, 0]).standard_normal((GRID_SIDE * GRID_SIDE, latent_dim), dtype=np.float32)
    figure, axes = plt.subplots(figsize=(6, 6))
    _draw_rows(axes, vae.expected_x(vae.decode(z)), example_shape, "E[x | z], z ~ N(0, I)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _reconstructions(plt, vae: OnnxVae, x: np.ndarray, example_shape, path: Path) -> None:
    inputs = x[: 2 * GRID_SIDE]
    z_mean, _ = vae.encode(inputs)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5))
    _draw_rows(top, inputs, example_shape, "validation inputs")
    _draw_rows(bottom, vae.expected_x(vae.decode(z_mean)), example_shape, "reconstructions E[x | z = mean q(z|x)]")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _scores(plt, scores: dict[str, np.ndarray], calibration: Calibration, path: Path) -> None:
    figure, axes_list = plt.subplots(1, len(scores), figsize=(5 * len(scores), 4), squeeze=False)
    for axes, (name, values) in zip(axes_list[0], scores.items(), strict=True):
        quantiles = calibration.scores[name].quantiles
        threshold = float(np.interp(1.0 - REPORT_FALSE_POSITIVE_RATE, QUANTILE_LEVELS, quantiles))
        axes.hist(values, bins=50, color="tab:blue", alpha=0.8)
        axes.axvline(threshold, color="tab:red", label=f"threshold at {REPORT_FALSE_POSITIVE_RATE:.0%} FPR")
        axes.set_title(name)
        axes.set_xlabel("score (higher = more anomalous)")
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(
    directory: Path,
    history: list[dict],
    best_epoch: int,
    rows: dict[str, int],
    vae: OnnxVae,
    latent_dim: int,
    example_shape: tuple[int, ...],
    x_validation: np.ndarray,
    scores: dict[str, np.ndarray],
    calibration: Calibration,
    seed: int,
) -> list[Path]:
    """Write the four PNGs into ``directory`` (replaced if present); returns their paths. ``rows``: the
    rows of each split ({"train": n, "validation": n, "test": n}), stated on training.png."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.png" for name in REPORT_PICTURES}
    _training(plt, history, best_epoch, rows, paths["training"])
    _samples(plt, vae, latent_dim, example_shape, seed, paths["samples"])
    _reconstructions(plt, vae, x_validation, example_shape, paths["reconstructions"])
    _scores(plt, scores, calibration, paths["scores"])
    return list(paths.values())
