"""The latent manifold map from a client: pick the plane from GetModelInfo, compute the grid
(``core.manifold``), decode it in one Decode call of grid x grid rows (split by the client only where
the server's limits require), and map E[x|z] back to raw values. ``vae-client manifold`` prints it.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.api.v1 import vae_pb2
from vae_serve.client.client import VaeClient
from vae_serve.client.files import InputError
from vae_serve.core.manifold import dimension_axes, grid_latents, principal_axes

PRINCIPAL = "principal"
DEFAULT_DIMS = (0, 1)


@dataclass(frozen=True, eq=False)
class ManifoldMap:
    """The decoded grid: tile k (reading order, ``grid`` per row) is z[k] -> x_mean[k] (model space),
    x_raw[k] (x_mean mapped to raw values); ``plane`` says which plane, ``note`` why if not asked."""

    plane: str
    axes: np.ndarray  # [2, L]
    grid: int
    temperature: float
    z: np.ndarray  # [grid * grid, L]
    x_mean: np.ndarray  # [grid * grid, D]
    x_raw: np.ndarray  # [grid * grid, D]
    model_name: str
    model_version: str
    note: str | None = None


def choose_plane(
    info: vae_pb2.ModelInfo, dims: tuple[int, int] | None, plane: str | None
) -> tuple[np.ndarray, str, str | None]:
    """(axes [2, L], name, note) of the plane the user asked for, or the default one.

    Without ``dims`` or ``plane``: the recorded principal plane, or, for a bundle exported before it
    was recorded, dimensions 0 and 1 with a note saying so.

    Raises:
        InputError: the model has one latent dimension; a dimension is out of range or repeated;
            ``plane`` is principal and the bundle records none.
    """
    latent_dim = info.latent_dim
    if latent_dim < 2:
        raise InputError(
            "this model has one latent dimension: a manifold map needs two; "
            "walk the one with `vae-client interpolate --latent`"
        )
    note = None
    if dims is None and info.HasField("latent_map"):
        units = [list(direction.unit) for direction in info.latent_map.directions]
        return principal_axes(units), PRINCIPAL, None
    if plane == PRINCIPAL:
        raise InputError(
            f"{info.model.name}:{info.model.version} records no principal plane (its bundle was exported "
            "before vae-serve recorded one; export it again); use --dims I,J"
        )
    if dims is None:
        dims, note = DEFAULT_DIMS, "this bundle records no principal plane: dimensions 0,1"
    try:
        axes = dimension_axes(latent_dim, *dims)
    except ValueError as error:
        raise InputError(f"--dims {dims[0]},{dims[1]}: {error}") from None
    return axes, f"dims {dims[0]},{dims[1]}", note


def raw_values(info: vae_pb2.ModelInfo, x_model: np.ndarray) -> np.ndarray:
    """Model-space rows -> raw values, x * scale + loc (GetModelInfo.preprocessing; the identity if unset)."""
    loc = np.asarray(info.preprocessing.loc or [0.0], dtype=np.float32)
    scale = np.asarray(info.preprocessing.scale or [1.0], dtype=np.float32)
    return x_model * scale + loc


def manifold_map(
    client: VaeClient,
    info: vae_pb2.ModelInfo,
    grid: int,
    dims: tuple[int, int] | None = None,
    plane: str | None = None,
    temperature: float = 1.0,
) -> ManifoldMap:
    """Decode the manifold map of the model version ``info`` describes.

    Args:
        client: an open client.
        info: GetModelInfo of the model version to call (its name and version are pinned).
        grid: tiles per side (``core.manifold.MAX_GRID`` at most).
        dims, plane: as for ``choose_plane``.
        temperature: multiplies the prior's quantiles.

    Returns:
        The map (see ``ManifoldMap``).

    Raises:
        InputError: a plane or grid the model cannot have.
        VaeClientError: the Decode call failed.
    """
    axes, name, note = choose_plane(info, dims, plane)
    try:
        z = grid_latents(axes, grid, temperature)
    except ValueError as error:
        raise InputError(str(error)) from None
    decoded = client.decode(z, model=info.model.name, version=info.model.version)
    return ManifoldMap(
        plane=name,
        axes=axes,
        grid=grid,
        temperature=temperature,
        z=z,
        x_mean=decoded.x_mean,
        x_raw=raw_values(info, decoded.x_mean),
        model_name=decoded.model_name,
        model_version=decoded.model_version,
        note=note,
    )
