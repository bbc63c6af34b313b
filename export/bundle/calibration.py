"""Calibration of a model's anomaly scores on normal rows: every score of the registry ``core.scores.SCORES``, computed
through ONNX Runtime by the serving code itself, summarized as the manifest's ``Calibration``.

Used by ``vae-train train`` (on the validation split) and ``vae-train calibrate`` (on new normal data).
A combined score (``core.combination``) is calibrated after its components: its values on the rows are
Fisher's statistic over the components' p-values against their just-made calibration, then its own
quantiles are taken like any other score's.
"""

import sys

import numpy as np
from tqdm import tqdm

from vae_serve.core.calibration import calibration_of
from vae_serve.core.combination import combined_scores
from vae_serve.core.manifest import Calibration
from vae_serve.core.runtime import OnnxVae
from vae_serve.core.scores import SCORES, anomaly_scores, available_scores

# Fewest normal rows a calibration is made from: vae-train train checks its validation split against
# it before training, export_bundle its calibration_data, vae-train calibrate its --split rows.
MIN_CALIBRATION_ROWS = 10


def calibration_scores(vae: OnnxVae, x: np.ndarray, seed: int, progress: bool | None) -> dict[str, np.ndarray]:
    """Every anomaly score of the rows ``x`` that the model has (``available_scores``) but the combined
    ones, one score at a time behind a progress bar.

    Each score is computed over all rows in one call: its noise is drawn in one block from the
    seed (as a served request of these rows would), so the rows cannot be split for progress.

    Args:
        vae: the model, as the server runs it.
        x: normal rows [examples, features].
        seed: seed of the sampled scores' noise.
        progress: show the bar; None shows it when stderr is a terminal.

    Returns:
        Each score's values, one per row, by score name.
    """
    scores = {}
    names = tqdm(
        [name for name in available_scores(vae) if not SCORES[name].components],
        desc="calibrating",
        unit="score",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    for name in names:
        names.set_postfix_str(name)
        scores.update(anomaly_scores(vae, x, [name], seed))
    return scores


def calibrate(
    vae: OnnxVae, x: np.ndarray, seed: int, description: str, progress: bool | None
) -> tuple[dict[str, np.ndarray], Calibration]:
    """Every score of ``x`` (see ``calibration_scores``, then the combined ones) and their quantiles as
    the manifest records them, ``description`` saying what the rows are.

    A combined score's values are exactly what the server answers for these rows in one request with
    ``seed``: its components' values (the same draws) placed against the components' calibration.
    """
    scores = calibration_scores(vae, x, seed, progress)
    components = Calibration.model_validate(calibration_of(scores, seed, description)).scores
    for name, score in SCORES.items():
        if score.components:
            scores[name] = combined_scores({part: scores[part] for part in score.components}, components)
    return scores, Calibration.model_validate(calibration_of(scores, seed, description))
