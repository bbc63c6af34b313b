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
import sys

from vae_serve.export.commands import calibrate, export_triton, train, verify

# Modules of the [train] extra: a command that needs a missing one says so, without a traceback.
TRAIN_EXTRA_MODULES = frozenset({"torch", "onnx", "onnxscript", "sklearn", "tqdm", "matplotlib", "PIL", "pyarrow"})

# Each command's module: NAME, SUMMARY (for `vae-train --help`), DESCRIPTION (for `vae-train NAME
# --help`), add_arguments(parser) and run(args) -> exit code.
COMMANDS = (train, calibrate, verify, export_triton)


def build_parser() -> argparse.ArgumentParser:
    """``vae-train`` and its subcommands, each with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="vae-train",
        description="Train VAEs into verified ONNX model bundles; recalibrate, verify or export bundles.",
        epilog="`vae-train COMMAND --help` lists a command's flags.",
    )
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        subparser = commands.add_parser(command.NAME, help=command.SUMMARY, description=command.DESCRIPTION)
        command.add_arguments(subparser)
        subparser.set_defaults(handler=command.run)
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
