"""Test NLL of a bundle as the literature measures it, through the served Elbo rpc (issue 23, item 5).

The importance-sampled bound of Burda et al. (IWAE, eq. 8) with k = 5000 samples per test row,
-log p(x) ~ -log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x), computed by a real vae-serve (started here
with ``--max-k`` raised to k) over gRPC, in nats per example:

    python bench/nll_eval.py --bundle runs/fm/1 --dataset fashion-mnist            # the whole test set
    python bench/nll_eval.py --bundle /tmp/a2-digits --dataset digits --rows 200   # a subset

The rows: a source's official test split (Fashion-MNIST's 10,000 images), else the test split that
vae-train held out, rebuilt from the split the manifest records (seed, fractions, classes); a bundle
that kept no test rows is refused, unless ``--split validation`` asks for its held-out validation
rows (early stopping and calibration saw them; training never did). ``--rows N`` keeps the first N
rows, in the split's order.
Bernoulli bundles see the test set binarized ONCE, with a fixed seed: x_bin = (U < x) in the
model's space, U ~ Uniform(0, 1) from ``numpy.random.default_rng(--binarize-seed).random(x.shape,
float32)``, the rule and default seed (20260) of vae-train's own test metrics, sent back in raw units
(for 0-255 pixels, 0 or 255). Gaussian bundles see the data as given.

Rows go in chunks of ``max_row_samples // k`` (52 at k = 5000 under the server's default 262,144
row-samples per request); chunk i draws its posterior samples with seed ``--seed + i``.

Prints one JSON line: the mean NLL in nats, its bootstrap 95 % interval over the test rows
(``--bootstrap`` resamples, percentile method), the mean per-row IWAE standard error (the Monte-Carlo
error of one row's bound, delta method) and the Monte-Carlo standard error of the mean, the mean
-ELBO over the same k draws, bits per dimension, and the wall time of the scoring.
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_serve.client import VaeClient
from vae_serve.core.bundle import read_manifest
from vae_serve.core.manifest import Manifest
from vae_serve.core.preprocessing import Affine
from vae_serve.export.sources import load_source, make_splits, recorded_split

VAE_SERVE = str(Path(sys.executable).with_name("vae-serve"))
DEFAULT_K = 5000  # Burda et al.'s evaluation, and the 228.70 / 224.6 figures the issue quotes
DEFAULT_ROW_SAMPLES = 262_144  # the server's default --max-row-samples
BINARIZE_SEED = 20260  # vae-train's EVAL_BINARIZATION_SEED: the same draw as the manifest's test metrics
REQUEST_TIMEOUT_S = 1800.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle directory to serve")
    parser.add_argument("--dataset", default="fashion-mnist", help="vae-train's --dataset of the test rows")
    parser.add_argument("--split", choices=("test", "validation"), default="test", help="which held-out rows")
    parser.add_argument("--rows", type=int, default=None, help="evaluate the first N test rows (default: all)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="importance samples per row")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first chunk's posterior draws")
    parser.add_argument("--binarize-seed", type=int, default=BINARIZE_SEED, help="Bernoulli bundles only")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the rows")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--max-row-samples", type=int, default=DEFAULT_ROW_SAMPLES, help="the server's limit")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="one more vae-serve flag, e.g. --server-arg=--device=cuda"
    )
    args = parser.parse_args(argv)
    if args.k < 2 or (args.rows is not None and args.rows < 1) or args.bootstrap < 1:
        parser.error("--k needs at least 2 samples, --rows and --bootstrap at least 1")
    if args.max_row_samples < args.k:
        parser.error(f"--max-row-samples {args.max_row_samples} must allow one row of k = {args.k} samples")
    return args


def evaluation_rows(dataset: str, manifest: Manifest, split: str) -> tuple[np.ndarray, str]:
    """The raw rows of ``split`` of ``dataset`` (as clients send them) and where they come from.

    The test split: the source's official one, else the rows vae-train held out. The validation
    split: the rows vae-train held out for early stopping and calibration (never trained on), for a
    bundle that kept no test rows. Either is rebuilt from the split the manifest records.
    """
    source = load_source(dataset)
    data = manifest.training.get("data", {}) if isinstance(manifest.training, dict) else {}
    classes = tuple(data["classes"]) if data.get("classes") else None
    official_test = source.test is not None
    recorded = recorded_split(data)
    if split == "test" and not official_test and not recorded["test_fraction"]:
        raise SystemExit(
            f"{dataset} has no official test split and the bundle kept no test rows (its manifest records "
            f"test_fraction {data.get('test_fraction')!r}); train it with vae-train's --test-fraction, "
            "or evaluate its held-out validation rows with --split validation"
        )
    splits = make_splits(source, classes, **recorded)
    rows = splits.test if split == "test" else splits.validation
    origin = "official test split" if split == "test" and official_test else f"held-out {split} rows"
    where = f"{dataset}'s {origin}, as the manifest records the split ({recorded}, classes {data.get('classes')})"
    return rows.x, where


def binarized_once(x_raw: np.ndarray, manifest: Manifest, seed: int) -> np.ndarray:
    """One fixed Bernoulli draw of every value, in the model's space, returned in raw units."""
    affine = Affine.of(manifest.preprocessing)
    x_model = x_raw if affine is None else affine.to_model(x_raw.astype(np.float32))
    x_binary = (np.random.default_rng(seed).random(x_model.shape, dtype=np.float32) < x_model).astype(np.float32)
    return x_binary if affine is None else affine.to_raw(x_binary).astype(np.float32)


def start_server(bundle: Path, k: int, max_rows: int, max_row_samples: int, extra: list[str]):
    """A vae-serve on a free loopback port with Elbo's limits raised to k; (process, target)."""
    command = [VAE_SERVE, "--bundle", str(bundle), "--host", "127.0.0.1", "--port", "0", "--no-metrics"]
    command += ["--max-k", str(k), "--max-rows", str(max_rows), "--max-row-samples", str(max_row_samples), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while not (line := process.stdout.readline()).startswith("vae-serve listening on "):
        if not line:
            raise SystemExit(f"vae-serve did not start (exit {process.wait()}): {' '.join(command)}")
    target = line.split(" on ", 1)[1].strip()
    with VaeClient(target, progress=False) as client:
        for _ in range(600):  # bounded: at most ~5 minutes
            try:
                if client.health() == "SERVING":
                    return process, target
            except Exception:  # not up yet: the channel refuses until the server listens
                pass
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("vae-serve did not become SERVING within 5 minutes")


def served_bounds(target: str, x: np.ndarray, k: int, chunk_rows: int, seed: int) -> dict[str, np.ndarray]:
    """-IWAE-k, its standard error and -ELBO per row, one Elbo request per chunk (chunk i: seed + i)."""
    parts: dict[str, list[np.ndarray]] = {"nll": [], "standard_error": [], "negative_elbo": []}
    with VaeClient(target, timeout_s=REQUEST_TIMEOUT_S, progress=False, retry=None) as client:
        for index, start in enumerate(range(0, len(x), chunk_rows)):
            result = client.elbo(x[start : start + chunk_rows], k=k, seed=seed + index)
            if len(result.pieces) > 1:
                raise SystemExit("the client split a chunk: the server's limits are lower than this script assumes")
            parts["nll"].append(-np.asarray(result.iwae, np.float64))
            parts["standard_error"].append(np.asarray(result.iwae_standard_error, np.float64))
            parts["negative_elbo"].append(-np.asarray(result.elbo, np.float64))
    return {name: np.concatenate(values) for name, values in parts.items()}


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int) -> list[float]:
    """Percentile bootstrap 95 % interval of the mean of ``values`` over rows."""
    rng = np.random.default_rng(seed)
    means = np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)])
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    manifest = read_manifest(args.bundle)
    x, where = evaluation_rows(args.dataset, manifest, args.split)
    x = x[: args.rows] if args.rows is not None else x
    binarization = "none: the data as given"
    if manifest.likelihood.name == "bernoulli":
        x = binarized_once(x, manifest, args.binarize_seed)
        binarization = f"binarized once: U < x in the model's space, U from default_rng({args.binarize_seed})"
    chunk_rows = args.max_row_samples // args.k
    process, target = start_server(args.bundle, args.k, chunk_rows, args.max_row_samples, args.server_arg)
    try:
        started = time.perf_counter()
        bounds = served_bounds(target, x, args.k, chunk_rows, args.seed)
        wall_s = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=60)
    nll = bounds["nll"]
    num_features = x.reshape(len(x), -1).shape[1]
    test = manifest.metrics.test
    result = {
        "bundle": str(args.bundle),
        "model": f"{manifest.name}/{manifest.version}",
        "likelihood": manifest.likelihood.name,
        "rows": len(x),
        "split": args.split,
        "evaluated_rows": where,
        "binarization": binarization,
        "k": args.k,
        "seed": args.seed,
        "chunk_rows": chunk_rows,
        "nll_nats": float(nll.mean()),
        "nll_ci95_nats": bootstrap_interval(nll, args.bootstrap, args.bootstrap_seed),
        "bootstrap": {"resamples": args.bootstrap, "seed": args.bootstrap_seed, "method": "percentile, over rows"},
        "mean_iwae_standard_error_nats": float(bounds["standard_error"].mean()),
        "mc_standard_error_of_mean_nats": float(math.sqrt(np.sum(bounds["standard_error"] ** 2)) / len(nll)),
        "negative_elbo_nats": float(bounds["negative_elbo"].mean()),
        "bits_per_dim": float(nll.mean() / (num_features * math.log(2.0))),
        "manifest_test_iwae_nll_nats": None if test is None else test.iwae_nll_nats,
        "manifest_test_iwae_k": None if test is None else test.iwae_k,
        "wall_s": round(wall_s, 3),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
