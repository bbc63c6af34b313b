"""``vae-train calibrate``: its flags, the new version a model repository implies, and the handler
(``recalibrate`` does the work; it needs no torch)."""

import argparse
from pathlib import Path

from vae_serve.core.manifest import repository_layout
from vae_serve.export.commands.flags import add_data_arguments, add_run_arguments, model_name
from vae_serve.export.commands.outcome import summarize
from vae_serve.export.sources.base import DataError

NAME = "calibrate"
SUMMARY = "recalibrate a bundle's anomaly scores as a new version"
DESCRIPTION = "Recalibrate a bundle's anomaly scores on normal data; writes a new bundle version."
CALIBRATION_SPLITS = ("validation", "train", "test", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train calibrate``."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle to recalibrate")
    add_data_arguments(parser, required=True)
    parser.add_argument(
        "--split",
        choices=CALIBRATION_SPLITS,
        default="validation",
        help="rows to calibrate on (default: validation; all: every row)",
    )
    parser.add_argument(
        "--version",
        type=model_name,
        help="the new version (default: N of --out REPO/NAME/N; else the old one + 1 when numeric, "
        "the old one being N of --bundle REPO/NAME/N)",
    )
    parser.add_argument("--out", type=Path, help="where to write it (default: beside the bundle, named by version)")
    add_run_arguments(parser, "seed of the sampled scores' noise (default 0)")


def calibrate_version(args: argparse.Namespace) -> None:
    """``vae-train calibrate``'s --version when not given, by the directories of a model repository:
    N of --out REPO/NAME/N, or (no --out) N + 1 of --bundle REPO/NAME/N. Else it stays unset, and
    the manifest's version + 1 is taken."""
    if args.version is not None:
        return
    out_layout = repository_layout(args.out) if args.out is not None else None
    bundle_layout = repository_layout(args.bundle)
    if out_layout is not None:
        args.version = out_layout[1]
    elif args.out is None and bundle_layout is not None:
        args.version = str(int(bundle_layout[1]) + 1)


def run(args: argparse.Namespace) -> int:
    """``vae-train calibrate``: see ``calibrate.recalibrate``."""
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle.writer import PublishError
    from vae_serve.export.commands.recalibrate import recalibrate

    refused = (DataError, PublishError)
    calibrate_version(args)
    return summarize("calibrate", lambda: recalibrate(args), refused, (BundleError,), "bundle refused")
