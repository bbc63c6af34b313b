"""``vae-train train``: its flags, the name and version a model repository implies, and the
handler, which imports the training pipeline (torch) only when it runs."""

import argparse
from pathlib import Path

from vae_serve.core.manifest import repository_layout
from vae_serve.export.commands.flags import (
    add_data_arguments,
    add_run_arguments,
    model_name,
    parse_fraction,
    parse_hidden,
    parse_test_fraction,
    score_names,
)
from vae_serve.export.commands.outcome import note, summarize
from vae_serve.export.models.config import RECIPES
from vae_serve.export.sources.base import DataError

NAME = "train"
SUMMARY = "train a VAE and write its verified ONNX bundle"
DESCRIPTION = (
    "Train a VAE, export it to ONNX and write a verified model bundle. The likelihood, decoder scale and "
    "default score come from the kind of data (digits; images: fashion-mnist, idx:, images:; tables: npy:, "
    "npz:, csv:, parquet:) unless given."
)
# The value of --checkpoint given alone (an object, which argparse does not convert, so that no path
# a user may write means it): the default checkpoint, OUT.checkpoint.pt beside --out.
DEFAULT_CHECKPOINT = object()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train train``."""
    add_data_arguments(parser, required=False)
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument(
        "--likelihood",
        choices=("bernoulli", "gaussian"),
        help="bernoulli for data in [0,1], gaussian for real-valued features (default: by kind of data, "
        f"{_recipe_defaults('likelihood')})",
    )
    parser.add_argument(
        "--decoder-scale",
        choices=("per-feature", "shared", "standardized"),
        help="gaussian only: 'per-feature': a learned scale per feature; 'shared': one scale for all features "
        "(calibrated decoder; for pixels or other features in one unit); 'standardized': one calibrated scale "
        "in per-feature standardized units, so features that hardly vary in training weigh most (default: by "
        f"kind of data, {_recipe_defaults('decoder_scale')})",
    )
    parser.add_argument(
        "--feature-std-floor",
        type=float,
        metavar="FRACTION",
        help="gaussian only: floor each feature's standardizing std at FRACTION x the std of all training values, "
        "so that pixels that hardly vary in training do not weigh without bound; for features in one unit "
        f"(default: by kind of data, {_recipe_defaults('feature_std_floor')})",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        metavar="W",
        help="AdamW's decoupled weight decay on every weight (default: 0, plain Adam; no kind of data's "
        "recipe uses it: measured flat on images)",
    )
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=1.0,
        metavar="GAMMA",
        help="multiply the learning rate by GAMMA every epoch: epoch e trains at lr x GAMMA^(e-1) "
        "(default: 1, constant; for long likelihood runs, docs/benchmarks.md)",
    )
    parser.add_argument(
        "--score",
        choices=score_names(),
        metavar="NAME",
        help=f"the anomaly score ScoreAnomaly uses when a request names none, recorded in the manifest: one of "
        f"{', '.join(score_names())} (default: by kind of data, {_recipe_defaults('score')})",
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
        "--test-fraction",
        type=parse_test_fraction,
        metavar="FRACTION",
        help="data without a test split of its own: share of the rows held out as test rows, for the test metrics "
        "(default 0: every row is used for training and validation)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        nargs="?",
        const=DEFAULT_CHECKPOINT,
        metavar="FILE",
        help="write a checkpoint to FILE after every epoch, kept after the run (alone: OUT.checkpoint.pt, "
        "removed once the bundle is published)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the training saved in --checkpoint (default OUT.checkpoint.pt) with the same flags",
    )
    parser.add_argument(
        "--name", type=model_name, help="model name (default: NAME of --out REPO/NAME/N, else from the dataset)"
    )
    parser.add_argument("--version", type=model_name, help="model version (default: N of --out REPO/NAME/N, else 1)")
    add_run_arguments(parser, "training seed: the same seed gives the same model (default 0)")


def _recipe_defaults(key: str) -> str:
    """``"digits: bernoulli, images: gaussian, tables: gaussian"``: a recipe entry by kind of data."""
    return ", ".join(f"{kind}: {recipe[key]}" for kind, recipe in RECIPES.items() if recipe[key] is not None)


def repository_defaults(args: argparse.Namespace) -> None:
    """``vae-train train``: --name and --version from --out REPO/NAME/N when not given, so that the
    manifest agrees with the directories a model repository serves it under; else the dataset's
    name and version 1. A flag that disagrees is kept, with a note of what will be served."""
    layout = repository_layout(args.out)
    if layout is not None:
        for flag, given, served in (("--name", args.name, layout[0]), ("--version", args.version, layout[1])):
            if given is not None and given != served:
                note(
                    "train",
                    f"{flag} {given} goes into the manifest, but a model repository serves {args.out} as "
                    f"{layout[0]}:{layout[1]} (the directories are the name and version)",
                )
        args.name = args.name or layout[0]
        args.version = args.version or layout[1]
    args.version = args.version or "1"


def default_checkpoint(out: Path) -> Path:
    """``OUT.checkpoint.pt``: beside the bundle, not in it (the bundle's files are sealed by its manifest,
    and a model repository serves only directories, so the file is never taken for a version)."""
    return out.with_name(f"{out.name}.checkpoint.pt")


def checkpoint_defaults(args: argparse.Namespace) -> None:
    """Resolve ``--checkpoint`` and ``--resume``: ``--checkpoint`` alone, or ``--resume`` without it,
    is the default checkpoint beside ``--out``, which the run removes once the bundle is published
    (``args.remove_checkpoint``); a checkpoint FILE the user named is theirs and is kept. Whether the
    file may be written or resumed from, ``train_vae`` checks (``CheckpointError``) before training.
    """
    given = args.checkpoint is not None and args.checkpoint is not DEFAULT_CHECKPOINT
    if not given and (args.resume or args.checkpoint is DEFAULT_CHECKPOINT):
        args.checkpoint = default_checkpoint(args.out)
    args.remove_checkpoint = args.checkpoint is not None and not given


def run(args: argparse.Namespace) -> int:
    """``vae-train train``: see ``pipeline.run_training``."""
    from pydantic import ValidationError

    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle.onnx_export import ExportError
    from vae_serve.export.bundle.user_model import ModelError
    from vae_serve.export.bundle.writer import PublishError
    from vae_serve.export.commands.pipeline import run_training
    from vae_serve.export.models.checkpoint import CheckpointError

    failures = (ExportError, BundleError, FloatingPointError, ValidationError, ModelError)
    repository_defaults(args)
    checkpoint_defaults(args)
    return summarize("train", lambda: run_training(args), (DataError, PublishError, CheckpointError), failures)
