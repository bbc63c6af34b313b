"""``vae-train``: train a VAE into a verified ONNX model bundle, recalibrate a bundle, verify one,
export one as a Triton model repository.

    vae-train train --dataset digits --out models/repo/digits/1
    vae-train calibrate --bundle models/repo/digits/1 --dataset npy:normal.npy --split all
    vae-train verify --bundle models/digits
    vae-train export-triton --bundle models/repo/digits/1 --out triton-repo

In a model repository the directories are the name and version (docs/bundle.md): ``--out
REPO/NAME/N`` (N an integer) makes NAME and N the defaults of ``--name`` and ``--version``.

Progress goes to stderr; the last line on stdout is one JSON object. Exit codes: 0 done, 1 export or
verification failed, 2 bad arguments, data or destination (or the [train] extra missing), 130
interrupted (Ctrl-C), 143 stopped by SIGTERM (kill, docker stop, Kubernetes), which is handled as
Ctrl-C is: the run cleans up, and a checkpoint stays for --resume. Every expected fault is one line
on stderr that says what to change, never a traceback; ``train`` checks its flags, destination and
data (split sizes included) before training.

Nothing heavy is imported here: each command imports what it needs when it runs, so ``verify``
and every ``--help`` work on a base install (no torch, scikit-learn, tqdm, onnx or matplotlib).
"""

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from vae_serve.export.commands import calibrate, export_triton, train, verify

# Modules of the [train] extra: a command that needs a missing one says so, without a traceback.
TRAIN_EXTRA_MODULES = frozenset({"torch", "onnx", "onnxscript", "sklearn", "tqdm", "matplotlib", "PIL", "pyarrow"})

# Each command's module: NAME, SUMMARY (for `vae-train --help`), DESCRIPTION (for `vae-train NAME
# --help`), add_arguments(parser) and run(args) -> exit code.
COMMANDS = (train, calibrate, verify, export_triton)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, as Ctrl-C raises KeyboardInterrupt: the same cleanup runs.
    (Python's default for SIGTERM ends the process at once, leaving the work folder behind.)"""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises ``Terminated``; the previous handler is put back after
    (``main`` also runs inside other programs, tests among them)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        with _sigterm_as_interrupt():
            return args.handler(args)
    except KeyboardInterrupt as interrupt:
        # train and calibrate write into a staging folder that they remove on the way out.
        published = "; nothing was published" if args.command in ("train", "calibrate") else ""
        how, code = ("stopped (SIGTERM)", 143) if isinstance(interrupt, Terminated) else ("interrupted (Ctrl-C)", 130)
        print(f"vae-train {args.command}: {how}{published}", file=sys.stderr)
        return code
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
