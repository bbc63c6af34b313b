"""``vae-train``: train a VAE, export it to ONNX and write a verified model bundle.

    vae-train --dataset digits --out models/digits
    vae-train verify --bundle models/digits

Progress and per-epoch ELBOs go to stderr; the last line on stdout is one JSON object with the
test metrics. Exit codes: 0 done, 1 export or verification failed, 2 bad arguments or data.
"""

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vae_serve.export.data import DataError, Splits, load_source, make_splits, parse_classes

# Defaults by kind of data; any flag given overrides its entry. "images" is fashion-mnist and
# idx:DIR (the 784-400-20 recipe of the quality target in docs/benchmarks.md).
RECIPES = {
    "digits": {"hidden": (128,), "latent_dim": 8, "epochs": 300, "batch_size": 64, "lr": 1e-3, "patience": 30},
    "images": {"hidden": (400,), "latent_dim": 20, "epochs": 30, "batch_size": 100, "lr": 1e-3, "patience": 5},
    "npy": {"hidden": (128,), "latent_dim": 8, "epochs": 200, "batch_size": 128, "lr": 1e-3, "patience": 20},
}
VALIDATION_IWAE_K = 100


def recipe_for(dataset: str) -> dict:
    if dataset == "digits":
        return RECIPES["digits"]
    return RECIPES["npy"] if dataset.startswith("npy:") else RECIPES["images"]


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 400 or 512,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--hidden sizes must be positive")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-train",
        description="Train a VAE and write an ONNX model bundle.",
        epilog="vae-train verify --bundle DIR checks an existing bundle.",
    )
    parser.add_argument("--dataset", default="digits", help="digits (default), fashion-mnist, idx:DIR or npy:PATH")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--data-dir", type=Path, help="directory of the fashion-mnist IDX files")
    parser.add_argument("--labels", type=Path, help="integer labels for npy:PATH, needed by --classes")
    parser.add_argument("--classes", help="train on these labels only, e.g. 3 or 0,3 (one-class models)")
    parser.add_argument(
        "--likelihood",
        choices=("bernoulli", "gaussian"),
        default="bernoulli",
        help="bernoulli for data in [0,1], gaussian for real-valued features",
    )
    parser.add_argument(
        "--decoder-scale",
        choices=("per-feature", "shared"),
        help="gaussian only: a learned scale per feature (default), or one shared by all features "
        "(calibrated decoder; for pixels or other features in one unit)",
    )
    parser.add_argument(
        "--binarize",
        choices=("dynamic", "none"),
        help="dynamic: resample x~Bernoulli(x) every batch (default for bernoulli)",
    )
    parser.add_argument("--hidden", type=parse_hidden, help="hidden layer sizes, e.g. 400 or 512,256")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iwae-k", type=int, default=1000, help="importance samples of the test NLL")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--name", help="model name (default: from the dataset)")
    parser.add_argument("--version", default="1", help="model version (default 1)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    return parser


def default_name(dataset: str, classes: tuple[int, ...] | None) -> str:
    base = dataset if ":" not in dataset else Path(dataset.split(":", 1)[1]).stem or dataset.split(":")[0]
    base = "".join(char if char.isalnum() or char in "-_." else "-" for char in base).strip("-.") or "model"
    return base if classes is None else f"{base}-class-{'-'.join(map(str, classes))}"


def _given_or(value, default):
    """The flag's value when given (0 included, so that it is refused, not replaced), else the recipe's."""
    return default if value is None else value


def resolve_config(args: argparse.Namespace):
    from vae_serve.export.training import TrainConfig

    recipe = recipe_for(args.dataset)
    binarize = args.binarize or ("dynamic" if args.likelihood == "bernoulli" else "none")
    if binarize == "dynamic" and args.likelihood != "bernoulli":
        raise DataError("--binarize dynamic needs --likelihood bernoulli")
    config = TrainConfig(
        likelihood=args.likelihood,
        binarize=binarize,
        hidden=_given_or(args.hidden, recipe["hidden"]),
        latent_dim=_given_or(args.latent_dim, recipe["latent_dim"]),
        epochs=_given_or(args.epochs, recipe["epochs"]),
        batch_size=_given_or(args.batch_size, recipe["batch_size"]),
        lr=_given_or(args.lr, recipe["lr"]),
        kl_warmup_epochs=args.kl_warmup,
        patience=_given_or(args.patience, recipe["patience"]),
        seed=args.seed,
        train_samples=args.train_samples,
        decoder_scale=args.decoder_scale or "per-feature",
    )
    if args.decoder_scale is not None and args.likelihood != "gaussian":
        raise DataError("--decoder-scale applies to --likelihood gaussian only")
    counts = (config.latent_dim, config.epochs, config.batch_size, config.patience, config.train_samples, args.iwae_k)
    if min(counts) < 1 or not config.lr > 0:
        raise DataError(
            "--latent-dim, --epochs, --batch-size, --patience, --train-samples, --iwae-k and --lr must be positive"
        )
    if not config.kl_warmup_epochs >= 0:
        raise DataError("--kl-warmup must be 0 (none) or a positive number of epochs")
    return config


def check_data_fits(splits: Splits, likelihood: str) -> None:
    low, high = float(splits.train.x.min()), float(splits.train.x.max())
    if likelihood == "bernoulli" and (low < 0.0 or high > 1.0):
        raise DataError(
            f"bernoulli likelihood needs values in [0, 1], data spans [{low:g}, {high:g}]; use --likelihood gaussian"
        )


def producer_versions() -> dict[str, str]:
    versions = {}
    for package in ("vae-serve", "torch", "onnx", "onnxruntime", "onnxscript", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def likelihood_record(vae) -> dict:
    if vae.likelihood == "bernoulli":
        return {
            "name": "bernoulli",
            "parameters": {"decoder_outputs": ["logits"], "log_prob": "sum_d x_d * l_d - softplus(l_d)"},
        }
    from vae_serve.export.model import MIN_STANDARDIZED_SCALE

    decoder = vae.decoder
    return {
        "name": "gaussian",
        "parameters": {
            "decoder_outputs": ["mean", "log_scale"],
            "log_prob": "sum_d -0.5*log(2*pi) - log_scale_d - 0.5*((x_d - mean_d)/exp(log_scale_d))^2",
            "scale": (
                "learned, one value shared by every feature, floored at min_standardized_scale * feature_scale"
                if decoder.shared_scale
                else "learned per feature, floored at min_standardized_scale * feature_scale"
            ),
            "min_standardized_scale": MIN_STANDARDIZED_SCALE,
            "standardization": "inside both graphs: encoder sees (x - feature_loc) / feature_scale",
            "feature_loc": decoder.scaling.loc.tolist(),
            "feature_scale": decoder.scaling.scale.tolist(),
        },
    }


def calibration_scores(vae, x, seed: int, progress: bool | None) -> dict:
    """Every anomaly score of the validation rows, one score at a time behind a progress bar.

    Each score is computed over all rows in one call: its noise is drawn in one block from the
    seed (as a served request of these rows would), so the rows cannot be split for progress.
    """
    from tqdm import tqdm

    from vae_serve.core.scoring import SCORE_PARAMS, anomaly_scores

    scores = {}
    names = tqdm(
        list(SCORE_PARAMS),
        desc="calibrating",
        unit="score",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    for name in names:
        names.set_postfix_str(name)
        scores.update(anomaly_scores(vae, x, [name], seed))
    return scores


def run_training(args: argparse.Namespace) -> dict:
    """Train, export, calibrate, write and verify the bundle; returns the summary JSON object."""
    from vae_serve.core.runtime import OnnxVae
    from vae_serve.core.scoring import calibration_of
    from vae_serve.export.bundle_writer import golden_examples, publish, staging_dir_for, write_manifest
    from vae_serve.export.evaluate import evaluate_bounds
    from vae_serve.export.onnx_export import PARITY_TOLERANCE, export_vae
    from vae_serve.export.report import report_dir_for, write_report
    from vae_serve.export.training import EVAL_BINARIZATION_SEED, config_record, evaluation_view, train_vae

    started = time.perf_counter()
    classes = parse_classes(args.classes)
    config = resolve_config(args)
    splits = make_splits(
        load_source(args.dataset, args.data_dir, args.labels), classes, validation_fraction=args.validation_fraction
    )
    check_data_fits(splits, config.likelihood)
    if args.out.exists() and not args.force:
        raise DataError(f"{args.out} already exists; pass --force to replace it")
    result = train_vae(config, splits.train.x, splits.validation.x, args.progress)
    num_features = splits.train.x.shape[1]
    test = evaluate_bounds(result.vae, evaluation_view(splits.test.x, config), args.iwae_k, args.seed).summary(
        num_features
    )
    validation = evaluate_bounds(
        result.vae, evaluation_view(splits.validation.x, config), VALIDATION_IWAE_K, args.seed
    ).summary(num_features)
    staging = staging_dir_for(args.out)
    graphs = export_vae(result.vae, staging, splits.validation.x[:256])
    vae_onnx = OnnxVae.from_files(staging / "encoder.onnx", staging / "decoder.onnx", config.likelihood)
    validation_scores = calibration_scores(vae_onnx, splits.validation.x, args.seed, args.progress)
    calibration = calibration_of(
        validation_scores,
        args.seed,
        f"validation split ({len(splits.validation)} examples, values as clients send them, not binarized)",
    )
    document = {
        "format_version": 1,
        "name": args.name or default_name(args.dataset, classes),
        "version": args.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "producer": producer_versions(),
        "input": {
            "shape": list(splits.example_shape),
            "num_features": num_features,
            "dtype": "float32",
            "value_range": list(splits.value_range),
            "preprocessing": splits.description["preprocessing"],
        },
        "latent_dim": config.latent_dim,
        "likelihood": likelihood_record(result.vae),
        "graphs": {
            role: {key: value for key, value in graph.items() if key != "parity_max_abs_diff"}
            for role, graph in graphs.items()
        },
        "training": {
            **config_record(config),
            "data": splits.description,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 3),
            "history": result.history,
        },
        "metrics": {
            "validation": validation,
            "test": test,
            "binarization": (
                "trained on dynamic binarization; metrics on one Bernoulli draw of each split, "
                f"seed {EVAL_BINARIZATION_SEED}"
                if config.binarize == "dynamic"
                else "none: metrics on the data as given"
            ),
        },
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "parity_tolerance": PARITY_TOLERANCE,
            "parity_examples": min(256, len(splits.validation)),
            "parity_max_abs_diff": {role: graph["parity_max_abs_diff"] for role, graph in graphs.items()},
        },
        "calibration": calibration,
        "golden": golden_examples(result.vae, splits.validation.x),
    }
    sealed = write_manifest(staging, document)
    publish(staging, args.out, args.force)
    report = report_dir_for(args.out)
    write_report(
        report,
        result.history,
        result.best_epoch,
        vae_onnx,
        config.latent_dim,
        tuple(splits.example_shape),
        splits.validation.x,
        validation_scores,
        calibration,
        args.seed,
    )
    return {
        "bundle": str(args.out),
        "report": str(report),
        "name": sealed["name"],
        "version": sealed["version"],
        "test_elbo_nats": test["elbo_nats"],
        "test_iwae_nll_nats": test["iwae_nll_nats"],
        "iwae_k": test["iwae_k"],
        "bits_per_dim": test["bits_per_dim"],
        "validation_elbo_nats": validation["elbo_nats"],
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - started, 3),
    }


def verify_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vae-train verify", description="Verify a model bundle without torch.")
    parser.add_argument("--bundle", required=True, type=Path)
    args = parser.parse_args(argv)
    from vae_serve.core.bundle import load_bundle
    from vae_serve.core.errors import BundleError

    try:
        manifest = load_bundle(args.bundle).manifest
    except BundleError as error:
        print(f"vae-train verify: bundle refused: {error}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "bundle": str(args.bundle),
                "verified": True,
                "name": manifest.name,
                "version": manifest.version,
                "likelihood": manifest.likelihood.name,
                "input_shape": manifest.input.shape,
                "latent_dim": manifest.latent_dim,
                "test": manifest.metrics.test.model_dump(),
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    if argv[:1] == ["calibrate"]:
        from vae_serve.export.calibrate import main as calibrate_main

        return calibrate_main(argv[1:])
    args = build_parser().parse_args(argv)
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle_writer import PublishError
    from vae_serve.export.onnx_export import ExportError

    try:
        summary = run_training(args)
    except (DataError, PublishError) as error:
        print(f"vae-train: error: {error}", file=sys.stderr)
        return 2
    except (ExportError, BundleError, FloatingPointError) as error:
        print(f"vae-train: failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
