"""Item 4 of issue 23, geometric transformations as in GEOM, on one-class Fashion-MNIST: a VAE trained on
class c's training images and their left-right flips, scored over the transforms at test time (the
mean served ``negative_elbo`` of x and of flipped x), against the same recipe trained on the images
alone (bench/protocol.py's bundles of --key).

The augmented model sees exactly the baseline's training rows (class c less its validation rows,
replayed from the baseline bundle's manifest), each twice: as it is and flipped; they reach vae-train
as an npz (pixels / 255, the fashion source's own map) with the images recipe spelled out, since an
npz would otherwise take the tables recipe. Its selection and test rows are the baseline's
(bench/protocol_data.fashion_task), scaled the same way. Flips only: GEOM's 72 transforms (shifts,
rotations) would multiply a CPU epoch as many times.

    .venv/bin/python bench/protocol_geom.py --work runs/protocol --key 8f33d1b6 --seed 0
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from anomaly_eval import start  # noqa: E402
from protocol_data import fashion_task, load_fashion  # noqa: E402
from protocol_stats import auroc_percent  # noqa: E402

from vae_serve.client import VaeClient  # noqa: E402
from vae_serve.export.sources.split_plan import split_indices  # noqa: E402

VAE_TRAIN = str(Path(sys.executable).with_name("vae-train"))
IMAGES_RECIPE = "--likelihood gaussian --decoder-scale standardized --hidden 400 --latent-dim 20 --epochs 30"
IMAGES_RECIPE += " --batch-size 100 --patience 5 --score negative_elbo"


def flipped(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), 28, 28)[:, :, ::-1].reshape(len(x), 784)


def training_rows(source, normal: int, data_record: dict) -> np.ndarray:
    """Class ``normal``'s rows the baseline trained on (its validation rows left out), [n, 784] / 255."""
    train_y = source.train.y
    _, validation, _ = split_indices(
        len(train_y), True, data_record["validation_fraction"], 0.0, data_record["split_seed"]
    )
    rows = np.setdiff1d(np.flatnonzero(train_y == normal), validation)
    return source.train.x[rows].reshape(len(rows), 784).astype(np.float32) / 255.0


def train_augmented(folder: Path, name: str, x: np.ndarray, seed: int) -> None:
    out = folder / "repository" / name / "1"
    if (out / "manifest.json").exists():
        return
    data = folder / "data" / f"{name}.npz"
    data.parent.mkdir(parents=True, exist_ok=True)
    np.savez(data, x=np.concatenate([x, flipped(x)]))
    command = [VAE_TRAIN, "train", "--dataset", f"npz:{data}", "--out", str(out), "--name", name, "--version", "1"]
    command += ["--seed", str(seed), "--no-progress", *IMAGES_RECIPE.split()]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    print(f"trained {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    data.unlink()


def scores(client: VaeClient, model: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(negative_elbo of x, its mean over x and flipped x)."""
    plain = np.asarray(client.score(x, "negative_elbo", seed=0, model=model).scores, dtype=np.float64)
    flip = np.asarray(client.score(flipped(x), "negative_elbo", seed=0, model=model).scores, dtype=np.float64)
    return plain, (plain + flip) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/protocol"))
    parser.add_argument("--key", required=True, help="the recipe key of bench/protocol.py's baseline bundles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = args.work / "fashion"
    geom = args.work / "fashion-geom"
    source = load_fashion()
    classes = [int(c) for c in args.classes.split(",")]
    tasks = {}
    for c in classes:
        baseline = folder / "repository" / f"fashion-{args.key}-s{args.seed}-c{c}" / "1" / "manifest.json"
        data_record = json.loads(baseline.read_text())["training"]["data"]
        tasks[c] = fashion_task(source, c, data_record)
        train_augmented(geom, f"geom-flip-s{args.seed}-c{c}", training_rows(source, c, data_record), args.seed)
    figures = {}
    process, target = start(geom / "repository")
    try:
        with VaeClient(target, timeout_s=600, progress=False, max_rows_per_request=1024) as client:
            client.wait_until_serving(timeout_s=600)
            for c in classes:
                rows, model = tasks[c], f"geom-flip-s{args.seed}-c{c}"
                split = {}
                splits = (("selection", rows.selection_x, rows.selection_y), ("test", rows.test_x, rows.test_y))
                for name, x, y in splits:
                    plain, mean = scores(client, model, x.reshape(len(x), 784).astype(np.float32) / 255.0)
                    split[name] = {"negative_elbo": auroc_percent(plain, y), "tta_flip": auroc_percent(mean, y)}
                figures[c] = split
                print(f"class {c}: {json.dumps(split)}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)
    for score in ("negative_elbo", "tta_flip"):
        means = {s: np.mean([figures[c][s][score] for c in classes]) for s in ("selection", "test")}
        print(f"flip-trained {score:14s} selection {means['selection']:.2f} test {means['test']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"key": args.key, "seed": args.seed, "classes": figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
