"""What a training run is: the recipes by kind of data, and the ``TrainConfig`` that the flags of
``vae-train train`` resolve to (their argparse types are in commands/flags.py). Imports no torch,
so that flags are checked (and ``--help`` runs) before torch is loaded, or where it is not installed.
"""

import argparse
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from vae_serve.export.sources.base import DataError
from vae_serve.export.sources.registry import find_source

# Defaults by kind of data (each source's ``recipe`` in sources/registry.py); any flag given
# overrides its entry. "images" is fashion-mnist, idx:DIR and images:DIR; "tables" is npy:, npz:, csv:
# and parquet:.
# Each recipe also names the likelihood, the Gaussian decoder's scale (None: not Gaussian), the
# manifest's default score and the units of the reconstruction errors (``Scoring``).
# - digits: the embedded demo, unchanged (Bernoulli, reconstruction_error).
# - images: a Gaussian in standardized units, each pixel's std floored at 0.3 x the std of all
#   pixels, a 784-1024-512-256-10 MLP, scored by pathway (RaPP): the recipe x score that bench/protocol.py
#   picks on one-class Fashion-MNIST's selection split (never the test rows; docs/anomaly.md has the
#   floors 0-1, latent sizes 5-20, widths 400 to 1024,512,256, IWAE training, weight decay and shift
#   augmentation it compared). Colour images ([3, H, W], images:DIR --channels 3)
#   take the same recipe as grey ones: it is unmeasured on colour data, chosen only because nothing
#   better is known.
# - tables: a Gaussian with a scale per feature, latent 16, scored by negative_elbo, the protocol's pick
#   over three tables (latent 2-32 compared; the shared scale wins two but collapses on wine, whose
#   columns share no unit); the
#   reconstruction errors are in standardized units, so that large-unit columns no longer carry them
#   (98-99 % of the breast-cancer table's error came from three area columns).
RECIPES = {
    "digits": {
        "hidden": (128,),
        "latent_dim": 8,
        "epochs": 300,
        "batch_size": 64,
        "lr": 1e-3,
        "patience": 30,
        "likelihood": "bernoulli",
        "decoder_scale": None,
        "feature_std_floor": 0.0,
        "score": "reconstruction_error",
        "reconstruction_units": "model",
    },
    "images": {
        "hidden": (1024, 512, 256),
        "latent_dim": 10,
        "epochs": 30,
        "batch_size": 100,
        "lr": 1e-3,
        "patience": 5,
        "likelihood": "gaussian",
        "decoder_scale": "standardized",
        "feature_std_floor": 0.3,
        "score": "pathway",
        "reconstruction_units": "model",
    },
    "tables": {
        "hidden": (128,),
        "latent_dim": 16,
        "epochs": 200,
        "batch_size": 128,
        "lr": 1e-3,
        "patience": 20,
        "likelihood": "gaussian",
        "decoder_scale": "per-feature",
        "feature_std_floor": 0.0,
        "score": "negative_elbo",
        "reconstruction_units": "standardized",
    },
}
# The decoder scale of a Gaussian whose recipe names none (a Gaussian asked for on digits).
DEFAULT_DECODER_SCALE = "per-feature"
# --arch conv: --hidden are the channels of the stride-2 convolutions (docs/benchmarks.md, the conv
# architecture search, says how these were chosen).
CONV_HIDDEN = (32, 64)
# --arch conv's default score where its recipe names "pathway" (measured on MLP encoders only).
CONV_DEFAULT_SCORE = "negative_elbo"
# --weight-decay above this shrinks every weight by more than lr x 10 a step: the model learns nothing.
MAX_WEIGHT_DECAY = 10.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; recorded in the manifest."""

    likelihood: str
    binarize: str
    hidden: tuple[int, ...]
    latent_dim: int
    epochs: int
    batch_size: int
    lr: float
    kl_warmup_epochs: float
    patience: int
    seed: int
    # Importance samples per example in the objective: 1 trains on the ELBO, k > 1 on the IWAE-k
    # bound (Burda et al. 2016), which costs k decoder passes per example and tightens log p(x).
    train_samples: int = 1
    # Gaussian only: "per-feature" standardizes each feature and learns a scale per feature;
    # "shared" standardizes by one mean and std over all features and learns one scale for all.
    decoder_scale: str = "per-feature"
    # "mlp", or "conv" for images: ``hidden`` are then the channels of the convolutions.
    arch: str = "mlp"
    # --arch conv: how the decoder doubles H and W, "transposed" or "upsample".
    conv_decoder: str = "transposed"
    # Gaussian only: each feature's standardizing std is floored at this fraction of the standard
    # deviation of all training values (0: only MIN_FEATURE_STD). For features in one unit (pixels).
    feature_std_floor: float = 0.0
    # AdamW's decoupled weight decay (Loshchilov & Hutter 2019) per step, as a fraction of lr x weight;
    # 0 trains with Adam, as every run did before the setting existed.
    weight_decay: float = 0.0
    # Epoch e trains at lr x lr_decay^(e - 1): a function of the epoch alone, so a resumed run follows
    # the same schedule. 1 keeps the constant rate every run had before the setting existed.
    lr_decay: float = 1.0


@dataclass(frozen=True)
class Scoring:
    """How the bundle scores, which its manifest states: the score ScoreAnomaly uses when a request
    names none, and the units of the reconstruction errors ("model" or "standardized")."""

    default_score: str
    reconstruction_units: str


def recipe_kind(dataset: str) -> str:
    """The kind of data of ``--dataset`` (a key of ``RECIPES``): its source's recipe. Raises ``DataError``."""
    source, _ = find_source(dataset)
    return source.recipe


def recipe_for(dataset: str) -> dict:
    """The defaults for ``--dataset``: its source's recipe. Raises ``DataError`` for an unknown dataset."""
    return RECIPES[recipe_kind(dataset)]


def default_name(dataset: str, classes: tuple[int, ...] | None) -> str:
    """The model name when ``--name`` is not given: from the dataset, and its classes if any."""
    base = dataset if ":" not in dataset else Path(dataset.split(":", 1)[1]).stem or dataset.split(":")[0]
    # What NAME_PATTERN takes: other characters become "-", and a name starts with a letter or digit.
    base = re.sub(r"^[^A-Za-z0-9]+|[-.]+$", "", re.sub(r"[^A-Za-z0-9_.-]", "-", base)) or "model"
    return base if classes is None else f"{base}-class-{'-'.join(map(str, classes))}"


def _given_or(value, default):
    """The flag's value when given (0 included, so that it is refused, not replaced), else the recipe's."""
    return default if value is None else value


def resolve_likelihood(args: argparse.Namespace, recipe: dict) -> tuple[str, str]:
    """(likelihood, decoder scale): the flags given, else the recipe's. The recipe's decoder scale
    applies only when the likelihood is Gaussian, so ``--likelihood bernoulli`` on images is no
    conflict; a ``--decoder-scale`` given with a likelihood that is not Gaussian is refused."""
    likelihood = args.likelihood or recipe["likelihood"]
    if args.decoder_scale is not None and likelihood != "gaussian":
        why = "" if args.likelihood else f" (the default for {args.dataset} is {likelihood}: add --likelihood gaussian)"
        raise DataError(f"--decoder-scale applies to --likelihood gaussian only{why}")
    decoder_scale = args.decoder_scale or recipe["decoder_scale"] or DEFAULT_DECODER_SCALE
    return likelihood, decoder_scale


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the flags given, the dataset's recipe for the rest. Raises ``DataError``."""
    if args.conv_decoder != "transposed" and args.arch != "conv":
        raise DataError("--conv-decoder applies to --arch conv only")
    recipe = recipe_for(args.dataset)
    likelihood, decoder_scale = resolve_likelihood(args, recipe)
    binarize = args.binarize or ("dynamic" if likelihood == "bernoulli" else "none")
    if binarize == "dynamic" and likelihood != "bernoulli":
        raise DataError("--binarize dynamic needs --likelihood bernoulli")
    config = TrainConfig(
        likelihood=likelihood,
        binarize=binarize,
        hidden=_given_or(args.hidden, CONV_HIDDEN if args.arch == "conv" else recipe["hidden"]),
        latent_dim=_given_or(args.latent_dim, recipe["latent_dim"]),
        epochs=_given_or(args.epochs, recipe["epochs"]),
        batch_size=_given_or(args.batch_size, recipe["batch_size"]),
        lr=_given_or(args.lr, recipe["lr"]),
        kl_warmup_epochs=args.kl_warmup,
        patience=_given_or(args.patience, recipe["patience"]),
        seed=args.seed,
        train_samples=args.train_samples,
        decoder_scale=decoder_scale,
        arch=args.arch,
        conv_decoder=args.conv_decoder,
        # The recipe's floor is for its Gaussian: --likelihood bernoulli on images takes none.
        feature_std_floor=_given_or(
            args.feature_std_floor, recipe["feature_std_floor"] if likelihood == "gaussian" else 0.0
        ),
        weight_decay=args.weight_decay,
        lr_decay=args.lr_decay,
    )
    check_config(config, args.iwae_k)
    return config


def resolve_scoring(args: argparse.Namespace, config: TrainConfig) -> Scoring:
    """The bundle's default score (``--score``, else the recipe's) and its reconstruction units: the
    recipe's, but "standardized" only for a Gaussian, whose bundle records the feature scales they
    divide by (a Bernoulli's errors stay in the model's units, [0, 1] per feature)."""
    recipe = recipe_for(args.dataset)
    units = recipe["reconstruction_units"] if config.likelihood == "gaussian" else "model"
    score = args.score or recipe["score"]
    if args.score is None and config.arch == "conv" and score == "pathway":
        # The pathway of a conv encoder reads its dense layer only, and was never measured: keep the bound.
        score = CONV_DEFAULT_SCORE
    return Scoring(default_score=score, reconstruction_units=units)


def recipe_record(dataset: str) -> dict:
    """The recipe the defaults came from, as the manifest's ``training`` section records it: its
    kind and every default (the flags given override them; the resolved values are the config's
    and the manifest's ``default_score`` and ``reconstruction_units``)."""
    kind = recipe_kind(dataset)
    recipe = RECIPES[kind]
    return {"kind": kind, **recipe, "hidden": list(recipe["hidden"])}


def check_config(config: TrainConfig, iwae_k: int) -> None:
    """Counts and the learning rate must be positive, the KL warm-up not negative."""
    counts = (config.latent_dim, config.epochs, config.batch_size, config.patience, config.train_samples, iwae_k)
    if min(counts) < 1 or not config.lr > 0:
        raise DataError(
            "--latent-dim, --epochs, --batch-size, --patience, --train-samples, --iwae-k and --lr must be positive"
        )
    if not config.kl_warmup_epochs >= 0:
        raise DataError("--kl-warmup must be 0 (none) or a positive number of epochs")
    if not 0.0 <= config.feature_std_floor <= 1.0:
        raise DataError("--feature-std-floor must be a fraction in [0, 1] of the data's standard deviation")
    if config.feature_std_floor > 0 and config.likelihood != "gaussian":
        raise DataError("--feature-std-floor applies to --likelihood gaussian only")
    if not 0.0 <= config.weight_decay <= MAX_WEIGHT_DECAY:
        raise DataError(f"--weight-decay must be a number in [0, {MAX_WEIGHT_DECAY:g}] (0: none)")
    if not 0.0 < config.lr_decay <= 1.0:
        raise DataError("--lr-decay must be a factor in (0, 1] per epoch (1: a constant learning rate)")


def config_record_defaults() -> dict:
    """The settings that have defaults, as ``config_record`` writes them: what a record written before
    a setting existed ran with."""
    return {item.name: item.default for item in fields(TrainConfig) if item.default is not MISSING}


def config_record(config: TrainConfig) -> dict:
    """The config as the manifest's ``training`` section records it."""
    record = asdict(config)
    record["hidden"] = list(config.hidden)
    return record
