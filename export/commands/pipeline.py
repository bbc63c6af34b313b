"""``vae-train train``: from data to a verified, published bundle and its training report.

``run_training`` composes one function per step: resolve the config, load the splits (raw values,
as clients send them) and map them into the model's space, train, evaluate in torch, then hand the
model to ``export_bundle`` (the same path as any user's model: export, parity, calibration on the
raw validation rows, manifest, verify, publish), and draw the report.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import Manifest, Metrics, SplitMetrics
from vae_serve.core.runtime import OnnxVae
from vae_serve.export.bundle.calibration import MIN_CALIBRATION_ROWS
from vae_serve.export.bundle.exporter import export_bundle
from vae_serve.export.bundle.manifest_builder import likelihood_spec, training_record
from vae_serve.export.commands.flags import source_options
from vae_serve.export.commands.report import write_report
from vae_serve.export.commands.run_output import RunOutput, check_outputs, run_output
from vae_serve.export.models.config import (
    Scoring,
    TrainConfig,
    default_name,
    recipe_record,
    resolve_config,
    resolve_scoring,
)
from vae_serve.export.models.conv import conv_grid, conv_input_shape
from vae_serve.export.models.evaluate import evaluate_bounds
from vae_serve.export.models.training import EVAL_BINARIZATION_SEED, TrainResult, evaluation_view, train_vae
from vae_serve.export.models.vae import EncoderPathway, Vae
from vae_serve.export.sources import DataError, SourceData, Splits, load_source, make_splits, parse_classes

# Importance samples of the validation split's IWAE bound (the test split's is --iwae-k).
VALIDATION_IWAE_K = 100


def test_fraction_for(source: SourceData, args: argparse.Namespace) -> float:
    """``--test-fraction`` (default 0: no test rows) for data without a test split of its own.

    Raises:
        DataError: ``--test-fraction`` given for data that has its own test split.
    """
    if source.test is None:
        return args.test_fraction or 0.0
    if args.test_fraction is not None:
        raise DataError(
            f"--test-fraction applies only to data without a test split of its own; {args.dataset} has one "
            f"({len(source.test)} rows), which the test metrics use: leave --test-fraction out"
        )
    return 0.0


def load_splits(args: argparse.Namespace, likelihood: str) -> tuple[Splits, Splits]:
    """The train / validation / test rows of ``--dataset``, raw and in the model's space; Bernoulli
    data must lie in [0, 1] in the model's space, and the validation rows (the calibration rows)
    must be enough for calibration: checked here, before training, not after it. Data without a
    test split of its own keeps no test rows unless ``--test-fraction`` asks for some."""
    source = load_source(args.dataset, options=source_options(args))
    raw = make_splits(
        source,
        parse_classes(args.classes),
        validation_fraction=args.validation_fraction,
        test_fraction=test_fraction_for(source, args),
        min_validation_rows=MIN_CALIBRATION_ROWS,
    )
    splits = raw.in_model_space()
    low, high = float(splits.train.x.min()), float(splits.train.x.max())
    if likelihood == "bernoulli" and (low < 0.0 or high > 1.0):
        raise DataError(
            f"bernoulli likelihood needs values in [0, 1], data spans [{low:g}, {high:g}]; use --likelihood gaussian"
        )
    return raw, splits


def check_architecture(config: TrainConfig, splits: Splits) -> None:
    """``--arch conv`` needs images whose height and width the convolutions divide exactly."""
    if config.arch != "conv":
        return
    try:
        conv_grid(conv_input_shape(splits.example_shape, splits.train.x.shape[1]), len(config.hidden))
    except ValueError as error:
        raise DataError(str(error)) from None


def evaluate(vae: Vae, splits: Splits, config: TrainConfig, iwae_k: int, seed: int) -> Metrics:
    """ELBO and IWAE bounds on the validation and test splits, on the data the model was trained on;
    no test metrics (None) when the run kept no test rows."""
    num_features = splits.train.x.shape[1]

    def bounds(x: np.ndarray, num_samples: int) -> SplitMetrics:
        summary = evaluate_bounds(vae, evaluation_view(x, config), num_samples, seed).summary(num_features)
        return SplitMetrics(**summary)

    binarization = (
        f"trained on dynamic binarization; metrics on one Bernoulli draw of each split, seed {EVAL_BINARIZATION_SEED}"
        if config.binarize == "dynamic"
        else "none: metrics on the data as given"
    )
    return Metrics(
        validation=bounds(splits.validation.x, VALIDATION_IWAE_K),
        test=bounds(splits.test.x, iwae_k) if len(splits.test) else None,
        binarization=binarization,
    )


def split_rows(splits: Splits) -> dict[str, int]:
    """Rows of each split: what the summary and the training report state."""
    return {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}


def report(folder: Path, result: TrainResult, vae: OnnxVae, manifest: Manifest, splits: Splits, scores: dict) -> None:
    """Draw the training report into ``folder`` (``splits`` in the model's space)."""
    calibration = manifest.calibration
    write_report(
        folder,
        result.history,
        result.best_epoch,
        split_rows(splits),
        vae,
        manifest.latent_dim,
        tuple(splits.example_shape),
        splits.validation.x,
        scores,
        calibration,
        calibration.seed,
    )


def summary(
    out: Path, report_folder: Path, manifest: Manifest, result: TrainResult, rows: dict[str, int], seconds: float
) -> dict:
    """The JSON line ``vae-train train`` prints; the test metrics are null when the run kept no test rows."""
    test, validation = manifest.metrics.test, manifest.metrics.validation
    return {
        "bundle": str(out),
        "report": str(report_folder),
        "name": manifest.name,
        "version": manifest.version,
        "rows": rows,
        "default_score": manifest.default_score,
        "test_elbo_nats": None if test is None else test.elbo_nats,
        "test_iwae_nll_nats": None if test is None else test.iwae_nll_nats,
        "iwae_k": None if test is None else test.iwae_k,
        "bits_per_dim": None if test is None else test.bits_per_dim,
        "validation_elbo_nats": validation.elbo_nats,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": round(seconds, 3),
    }


def run_training(args: argparse.Namespace) -> dict:
    """Train, evaluate, export, calibrate, write, verify and publish a bundle, then draw its report.

    Every check of the flags, the destination and the data runs before training. The bundle and
    its report are written into a work folder beside ``--out`` and moved into place together at the
    end; on any failure, Ctrl-C included, nothing the run wrote is left behind.

    Args:
        args: the flags of ``vae-train train``.

    Returns:
        The summary JSON object.

    Raises:
        DataError: bad flags or data (too few rows for the split included).
        PublishError: ``--out`` or its report folder may not be written (exists without ``--force``,
            is not a bundle, or its folder cannot be written).
        ExportError, BundleError, FloatingPointError, pydantic.ValidationError: training, export
            or verification failed.
    """
    started = time.perf_counter()
    config = resolve_config(args)
    scoring = resolve_scoring(args, config)
    check_outputs(args.out, args.force)
    raw, splits = load_splits(args, config.likelihood)
    check_architecture(config, splits)
    with run_output(args.out, args.force) as output:
        result, exported = train_and_export(args, config, scoring, raw, splits, output)
        vae = load_bundle(output.bundle).vae
        report(output.report, result, vae, exported.manifest, splits, exported.calibration_scores)
        bundle, report_folder = output.publish()
    if args.remove_checkpoint:  # the default checkpoint beside --out; one the user named is theirs
        args.checkpoint.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return summary(bundle, report_folder, exported.manifest, result, split_rows(splits), seconds)


def train_and_export(
    args: argparse.Namespace, config: TrainConfig, scoring: Scoring, raw: Splits, splits: Splits, output: RunOutput
):
    """Train the model and write its bundle into the run's work folder; returns (TrainResult, ExportedBundle)."""
    result = train_vae(
        config,
        splits.train.x,
        splits.validation.x,
        args.progress,
        splits.example_shape,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    metrics = evaluate(result.vae, splits, config, args.iwae_k, args.seed)
    exported = export_bundle(
        result.vae.encoder,
        result.vae.decoder,
        likelihood=config.likelihood,
        input_shape=splits.example_shape,
        calibration_data=raw.validation.x,
        out=output.bundle,
        name=args.name or default_name(args.dataset, parse_classes(args.classes)),
        version=args.version,
        preprocessing=raw.preprocessing,
        training={**training_record(config, splits, result), "recipe": recipe_record(args.dataset)},
        metrics=metrics,
        seed=args.seed,
        progress=args.progress,
        value_range=raw.value_range,
        likelihood_spec=likelihood_spec(result.vae),
        default_score=scoring.default_score,
        reconstruction_units=scoring.reconstruction_units,
        # The pathway score's statistics are fitted on the training rows, never the calibration rows.
        pathway=EncoderPathway(result.vae.encoder),
        pathway_data=raw.train.x,
    )
    return result, exported
