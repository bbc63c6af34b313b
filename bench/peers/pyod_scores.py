"""PyOD detectors with their default settings as an anomaly-detection peer (run with bench/.venvs/pyod's python).

Score one data set (an .npz with train_x = normal rows only, test_x, test_y with 1 = anomaly):

    bench/.venvs/pyod/bin/python bench/peers/pyod_scores.py DATA.npz --models vae,iforest,autoencoder \
        --seeds 0,1 --out result.json

Each model is PyOD's class with its defaults; only the seed (random_state) is set, and quietness
(verbose=0). For the torch models also torch.manual_seed(seed) and torch.set_num_threads(1) (PyOD's
fit re-seeds python, numpy and torch from random_state itself). Writes
{"versions": {...}, "data": {...}, MODEL: {SEED: {"auroc", "fit_s", "score_s", "params"}}}, where
auroc is sklearn's roc_auc_score(test_y, model.decision_function(test_x)), fit_s the seconds of
model.fit(train_x) and score_s those of decision_function(test_x). With ``--scores-out FILE.npz`` the
test scores themselves are also written, one array per model and seed named ``MODEL-SEED``
(bench/protocol.py bootstraps its intervals from them).

Make the inputs of the two protocols (bench/results/pyod-notes.md):

    ... pyod_scores.py --prepare breast-cancer DIR   # DIR/breast-cancer.npz (bench/tabular_split.py, seed 0)
    ... pyod_scores.py --prepare fashion DIR         # DIR/fashion-class{0..9}.npz (one-class Fashion-MNIST)

and merge per-class results into one file with per-class AUROC and means per model and seed:

    ... pyod_scores.py --merge DIR/fashion-class*.json --out pyod-fashion-oneclass.json
"""

import argparse
import gzip
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
TORCH_MODELS = {"vae", "autoencoder"}
# PyOD's deep models batch with drop_last=True and batch_size 32: on fewer training rows no batch is
# ever formed and fit fails (UnboundLocalError). There, and only there, the batch is all the rows.
PYOD_BATCH_SIZE = 32


def make_model(name: str, seed: int, train_rows: int = PYOD_BATCH_SIZE):
    """PyOD's ``name`` with its defaults and ``random_state=seed``; torch models on fewer than 32
    training rows get ``batch_size=train_rows`` (the one change, recorded in the result's params)."""
    small = {"batch_size": train_rows} if train_rows < PYOD_BATCH_SIZE else {}
    if name == "iforest":
        from pyod.models.iforest import IForest

        return IForest(random_state=seed)  # verbose=0 is its default
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    if name == "vae":
        from pyod.models.vae import VAE

        return VAE(random_state=seed, verbose=0, **small)
    if name == "autoencoder":
        from pyod.models.auto_encoder import AutoEncoder

        return AutoEncoder(random_state=seed, verbose=0, **small)
    raise SystemExit(f"unknown model: {name} (vae, iforest, autoencoder)")


def versions() -> dict:
    import pyod
    import sklearn
    import torch

    return {
        "pyod": pyod.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.processor() or platform.platform()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def score(data: Path, models: list[str], seeds: list[int], test_scores: dict | None = None) -> dict:
    """Fits each model and seed on train_x and scores test_x; ``test_scores`` (when given) receives
    each model's decision_function(test_x) under the key ``MODEL-SEED``."""
    arrays = np.load(data)
    train_x, test_x, test_y = arrays["train_x"], arrays["test_x"], arrays["test_y"]
    result = {
        "versions": versions(),
        "data": {
            "file": data.name,
            "train_rows": len(train_x),
            "test_rows": len(test_x),
            "test_anomalies": int(test_y.sum()),
            "features": int(train_x.shape[1]),
        },
    }
    for name in models:
        result[name] = {}
        for seed in seeds:
            model = make_model(name, seed, len(train_x))
            started = time.perf_counter()
            model.fit(train_x)
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            scores = model.decision_function(test_x)
            score_s = time.perf_counter() - started
            auroc = float(roc_auc_score(test_y, scores))
            if test_scores is not None:
                test_scores[f"{name}-{seed}"] = np.asarray(scores, dtype=np.float64)
            result[name][str(seed)] = {
                "auroc": auroc,
                "fit_s": round(fit_s, 3),
                "score_s": round(score_s, 3),
                "params": str(model.get_params()),
            }
            print(f"{data.name} {name} seed {seed}: auroc {auroc:.4f} fit {fit_s:.1f} s", file=sys.stderr, flush=True)
    return result


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip), as numpy uint8 with its shape from the header."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def prepare(protocol: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if protocol == "breast-cancer":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tabular_split import breast_cancer_split

        train_x, test_x, test_y = breast_cancer_split(seed=0)
        np.savez(directory / "breast-cancer.npz", train_x=train_x, test_x=test_x, test_y=test_y)
        print(directory / "breast-cancer.npz")
        return
    if protocol != "fashion":
        raise SystemExit(f"unknown protocol: {protocol} (breast-cancer, fashion)")
    if not FASHION_DIR.is_dir():
        raise SystemExit(f"{FASHION_DIR} is missing: apt-get install -y dataset-fashion-mnist")

    def images(split: str) -> np.ndarray:
        return (read_idx(FASHION_DIR / f"{split}-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0).astype(np.float32)

    train_x, test_x = images("train"), images("t10k")
    train_labels = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    test_labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    for c in range(10):
        path = directory / f"fashion-class{c}.npz"
        test_y = (test_labels != c).astype(np.int64)
        np.savez(path, train_x=train_x[train_labels == c], test_x=test_x, test_y=test_y, normal_class=c)
        print(path)


def merge(parts: list[Path]) -> dict:
    """Per-class results (one file per class, data.file fashion-class{c}.npz) -> per-class AUROC, means."""
    loaded = [json.loads(p.read_text()) for p in parts]
    out = {"versions": loaded[0]["versions"], "classes": [], "models": {}}
    for part in sorted(loaded, key=lambda r: r["data"]["file"]):
        out["classes"].append(part["data"])
        for name, per_seed in part.items():
            if name in ("versions", "data"):
                continue
            for seed, r in per_seed.items():
                entry = (
                    out["models"]
                    .setdefault(name, {})
                    .setdefault(seed, {"auroc": {}, "fit_s": {}, "score_s": {}, "params": r["params"]})
                )
                key = part["data"]["file"].removesuffix(".npz").removeprefix("fashion-class")
                entry["auroc"][key] = r["auroc"]
                entry["fit_s"][key] = r["fit_s"]
                entry["score_s"][key] = r["score_s"]
    for per_seed in out["models"].values():
        for entry in per_seed.values():
            entry["mean_auroc"] = float(np.mean(list(entry["auroc"].values())))
            entry["classes_done"] = len(entry["auroc"])
            entry["total_fit_s"] = round(float(np.sum(list(entry["fit_s"].values()))), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="*", type=Path, help="an .npz (train_x, test_x, test_y); JSON files with --merge")
    parser.add_argument("--models", default="vae,iforest,autoencoder")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--scores-out", type=Path, help="also write the test scores (.npz, arrays MODEL-SEED)")
    parser.add_argument("--prepare", nargs=2, metavar=("PROTOCOL", "DIR"), help="breast-cancer|fashion DIR")
    parser.add_argument("--merge", action="store_true", help="merge per-class result JSON files into --out")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare[0], Path(args.prepare[1]))
        return
    if not args.out or not args.data or (not args.merge and len(args.data) != 1):
        parser.error("give one DATA.npz (or JSON files with --merge) and --out")
    test_scores: dict = {}
    if args.merge:
        result = merge(args.data)
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        result = score(args.data[0], args.models.split(","), seeds, test_scores)
    if args.scores_out:  # written before --out, so that --out existing means both are complete
        args.scores_out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.scores_out.with_name(args.scores_out.name + ".tmp"), "wb") as handle:
            np.savez(handle, **test_scores)
        args.scores_out.with_name(args.scores_out.name + ".tmp").replace(args.scores_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
