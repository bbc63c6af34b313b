"""``vae-train calibrate``: recalibrate a bundle's anomaly scores on new normal data, without
retraining, as a new bundle version.

The graphs are copied unchanged; the manifest gets a new version, a new calibration (every score of
the score registry ``vae_serve.core.scores.SCORES``, computed through ONNX Runtime by the serving code, as at
training time) and a record of what it replaced; it is sealed, verified by the serving loader and
published atomically. In a model repository (``REPO/<name>/<version>/``) the new version lands
beside the old one by default, where a running server's repository watcher verifies it and swaps
it in. Needs no torch.
"""

import argparse
import shutil

import numpy as np

from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import Calibration, Manifest, ManifestBody, integer_version
from vae_serve.core.preprocessing import IDENTITY, Affine, to_model
from vae_serve.export.bundle.calibration import MIN_CALIBRATION_ROWS, calibrate
from vae_serve.export.bundle.writer import check_destination, publish, staging_dir_for, write_manifest
from vae_serve.export.commands.flags import source_options
from vae_serve.export.sources import DataError, load_source, make_splits, parse_classes, recorded_split


def next_version(version: str, requested: str | None) -> str:
    """``requested`` if given, else ``version`` + 1; a version that is not a number needs ``requested``."""
    if requested:
        return requested
    if (number := integer_version(version)) is not None:
        return str(number + 1)
    raise DataError(f"version {version!r} is not numeric; give the new one with --version")


def calibration_rows(args: argparse.Namespace, manifest: Manifest) -> np.ndarray:
    """The ``--split`` rows of ``--dataset`` (``all``: every row), split as the bundle's training run
    split them (its recorded fractions and seed), so that ``validation`` never holds training rows."""
    source = load_source(args.dataset, options=source_options(args))
    recorded = manifest.training.get("data", {}) if isinstance(manifest.training, dict) else {}
    splits = make_splits(source, parse_classes(args.classes), **recorded_split(recorded))
    if args.split == "all":
        return np.concatenate([splits.train.x, splits.validation.x, splits.test.x])
    return getattr(splits, args.split).x


def check_rows(x: np.ndarray, manifest: Manifest, split: str) -> None:
    """The rows fit the model: enough of them, as many features, and in [0, 1] for a Bernoulli likelihood."""
    if len(x) < MIN_CALIBRATION_ROWS:
        more = "" if split == "all" else "; --split all calibrates on every row"
        raise DataError(
            f"--dataset has {len(x)} {split} rows; calibration needs at least {MIN_CALIBRATION_ROWS}: "
            f"provide more{more}"
        )
    if x.shape[1] != manifest.input.num_features:
        raise DataError(f"--dataset rows have {x.shape[1]} features; the model takes {manifest.input.num_features}")
    model_x = to_model(Affine.of(manifest.preprocessing), x)
    if manifest.likelihood.name == "bernoulli" and (model_x.min() < 0 or model_x.max() > 1):
        raise DataError(
            "a Bernoulli model's data lie in [0, 1] after the bundle's preprocessing "
            f"({(manifest.preprocessing or IDENTITY).description}); these rows do not"
        )


def recalibrated(manifest: Manifest, version: str, calibration: Calibration) -> ManifestBody:
    """``manifest`` as ``version`` with ``calibration``, which records the calibration it replaces.
    Everything else, keys a newer writer added included, is kept."""
    replaces = {"version": manifest.version, "data": manifest.calibration.data}
    return manifest.body().model_copy(
        update={"version": version, "calibration": calibration.model_copy(update={"replaces": replaces})}
    )


def recalibrate(args: argparse.Namespace) -> dict:
    """Write the recalibrated bundle; returns the summary JSON object.

    Args:
        args: the flags of ``vae-train calibrate``.

    Raises:
        DataError: bad flags or data.
        PublishError: the destination exists without ``--force``, is not a bundle or an empty
            folder, or cannot be written.
        BundleError: the bundle (or the new one) does not verify.
    """
    bundle = load_bundle(args.bundle)  # verified: never recalibrate a damaged model
    version = next_version(bundle.manifest.version, args.version)
    out = args.out or args.bundle.with_name(version)
    check_destination(out, args.force)
    x = calibration_rows(args, bundle.manifest)
    check_rows(x, bundle.manifest, args.split)
    description = f"{args.dataset} {args.split} rows ({len(x)} examples), recalibrated by vae-train calibrate"
    _, calibration = calibrate(bundle.vae, x, args.seed, description, args.progress)
    staging = staging_dir_for(out)
    try:
        for file in bundle.manifest.graph_files():
            shutil.copy2(args.bundle / file, staging / file)
        write_manifest(staging, recalibrated(bundle.manifest, version, calibration))
        publish(staging, out, args.force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"bundle": str(out), "name": bundle.manifest.name, "version": version, "calibration_examples": len(x)}
