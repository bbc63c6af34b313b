"""``vae-train``: train a VAE into a verified ONNX model bundle, recalibrate a bundle, verify one,
export one as a Triton model repository.

    vae-train train --dataset digits --out models/repo/digits/1
    vae-train calibrate --bundle models/repo/digits/1 --dataset npy:normal.npy --split all
    vae-train verify --bundle models/digits
    vae-train export-triton --bundle models/repo/digits/1 --out triton-repo

In a model repository the directories are the name and version (docs/bundle.md): ``--out
REPO/NAME/N`` (N an integer) makes NAME and N the defaults of ``--name`` and ``--version``.

Progress goes to stderr; the last line on stdout is one JSON object. Exit codes: 0 done, 1 export
or verification failed, 2 bad arguments, data or destination (or the [train] extra missing), 130
interrupted (Ctrl-C). Every expected fault is one line on stderr that says what to change, never a
traceback; ``train`` checks its flags, destination and data (split sizes included) before training.

Nothing heavy is imported here: each command imports what it needs when it runs, so ``verify``
and every ``--help`` work on a base install (no torch, scikit-learn, tqdm, onnx or matplotlib).
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from vae_serve.core.manifest import repository_layout
from vae_serve.export.config import model_name, parse_fraction, parse_hidden, parse_size
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
    parser.add_argument(
        "--validation-fraction",
        type=parse_fraction,
        default=0.1,
        help="share of the rows (after the test rows) held out for early stopping and calibration (default 0.1)",
    )
    parser.add_argument(
        "--name", type=model_name, help="model name (default: NAME of --out REPO/NAME/N, else from the dataset)"
    )
    parser.add_argument("--version", type=model_name, help="model version (default: N of --out REPO/NAME/N, else 1)")
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
    parser.add_argument(
        "--version",
        type=model_name,
        help="the new version (default: N of --out REPO/NAME/N; else the old one + 1 when numeric, "
        "the old one being N of --bundle REPO/NAME/N)",
    )
    parser.add_argument("--out", type=Path, help="where to write it (default: beside the bundle, named by version)")
    _add_run_arguments(parser, "seed of the sampled scores' noise (default 0)")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train verify``."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle directory to verify")


def _integer_from(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def add_export_triton_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train export-triton``."""
    from vae_serve.export.triton_repo import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_US, KINDS

    parser.add_argument("--bundle", required=True, type=Path, help="the bundle to export (verified first)")
    parser.add_argument("--out", required=True, type=Path, help="the Triton model repository (created if missing)")
    parser.add_argument("--name", type=model_name, help="prefix of the models' names (default: the manifest's name)")
    parser.add_argument(
        "--version",
        type=_integer_from(1),
        help="Triton's version directory (default: the manifest's version, which must then be an integer)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_integer_from(1),
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"rows Triton may batch into one run of the encoder or decoder (default {DEFAULT_MAX_BATCH_SIZE}, "
        "vae-serve's --max-rows); the bounds graph is never batched by Triton",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=_integer_from(0),
        default=DEFAULT_MAX_QUEUE_DELAY_US,
        help=f"dynamic batching: longest wait for more requests, microseconds (default {DEFAULT_MAX_QUEUE_DELAY_US})",
    )
    parser.add_argument("--kind", choices=sorted(KINDS), default="gpu", help="instance kind (default: gpu)")
    parser.add_argument(
        "--instances", type=_integer_from(1), default=1, help="instances per model and device (default 1)"
    )
    parser.add_argument("--force", action="store_true", help="replace versions that exist in the repository")


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
    except OSError as error:  # a file or folder the OS refused (disk full, permissions) while working
        print(f"vae-train {command}: error: {_os_error_text(error)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"vae-train {command}: error: out of memory; use less data or a smaller --batch-size", file=sys.stderr)
        return 2
    except failed as error:
        print(f"vae-train {command}: {failure}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


def _os_error_text(error: OSError) -> str:
    """``PATH: reason; ...``: what the OS refused, without a traceback."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}; check the path, its permissions and the free disk space"


def _note(command: str, text: str) -> None:
    print(f"vae-train {command}: note: {text}", file=sys.stderr)


def repository_defaults(args: argparse.Namespace) -> None:
    """``vae-train train``: --name and --version from --out REPO/NAME/N when not given, so that the
    manifest agrees with the directories a model repository serves it under; else the dataset's
    name and version 1. A flag that disagrees is kept, with a note of what will be served."""
    layout = repository_layout(args.out)
    if layout is not None:
        for flag, given, served in (("--name", args.name, layout[0]), ("--version", args.version, layout[1])):
            if given is not None and given != served:
                _note(
                    "train",
                    f"{flag} {given} goes into the manifest, but a model repository serves {args.out} as "
                    f"{layout[0]}:{layout[1]} (the directories are the name and version)",
                )
        args.name = args.name or layout[0]
        args.version = args.version or layout[1]
    args.version = args.version or "1"


def train_command(args: argparse.Namespace) -> int:
    """``vae-train train``: see ``pipeline.run_training``."""
    from pydantic import ValidationError

    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError
    from vae_serve.export.onnx_export import ExportError
    from vae_serve.export.pipeline import run_training
    from vae_serve.export.user_model import ModelError

    failures = (ExportError, BundleError, FloatingPointError, ValidationError, ModelError)
    repository_defaults(args)
    return _summarize("train", lambda: run_training(args), (DataError, PublishError), failures)


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


def calibrate_command(args: argparse.Namespace) -> int:
    """``vae-train calibrate``: see ``calibrate.recalibrate``."""
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError
    from vae_serve.export.calibrate import recalibrate

    refused = (DataError, PublishError)
    calibrate_version(args)
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


def export_triton_command(args: argparse.Namespace) -> int:
    """``vae-train export-triton``: see ``triton_repo.export_triton``."""
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError
    from vae_serve.export.triton_repo import Serving, TritonExportError, export_triton

    def run() -> dict:
        serving = Serving(args.max_batch_size, args.max_queue_delay_us, args.kind, args.instances)
        summary = export_triton(args.bundle, args.out, serving, name=args.name, version=args.version, force=args.force)
        layout = repository_layout(args.bundle)
        if layout is not None and layout != (summary["name"], summary["version"]) and not (args.name or args.version):
            _note(
                "export-triton",
                f"exported under the manifest's {summary['name']}:{summary['version']}, but vae-serve serves "
                f"{args.bundle} as {layout[0]}:{layout[1]}; pass --name {layout[0]} --version {layout[1]} to match",
            )
        if not summary["bounds_graph"]:
            _note(
                "export-triton",
                "the bundle has no bounds graph (bounds.onnx, written by exports since 2026-11-29): "
                "only the encoder and the decoder were exported; train the model again for one",
            )
        return summary

    refused = (TritonExportError, PublishError)
    return _summarize("export-triton", run, refused, (BundleError,), "bundle refused")


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
    (
        "export-triton",
        "write a bundle's graphs as a Triton model repository (no torch)",
        "Write a verified bundle's encoder, decoder and bounds graph into a Triton Inference Server model "
        "repository, each with its config.pbtxt (onnxruntime_onnx). Needs no torch. See docs/scaling.md.",
        add_export_triton_arguments,
        export_triton_command,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """``vae-train`` and its subcommands, each with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="vae-train",
        description="Train VAEs into verified ONNX model bundles; recalibrate, verify or export bundles.",
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
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("vae-train: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        # train and calibrate write into a staging folder that they remove on the way out.
        published = "; nothing was published" if args.command in ("train", "calibrate") else ""
        print(f"vae-train {args.command}: interrupted (Ctrl-C){published}", file=sys.stderr)
        return 130
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
