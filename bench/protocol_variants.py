"""Item 4 of issue 23, the scores that need no new training: test-time transformations and the latent
prior density, measured on bench/protocol.py's bundles and rows (its --work cache), through the
served API.

Variants, each a score per row (higher = more anomalous), computed from served calls:
- tta_flip: the mean served ``negative_elbo`` of x and of x flipped left-right (GEOM's flip, at test
  time only: the model trained on untransformed images).
- tta_shift: the mean over x, its flip and their one-pixel shifts up, down, left and right (10
  transforms; pixels shifted in are 0, the background).
- prior: -log N(mu(x); 0, I) + const = ||mu||^2 / 2, the prior density of the posterior mean.
- elbo_plus_prior: negative_elbo + ||mu||^2 / 2, each standardized by its mean and SD on the
  selection split's *normal* rows (no anomaly is used to set the weights).
- ensemble: the mean served ``negative_elbo`` of the models of seeds SEEDS (the bundles
  bench/protocol.py trained), scored as one model.

Figures: AUROC % per class and the mean over classes, on the selection split (the split choices are
made on) and on the test rows (reported, never used to choose), with bench/protocol_stats.py.

    .venv/bin/python bench/protocol_variants.py --work runs/protocol --key 8f33d1b6 --seeds 0
"""

import argparse
import json
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

CHUNK_ROWS = 1024


def transforms(x: np.ndarray, shifts: bool) -> list[np.ndarray]:
    """x [n, 1, 28, 28] (or [n, 784]) under the flip and, with ``shifts``, the one-pixel shifts."""
    images = x.reshape(len(x), 28, 28)
    base = [images, images[:, :, ::-1]]
    out = list(base)
    if shifts:
        for image in base:
            for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
                moved = np.roll(image, step, axis=axis)
                edge = [slice(None)] * 3
                edge[axis] = 0 if step == 1 else -1
                moved[tuple(edge)] = 0
                out.append(moved)
    return [t.reshape(x.shape) for t in out]


def served(client: VaeClient, model: str, x: np.ndarray, what: str) -> np.ndarray:
    if what == "prior":
        mean = client.encode(x, seed=0, model=model).z_mean
        return 0.5 * np.sum(np.asarray(mean, dtype=np.float64) ** 2, axis=1)
    return np.asarray(client.score(x, "negative_elbo", seed=0, model=model).scores, dtype=np.float64)


def variants(client: VaeClient, models: list[str], x: np.ndarray, cache: Path) -> dict[str, np.ndarray]:
    """Every variant's scores on x for the first model (the ensemble over all of ``models``)."""

    def cached(name: str, compute):
        path = cache / f"{name}.npy"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, compute())
        return np.load(path)

    first = models[0]
    views = transforms(x, shifts=True)
    per_view = [cached(f"{first}-view{i}", lambda v=v: served(client, first, v, "elbo")) for i, v in enumerate(views)]
    prior = cached(f"{first}-prior", lambda: served(client, first, x, "prior"))
    members = [per_view[0]] + [cached(f"{m}-view0", lambda m=m: served(client, m, x, "elbo")) for m in models[1:]]
    return {
        "negative_elbo": per_view[0],
        "tta_flip": np.mean(per_view[:2], axis=0),
        "tta_shift": np.mean(per_view, axis=0),
        "prior": prior,
        "ensemble": np.mean(members, axis=0),
    }


def standardized_sum(sel: dict, test: dict, normal: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    stats = [(sel[n][normal].mean(), sel[n][normal].std()) for n in names]
    return tuple(sum((d[n] - m) / s for n, (m, s) in zip(names, stats, strict=True)) for d in (sel, test))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/protocol"))
    parser.add_argument("--key", required=True, help="the recipe key of bench/protocol.py's bundles")
    parser.add_argument("--seeds", default="0", help="the first is scored alone; all of them form the ensemble")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    folder = args.work / "fashion"
    seeds = [int(s) for s in args.seeds.split(",")]
    source = load_fashion()
    figures: dict = {}
    process, target = start(folder / "repository")
    try:
        with VaeClient(target, timeout_s=600, progress=False, max_rows_per_request=CHUNK_ROWS) as client:
            for c in [int(c) for c in args.classes.split(",")]:
                started = time.perf_counter()
                models = [f"fashion-{args.key}-s{s}-c{c}" for s in seeds]
                record = json.loads((folder / "repository" / models[0] / "1" / "manifest.json").read_text())
                rows = fashion_task(source, c, record["training"]["data"])
                cache = folder / "variants" / f"{args.key}-c{c}"
                sel = variants(client, models, rows.selection_x, cache / "selection")
                test = variants(client, models, rows.test_x, cache / "test")
                normal = rows.selection_y == 0
                sel["elbo_plus_prior"], test["elbo_plus_prior"] = standardized_sum(
                    sel, test, normal, ["negative_elbo", "prior"]
                )
                figures[c] = {
                    name: {
                        "selection": auroc_percent(sel[name], rows.selection_y),
                        "test": auroc_percent(test[name], rows.test_y),
                    }
                    for name in sel
                }
                print(f"class {c} in {time.perf_counter() - started:.0f} s: {json.dumps(figures[c])}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)
    names = list(next(iter(figures.values())))
    print(f"{'variant':18s} selection  test   (mean over {len(figures)} classes, seeds {args.seeds})")
    for name in names:
        sel = np.mean([f[name]["selection"] for f in figures.values()])
        test = np.mean([f[name]["test"] for f in figures.values()])
        print(f"{name:18s} {sel:9.2f} {test:6.2f}")
    if args.out:
        args.out.write_text(json.dumps({"key": args.key, "seeds": seeds, "classes": figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
