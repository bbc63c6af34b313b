"""``export_bundle``: any PyTorch VAE (an encoder and a decoder) to a verified, served bundle.

The one way a bundle is written: ``vae-train`` calls it too. Every check that can be made in torch
runs before anything is written; the rest (export, ONNX Runtime parity, calibration, the loader's
own verification) runs in a staging folder that is removed on failure, so a refused model never
leaves a partial bundle behind. See docs/your-model.md for a complete script.
"""

import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from vae_serve.core.bounds import estimate_bounds, latent_generator
from vae_serve.core.manifest import (
    NAME_PATTERN,
    Calibration,
    InputSpec,
    LikelihoodSpec,
    Manifest,
    Metrics,
    Preprocessing,
    SplitMetrics,
    repository_layout,
)
from vae_serve.core.manifold import latent_map_of
from vae_serve.core.preprocessing import IDENTITY, Affine, to_model
from vae_serve.core.runtime import (
    DECODER_OUTPUTS,
    RECONSTRUCTION_UNITS,
    OnnxVae,
    make_session,
    reconstruction_error_weights,
)
from vae_serve.core.scores import SCORES
from vae_serve.export.bundle.calibration import MIN_CALIBRATION_ROWS, calibrate
from vae_serve.export.bundle.fused_graph import add_bounds_graph
from vae_serve.export.bundle.manifest_builder import build_manifest, generic_likelihood_spec, golden_examples
from vae_serve.export.bundle.onnx_export import PARITY_EXAMPLES, export_graphs
from vae_serve.export.bundle.pathway_graph import add_pathway_graph
from vae_serve.export.bundle.user_model import (
    FlatDecoder,
    FlatEncoder,
    FlatPathway,
    ModelError,
    check_model,
    check_pathway,
)
from vae_serve.export.bundle.writer import check_destination, publish, staging_dir_for, write_manifest
from vae_serve.export.models.evaluate import Bounds

# Importance samples of the metrics export_bundle measures itself when none are given.
DEFAULT_IWAE_K = 100
# How export_bundle's caller says --force, in its refusals.
FORCE_FLAG = "force=True"


@dataclass(frozen=True)
class ExportedBundle:
    """What ``export_bundle`` wrote: where, its sealed manifest, and each score of every calibration row."""

    path: Path
    manifest: Manifest
    calibration_scores: dict[str, np.ndarray]


def _flat_rows(values: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    """[n, *input_shape] or [n, D] numeric, finite -> float32 [n, D]."""
    values = np.asarray(values)
    features = math.prod(input_shape)
    if not np.issubdtype(values.dtype, np.number) or values.ndim < 2:
        raise ModelError(f"{what}: need a numeric array [n, *input_shape], got {values.dtype} {list(values.shape)}")
    if tuple(values.shape[1:]) not in (input_shape, (features,)):
        raise ModelError(
            f"{what}: rows of shape {list(values.shape[1:])} do not match input_shape {list(input_shape)} "
            f"(or its {features} flattened features)"
        )
    rows = values.reshape(len(values), features).astype(np.float32)
    if not np.isfinite(rows).all():
        raise ModelError(f"{what}: contains NaN or infinite values")
    return rows


def _check_arguments(likelihood: str, name: str, version: str, out: Path, force: bool, training: dict | None) -> None:
    if likelihood not in DECODER_OUTPUTS:
        raise ModelError(f"likelihood {likelihood!r} is not supported; use one of {sorted(DECODER_OUTPUTS)}")
    for label, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
            raise ModelError(f"{label} {value!r}: use letters, digits and _.- (a letter or digit first)")
    check_destination(out, force, FORCE_FLAG)
    try:
        json.dumps(training, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ModelError(f"training must be JSON-serialisable with finite numbers ({error})") from None


def _check_likelihood_range(likelihood: str, x_model: np.ndarray, preprocessing: Preprocessing) -> None:
    """A Bernoulli likelihood is over values in [0, 1]: raw pixels need their scaling in the bundle."""
    low, high = float(x_model.min()), float(x_model.max())
    if likelihood == "bernoulli" and (low < 0.0 or high > 1.0):
        raise ModelError(
            f"a bernoulli likelihood needs values in [0, 1] after preprocessing ({preprocessing.description}); "
            f"the calibration data spans [{low:g}, {high:g}]. Pass preprocessing=pixel_scaling(255) for 0-255 "
            "pixels, or use likelihood='gaussian'"
        )


def reconstruction_weights(units: str, spec: LikelihoodSpec, num_features: int) -> np.ndarray | None:
    """The per-feature weights of the squared reconstruction errors in ``units`` (None: model units),
    which calibration applies exactly as the server will.

    Raises:
        ModelError: unknown units, or "standardized" without usable feature scales to divide by.
    """
    if units not in RECONSTRUCTION_UNITS:
        raise ModelError(f"reconstruction_units {units!r}: use one of {list(RECONSTRUCTION_UNITS)}")
    if units == "standardized" and "feature_scale" not in spec.parameters:
        raise ModelError(
            "reconstruction_units='standardized' divides each squared error by feature_scale**2, but the "
            "likelihood's parameters have no feature_scale; pass a likelihood_spec whose parameters hold "
            "feature_scale (one value per feature), or use reconstruction_units='model'"
        )
    try:
        return reconstruction_error_weights(units, spec.parameters, num_features)
    except ValueError as error:
        raise ModelError(f"likelihood_spec: {error}") from None


def check_default_score(default_score: str | None, calibration: Calibration | None = None) -> None:
    """A default score must be a registry score that the bundle calibrates: ScoreAnomaly decides against it.

    Args:
        default_score: the name to check; None (the server's default) always passes.
        calibration: the bundle's calibration; None checks the name alone (before any work).

    Raises:
        ModelError: the name is no registry score, or the calibration has no entry for it.
    """
    if default_score is None:
        return
    if default_score not in SCORES:
        raise ModelError(f"default_score {default_score!r} is not an anomaly score; use one of {sorted(SCORES)}")
    if calibration is not None and default_score not in calibration.scores:
        raise ModelError(
            f"default_score {default_score!r} is not calibrated in this bundle (calibrated: "
            f"{sorted(calibration.scores)}); choose one of those"
        )


def _pathway_rows(
    pathway: nn.Module | None, pathway_data, input_shape: tuple[int, ...], affine, x_model: np.ndarray
) -> np.ndarray | None:
    """``pathway_data`` in the model's space, after checking that ``pathway`` runs on it; None without a pathway.

    Raises:
        ModelError: one of the two without the other, too few rows, or a pathway that does not run.
    """
    if (pathway is None) != (pathway_data is None):
        raise ModelError("pathway and pathway_data go together: pass both (for the pathway score) or neither")
    if pathway is None:
        return None
    fit_model = to_model(affine, _flat_rows(pathway_data, input_shape, "pathway_data")).astype(np.float32)
    if len(fit_model) < MIN_CALIBRATION_ROWS:
        raise ModelError(f"pathway_data: need at least {MIN_CALIBRATION_ROWS} rows, got {len(fit_model)}")
    check_pathway(pathway, input_shape, x_model)
    return fit_model


def measured_metrics(vae: OnnxVae, validation: np.ndarray, test: np.ndarray | None, iwae_k: int, seed: int) -> Metrics:
    """ELBO and IWAE-k of model-space rows, measured through ONNX Runtime with the serving code."""

    def split(x: np.ndarray) -> SplitMetrics:
        bounds = estimate_bounds(vae, x, iwae_k, latent_generator(seed))
        return SplitMetrics(**Bounds(bounds.elbo, bounds.iwae, iwae_k).summary(x.shape[1]))

    validation_metrics = split(validation)
    return Metrics(
        validation=validation_metrics,
        test=validation_metrics if test is None else split(test),
        binarization="none: metrics on the data as given"
        + ("" if test is not None else "; no test data was given, so test repeats the calibration rows"),
    )


def export_bundle(
    encoder: nn.Module,
    decoder: nn.Module,
    *,
    likelihood: str,
    input_shape: Sequence[int],
    calibration_data: np.ndarray,
    out: str | Path,
    name: str,
    version: str | None = None,
    preprocessing: Preprocessing | None = None,
    test_data: np.ndarray | None = None,
    training: dict | None = None,
    metrics: Metrics | None = None,
    iwae_k: int = DEFAULT_IWAE_K,
    seed: int = 0,
    force: bool = False,
    progress: bool | None = False,
    value_range: tuple[float | None, float | None] = (None, None),
    likelihood_spec: LikelihoodSpec | None = None,
    default_score: str | None = None,
    reconstruction_units: str = "model",
    pathway: nn.Module | None = None,
    pathway_data: np.ndarray | None = None,
) -> ExportedBundle:
    """Export a PyTorch VAE as a verified bundle that ``vae-serve`` serves with every rpc.

    Args:
        encoder: x [batch, *input_shape] (model space) -> (z_mean, z_logvar), each [batch, L].
        decoder: z [batch, L] -> the likelihood's parameters: ``logits`` for "bernoulli";
            ``(mean, log_scale)`` for "gaussian", where log_scale broadcasts against the mean (one
            shared value, one per feature, or one per row and feature).
        likelihood: "bernoulli" (values in [0, 1] after preprocessing) or "gaussian".
        input_shape: one example's shape, e.g. (1, 28, 28) or (30,).
        calibration_data: held-out normal rows, raw (as clients will send them), [n, *input_shape]
            or [n, D]; every anomaly score is calibrated on them, and they check the model.
        out: the bundle directory to write (for a model repository: REPO/NAME/VERSION).
        name, version: the model's name and version. In a model repository a bundle is served under
            its directories' name and version, whatever these say (docs/bundle.md); version
            defaults to N of ``out`` = REPO/NAME/N (N an integer), else "1".
        preprocessing: what the server applies to raw inputs, x_model = (x - loc) / scale
            (``vae_serve.core.preprocessing.pixel_scaling`` or ``standardization``); None: none.
        test_data: raw rows for the test metrics; None: the metrics repeat the calibration rows.
        training: anything JSON-serialisable about training (epochs, losses), recorded as is.
        metrics: the validation and test bounds if already measured; None: measured here
            through ONNX Runtime with ``iwae_k`` importance samples.
        iwae_k, seed: importance samples of the measured metrics; seed of every random draw.
        force: replace ``out`` if it exists and is a bundle or an empty folder.
        progress: progress bars (None: when stderr is a terminal).
        value_range: the raw values' range, recorded for clients.
        likelihood_spec: the manifest's likelihood section, when the caller knows more (vae-train).
        default_score: the score ScoreAnomaly uses when a request names none: a registry score
            (``vae_serve.core.scores.SCORES``) that this bundle calibrates; None: the server's
            default (``DEFAULT_SCORE``).
        reconstruction_units: "model" (squared errors in the model's space) or "standardized"
            (squared errors / feature_scale**2; needs a likelihood_spec whose parameters hold
            ``feature_scale``, as vae-train's Gaussian bundles do).
        pathway: x [batch, *input_shape] (model space) -> the encoder's hidden activations, a tuple
            of tensors [batch, ...], one per layer (vae-train: each ReLU output of its encoder); with
            it the bundle gets the ``pathway`` score (export/bundle/pathway_graph.py). None: no such score.
        pathway_data: with ``pathway``: normal rows, raw, that the pathway statistics are fitted on;
            they must not be the calibration rows (vae-train: the training rows).

    Returns:
        The bundle's path, its sealed manifest, and the calibration rows' scores.

    Raises:
        ModelError: the model or data cannot be served (shapes, latent sizes, non-finite outputs,
            Bernoulli range); nothing is written.
        ExportError: an op does not export, or ONNX Runtime disagrees with torch beyond tolerance.
        PublishError: ``out`` exists and ``force`` is false; ``out`` is a file, or a folder that is
            neither empty nor a bundle (force never deletes anything else); or it cannot be written.
        BundleError: the written bundle does not verify (a bug; please report it).
    """
    out, input_shape = Path(out), tuple(int(size) for size in input_shape)
    if version is None:
        layout = repository_layout(out)
        version = layout[1] if layout is not None else "1"
    preprocessing = preprocessing or IDENTITY
    _check_arguments(likelihood, name, version, out, force, training)
    spec = likelihood_spec or generic_likelihood_spec(likelihood, scale="from the decoder's log_scale")
    weights = reconstruction_weights(reconstruction_units, spec, math.prod(input_shape))
    check_default_score(default_score)
    affine = Affine.of(preprocessing)
    x_raw = _flat_rows(calibration_data, input_shape, "calibration_data")
    if len(x_raw) < MIN_CALIBRATION_ROWS:
        raise ModelError(f"calibration_data: need at least {MIN_CALIBRATION_ROWS} rows, got {len(x_raw)}")
    x_model = to_model(affine, x_raw).astype(np.float32)
    test_model = None if test_data is None else to_model(affine, _flat_rows(test_data, input_shape, "test_data"))
    _check_likelihood_range(likelihood, x_model, preprocessing)
    latent_dim = check_model(encoder, decoder, likelihood, input_shape, x_model)
    flat_encoder, flat_decoder = FlatEncoder(encoder, input_shape), FlatDecoder(decoder, likelihood, input_shape)
    fit_model = _pathway_rows(pathway, pathway_data, input_shape, affine, x_model)
    staging = staging_dir_for(out)
    try:
        graphs = export_graphs(flat_encoder, flat_decoder, staging, x_model[:PARITY_EXAMPLES])
        numpy_vae = OnnxVae.from_files(staging / "encoder.onnx", staging / "decoder.onnx", likelihood)
        bounds_graph = add_bounds_graph(staging, numpy_vae, latent_dim, x_model, seed)
        pathway_graph = None
        if fit_model is not None:
            pathway_graph = add_pathway_graph(
                staging,
                flat_encoder,
                flat_decoder,
                FlatPathway(pathway, input_shape),
                likelihood,
                fit_model,
                x_model[:PARITY_EXAMPLES],
                seed,
                f"pathway_data ({len(fit_model)} rows)",
            )
        # Metrics and calibration through the bounds graph: what the server will compute.
        vae = OnnxVae(
            numpy_vae.encoder,
            numpy_vae.decoder,
            likelihood,
            affine,
            make_session(staging / bounds_graph.graph.file),
            error_weights=weights,
            pathway=None if pathway_graph is None else make_session(staging / pathway_graph.graph.file),
        )
        if metrics is None:
            metrics = measured_metrics(vae, x_model, test_model, iwae_k, seed)
        rows = f"calibration data ({len(x_raw)} rows, values as clients send them)"
        scores, calibration = calibrate(vae, x_raw, seed, rows, progress)
        check_default_score(default_score, calibration)
        # The manifold map's principal plane, from the posterior means the server's Encode gives these rows.
        # Named as at export: `vae-train calibrate` may later calibrate on other rows and keep this record.
        latent_map = latent_map_of(vae.encode(x_model)[0], f"the calibration rows at export: {rows}")
        body = build_manifest(
            name=name,
            version=version,
            input_spec=InputSpec(
                shape=list(input_shape),
                num_features=x_raw.shape[1],
                dtype="float32",
                value_range=value_range,
                preprocessing=preprocessing.description,
            ),
            preprocessing=preprocessing,
            latent_dim=latent_dim,
            likelihood=spec,
            graphs=graphs,
            training=training or {},
            metrics=metrics,
            calibration=calibration,
            golden=golden_examples(flat_encoder, flat_decoder, x_model),
            parity_examples=min(PARITY_EXAMPLES, len(x_model)),
            bounds_graph=bounds_graph,
            pathway_graph=pathway_graph,
            default_score=default_score,
            reconstruction_units=reconstruction_units,
            latent_map=latent_map,
        )
        manifest = write_manifest(staging, body)
        publish(staging, out, force, FORCE_FLAG)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportedBundle(out, manifest, scores)
