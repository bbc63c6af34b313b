"""vae.v1.ScoreType <-> the core's score registry. Names come from the enum itself, by the one rule
of client/names.py (SCORE_TYPE_NEGATIVE_ELBO -> "negative_elbo"); an enum value without a registry
entry, or an entry without an enum value, stops the server at import rather than failing one request
later."""

import numpy as np

from vae_serve.api.v1 import vae_pb2

# The enum <-> name map is the client's, the one definition both sides read: core may import no
# protobuf and api/ is generated, while client/names.py imports only vae_pb2 (it says more).
from vae_serve.client.names import SCORE_TYPES
from vae_serve.core.calibration import calibration_histogram
from vae_serve.core.errors import InvalidInput
from vae_serve.core.scores import DEFAULT_SCORE, SCORES


def check_agreement(score_types: dict[str, int], registry: dict) -> None:
    """Raise unless every enum value has a registry entry and every entry an enum value."""
    if set(score_types) != set(registry):
        enum_only, registry_only = sorted(set(score_types) - set(registry)), sorted(set(registry) - set(score_types))
        raise ImportError(
            f"vae.v1.ScoreType and the score registry disagree: enum only {enum_only}, registry only {registry_only}"
        )


check_agreement(SCORE_TYPES, SCORES)


def score_name(score_type: int, default: str = DEFAULT_SCORE) -> str:
    """The registry name of a request's score type; UNSPECIFIED is ``default`` (the model's default score,
    ``core.scores.default_score_of``)."""
    if score_type == vae_pb2.SCORE_TYPE_UNSPECIFIED:
        return default
    for name, value in SCORE_TYPES.items():
        if value == score_type:
            return name
    raise InvalidInput(f"score: unknown score type {score_type}; known: {sorted(SCORE_TYPES)}")


def score_facts() -> list:
    """ScoreFacts of every score in the registry, in its order: what clients read instead of copies."""
    return [
        vae_pb2.ScoreFacts(score=SCORE_TYPES[name], draws=score.num_samples, description=score.summary)
        for name, score in SCORES.items()
    ]


def calibration_summary(name: str, entry, levels: list[float], info_levels: tuple[float, ...]):
    """A ScoreCalibration message: the stored distribution's size, moments, a few quantiles and its
    histogram (``core.calibration.calibration_histogram``, from the stored quantiles at ``levels``)."""
    edges, counts = calibration_histogram(levels, entry.quantiles, entry.num_examples)
    return vae_pb2.ScoreCalibration(
        score=SCORE_TYPES[name],
        num_examples=entry.num_examples,
        mean=entry.mean,
        std=entry.std,
        quantiles=[
            vae_pb2.Quantile(level=level, value=float(np.interp(level, levels, entry.quantiles)))
            for level in info_levels
        ],
        histogram=vae_pb2.Histogram(edges=edges.tolist(), counts=counts.tolist()),
    )
