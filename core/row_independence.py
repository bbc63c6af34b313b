"""Load-time check that a graph's outputs for a row do not depend on the other rows of its batch.

The server joins different clients' requests into one graph run. A graph that mixes rows (BatchNorm
exported in training mode, a decoder that adds the batch mean, a count over the batch) would make one
client's answer depend on another client's data: a leak between users, not only a wrong number. The
exporter refuses such a model before writing it (``vae_serve.export.bundle.user_model.check_rows_independent``);
this check catches a bundle made elsewhere. It runs the golden inputs as one batch, in reversed order
and a few rows alone, so it costs a handful of small graph runs per load. Imports no torch.
"""

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from vae_serve.core.errors import BundleError

# Golden rows also run alone (every golden case has 4 rows; more would only cost load time).
ALONE_ROWS = 4
# The advice of every refusal: why it matters and what to change.
ROWS_MIX_ADVICE = (
    "the graph's outputs depend on other rows of the batch, so one client's answer would depend on another "
    "client's data; it is not served. The usual cause is BatchNorm or Dropout exported in training mode, or a "
    "reduction over the batch axis: export the model again in eval mode (export_bundle checks this)"
)

# (atol, rtol) of an output, by its name.
ToleranceOf = Callable[[str], tuple[float, float]]


def _run(session: ort.InferenceSession, file: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [node.name for node in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, inputs), strict=True))
    except Exception as error:  # ORT's pybind errors share no base class below Exception
        raise BundleError(f"{file}: golden inputs could not be run in batches ({error})") from None


def _rows(inputs: dict[str, np.ndarray], row_axes: dict[str, int], index: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``index`` of every input (each along its own row axis)."""
    return {name: np.take(value, index, axis=row_axes[name]) for name, value in inputs.items()}


def _compare(file: str, how: str, batch: dict, other: dict, rows: np.ndarray, tolerance_of: ToleranceOf) -> None:
    """``other`` (outputs of the rows ``rows``, run ``how``) equals those rows of the batch's outputs."""
    for name, got in other.items():
        want = batch[name][rows]
        atol, rtol = tolerance_of(name)
        # A non-finite batch value is left to the golden check, which names it as such.
        differs = np.isfinite(want) & ~(np.abs(got - want) <= atol + rtol * np.abs(want))
        if differs.any():
            position = tuple(int(axis[0]) for axis in np.nonzero(differs))
            row = int(rows[position[0]])
            raise BundleError(
                f"{file}: output {name!r} of golden row {row} is {float(want[position]):.6g} in a batch of "
                f"{len(batch[name])} rows and {float(got[position]):.6g} {how} (tolerance atol={atol:g} + "
                f"rtol={rtol:g}*|value|): {ROWS_MIX_ADVICE}"
            )


def check_graph_rows(
    session: ort.InferenceSession,
    file: str,
    inputs: dict[str, np.ndarray],
    row_axes: dict[str, int],
    tolerance_of: ToleranceOf,
) -> None:
    """Each row's outputs are the same in the whole batch, in the batch reversed, and alone.

    Args:
        session: the graph; every output has its rows along axis 0.
        file: the graph's file, for the message.
        inputs: the golden inputs, by name.
        row_axes: each input's row axis (0 for x and z; 1 for the bounds graph's eps [k, n, L]).
        tolerance_of: (atol, rtol) of each output, by name: the golden tolerance.

    Raises:
        BundleError: the output, the row and both values, and what to change.
    """
    name = next(iter(inputs))
    count = inputs[name].shape[row_axes[name]]
    if count < 2:  # one row: there is no other row to mix with
        return
    batch = _run(session, file, inputs)
    reverse = np.arange(count)[::-1]
    _compare(
        file, "in reversed order", batch, _run(session, file, _rows(inputs, row_axes, reverse)), reverse, tolerance_of
    )
    for row in range(min(count, ALONE_ROWS)):
        index = np.array([row])
        alone = _run(session, file, _rows(inputs, row_axes, index))
        _compare(file, "alone", batch, alone, index, tolerance_of)
