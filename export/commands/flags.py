"""The flags that several ``vae-train`` commands share, and their argparse types. The data flags
are generated from the sources' registry: ``--dataset``'s help and which sources each option
applies to. Imports nothing heavy: ``--help`` runs on a base install.
"""

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from vae_serve.core.manifest import NAME_PATTERN
from vae_serve.export.sources.base import SourceOptions
from vae_serve.export.sources.registry import dataset_help, listing, taking


def add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """``--dataset`` and the options of some sources (``--labels``, ``--key``, ...), with ``--classes``."""
    datasets = dataset_help()
    if required:
        parser.add_argument("--dataset", required=True, help=f"normal data: {datasets}")
    else:
        parser.add_argument("--dataset", default="digits", help=f"{datasets} (default: digits)")

    def only(option: str) -> str:
        return listing(taking(option), "and")

    parser.add_argument("--data-dir", type=Path, help=f"{only('data_dir')}: directory of the IDX files")
    parser.add_argument("--labels", type=Path, help=f"{only('labels')}: integer labels (.npy), needed by --classes")
    parser.add_argument("--key", help=f"{only('key')}: the array to train on (default: the only one)")
    parser.add_argument("--classes", help="only these labels, e.g. 3 or 0,3 (one-class models)")
    parser.add_argument(
        "--channels", type=int, choices=(1, 3), help=f"{only('channels')}: 1 (grey) or 3 (RGB); default: from the files"
    )
    parser.add_argument(
        "--size", type=parse_size, help=f"{only('size')}: resize to HEIGHT,WIDTH (or one number for a square)"
    )
    parser.add_argument("--label-column", help=f"{only('label_column')}: the integer label column (for --classes)")


def source_options(args: argparse.Namespace) -> SourceOptions:
    """The source-specific flags (``--data-dir``, ``--labels``, ``--channels``, ``--size``,
    ``--label-column``, ``--key``)."""
    return SourceOptions(args.data_dir, args.labels, args.channels, args.size, args.label_column, args.key)


def add_run_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """``--seed``, ``--force`` and ``--[no-]progress``: the commands that write a bundle take them."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )


def parse_hidden(text: str) -> tuple[int, ...]:
    """argparse type of ``--hidden``: ``"400"`` or ``"512,256"`` -> (400,) or (512, 256)."""
    try:
        sizes = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 400 or 512,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--hidden sizes must be positive")
    return sizes


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of ``--size``: ``"28"`` or ``"32,24"`` -> (28, 28) or (32, 24) (height, width)."""
    try:
        sizes = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes HEIGHT,WIDTH or one number, got {text!r}") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--size takes HEIGHT,WIDTH or one number (positive), got {text!r}")
    return (sizes[0], sizes[-1])


def parse_fraction(text: str) -> float:
    """argparse type of ``--validation-fraction``: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number between 0 and 1, e.g. 0.1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"takes a number between 0 and 1 (both excluded), e.g. 0.1, got {text!r}")
    return value


def parse_test_fraction(text: str) -> float:
    """argparse type of ``--test-fraction``: a number in [0, 1) (0: no test rows)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number in [0, 1), e.g. 0 or 0.2, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"takes a number in [0, 1) (0: no test rows), e.g. 0.2, got {text!r}")
    return value


def score_names() -> tuple[str, ...]:
    """The anomaly scores of the registry (``vae_serve.core.scores.SCORES``), for ``--score``'s choices.
    Imported here, not at module level: it loads ONNX Runtime (a base dependency, about 50 ms)."""
    from vae_serve.core.scores import SCORES

    return tuple(SCORES)


def model_name(text: str) -> str:
    """argparse type of ``--name`` and ``--version``: what the manifest schema accepts."""
    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits and _.- (a letter or digit first)")
    return text


def integer_from(minimum: int) -> Callable[[str], int]:
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
