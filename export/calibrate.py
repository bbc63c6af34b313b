"""``vae-train calibrate``: recalibrate a bundle's anomaly scores on new normal data, without
retraining, as a new bundle version.

The graphs are copied unchanged; the manifest gets a new version, a new calibration (every score of
``service.scoring.SCORE_PARAMS``, computed through ONNX Runtime by the serving code, as at training
time) and a record of what it replaced; it is sealed, verified by the serving loader and published
atomically. In a model repository (``REPO/<name>/<version>/``) the new version lands beside the old
one by default, where a running server's repository watcher verifies it and swaps it in.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from vae_serve.export.data import DataError, load_source, make_splits, parse_classes

SPLITS = ("validation", "train", "test", "all")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-train calibrate",
        description="Recalibrate a bundle's anomaly scores on normal data; writes a new bundle version.",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle to recalibrate")
    parser.add_argument("--dataset", required=True, help="normal data: digits, fashion-mnist, idx:DIR or npy:PATH")
    parser.add_argument("--data-dir", type=Path, help="folder of the fashion-mnist files")
    parser.add_argument("--labels", type=Path, help="labels .npy for npy:PATH (with --classes)")
    parser.add_argument("--classes", help="only these labels are normal, e.g. 3 or 0,3")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="validation",
        help="rows to calibrate on (default: validation; all: every row)",
    )
    parser.add_argument("--version", help="the new version (default: the old one + 1 when numeric)")
    parser.add_argument("--out", type=Path, help="where to write it (default: beside the bundle, named by version)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled scores' noise (default 0)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def next_version(version: str, requested: str | None) -> str:
    if requested:
        return requested
    if version.isdigit():
        return str(int(version) + 1)
    raise DataError(f"version {version!r} is not numeric; give the new one with --version")


def calibration_rows(args: argparse.Namespace) -> np.ndarray:
    splits = make_splits(load_source(args.dataset, args.data_dir, args.labels), parse_classes(args.classes))
    if args.split == "all":
        return np.concatenate([splits.train.x, splits.validation.x, splits.test.x])
    return getattr(splits, args.split).x


def recalibrate(args: argparse.Namespace) -> dict:
    from vae_serve.core.bundle import load_bundle
    from vae_serve.core.manifest import MANIFEST_FILE
    from vae_serve.core.scoring import calibration_of
    from vae_serve.export.bundle_writer import publish, staging_dir_for, write_manifest
    from vae_serve.export.train import calibration_scores

    bundle = load_bundle(args.bundle)  # verified: never recalibrate a damaged model
    document = json.loads((args.bundle / MANIFEST_FILE).read_text())
    version = next_version(document["version"], args.version)
    out = args.out or args.bundle.with_name(version)
    if out.exists() and not args.force:
        raise DataError(f"{out} already exists; pass --force to replace it")
    x = calibration_rows(args)
    if x.shape[1] != bundle.manifest.input.num_features:
        raise DataError(
            f"--dataset rows have {x.shape[1]} features; the model takes {bundle.manifest.input.num_features}"
        )
    if bundle.manifest.likelihood.name == "bernoulli" and (x.min() < 0 or x.max() > 1):
        raise DataError("a Bernoulli model's data lie in [0, 1]; these rows do not")
    scores = calibration_scores(bundle.vae, x, args.seed, args.progress)
    description = f"{args.dataset} {args.split} rows ({len(x)} examples), recalibrated by vae-train calibrate"
    previous = {"version": document["version"], "data": document["calibration"]["data"]}
    document.update(
        version=version,
        calibration={**calibration_of(scores, args.seed, description), "replaces": previous},
    )
    staging = staging_dir_for(out)
    for graph in document["graphs"].values():
        shutil.copy2(args.bundle / graph["file"], staging / graph["file"])
    document.pop("manifest_sha256", None)
    document.pop("files", None)
    write_manifest(staging, document)
    publish(staging, out, args.force)
    return {"bundle": str(out), "name": document["name"], "version": version, "calibration_examples": len(x)}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError

    try:
        summary = recalibrate(args)
    except (DataError, PublishError) as error:
        print(f"vae-train calibrate: error: {error}", file=sys.stderr)
        return 2
    except BundleError as error:
        print(f"vae-train calibrate: bundle refused: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0
