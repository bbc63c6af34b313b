"""``vae-train``: train a VAE into a verified ONNX model bundle, recalibrate a bundle, verify one.

    vae-train train --dataset digits --out models/digits
    vae-train calibrate --bundle models/repo/digits/1 --dataset npy:normal.npy --split all
    vae-train verify --bundle models/digits

Progress goes to stderr; the last line on stdout is one JSON object. Exit codes: 0 done, 1 export
or verification failed, 2 bad arguments or data (or the [train] extra missing).

Nothing heavy is imported here: each command imports what it needs when it runs, so ``verify``
and every ``--help`` work on a base install (no torch, scikit-learn, tqdm, onnx or matplotlib).
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from vae_serve.export.config import model_name, parse_hidden, parse_size
from vae_serve.export.data import DataError

# Modules of the [train] extra: a command that needs a missing one says so, without a traceback.
TRAIN_EXTRA_MODULES = frozenset({"torch", "onnx", "onnxscript", "sklearn", "tqdm", "matplotlib", "PIL", "pyarrow"})
CALIBRATION_SPLITS = ("validation", "train", "test", "all")


def _add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    datasets = "digits, fashion-mnist, idx:DIR, npy:PATH, images:DIR, csv:PATH or parquet:PATH"
    if required:
        parser.add_argument("--dataset", required=True, help=f"normal data: {datasets}")
    else:
        parser.add_argument("--dataset", default="digits", help=f"{datasets} (default: digits)")
    parser.add_argument("--data-dir", type=Path, help="directory of the fashion-mnist IDX files")
    parser.add_argument("--labels", type=Path, help="integer labels for npy:PATH, needed by --classes")
    parser.add_argument("--classes", help="only these labels, e.g. 3 or 0,3 (one-class models)")
    parser.add_argument(
        "--channels", type=int, choices=(1, 3), help="images:DIR: 1 (grey) or 3 (RGB); default: from the files"
    )
    parser.add_argument(
        "--size", type=parse_size, help="images:DIR: resize to HEIGHT,WIDTH (or one number for a square)"
    )
    parser.add_argument("--label-column", help="csv:/parquet: the integer label column (for --classes)")


def _add_run_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train train``."""
    _add_data_arguments(parser, required=False)
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument(
        "--likelihood",
        choices=("bernoulli", "gaussian"),
        default="bernoulli",
        help="bernoulli for data in [0,1], gaussian for real-valued features",
    )
    parser.add_argument(
        "--decoder-scale",
        choices=("per-feature", "shared", "standardized"),
        help="gaussian only: a learned scale per feature (default); 'shared': one scale for all features "
        "(calibrated decoder; for pixels or other features in one unit); 'standardized': one calibrated scale "
        "in per-feature standardized units, so features that hardly vary in training weigh most",
    )
    parser.add_argument(
        "--binarize",
        choices=("dynamic", "none"),
        help="dynamic: resample x~Bernoulli(x) every batch (default for bernoulli)",
    )
    parser.add_argument(
        "--arch",
        choices=("mlp", "conv"),
        default="mlp",
        help="mlp, or conv for images [C, H, W] (grey or colour; H and W divisible by 4)",
    )
    parser.add_argument(
        "--conv-decoder",
        choices=("transposed", "upsample"),
        default="transposed",
        help="conv: double H and W by 4x4 stride-2 transposed convolutions, or nearest upsampling + 3x3 convolution",
    )
    parser.add_argument(
        "--hidden",
        type=parse_hidden,
        help="mlp: hidden layer sizes, e.g. 400 or 512,256; conv: channels of the conv layers, e.g. 32,64",
    )
    parser.add_argument("--latent-dim", type=int)
    parser.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--kl-warmup", type=float, default=0.0, help="epochs of linear KL warm-up (0: none)")
    parser.add_argument("--patience", type=int, help="epochs without validation improvement before stopping")
    parser.add_argument(
        "--train-samples",
        type=int,
        default=1,
        help="importance samples per example in the training objective: 1 = ELBO (default), k > 1 = IWAE-k bound",
    )
    parser.add_argument("--iwae-k", type=int, default=1000, help="importance samples of the test NLL")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--name", type=model_name, help="model name (default: from the dataset)")
    parser.add_argument("--version", type=model_name, default="1", help="model version (default 1)")
    _add_run_arguments(parser, "training seed: the same seed gives the same model (default 0)")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train calibrate``."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle to recalibrate")
    _add_data_arguments(parser, required=True)
    parser.add_argument(
        "--split",
        choices=CALIBRATION_SPLITS,
        default="validation",
        help="rows to calibrate on (default: validation; all: every row)",
    )
    parser.add_argument("--version", type=model_name, help="the new version (default: the old one + 1 when numeric)")
    parser.add_argument("--out", type=Path, help="where to write it (default: beside the bundle, named by version)")
    _add_run_arguments(parser, "seed of the sampled scores' noise (default 0)")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train verify``."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle directory to verify")


def _summarize(
    command: str,
    run: Callable[[], dict],
    refused: tuple[type[Exception], ...],
    failed: tuple[type[Exception], ...],
    failure: str = "failed",
) -> int:
    """Run a command; print its JSON summary (0), or its error: ``refused`` ones 2, ``failed`` ones 1."""
    try:
        summary = run()
    except refused as error:
        print(f"vae-train {command}: error: {error}", file=sys.stderr)
        return 2
    except failed as error:
        print(f"vae-train {command}: {failure}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


def train_command(args: argparse.Namespace) -> int:
    """``vae-train train``: see ``pipeline.run_training``."""
    from pydantic import ValidationError

    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError
    from vae_serve.export.onnx_export import ExportError
    from vae_serve.export.pipeline import run_training
    from vae_serve.export.user_model import ModelError

    failures = (ExportError, BundleError, FloatingPointError, ValidationError, ModelError)
    return _summarize("train", lambda: run_training(args), (DataError, PublishError), failures)


def calibrate_command(args: argparse.Namespace) -> int:
    """``vae-train calibrate``: see ``calibrate.recalibrate``."""
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError
    from vae_serve.export.calibrate import recalibrate

    refused = (DataError, PublishError)
    return _summarize("calibrate", lambda: recalibrate(args), refused, (BundleError,), "bundle refused")


def verify_command(args: argparse.Namespace) -> int:
    """``vae-train verify``: load the bundle as the server does; print what it is."""
    from vae_serve.core.bundle import load_bundle
    from vae_serve.core.errors import BundleError

    def verify() -> dict:
        manifest = load_bundle(args.bundle).manifest
        return {
            "bundle": str(args.bundle),
            "verified": True,
            "name": manifest.name,
            "version": manifest.version,
            "likelihood": manifest.likelihood.name,
            "input_shape": manifest.input.shape,
            "latent_dim": manifest.latent_dim,
            "test": manifest.metrics.test.model_dump(),
        }

    return _summarize("verify", verify, (), (BundleError,), "bundle refused")


# name, one-line summary for `vae-train --help`, description for `vae-train NAME --help`, flags, handler
COMMANDS = (
    (
        "train",
        "train a VAE and write its verified ONNX bundle",
        "Train a VAE, export it to ONNX and write a verified model bundle.",
        add_train_arguments,
        train_command,
    ),
    (
        "calibrate",
        "recalibrate a bundle's anomaly scores as a new version",
        "Recalibrate a bundle's anomaly scores on normal data; writes a new bundle version.",
        add_calibrate_arguments,
        calibrate_command,
    ),
    (
        "verify",
        "verify a bundle as the server does (no torch)",
        "Verify a model bundle as the server does: checksums, graphs, golden outputs. Needs no torch.",
        add_verify_arguments,
        verify_command,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """``vae-train`` and its subcommands, each with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="vae-train",
        description="Train VAEs into verified ONNX model bundles; recalibrate or verify bundles.",
        epilog="`vae-train COMMAND --help` lists a command's flags.",
    )
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, summary, description, add_arguments, handler in COMMANDS:
        command = commands.add_parser(name, help=summary, description=description)
        add_arguments(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``vae-train``; returns the exit code.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in TRAIN_EXTRA_MODULES:
            raise
        print(
            f"vae-train {args.command}: needs {missing}, which is not installed: pip install 'vae-serve[train]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
