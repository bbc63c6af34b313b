"""The honest evaluation protocol of issue 23: one-class anomaly AUROC through the served API.

Data sets (one class normal at a time, the others anomalies):
- fashion: Fashion-MNIST (Debian's dataset-fashion-mnist, ``load_source("fashion-mnist")``), each
  class c in turn; the model trains on class c's training images (``--classes c``).
- breast_cancer: scikit-learn's table, benign normal, malignant anomalies.
- wine: scikit-learn's table, each of the 3 cultivars normal in turn.
- digits_table: scikit-learn's 8x8 digits as a 64-feature table (values 0..16, served from a CSV,
  not the digits image source), each digit normal in turn.

Splits (bench/protocol_data.py). The test rows are fixed once per data set (seed 0) and are never
used for any choice.
- fashion: test = the official 10,000 test images. Selection = class c's validation rows (vae-train's
  own split, read back from the manifest; the model did not train on them, though early stopping and
  calibration used them) + a fixed random 5,000 of the other classes' training images.
- tables: a stratified split (seed 0) into a non-test part (60 %) and a test part (40 %). Of the
  non-test part's normal rows, 25 % (seed (0, c)) are held out of training for the selection split;
  vae-train is given the other 75 % as a CSV (it draws its own validation rows from them).
  Selection = those held-out normal rows + every non-test row of the other classes (anomalies).
The departure from the issue: it says choices are made "on normal data only", but normal data alone
cannot rank a score's power to separate anomalies. So choices that need anomalies (which recipe x
score ranks best) are made on the selection split, drawn from non-test rows only: no test row is
ever used to choose.

Candidates: recipes (lists of extra vae-train flags; "" = vae-train's defaults at run time) x every
served score (ScoreAnomaly through vae_serve.client.VaeClient over gRPC, on a real vae-serve started
on a model repository; whatever SCORE_TYPES the client offers, e.g. "combined" once it exists), plus
two OFFLINE columns computed from the served p-values of negative_elbo and reconstruction_error: the
Cauchy combination (mean of tan((0.5 - p) pi)) and min-p. Small tables get
``--validation-fraction`` raised so that vae-train keeps the 10 validation rows calibration needs.

Figures: AUROC % on the test split for model seeds (default 0, 1, 2), per class and as the mean over
classes; each with a bootstrap 95 % percentile interval: 1,000 resamples (seed 0) of the test rows,
drawn once per data set and applied jointly to every class, seed and model (the test rows are the
same for every class), so a class cell's interval is that of its mean over seeds and the mean's
interval is that of the mean over classes and seeds. The seed-to-seed spread of the mean is shown
beside it. The selection table (selection-split AUROC, seed 0, mean over classes) names the
recipe x score the protocol picks per data kind (grey images; tables: mean over the tables).

Peers: PyOD's VAE, AutoEncoder and IForest with their defaults (bench/peers/pyod_scores.py in
bench/.venvs/pyod), seeds 0, 1, 2, on the same test rows; they train on every normal row vae-train
trained or validated on (fashion: all of class c's training images; tables: the CSV rows less any
test rows vae-train kept, from its manifest). Where a class has fewer than 32 training rows (wine),
PyOD's deep models get batch_size = the rows (their default 32 with drop_last forms no batch and
fails); that is the one change to their defaults, and it is recorded in PyOD's result file.
The offline columns combine the *served* p-values, which are conformal and so resolve only to
1 / (calibration rows + 1) beyond the calibration range (16 rows on breast cancer, 11 on wine): rows
past every calibration row tie there. The served "combined" score models that tail (core/combination.py),
so the offline columns understate what a combination can do on small tables.

Caching under --work: bundles in WORK/DATA/repository/NAME/1 (NAME from data, recipe + --tag hash,
seed, class: WORK/DATA/recipes.json maps the hash back), served scores in
WORK/DATA/scores/NAME/<manifest sha256[:12]>/ (a recalibrated or retrained bundle is rescored, the
others are not), PyOD's in WORK/DATA/pyod/. A rerun continues where the last one stopped.

    .venv/bin/python bench/protocol.py --data wine --work runs/protocol            # train, score
    .venv/bin/python bench/protocol.py --data wine --work runs/protocol --report   # tables + JSON
"""

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from anomaly_eval import PYOD_PYTHON, PYOD_SCRIPT, start  # noqa: E402
from protocol_data import (  # noqa: E402
    DATA_SETS,
    FASHION_CLASSES,
    fashion_task,
    load_fashion,
    load_table_data,
    seen_rows,
    table_task,
    write_table_csv,
)

from vae_serve.client import VaeClient  # noqa: E402
from vae_serve.client.client import SCORE_TYPES, VaeClientError  # noqa: E402
from vae_serve.export.bundle.calibration import MIN_CALIBRATION_ROWS  # noqa: E402

VAE_TRAIN = str(Path(sys.executable).with_name("vae-train"))
PYOD_MODELS = ("vae", "autoencoder", "iforest")
DEFAULT_RECIPES = {
    "tables": [
        "",
        "--likelihood gaussian --decoder-scale shared",
        "--likelihood gaussian --decoder-scale standardized",
    ],
    "fashion": ["--likelihood gaussian --decoder-scale standardized --epochs 30"],
}
PYOD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CHUNK_ROWS = 1024  # rows per ScoreAnomaly request: the server's default row limit (bench/anomaly_eval.py)


def recipe_key(recipe: str, tag: str) -> str:
    """The 8-hex-digit key of a recipe string under a tag (a new tag retrains, e.g. after new defaults)."""
    return hashlib.sha256(f"{tag}|{recipe}".encode()).hexdigest()[:8]


def model_name(data: str, key: str, seed: int, normal: int) -> str:
    return f"{data.replace('_', '-')}-{key}-s{seed}-c{normal}"


def classes_of(data: str) -> dict[int, str]:
    return dict(enumerate(FASHION_CLASSES)) if data == "fashion" else load_table_data(data).normal_classes


def table_flags(fit_rows: int) -> list[str]:
    """``--validation-fraction`` where vae-train's 10 % would keep fewer rows than calibration needs."""
    if round(0.1 * fit_rows) >= MIN_CALIBRATION_ROWS:
        return []
    return ["--validation-fraction", f"{np.ceil((MIN_CALIBRATION_ROWS + 0.5) / fit_rows * 100) / 100:.2f}"]


def train(folder: Path, name: str, dataset_flags: list[str], recipe: str, seed: int) -> dict:
    """One bundle (reused when its manifest exists); returns its training record or the error."""
    out = folder / "repository" / name / "1"
    command = [VAE_TRAIN, "train", *dataset_flags, "--out", str(out), "--name", name, "--version", "1"]
    command += ["--seed", str(seed), "--no-progress", *shlex.split(recipe)]
    entry = {"command": shlex.join(["vae-train", *command[1:]])}
    if not (out / "manifest.json").exists():
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        entry["wall_s"] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            entry["error"] = (done.stderr or done.stdout).strip()[-2000:]
            print(f"vae-train failed for {name}:\n{entry['error']}", file=sys.stderr, flush=True)
            return entry
        print(f"trained {name} in {entry['wall_s']} s", file=sys.stderr, flush=True)
    manifest = json.loads((out / "manifest.json").read_text())
    entry.update(
        sha=manifest["manifest_sha256"][:12],
        created_at=manifest["created_at"],
        default_score=manifest.get("default_score") or "reconstruction_error",
        examples=manifest["training"]["data"]["examples"],
        epochs_run=manifest["training"]["epochs_run"],
        train_s=manifest["training"]["seconds"],
    )
    return entry


def table_tasks(data: str, folder: Path, classes: list[int]) -> dict:
    """class -> (vae-train dataset flags, TaskRows); writes each class's fit rows to FOLDER/data."""
    table = load_table_data(data)
    out = {}
    for c in classes:
        rows = table_task(table, c)
        csv = folder / "data" / f"c{c}-fit.csv"
        if not csv.exists():
            write_table_csv(csv, rows.fit_x)
        out[c] = (["--dataset", f"csv:{csv}", *table_flags(len(rows.fit_x))], rows)
    return out


def score_model(
    client: VaeClient, folder: Path, entry: dict, name: str, rows, scores: list[str], splits: list[str]
) -> dict:
    """Each score on the ``splits`` rows (test, selection), cached per bundle checksum; returns the errors."""
    cache = folder / "scores" / name / entry["sha"]
    cache.mkdir(parents=True, exist_ok=True)
    errors = {}
    for split, x in (("test", rows.test_x), ("selection", rows.selection_x)):
        if split not in splits:
            continue
        for score in scores:
            path = cache / f"{split}-{score}.npz"
            if path.exists():
                continue
            try:
                result = client.score(x, score, seed=0, model=name)
            except VaeClientError as error:
                errors[f"{split}/{score}"] = f"{error.code_name}: {error}"[:300]
                continue
            with open(path.with_name(path.name + ".tmp"), "wb") as handle:
                np.savez(handle, scores=result.scores, p_value=result.p_value)
            path.with_name(path.name + ".tmp").replace(path)
    return errors


def run_pyod(folder: Path, c: int, rows, train_x: np.ndarray, seeds: list[int]) -> dict:
    """PyOD's models with their defaults on this task's test rows, for the seeds not yet run on these
    training rows (cached by their hash: FOLDER/pyod/cC-KEY-seeds*-scores.npz, one file per run)."""
    pyod = folder / "pyod"
    pyod.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(np.ascontiguousarray(train_x, dtype=np.float64).tobytes()).hexdigest()[:10]
    done = {name for path in pyod.glob(f"c{c}-{key}-seeds*-scores.npz") for name in np.load(path).files}
    missing = [s for s in seeds if not all(f"{model}-{s}" in done for model in PYOD_MODELS)]
    if missing:
        stem = f"c{c}-{key}-seeds{'_'.join(map(str, missing))}"
        inputs = pyod / f"c{c}-{key}.npz"
        np.savez(inputs, train_x=train_x, test_x=rows.test_x.astype(np.float64), test_y=rows.test_y)
        command = [str(PYOD_PYTHON), str(PYOD_SCRIPT), str(inputs), "--models", ",".join(PYOD_MODELS)]
        command += ["--seeds", ",".join(map(str, missing)), "--out", str(pyod / f"{stem}.json")]
        subprocess.run([*command, "--scores-out", str(pyod / f"{stem}-scores.npz")], check=True, env=PYOD_ENV)
        inputs.unlink()
    return {"key": key, "train_rows": len(train_x)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, choices=DATA_SETS)
    parser.add_argument("--work", type=Path, default=Path("runs/protocol"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--classes", help="comma-separated normal classes (default: all)")
    parser.add_argument("--recipes", help="recipes separated by ';', e.g. ';--likelihood gaussian' (default: by data)")
    parser.add_argument("--tag", default="v1", help="names the trained bundles: a new tag retrains (new defaults)")
    parser.add_argument("--skip-pyod", action="store_true")
    parser.add_argument("--pyod-seeds", default="0,1,2", help="PyOD's seeds (each run once per training rows)")
    parser.add_argument("--skip-serve", action="store_true", help="train (and PyOD) only")
    parser.add_argument("--scores", default=",".join(SCORE_TYPES), help="served scores to compute (default: all)")
    parser.add_argument("--splits", default="test,selection", help="rows to score: test, selection or both")
    parser.add_argument("--report", action="store_true", help="print the tables of WORK, write bench/results")
    args = parser.parse_args()
    folder = args.work / args.data
    if args.report:
        from protocol_report import report

        print(report(args.work, args.data, args.tag))
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(classes_of(args.data))
    kind = "fashion" if args.data == "fashion" else "tables"
    recipes = args.recipes.split(";") if args.recipes is not None else DEFAULT_RECIPES[kind]
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "recipes.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index.update({recipe_key(r, args.tag): {"recipe": r, "tag": args.tag} for r in recipes})
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    started = time.perf_counter()
    runs = run_all(args, folder, recipes, seeds, classes)
    log = folder / "runs.jsonl"
    with log.open("a") as handle:
        handle.write(json.dumps({"argv": sys.argv, "seconds": round(time.perf_counter() - started, 1), **runs}) + "\n")
    print(json.dumps({"data": args.data, "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    return 0


def run_all(args, folder: Path, recipes: list[str], seeds: list[int], classes: list[int]) -> dict:
    """Trains the missing bundles, runs PyOD, scores through one server; writes WORK/DATA/models.json."""
    names = {
        (r, s, c): model_name(args.data, recipe_key(r, args.tag), s, c) for r in recipes for s in seeds for c in classes
    }
    models_path = folder / "models.json"
    models = json.loads(models_path.read_text()) if models_path.exists() else {}
    if args.data == "fashion":  # train first: the selection rows come from the manifest's split record
        flags = {c: ["--dataset", "fashion-mnist", "--classes", str(c), "--iwae-k", "100"] for c in classes}
    else:
        tasks = table_tasks(args.data, folder, classes)
        flags = {c: tasks[c][0] for c in classes}
    for (recipe, seed, c), name in names.items():
        models[name] = {"recipe": recipe, "tag": args.tag, "seed": seed, "class": c}
        models[name].update(train(folder, name, flags[c], recipe, seed))
        models_path.write_text(json.dumps(models, indent=1) + "\n")
    rows = {}
    for c in classes:
        trained = [names[(r, s, c)] for r in recipes for s in seeds if "error" not in models[names[(r, s, c)]]]
        if not trained:
            continue
        record = json.loads((folder / "repository" / trained[0] / "1" / "manifest.json").read_text())
        data_record = record["training"]["data"]
        if args.data == "fashion":
            source = load_fashion() if not rows else rows["source"]
            rows["source"] = source
            rows[c] = fashion_task(source, c, data_record)
            pyod_train = source.train.x[source.train.y == c] / 255.0  # all of class c: train + validation
        else:
            rows[c] = tasks[c][1]
            pyod_train = rows[c].fit_x[seen_rows(len(rows[c].fit_x), data_record)]
        labels = folder / "labels" / f"c{c}.npz"
        labels.parent.mkdir(parents=True, exist_ok=True)
        np.savez(labels, test_y=rows[c].test_y, selection_y=rows[c].selection_y)
        if not args.skip_pyod:
            pyod_rows = rows[c] if args.data != "fashion" else _scaled(rows[c])
            peers = run_pyod(folder, c, pyod_rows, pyod_train, [int(s) for s in args.pyod_seeds.split(",")])
            (folder / "pyod" / f"c{c}-current.json").write_text(json.dumps(peers) + "\n")
    if args.skip_serve:
        return {"models": len(names)}
    score_all(folder, models, names, rows, args.scores.split(","), args.splits.split(","))
    models_path.write_text(json.dumps(models, indent=1) + "\n")
    return {"models": len(names)}


def _scaled(rows):
    """Fashion rows as PyOD takes them (pixels / 255, bench/results/pyod-notes.md)."""
    return type(rows)(rows.test_x / 255.0, rows.test_y, rows.selection_x, rows.selection_y, None)


def score_all(folder: Path, models: dict, names: dict, rows: dict, scores: list[str], splits: list[str]) -> None:
    """Scores every trained bundle with ``scores`` on ``splits``, through one vae-serve."""
    pending = [name for (_, _, c), name in names.items() if "error" not in models[name] and c in rows]
    process, target = start(folder / "repository")
    try:
        with VaeClient(target, timeout_s=600, progress=False, max_rows_per_request=CHUNK_ROWS) as client:
            client.wait_until_serving(timeout_s=600)
            for name in pending:
                started = time.perf_counter()
                task = rows[models[name]["class"]]
                errors = score_model(client, folder, models[name], name, task, scores, splits)
                models[name]["score_errors"] = errors
                print(f"scored {name} in {time.perf_counter() - started:.1f} s; errors {errors}", file=sys.stderr)
    finally:
        process.terminate()
        process.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
