"""The latent manifold map (Kingma and Welling, "Auto-Encoding Variational Bayes", figure 4): E[x|z]
decoded on a grid over a 2-D plane of the latent space, at quantiles of the prior.

Two halves, numpy and the standard library only (no torch, no scipy, no grpc), so that the exporter,
the CLI and a server-side page can all use them:

- ``latent_map_of``: at export, the principal plane of the posterior means of the calibration rows,
  recorded in the manifest (``core.manifest.LatentMap``).
- ``grid_latents``: the grid's latent codes on a plane (two chosen dimensions, or the recorded
  principal directions), which one Decode call of grid x grid rows turns into the map. A Decode of
  the grid is all a new rpc would do, so there is none: the grid is the only new thing, and a client
  (or the page, in a few lines of JavaScript) computes it.
"""

from statistics import NormalDist

import numpy as np

from vae_serve.core.manifest import LatentDirection, LatentMap

PLANE_DIRECTIONS = 2
# The largest grid side the CLI accepts: 100 x 100 decoded rows is already a 10,000-tile mosaic.
MAX_GRID = 100


def _fixed_sign(unit: np.ndarray) -> np.ndarray:
    """``unit`` or ``-unit``: whichever has its largest-magnitude component (the first, on a tie)
    positive. An SVD's vectors are defined up to sign; this makes the record deterministic."""
    return unit if unit[np.argmax(np.abs(unit))] >= 0 else -unit


def latent_map_of(z_means: np.ndarray, rows: str) -> LatentMap:
    """The top principal directions of posterior means, as the manifest records them.

    Args:
        z_means: posterior means E[z|x] [n, L] of ``rows``, n >= 2.
        rows: which rows they are, in words (e.g. "calibration rows").

    Returns:
        Their mean [L], and the top min(2, L) unit directions of the centred means (numpy's SVD, sign
        fixed by ``_fixed_sign``), each with the means' standard deviation along it (ddof 1) and
        its share of their total variance (0 when the means do not vary at all).

    Raises:
        ValueError: fewer than 2 rows, or a non-finite mean.
    """
    means = np.asarray(z_means, dtype=np.float64)
    if means.ndim != 2 or len(means) < 2 or not np.isfinite(means).all():
        raise ValueError(f"need finite posterior means [n >= 2, L], got shape {list(means.shape)}")
    centre = means.mean(axis=0)
    _, singular, vt = np.linalg.svd(means - centre, full_matrices=False)
    variances = singular**2 / (len(means) - 1)
    total = float(variances.sum())
    directions = [
        LatentDirection(
            unit=_fixed_sign(vt[index]).tolist(),
            sd=float(np.sqrt(variances[index])),
            variance_fraction=float(variances[index] / total) if total > 0 else 0.0,
        )
        for index in range(min(PLANE_DIRECTIONS, means.shape[1]))
    ]
    return LatentMap(rows=rows, num_rows=len(means), mean=centre.tolist(), directions=directions)


def prior_quantiles(grid: int, temperature: float = 1.0) -> np.ndarray:
    """Phi^-1((i + 0.5) / grid) for i = 0..grid-1, times ``temperature``: ``grid`` points that split the
    standard normal prior into equal masses, as in Kingma and Welling's figure (float64 [grid])."""
    normal = NormalDist()
    return np.array([normal.inv_cdf((index + 0.5) / grid) for index in range(grid)]) * temperature


def dimension_axes(latent_dim: int, first: int, second: int) -> np.ndarray:
    """The plane of two latent dimensions: unit vectors e_first, e_second [2, L] (the others stay 0).

    Raises:
        ValueError: a dimension outside 0..L-1, or the same one twice.
    """
    if first == second:
        raise ValueError(f"the two dimensions must differ (got {first} twice)")
    for dim in (first, second):
        if not 0 <= dim < latent_dim:
            raise ValueError(f"dimension {dim} is not a latent dimension of this model (0..{latent_dim - 1})")
    axes = np.zeros((PLANE_DIRECTIONS, latent_dim))
    axes[0, first] = axes[1, second] = 1.0
    return axes


def principal_axes(units: list[list[float]]) -> np.ndarray:
    """The recorded principal plane [2, L], from the manifest's (or GetModelInfo's) directions.

    Raises:
        ValueError: a model with one latent dimension, whose record has one direction: no plane.
    """
    if len(units) < PLANE_DIRECTIONS:
        raise ValueError("this model has one latent dimension: there is no 2-D plane to map")
    return np.array(units[:PLANE_DIRECTIONS], dtype=np.float64)


def grid_latents(axes: np.ndarray, grid: int, temperature: float = 1.0) -> np.ndarray:
    """The latent codes of the map, one per tile, in reading order [grid * grid, L] float32.

    Tile (row r, column c) is z = q[c] * axes[0] + q[grid - 1 - r] * axes[1], with q the prior's
    quantiles (``prior_quantiles``): the first axis grows left to right, the second bottom to top,
    as on a plot.

    The plane passes through the origin, not through the posterior means' centre: the prior N(0, I)
    projected on any orthonormal plane through its centre is N(0, I_2), so q are exactly the prior's
    quantiles along each axis, the decoder's typical set is where the prior puts its mass, and the
    principal plane and a plane of two dimensions (its special case) are the same kind of figure.

    Args:
        axes: two orthonormal directions [2, L] (``dimension_axes`` or ``principal_axes``).
        grid: tiles per side, 1..MAX_GRID.
        temperature: multiplies the quantiles (a wider or narrower window on the prior).

    Raises:
        ValueError: ``grid`` out of range, or ``temperature`` not finite and > 0.
    """
    if not 1 <= grid <= MAX_GRID:
        raise ValueError(f"grid {grid}: need 1..{MAX_GRID} tiles per side")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature {temperature}: need a finite number > 0")
    quantiles = prior_quantiles(grid, temperature)
    along_first = np.tile(quantiles, grid)  # column c of every row
    along_second = np.repeat(quantiles[::-1], grid)  # row r holds q[grid - 1 - r]
    # + 0.0 turns the -0.0 of a centre quantile times a negative component into 0.0 (prints cleaner).
    return (np.outer(along_first, axes[0]) + np.outer(along_second, axes[1]) + 0.0).astype(np.float32)
