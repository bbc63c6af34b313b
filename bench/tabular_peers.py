"""vae-serve against PyOD on scikit-learn's breast-cancer table, all through the served API.

The split is bench/tabular_split.py's (seed 0): 250 benign training rows; 319 test rows (107 benign,
212 malignant = anomaly). Model seeds 0 and 1 on both sides, as in bench/results/pyod-breast-cancer.json.

- vae-serve: for each variant and seed, ``vae-train train --dataset csv:WORK/data/train.csv
  --label-column label --likelihood gaussian --seed S ...`` into one model repository (vae-train
  keeps 20 % of the rows it is given as its own test split and 10 % of the rest for validation, so
  it fits 180 of the 250 rows); one ``vae-serve --model-repository`` serves them all; the raw test rows
  (WORK/data/test.csv) are scored with every score through ``VaeClient.score(..., seed=0)``;
  AUROC by scikit-learn.
- PyOD VAE, IForest, AutoEncoder with their defaults: ``bench/peers/pyod_scores.py`` in
  bench/.venvs/pyod on the same rows (its ``--prepare breast-cancer`` output, checked here against
  bench/tabular_split.py and against the CSVs).

    nice -n 10 .venv/bin/python bench/tabular_peers.py --work runs/tabular     # ~30 min on 2 cores

Writes bench/results/tabular-peers.json and bench/results/tabular-peers.md (also printed). Bundles
already in WORK/repository are reused (delete them, or use another --work, to retrain).
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from anomaly_eval import start  # noqa: E402
from tabular_split import breast_cancer_split, write_breast_cancer_csv  # noqa: E402

from vae_serve.client import VaeClient  # noqa: E402
from vae_serve.client.client import SCORE_TYPES  # noqa: E402

PYTHON = sys.executable
VAE_TRAIN = str(Path(PYTHON).with_name("vae-train"))
PYOD_PYTHON = ROOT / "bench/.venvs/pyod/bin/python"
PYOD_SCRIPT = ROOT / "bench/peers/pyod_scores.py"
PYOD_MODELS = {"vae": "PyOD VAE", "iforest": "PyOD IForest", "autoencoder": "PyOD AutoEncoder"}
SEEDS = (0, 1)
# name -> extra vae-train flags; "default" is the table recipe (hidden 128, latent 8, 200 epochs,
# batch 128, lr 1e-3, patience 20, per-feature decoder scale).
VARIANTS = {
    "default": [],
    "latent-2": ["--latent-dim", "2"],
    "latent-4": ["--latent-dim", "4"],
    "hidden-64": ["--hidden", "64"],
    "shared-scale": ["--decoder-scale", "shared"],
    "epochs-600": ["--epochs", "600"],
}
BASE_FLAGS = ["--likelihood", "gaussian", "--label-column", "label", "--no-progress"]


def model_name(variant: str, seed: int) -> str:
    return f"bc-{seed}" if variant == "default" else f"bc-{variant}-{seed}"


def train(repository: Path, train_csv: Path, variant: str, seed: int) -> dict:
    name = model_name(variant, seed)
    out = repository / name / "1"
    command = [VAE_TRAIN, "train", "--dataset", f"csv:{train_csv}", *BASE_FLAGS, "--seed", str(seed)]
    command += ["--out", str(out), "--name", name, *VARIANTS[variant]]
    entry = {"command": shlex.join(["vae-train", *command[1:]]), "reused": (out / "manifest.json").exists()}
    if not entry["reused"]:
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        entry["wall_s"] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            entry["error"] = (done.stderr or done.stdout).strip()[-3000:]
            print(f"vae-train failed for {name}:\n{entry['error']}", file=sys.stderr, flush=True)
            return entry
    training = json.loads((out / "manifest.json").read_text())["training"]
    entry.update(
        examples=training["data"]["examples"],
        epochs_run=training["epochs_run"],
        best_epoch=training["best_epoch"],
        train_s=training["seconds"],
        config={k: training[k] for k in ("hidden", "latent_dim", "epochs", "batch_size", "patience", "decoder_scale")},
    )
    print(f"trained {name}: {json.dumps(entry['examples'])} best epoch {entry['best_epoch']}", file=sys.stderr)
    return entry


def read_test_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    header = path.read_text().splitlines()[0].split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    label = header.index("label")
    return np.delete(table, label, axis=1), table[:, label].astype(np.int64)


def run_pyod(work: Path, data_dir: Path) -> dict:
    """pyod_scores.py --prepare, a check that its rows are the CSVs' rows, then its scores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [str(PYOD_PYTHON), str(PYOD_SCRIPT), "--prepare", "breast-cancer", str(work / "pyod")],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    npz = np.load(work / "pyod/breast-cancer.npz")
    train_x, test_x, test_y = breast_cancer_split(seed=0)
    csv_test_x, csv_test_y = read_test_csv(data_dir / "test.csv")
    csv_train_x, _ = read_test_csv(data_dir / "train.csv")
    same = (
        np.array_equal(npz["train_x"], train_x)
        and np.array_equal(npz["test_x"], test_x)
        and np.array_equal(npz["test_y"], test_y)
        and np.array_equal(csv_test_x, test_x)
        and np.array_equal(csv_test_y, test_y)
        and np.array_equal(csv_train_x, train_x)
    )
    if not same:
        raise SystemExit("the PyOD rows and the CSV rows differ: not the same split")
    out = work / "pyod/breast-cancer.json"
    subprocess.run(
        [
            str(PYOD_PYTHON),
            str(PYOD_SCRIPT),
            str(work / "pyod/breast-cancer.npz"),
            "--models",
            ",".join(PYOD_MODELS),
            "--seeds",
            ",".join(map(str, SEEDS)),
            "--out",
            str(out),
        ],
        check=True,
        env=env,
    )
    result = json.loads(out.read_text())
    result["same_split_checked"] = True
    return result


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cpus ({model or platform.processor()}), {platform.platform()}"


def reference_scores(train_x: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, header: list[str]) -> dict:
    """Trivial detectors (no model) that show what the table rewards: AUROC in %."""
    names = [name for name in header if name != "label"]
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    out = {
        "standardized distance to the training mean": roc_auc_score(test_y, (((test_x - mean) / std) ** 2).sum(1)),
        "raw-unit distance to the training mean": roc_auc_score(test_y, ((test_x - mean) ** 2).sum(1)),
    }
    for feature in ("worst_perimeter", "worst_area"):
        out[f"{feature} alone (larger = anomalous)"] = roc_auc_score(test_y, test_x[:, names.index(feature)])
    out = {k: float(v) * 100 for k, v in out.items()}
    out["global std of all training values (raw units)"] = float(train_x.std())
    out["training std of mean_smoothness / worst_area (raw units)"] = [
        float(std[names.index("mean_smoothness")]),
        float(std[names.index("worst_area")]),
    ]
    return out


def auroc_standard_error(auroc: float, n_anomalies: int = 212, n_normal: int = 107) -> float:
    """Hanley & McNeil (1982) standard error of one AUROC (both in %), for the size of the gaps."""
    a = auroc / 100
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (n_anomalies - 1) * (q1 - a * a) + (n_normal - 1) * (q2 - a * a)) / (
        n_anomalies * n_normal
    )
    return float(np.sqrt(variance)) * 100


def why(results: dict) -> list[str]:
    """The explanation, from the measured numbers."""
    rows = results["summary"]["rows"]
    vae = results["vae_serve"]
    reference = results.get("reference", {})
    mean_of = {(r["variant"], r["score"]): r["mean"] for r in rows if r["variant"] is not None}
    pyod_vae = next(r for r in rows if r["what"] == "PyOD VAE")["mean"]
    examples = next((e["examples"] for per in vae["training"].values() for e in per.values() if "examples" in e), None)
    lines = []
    if examples:
        lines.append(
            f"- **Rows.** vae-train keeps 20 % of the rows it is given as its own test split and 10 % of the rest "
            f"for early stopping: each vae-serve model fits {examples['train']} of the 250 normal rows "
            f"({examples['validation']} validation, {examples['test']} held out), PyOD fits all 250. No flag "
            "changes the 20 % test fraction, so this handicap is in every vae-serve row."
        )

    def best_score(variant: str) -> tuple[str, float] | None:
        scored = [(score, m) for (v, score), m in mean_of.items() if v == variant and m is not None]
        return max(scored, key=lambda item: item[1]) if scored else None

    scales = vae.get("decoder_scale_over_feature_std_at_z0", {})
    if "default" in vae["auroc"]:
        per_feature = [
            f"{scales[model_name('default', s)]['median']:.2f}" for s in SEEDS if model_name("default", s) in scales
        ]
        text = (
            f"- **Per-feature decoder (the default).** Its likelihood scores weigh every feature after "
            f"standardization: -IWAE mean {mean_of.get(('default', 'negative_iwae'), float('nan')):.2f}, close to "
            f"a plain standardized distance to the training mean "
            f"({reference.get('standardized distance to the training mean', float('nan')):.2f}) and below PyOD "
            f"VAE ({pyod_vae:.2f})."
        )
        default_entry = vae["training"]["default"][str(SEEDS[0])]
        if per_feature and "config" in default_entry:
            config = default_entry["config"]
            steps = -(-default_entry["examples"]["train"] // config["batch_size"])
            low = min(scales[m]["min"] for m in scales if m in [model_name("default", s) for s in SEEDS])
            high = max(scales[m]["max"] for m in scales if m in [model_name("default", s) for s in SEEDS])
            best_epochs = ", ".join(str(vae["training"]["default"][str(s)].get("best_epoch")) for s in SEEDS)
            text += (
                f" The model looks under-trained: at z = 0 (served `Decode`) its decoder scale is "
                f"{' / '.join(per_feature)} of each feature's training std (median, seeds 0 / 1; range "
                f"{low:.2f}-{high:.2f} over the 30 features), so it predicts no feature much better than another; "
                f"best epochs {best_epochs} of {config['epochs']}; with {default_entry['examples']['train']} rows and "
                f"batch {config['batch_size']} the recipe makes {steps} optimizer steps an epoch "
                f"({steps * config['epochs']} in all)."
            )
        if ("epochs-600", "negative_iwae") in mean_of:
            text += (
                f" Three times the epochs improves the validation ELBO but not the ranking "
                f"(-IWAE {mean_of[('epochs-600', 'negative_iwae')]:.2f}): a better density of 180 benign rows "
                "is not a better malignancy detector here."
            )
        lines.append(text)
    shares = vae.get("reconstruction_error_area_share", {})
    if shares:
        default_shares = [shares[m] for m in (model_name("default", s) for s in SEEDS) if m in shares]
        share_text = f"{min(default_shares):.0%}-{max(default_shares):.0%}" if default_shares else "most"
        small_std, area_std = reference.get("training std of mean_smoothness / worst_area (raw units)", [0, 0])
        perimeter_alone = reference.get("worst_perimeter alone (larger = anomalous)", float("nan"))
        area_alone = reference.get("worst_area alone (larger = anomalous)", float("nan"))
        lines.append(
            f"- **reconstruction_error is in raw units.** The served score sums squared errors of the values as sent, "
            f"so {share_text} of it comes from the three area features (default model; std of worst_area "
            f"{area_std:.0f} against {small_std:.3f} for mean_smoothness). It is mostly a tumour-size detector, "
            f"and size is this table's signal: worst_perimeter alone scores {perimeter_alone:.2f}, "
            f"worst_area alone {area_alone:.2f}."
        )
        diagnostic = vae.get("diagnostic_standardized_reconstruction_error_auroc", {}).get("default", {})
        raw = mean_of.get(("default", "reconstruction_error"))
        if len(diagnostic) == len(SEEDS) and raw is not None:
            standardized = float(np.mean(list(diagnostic.values())))
            lines[-1] += (
                f" Standardizing the served feature errors client-side (diagnostic table) gives {standardized:.2f} "
                f"against {raw:.2f} raw for the default model: units are not what holds the per-feature models back."
            )
    shared = best_score("shared-scale")
    if shared:
        lowest = min(m for (v, _), m in mean_of.items() if v == "shared-scale" and m is not None)
        lines.append(
            f"- **Shared decoder scale (`--decoder-scale shared`).** `{shared[0]}` mean {shared[1]:.2f}; every score "
            f"of that model is at least {lowest:.2f}. It standardizes by one mean and std over all 30 features "
            f"({reference.get('global std of all training values (raw units)', float('nan')):.0f} raw units here) and "
            "learns one scale, so its likelihood is carried by the features in large units (areas, perimeters) and "
            "ignores those in small units (smoothness, fractal dimension). That suits this table, whose anomaly "
            "signal is tumour size, but it is not only a units effect: a raw-unit distance to the training mean "
            f"scores {reference.get('raw-unit distance to the training mean', float('nan')):.2f}, so the model adds "
            "something over the units. Still a fit between this table's units and its label rather than evidence "
            "of a better model in general: the flag's help says it is for features in one unit, and an anomaly "
            "that lived in the small-unit features would be invisible to it."
        )
    best = results["summary"]["best"]
    if best:
        se = auroc_standard_error(best["mean"])
        lines.append(
            f"- **Size of the gaps.** One AUROC on these 319 rows has a standard error of about {se:.1f} points "
            f"(Hanley-McNeil); the headline gap is {best['mean'] - pyod_vae:+.2f} points, after choosing the best of "
            f"{len(results['variants'])} x {len(results['scores'])} variant-score pairs on the test rows. The "
            "ordering within a point of PyOD (default recipe, IForest, AutoEncoder) is not meaningful."
        )
    variants = list(vae["auroc"])
    weakest = [
        v
        for v in variants
        if (v, "complexity_corrected") in mean_of
        and mean_of[(v, "complexity_corrected")] == min(m for (w, _), m in mean_of.items() if w == v and m is not None)
    ]
    if weakest:
        lines.append(
            "- **complexity_corrected** (-IWAE in bits minus the zlib size of the row's bytes; meant for images) is "
            f"the weakest score of {len(weakest)} of the {len(variants)} variants ({', '.join(weakest)})."
        )
    return lines


def pct(value: float) -> str:
    return f"{value:.2f}"


def summarize(results: dict) -> dict:
    rows = []  # (label, variant or None, score or model, seed0, seed1, mean)
    for variant, per_score in results["vae_serve"]["auroc"].items():
        for score, per_seed in per_score.items():
            values = [per_seed.get(str(s)) for s in SEEDS]
            mean = float(np.mean(values)) if None not in values else None
            rows.append(
                {"what": f"vae-serve {variant}", "variant": variant, "score": score, "seeds": values, "mean": mean}
            )
    for key, label in PYOD_MODELS.items():
        values = [results["pyod"][key][str(s)]["auroc"] * 100 for s in SEEDS]
        rows.append({"what": label, "variant": None, "score": key, "seeds": values, "mean": float(np.mean(values))})
    ours = [r for r in rows if r["variant"] is not None and r["mean"] is not None]
    best = max(ours, key=lambda r: r["mean"]) if ours else None
    return {"rows": rows, "best": best}


def markdown(results: dict) -> str:
    summary = results["summary"]
    best = summary["best"]
    pyod_vae = next(r for r in summary["rows"] if r["what"] == "PyOD VAE")
    lines = [
        "## vae-serve vs PyOD on breast cancer (tabular), through the served API",
        "",
        f"Run {results['date']} on {results['machine']}, under `nice -n 10`.",
        f"Command: `{results['command']}`. Seconds: {results['seconds']}.",
        "",
        "Split (`bench/tabular_split.py`, seed 0): 250 benign training rows; test = 107 benign + 212 malignant "
        "(319 rows, anomaly = malignant). Both sides use model seeds 0 and 1. vae-serve: "
        "`vae-train train --dataset csv:train.csv --label-column label --likelihood gaussian --seed S` "
        "plus the variant's flags, one `vae-serve --model-repository`, `VaeClient.score(x, score, seed=0)` on the "
        "raw test rows. PyOD: `bench/peers/pyod_scores.py` (defaults; its rows checked identical to the CSVs'). "
        f"AUROC in %. {len(results['variants'])} vae-serve variants tried, {len(results['scores'])} scores each; "
        "all are listed.",
        "",
        "| model | score | seed 0 | seed 1 | mean |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        cells = [pct(v) if v is not None else "failed" for v in r["seeds"]]
        mean = pct(r["mean"]) if r["mean"] is not None else "-"
        if r is best:
            mean = f"**{mean}**"
        score = r["score"] if r["variant"] is not None else "decision_function"
        lines.append(f"| {r['what']} | {score} | " + " | ".join(cells) + f" | {mean} |")
    lines += [
        "",
        "| vae-serve variant | flags | rows fitted / validation / held out | epochs run (best) seed 0, seed 1 |",
    ]
    lines += ["|---|---|---|---|"]
    for variant, flags in results["variants"].items():
        entries = [results["vae_serve"]["training"][variant][str(s)] for s in SEEDS]
        ok = [e for e in entries if "error" not in e]
        examples = ok[0]["examples"] if ok else {}
        rows_text = f"{examples.get('train')} / {examples.get('validation')} / {examples.get('test')}" if ok else "-"
        epochs = ", ".join(f"{e['epochs_run']} ({e['best_epoch']})" if "error" not in e else "failed" for e in entries)
        lines.append(f"| {variant} | `{' '.join(flags) or '(none)'}` | {rows_text} | {epochs} |")
    diagnostic = results["vae_serve"].get("diagnostic_standardized_reconstruction_error_auroc", {})
    if diagnostic:
        lines += [
            "",
            "Diagnostic, **not a served score** (and not in the headline): the served per-feature squared "
            "reconstruction errors (`feature_errors=True`) divided client-side by each feature's variance over the "
            "250 training rows, summed, i.e. the squared form of PyOD's standardized distance. The served "
            "`reconstruction_error` sums the errors in raw units; the column on the right is the mean share of it "
            "that comes from the three area features (`mean_area`, `area_error`, `worst_area`).",
            "",
            "| vae-serve variant | seed 0 | seed 1 | mean | area share of raw reconstruction_error, seed 0 / 1 |",
            "|---|---|---|---|---|",
        ]
        shares = results["vae_serve"]["reconstruction_error_area_share"]
        for variant, per_seed in diagnostic.items():
            values = [per_seed.get(str(s)) for s in SEEDS]
            cells = [pct(v) if v is not None else "-" for v in values]
            mean = pct(float(np.mean(values))) if None not in values else "-"
            share_text = " / ".join(
                f"{shares[model_name(variant, s)]:.1%}" if model_name(variant, s) in shares else "-" for s in SEEDS
            )
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean} | {share_text} |")
    if results["vae_serve"].get("errors"):
        lines += ["", "Errors: " + "; ".join(f"`{k}`: {v}" for k, v in results["vae_serve"]["errors"].items())]
    lines += ["", "### Headline", ""]
    if best is None:
        lines.append("No vae-serve model was scored.")
        return "\n".join(lines)
    verdict = (
        "beats" if best["mean"] > pyod_vae["mean"] else ("ties" if best["mean"] == pyod_vae["mean"] else "loses to")
    )
    lines.append(
        f"Best vae-serve configuration by its mean over the two seeds: **{best['variant']}** with "
        f"`{best['score']}`, {pct(best['seeds'][0])} / {pct(best['seeds'][1])} (mean {pct(best['mean'])}); "
        f"it {verdict} PyOD VAE, {pct(pyod_vae['seeds'][0])} / {pct(pyod_vae['seeds'][1])} "
        f"(mean {pct(pyod_vae['mean'])}), by {best['mean'] - pyod_vae['mean']:+.2f} points. "
        f"This is the best of {len(results['variants'])} variants x {len(results['scores'])} scores chosen on the "
        "test rows themselves, so it is an optimistic figure; the default recipe's row is the unselected one."
    )
    default = [r for r in summary["rows"] if r["variant"] == "default" and r["mean"] is not None]
    if default:
        d = max(default, key=lambda r: r["mean"])
        lines.append(
            f"The default recipe's best score is `{d['score']}`, mean {pct(d['mean'])} "
            f"({d['mean'] - pyod_vae['mean']:+.2f} against PyOD VAE)."
        )
    lines += ["", "### Why vae-serve wins or loses", "", *why(results)]
    if results.get("reference"):
        lines += ["", "Reference points (no model; AUROC % on the same test rows):", ""]
        lines += [
            f"- {k}: {v:.2f}" for k, v in results["reference"].items() if not isinstance(v, list) and "std" not in k
        ]
    if results.get("notes"):
        lines += ["", results["notes"].strip()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/tabular"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench/results/tabular-peers.json")
    parser.add_argument("--md-out", type=Path, default=ROOT / "bench/results/tabular-peers.md")
    parser.add_argument("--notes", type=Path, help="a markdown file appended to the report as 'Why'")
    parser.add_argument("--report", action="store_true", help="rewrite the markdown from --json-out and exit")
    args = parser.parse_args()
    if args.report:
        results = json.loads(args.json_out.read_text())
        if args.notes:
            results["notes"] = args.notes.read_text()
            args.json_out.write_text(json.dumps(results, indent=1) + "\n")
        text = markdown(results)
        args.md_out.write_text(text + "\n")
        print(text)
        return 0
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    data_dir, repository = args.work / "data", args.work / "repository"
    train_csv, test_csv = write_breast_cancer_csv(data_dir, seed=0)
    results = {
        "command": shlex.join([os.path.relpath(PYTHON, Path.cwd()), *sys.argv]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "split": {"seed": 0, "train_rows": 250, "test_rows": 319, "test_anomalies": 212},
        "seeds": list(SEEDS),
        "variants": {v: VARIANTS[v] for v in variants},
        "scores": list(SCORE_TYPES),
    }
    results["pyod"] = run_pyod(args.work, data_dir)
    training = {v: {str(s): train(repository, train_csv, v, s) for s in SEEDS} for v in variants}
    test_x, test_y = read_test_csv(test_csv)
    x = test_x.astype(np.float32)
    auroc: dict = {}
    errors: dict = {}
    diagnostic: dict = {}  # variant -> seed -> AUROC of the standardized reconstruction error
    share: dict = {}  # model -> mean share of the raw reconstruction_error from the three area features
    scales: dict = {}  # model -> decoder scale at z = 0 over each feature's training std: min, median, max
    train_x, _ = read_test_csv(train_csv)
    train_var = train_x.var(axis=0)
    header = test_csv.read_text().splitlines()[0].split(",")
    area = [header.index(name) for name in ("mean_area", "area_error", "worst_area")]
    process, target = start(repository)  # anomaly_eval's: launch, wait until SERVING
    try:
        with VaeClient(target, timeout_s=120) as client:
            client.wait_until_serving(timeout_s=300)
            for variant in variants:
                for seed in SEEDS:
                    if "error" in training[variant][str(seed)]:
                        continue
                    model = model_name(variant, seed)
                    for score in SCORE_TYPES:
                        try:
                            scores = client.score(x, score=score, seed=0, model=model).scores
                        except Exception as error:  # report it, keep going
                            errors[f"{model}/{score}"] = f"{type(error).__name__}: {error}"
                            print(f"{model} {score}: {errors[f'{model}/{score}']}", file=sys.stderr, flush=True)
                            continue
                        if not np.all(np.isfinite(scores)):
                            errors[f"{model}/{score}"] = f"{int((~np.isfinite(scores)).sum())} non-finite scores"
                        value = float(roc_auc_score(test_y, np.nan_to_num(scores, nan=np.inf))) * 100
                        auroc.setdefault(variant, {}).setdefault(score, {})[str(seed)] = value
                        print(json.dumps({"model": model, "score": score, "auroc": round(value, 2)}), flush=True)
                    # Diagnostic, not a served score: the served per-feature squared errors divided by
                    # the training rows' variance of each feature (PyOD's standardized distance, squared).
                    try:
                        errors_raw = client.score(x, seed=0, model=model, feature_errors=True).feature_errors
                    except Exception as error:
                        errors[f"{model}/feature_errors"] = f"{type(error).__name__}: {error}"
                        continue
                    errors_raw = np.asarray(errors_raw, dtype=np.float64).reshape(len(x), -1)
                    latent_dim = client.info(model=model).latent_dim
                    decoded = client.decode(np.zeros((1, latent_dim), np.float32), model=model)
                    ratio = np.asarray(decoded.x_scale, dtype=np.float64).reshape(-1) / np.sqrt(train_var)
                    scales[model] = {
                        "min": float(ratio.min()),
                        "median": float(np.median(ratio)),
                        "max": float(ratio.max()),
                    }
                    value = float(roc_auc_score(test_y, (errors_raw / train_var).sum(axis=1))) * 100
                    diagnostic.setdefault(variant, {})[str(seed)] = value
                    share[model] = float(np.mean(errors_raw[:, area].sum(axis=1) / errors_raw.sum(axis=1)))
                    print(
                        json.dumps(
                            {
                                "model": model,
                                "standardized_reconstruction_error": round(value, 2),
                                "area_share": round(share[model], 3),
                            }
                        ),
                        flush=True,
                    )
    finally:
        process.terminate()
        process.wait(timeout=60)
    results["vae_serve"] = {
        "training": training,
        "auroc": auroc,
        "errors": errors,
        "diagnostic_standardized_reconstruction_error_auroc": diagnostic,
        "reconstruction_error_area_share": share,
        "decoder_scale_over_feature_std_at_z0": scales,
    }
    results["reference"] = reference_scores(train_x, test_x, test_y, header)
    if args.notes:
        results["notes"] = args.notes.read_text()
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["summary"] = summarize(results)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    args.md_out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
