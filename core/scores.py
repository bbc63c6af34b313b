"""The anomaly-score registry: one entry per score (name, parameters, how it is computed).

A score is read either from a likelihood-bound estimate with ``num_samples`` posterior draws, or
(``num_samples`` 0) from the per-feature reconstruction errors of the posterior mean, or (``pathway``)
from the bundle's pathway graph (a model without one has no such score), or (``combined``)
from other scores' calibrated p-values (``core.combination``): its request carries their calibrations. Its name is
the proto enum's (``SCORE_TYPE_NEGATIVE_ELBO`` -> ``negative_elbo``); the server checks at import
that the enum and this registry agree. The exporter calibrates with exactly this code, so a served
score and its stored quantiles always come from the same computation. Higher = more anomalous.
"""

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from vae_serve.core.bounds import (
    BoundEstimates,
    estimate_bounds_batch,
    latent_generator,
    reconstruction_errors_batch,
)
from vae_serve.core.combination import COMBINED, COMBINED_COMPONENTS, StoredQuantiles, combined_scores
from vae_serve.core.runtime import OnnxVae

# Serra et al.'s compressor stand-in: zlib (DEFLATE) at its strongest level on 8-bit rows.
COMPRESSION_LEVEL = 9


@dataclass(frozen=True)
class Score:
    """One anomaly score. ``compute(x, evidence)``: evidence is a BoundEstimates when
    ``num_samples`` > 0, the pathway graph's distances [n] when ``pathway``, else the per-feature
    squared reconstruction errors [n, D]."""

    name: str
    # Posterior draws of the bound it is read from; part of its definition, since calibration
    # quantiles hold only for the parameters they were computed with. 0: deterministic.
    num_samples: int
    compute: Callable[[np.ndarray, "BoundEstimates | np.ndarray"], np.ndarray] | None
    summary: str
    # A combination of other scores (their calibrated p-values), which a request computes with them:
    # ``compute`` is None then.
    components: tuple[str, ...] = ()
    # Read from the bundle's pathway graph (``OnnxVae.pathway``), which only some bundles have.
    pathway: bool = False

    @property
    def params(self) -> dict:
        """The parameters recorded with its calibration in a manifest."""
        params = {"num_samples": self.num_samples} if self.num_samples else {}
        return params | ({"components": list(self.components)} if self.components else {})


def compressed_bits(x: np.ndarray) -> np.ndarray:
    """Per row: the bits zlib needs for the row quantized to 8 bits, round(255 x) clipped to 0..255."""
    # Clipped before scaling, the same values as clipping after, without overflow for huge x.
    quantized = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.array([8.0 * len(zlib.compress(row.tobytes(), COMPRESSION_LEVEL)) for row in quantized])


SCORES: dict[str, Score] = {
    score.name: score
    for score in (
        Score("negative_elbo", 10, lambda x, bounds: -bounds.elbo, "-ELBO, 10 posterior draws"),
        # k = 100 follows the usual anomaly-detection protocol for IWAE.
        Score("negative_iwae", 100, lambda x, bounds: -bounds.iwae, "-IWAE bound, k = 100"),
        Score(
            "reconstruction_error",
            0,
            lambda x, errors: errors.sum(axis=1, dtype=np.float64),
            "squared error of the posterior-mean reconstruction",
        ),
        Score(
            "negative_reconstruction_probability",
            10,
            lambda x, bounds: -bounds.reconstruction,
            "An & Cho: -mean log p(x|z) over 10 posterior draws",
        ),
        Score(
            "complexity_corrected",
            100,
            lambda x, bounds: -bounds.iwae / math.log(2.0) - compressed_bits(x),
            "Serra et al.: -IWAE_100 in bits minus the zlib size in bits",
        ),
        Score(
            "pathway",
            0,
            lambda x, distances: distances,
            "Kim et al.'s RaPP: the encoder's hidden activations of x and of its reconstruction, their "
            "difference whitened by the training rows' and summed over the layers",
            pathway=True,
        ),
        # Its draws are negative_elbo's (the same seed, the same bounds pass).
        Score(
            COMBINED,
            10,
            None,
            "Fisher's -2 sum log p over the calibrated p-values of negative_elbo and reconstruction_error",
            COMBINED_COMPONENTS,
        ),
    )
}
# The default of a bundle whose manifest names none (written before default_score existed; its
# Bernoulli-era best). vae-train writes each recipe's own default: docs/anomaly.md.
DEFAULT_SCORE = "reconstruction_error"


def default_score_of(manifest) -> str:
    """The score a request that names none gets from a model: its manifest's ``default_score``, or
    DEFAULT_SCORE for a bundle without one (or naming a score this server does not know)."""
    return manifest.default_score if manifest.default_score in SCORES else DEFAULT_SCORE


def score_named(name: str) -> Score:
    """The registry entry of ``name``; an unknown name fails loudly."""
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown anomaly score {name!r}; known: {sorted(SCORES)}") from None


@dataclass(frozen=True)
class ScoreRequest:
    x: np.ndarray
    name: str
    seed: int
    feature_errors: bool = False  # also return the per-feature reconstruction errors
    # A combined score's components' calibrations, by name (its p-values are computed against them).
    calibrations: Mapping[str, StoredQuantiles] | None = None


def score_batch(vae: OnnxVae, requests: list[ScoreRequest]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(scores [n], feature errors [n, D] or None) for each request, in order, computed together.

    Requests carry rows as clients send them; scores and feature errors are in the model's space.
    A combined score's request stands for one request per component (same rows, same seed), so its
    components share the passes below with every other request, and their values are exactly those
    of the components requested alone.

    Raises:
        ValueError: a combined score's request lacks its components' calibrations.
    """
    simple, plan = _expand(requests)
    results = _simple_score_batch(vae, simple)
    answers = []
    for request, indices in zip(requests, plan, strict=True):
        parts = [results[index] for index in indices]
        if not score_named(request.name).components:
            answers.append(parts[0])
            continue
        components = {simple[index].name: values for index, (values, _) in zip(indices, parts, strict=True)}
        errors = next((errors for _, errors in parts if errors is not None), None)
        answers.append((combined_scores(components, request.calibrations), errors))
    return answers


def _expand(requests: list[ScoreRequest]) -> tuple[list[ScoreRequest], list[list[int]]]:
    """Requests with each combined one replaced by its components (the reconstruction one carrying the
    feature errors asked for), and, per original request, the indices of its parts among them."""
    simple: list[ScoreRequest] = []
    plan = []
    for request in requests:
        components = score_named(request.name).components
        if components and request.calibrations is None:
            raise ValueError(f"the {request.name} score needs its components' calibrations {list(components)}")
        names = components or (request.name,)
        plan.append(list(range(len(simple), len(simple) + len(names))))
        simple.extend(
            ScoreRequest(
                request.x,
                name,
                request.seed,
                request.feature_errors and (not components or not score_named(name).num_samples),
            )
            for name in names
        )
    return simple, plan


def _simple_score_batch(vae: OnnxVae, requests: list[ScoreRequest]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """score_batch of requests without combined scores.

    One bounds pass serves every sampled score (each drawing from ``latent_generator(seed)``, so its
    values depend only on its own request), one pathway-graph run each pathway request, and one
    reconstruction pass every request that needs the errors (reconstruction_error, and those asking
    for feature errors).
    """
    scores = [score_named(request.name) for request in requests]
    # Rows as clients sent them -> the model's space, where every score is defined.
    requests = [ScoreRequest(vae.to_model(r.x), r.name, r.seed, r.feature_errors) for r in requests]
    sampled = [index for index, score in enumerate(scores) if score.num_samples]
    evidence: dict[int, BoundEstimates | np.ndarray] = {}  # bounds and pathway distances, by request
    if sampled:
        bounds_requests = [(requests[i].x, scores[i].num_samples, latent_generator(requests[i].seed)) for i in sampled]
        evidence.update(zip(sampled, estimate_bounds_batch(vae, bounds_requests), strict=True))
    pathway = [index for index, score in enumerate(scores) if score.pathway]
    if pathway:
        evidence.update(zip(pathway, pathway_distances_batch(vae, [requests[i].x for i in pathway]), strict=True))
    errors_needed = [not (score.num_samples or score.pathway) for score in scores]
    reconstructed = [i for i, needed in enumerate(errors_needed) if needed or requests[i].feature_errors]
    errors: dict[int, np.ndarray] = {}
    if reconstructed:
        errors.update(
            zip(reconstructed, reconstruction_errors_batch(vae, [requests[i].x for i in reconstructed]), strict=True)
        )
    results = []
    for index, (request, score) in enumerate(zip(requests, scores, strict=True)):
        values = score.compute(request.x, errors[index] if errors_needed[index] else evidence[index])
        results.append((values, errors[index] if request.feature_errors else None))
    return results


def pathway_distances_batch(vae: OnnxVae, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Each request's pathway distances [n] float64 (rows in the model's space), one graph run per
    request, as the bounds graph's: a row's value never depends on the rows it was batched with, not
    even in the last bit (a vector kernel's tail, e.g. a Bernoulli model's sigmoid, could move it).

    Raises:
        ValueError: the model has no pathway graph (the server refuses the score before: no calibration).
    """
    if vae.pathway is None:
        raise ValueError("the pathway score needs the bundle's pathway graph, and this model has none")
    return [vae.run_pathway(x) for x in xs]


def available_scores(vae: OnnxVae) -> list[str]:
    """The registry's scores this model can compute: all, less ``pathway`` without a pathway graph."""
    return [name for name, score in SCORES.items() if vae.pathway is not None or not score.pathway]


def anomaly_scores(
    vae: OnnxVae,
    x: np.ndarray,
    names: list[str],
    seed: int,
    calibrations: Mapping[str, StoredQuantiles] | None = None,
) -> dict[str, np.ndarray]:
    """Each named score of every row of ``x`` (raw, as clients send them): what calibration records.

    ``calibrations``: the stored calibrations by score name (a manifest's ``calibration.scores``),
    which a combined score needs for its components' p-values.
    """
    requests = [
        ScoreRequest(x, name, seed, calibrations=calibrations if score_named(name).components else None)
        for name in names
    ]
    results = score_batch(vae, requests)
    return {name: values for name, (values, _) in zip(names, results, strict=True)}
