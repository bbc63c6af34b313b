"""``vae-train train``: from data to a verified, published bundle and its training report.

``run_training`` composes one function per step: resolve the config, load the splits, train,
evaluate in torch, export to ONNX, calibrate the anomaly scores through ONNX Runtime, build and
seal the manifest, verify and publish the bundle, draw the report.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from vae_serve.core.manifest import Manifest, Metrics, SplitMetrics
from vae_serve.core.runtime import OnnxVae
from vae_serve.export.bundle_writer import publish, staging_dir_for, write_manifest
from vae_serve.export.calibration import calibrate
from vae_serve.export.config import TrainConfig, default_name, resolve_config
from vae_serve.export.data import DataError, Splits, load_source, make_splits, parse_classes
from vae_serve.export.evaluate import evaluate_bounds
from vae_serve.export.manifest_builder import build_manifest
from vae_serve.export.model import Vae
from vae_serve.export.onnx_export import PARITY_EXAMPLES, export_vae
from vae_serve.export.report import report_dir_for, write_report
from vae_serve.export.training import EVAL_BINARIZATION_SEED, TrainResult, evaluation_view, train_vae

# Importance samples of the validation split's IWAE bound (the test split's is --iwae-k).
VALIDATION_IWAE_K = 100


def load_splits(args: argparse.Namespace, likelihood: str) -> Splits:
    """The train / validation / test rows of ``--dataset``; Bernoulli data must lie in [0, 1]."""
    source = load_source(args.dataset, args.data_dir, args.labels)
    splits = make_splits(source, parse_classes(args.classes), validation_fraction=args.validation_fraction)
    low, high = float(splits.train.x.min()), float(splits.train.x.max())
    if likelihood == "bernoulli" and (low < 0.0 or high > 1.0):
        raise DataError(
            f"bernoulli likelihood needs values in [0, 1], data spans [{low:g}, {high:g}]; use --likelihood gaussian"
        )
    return splits


def evaluate(vae: Vae, splits: Splits, config: TrainConfig, iwae_k: int, seed: int) -> Metrics:
    """ELBO and IWAE bounds on the validation and test splits, on the data the model was trained on."""
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
        test=bounds(splits.test.x, iwae_k),
        binarization=binarization,
    )


def report(out: Path, result: TrainResult, vae: OnnxVae, manifest: Manifest, splits: Splits, scores: dict) -> Path:
    """Draw the training report beside the bundle; returns its folder."""
    folder = report_dir_for(out)
    calibration = manifest.calibration
    write_report(
        folder,
        result.history,
        result.best_epoch,
        vae,
        manifest.latent_dim,
        tuple(splits.example_shape),
        splits.validation.x,
        scores,
        calibration,
        calibration.seed,
    )
    return folder


def summary(out: Path, report_folder: Path, manifest: Manifest, result: TrainResult, seconds: float) -> dict:
    """The JSON line ``vae-train train`` prints."""
    test, validation = manifest.metrics.test, manifest.metrics.validation
    return {
        "bundle": str(out),
        "report": str(report_folder),
        "name": manifest.name,
        "version": manifest.version,
        "test_elbo_nats": test.elbo_nats,
        "test_iwae_nll_nats": test.iwae_nll_nats,
        "iwae_k": test.iwae_k,
        "bits_per_dim": test.bits_per_dim,
        "validation_elbo_nats": validation.elbo_nats,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": round(seconds, 3),
    }


def run_training(args: argparse.Namespace) -> dict:
    """Train, evaluate, export, calibrate, write, verify and publish a bundle, then draw its report.

    Args:
        args: the flags of ``vae-train train``.

    Returns:
        The summary JSON object.

    Raises:
        DataError, PublishError: bad flags or data, or ``--out`` exists without ``--force``.
        ExportError, BundleError, FloatingPointError, pydantic.ValidationError: training, export
            or verification failed.
    """
    started = time.perf_counter()
    config = resolve_config(args)
    if args.out.exists() and not args.force:
        raise DataError(f"{args.out} already exists; pass --force to replace it")
    splits = load_splits(args, config.likelihood)
    result = train_vae(config, splits.train.x, splits.validation.x, args.progress)
    metrics = evaluate(result.vae, splits, config, args.iwae_k, args.seed)
    staging = staging_dir_for(args.out)
    graphs = export_vae(result.vae, staging, splits.validation.x[:PARITY_EXAMPLES])
    vae = OnnxVae.from_files(staging / "encoder.onnx", staging / "decoder.onnx", config.likelihood)
    rows = f"validation split ({len(splits.validation)} examples, values as clients send them, not binarized)"
    scores, calibration = calibrate(vae, splits.validation.x, args.seed, rows, args.progress)
    name = args.name or default_name(args.dataset, parse_classes(args.classes))
    body = build_manifest(
        name=name,
        version=args.version,
        config=config,
        splits=splits,
        result=result,
        graphs=graphs,
        metrics=metrics,
        calibration=calibration,
    )
    manifest = write_manifest(staging, body)
    publish(staging, args.out, args.force)
    report_folder = report(args.out, result, vae, manifest, splits, scores)
    return summary(args.out, report_folder, manifest, result, time.perf_counter() - started)
