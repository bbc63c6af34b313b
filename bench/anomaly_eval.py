"""Anomaly-score evaluation through the served API (issue 7).

One-class Fashion-MNIST protocol: for each class c, a VAE trained on class c's training images only
(`vae-train train --dataset fashion-mnist --classes c`), served by one vae-serve from a model repository;
the whole test set (10,000 images) scored by ScoreAnomaly through the gRPC client with every score;
AUROC with "not class c" as the anomaly label. Also: calibration honesty (the observed
false-positive rate on class c's own test images at requested rates of 1 % and 5 %), and an
out-of-distribution check in both directions between Fashion-MNIST and scikit-learn's digits
resized to 28x28 (filling the frame, and centred MNIST-style in a 20x20 box).

    python bench/anomaly_eval.py --work runs/anomaly --epochs 30     # ~15 min on 2 cores

Prints one JSON line per result and writes the summary to WORK/summary.json.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_serve.client import VaeClient
from vae_serve.client.client import SCORE_TYPES, VaeClientError
from vae_serve.export.sources import load_source

PYTHON = sys.executable
VAE_TRAIN = str(Path(PYTHON).with_name("vae-train"))
VAE_SERVE = str(Path(PYTHON).with_name("vae-serve"))
CHUNK_ROWS = 1024  # the server's default row limit; x 100 IWAE samples stays under 262,144
CLASS_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PUBLISHED = {  # mean one-class AUROC on Fashion-MNIST, as the issue quotes them
    "GEOM (Golan & El-Yaniv 2018)": 93.5,
    "ARNet (Huang et al. 2019)": 93.9,
    "MLP VAE, -IWAE(100) (issue 7's measurement)": 72.6,
    "MLP VAE, reconstruction error (issue 7's measurement)": 91.2,
}


def train(
    repository: Path,
    name: str,
    dataset: str,
    epochs: int,
    seed: int,
    classes: str | None = None,
    extra: tuple[str, ...] = (),
) -> float:
    out = repository / name / "1"
    if (out / "manifest.json").exists():
        return 0.0
    command = [VAE_TRAIN, "train", "--dataset", dataset, "--out", str(out), "--name", name, "--version", "1"]
    command += ["--epochs", str(epochs), "--seed", str(seed), "--no-progress", "--iwae-k", "100", *extra]
    if classes is not None:
        command += ["--classes", classes]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def digits_28(centred: bool) -> np.ndarray:
    """scikit-learn's 8x8 digits (values 0..16) as 28x28 images in 0-255, nearest-neighbour upscaled."""
    images = load_digits().images / 16.0 * 255.0  # raw pixels 0-255, as the Fashion bundles take them
    if not centred:  # fill the frame: 8 -> 28 by repeating rows and columns (3 or 4 times each)
        index = np.minimum((np.arange(28) * 8) // 28, 7)
        return images[:, index][:, :, index].reshape(len(images), 784).astype(np.float32)
    index = np.minimum((np.arange(20) * 8) // 20, 7)  # MNIST-style: a 20x20 digit centred in 28x28
    canvas = np.zeros((len(images), 28, 28))
    canvas[:, 4:24, 4:24] = images[:, index][:, :, index]
    return canvas.reshape(len(images), 784).astype(np.float32)


def start(repository: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [VAE_SERVE, "--model-repository", str(repository), "--port", "0", "--no-metrics", "--repository-poll", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    while not (line := process.stdout.readline()).startswith("vae-serve listening on "):
        if not line:
            raise RuntimeError("vae-serve did not start")
    target = line.split(" on ", 1)[1].strip()
    with VaeClient(target) as client:
        for _ in range(600):
            try:
                if client.health() == "SERVING":
                    break
            except Exception:
                pass
            time.sleep(0.5)
    return process, target


# Rows the server refused with INTERNAL (a non-finite score: a far out-of-distribution input under a
# model whose posterior or likelihood overflows), per model and score; they are counted as
# maximally anomalous (score 1e300, flagged), and the count is reported with the results.
REFUSED_ROWS: dict[str, int] = {}
REFUSED_SCORE = 1e300  # above any finite score (roc_auc_score refuses infinities)


def _score_chunk(client: VaeClient, model: str, x: np.ndarray, score: str, **options):
    """(scores, is_anomaly) of ``x``; a chunk refused as non-finite is split until the refused rows
    are alone, and those get REFUSED_SCORE and True."""
    try:
        result = client.score(x, score, seed=0, model=model, **options)
        return result.scores, result.is_anomaly
    except VaeClientError as error:
        if error.code_name != "INTERNAL":
            raise
    if len(x) == 1:
        key = f"{model}/{score}"
        REFUSED_ROWS[key] = REFUSED_ROWS.get(key, 0) + 1
        return np.array([REFUSED_SCORE]), np.array([True])
    half = len(x) // 2
    first, second = (_score_chunk(client, model, part, score, **options) for part in (x[:half], x[half:]))
    return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])


def scores_of(client: VaeClient, model: str, x: np.ndarray, score: str) -> np.ndarray:
    parts = [
        _score_chunk(client, model, x[start : start + CHUNK_ROWS], score)[0] for start in range(0, len(x), CHUNK_ROWS)
    ]
    return np.concatenate(parts)


def false_positive_rates(client: VaeClient, model: str, x_normal: np.ndarray, score: str) -> dict:
    rates = {}
    for requested in (0.01, 0.05):
        flagged = np.concatenate(
            [
                _score_chunk(client, model, x_normal[start : start + CHUNK_ROWS], score, false_positive_rate=requested)[
                    1
                ]
                for start in range(0, len(x_normal), CHUNK_ROWS)
            ]
        )
        rates[f"{requested:.0%}"] = round(float(flagged.mean()) * 100, 2)
    return rates


PYOD_PYTHON = Path(__file__).resolve().parent / ".venvs" / "pyod" / "bin" / "python"
PYOD_SCRIPT = Path(__file__).resolve().parent / "peers" / "pyod_scores.py"


def pyod_auroc(work: Path, classes: list[int], models: str, seed: int) -> dict:
    """PyOD's models with their defaults on the same one-class protocol, in PyOD's own venv
    (``bash bench/peers/install.sh pyod``): {model: {class name: AUROC %}}, one thread each."""
    if not PYOD_PYTHON.exists():
        raise SystemExit(f"--pyod needs {PYOD_PYTHON}: run `bash bench/peers/install.sh pyod` first")
    folder = work / "pyod"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not all((folder / f"fashion-class{c}.npz").exists() for c in classes):
        subprocess.run(
            [str(PYOD_PYTHON), str(PYOD_SCRIPT), "--prepare", "fashion", str(folder)], check=True, env=environment
        )
    auroc: dict = {}
    for c in classes:
        out = folder / f"fashion-class{c}-seed{seed}.json"
        if not out.exists():
            command = [str(PYOD_PYTHON), str(PYOD_SCRIPT), str(folder / f"fashion-class{c}.npz"), "--models", models]
            subprocess.run([*command, "--seeds", str(seed), "--out", str(out)], check=True, env=environment)
        for model, by_seed in json.loads(out.read_text()).items():
            if model not in ("versions", "data"):
                auroc.setdefault(model, {})[CLASS_NAMES[c]] = round(by_seed[str(seed)]["auroc"] * 100, 2)
    return auroc


def markdown(results: dict) -> str:
    """The tables of docs/anomaly.md from a summary.json."""
    scores = list(results["auroc"])
    classes = list(next(iter(results["auroc"].values())))
    lines = ["| class | " + " | ".join(scores) + " |", "|---|" + "---|" * len(scores)]
    for name in classes:
        row = [max(results["auroc"][score][name] for score in scores)]
        cells = [
            f"**{results['auroc'][s][name]}**"
            if results["auroc"][s][name] == row[0]
            else str(results["auroc"][s][name])
            for s in scores
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{results['mean_auroc'][s]}**" for s in scores) + " |")
    if results.get("pyod"):
        models = list(results["pyod"])
        lines += ["", f"PyOD, defaults, seed {results['seed']}:", ""]
        lines += ["| class | " + " | ".join(f"PyOD {m}" for m in models) + " |", "|---|" + "---|" * len(models)]
        for name in classes:
            lines.append(f"| {name} | " + " | ".join(str(results["pyod"][m][name]) for m in models) + " |")
        means = [round(float(np.mean(list(results["pyod"][m].values()))), 2) for m in models]
        lines.append("| **mean** | " + " | ".join(f"**{m}**" for m in means) + " |")
    lines += ["", "| published (mean one-class AUROC) | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in results["published"].items()]
    lines += ["", "| score | observed FPR at 1 %: mean (range over classes) | at 5 % |", "|---|---|---|"]
    for score in scores:
        cells = []
        for level in ("1%", "5%"):
            values = [by_level[level] for by_level in results["fpr"][score].values()]
            cells.append(f"{np.mean(values):.2f} % ({min(values):.1f}-{max(values):.1f})")
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    if not results["ood"]:
        return "\n".join(lines)
    lines += [
        "",
        "| score | digits (frame) vs Fashion model | Fashion vs digits (frame) model "
        "| digits (centred) vs Fashion model | Fashion vs digits model, centred digits |",
        "|---|---|---|---|---|",
    ]
    for score in scores:
        frame, centred = results["ood"][score]["frame"], results["ood"][score]["centred"]
        lines.append(
            f"| {score} | {frame['digits_vs_fashion_model']} | {frame['fashion_vs_digits_model']} | "
            f"{centred['digits_vs_fashion_model']} | {centred['fashion_vs_digits_model']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/anomaly"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="training seed of every model")
    parser.add_argument("--skip-ood", action="store_true", help="one-class protocol only, no OOD models")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--scores", default=",".join(SCORE_TYPES))
    parser.add_argument(
        "--train-args",
        # Bernoulli: the models its recorded figures (docs/anomaly.md before issue 23) were measured on;
        # vae-train's images default became a Gaussian in issue 23 (bench/protocol.py supersedes this script).
        default="--likelihood bernoulli",
        help="vae-train train flags for every model (default: --likelihood bernoulli), e.g. "
        "'--likelihood gaussian --decoder-scale shared'",
    )
    parser.add_argument(
        "--pyod",
        metavar="MODELS",
        help="also run PyOD's models with their defaults on the same classes and seed, e.g. vae,iforest "
        "(in bench/.venvs/pyod: `bash bench/peers/install.sh pyod`)",
    )
    parser.add_argument("--report", type=Path, help="print the markdown tables of this summary.json and exit")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return 0
    repository = args.work / "repository"
    classes = [int(c) for c in args.classes.split(",")]
    score_names = args.scores.split(",")
    extra = tuple(shlex.split(args.train_args))
    started = time.perf_counter()
    train_seconds = {
        f"fashion-c{c}": train(repository, f"fashion-c{c}", "fashion-mnist", args.epochs, args.seed, str(c), extra)
        for c in classes
    }
    if not args.skip_ood:
        train_seconds["fashion-all"] = train(
            repository, "fashion-all", "fashion-mnist", args.epochs, args.seed, None, extra
        )
        digits_train = args.work / "digits28.npy"
        np.save(digits_train, digits_28(centred=False))
        train_seconds["digits28"] = train(
            repository, "digits28", f"npy:{digits_train}", max(args.epochs, 100), args.seed, None, extra
        )
    source = load_source("fashion-mnist")
    test_x, test_y = source.test.x, source.test.y
    results = {
        "epochs": args.epochs,
        "seed": args.seed,
        "train_args": args.train_args,
        "train_seconds": train_seconds,
        "auroc": {},
        "fpr": {},
        "ood": {},
    }
    process, target = start(repository)
    try:
        with VaeClient(target, timeout_s=600) as client:
            for c in classes:
                model = f"fashion-c{c}"
                for score in score_names:
                    auroc = roc_auc_score(test_y != c, scores_of(client, model, test_x, score)) * 100
                    results["auroc"].setdefault(score, {})[CLASS_NAMES[c]] = round(auroc, 2)
                    results["fpr"].setdefault(score, {})[CLASS_NAMES[c]] = false_positive_rates(
                        client, model, test_x[test_y == c], score
                    )
                    print(json.dumps({"class": CLASS_NAMES[c], "score": score, "auroc": round(auroc, 2)}), flush=True)
            for variant, centred in () if args.skip_ood else (("frame", False), ("centred", True)):
                digits = digits_28(centred)
                for score in score_names:
                    fashion_model = scores_of(client, "fashion-all", np.concatenate([test_x[:2000], digits]), score)
                    labels = np.r_[np.zeros(2000), np.ones(len(digits))]  # digits are the outliers
                    forward = roc_auc_score(labels, fashion_model) * 100
                    digits_model = scores_of(client, "digits28", np.concatenate([digits, test_x[:2000]]), score)
                    backward = roc_auc_score(1 - labels, digits_model) * 100  # fashion are the outliers
                    results["ood"].setdefault(score, {})[variant] = {
                        "digits_vs_fashion_model": round(forward, 1),
                        "fashion_vs_digits_model": round(backward, 1),
                    }
                    print(json.dumps({"ood": variant, "score": score, **results["ood"][score][variant]}), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)
    results["mean_auroc"] = {
        score: round(float(np.mean(list(by_class.values()))), 2) for score, by_class in results["auroc"].items()
    }
    results["refused_rows"] = REFUSED_ROWS
    if args.pyod:
        results["pyod"] = pyod_auroc(args.work, classes, args.pyod, args.seed)
        results["pyod_mean_auroc"] = {
            model: round(float(np.mean(list(by_class.values()))), 2) for model, by_class in results["pyod"].items()
        }
    results["published"] = PUBLISHED
    results["seconds"] = round(time.perf_counter() - started, 1)
    (args.work / "summary.json").write_text(json.dumps(results, indent=1))
    summary = {"mean_auroc": results["mean_auroc"], "pyod_mean_auroc": results.get("pyod_mean_auroc")}
    print(json.dumps({**summary, "seconds": results["seconds"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
