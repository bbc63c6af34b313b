"""Exploration, offline (not through the served API): the images recipe's standardized Gaussian against
a standardized Laplace likelihood (one shared scale b in standardized units, set as the Gaussian's:
each batch's maximum-likelihood b = mean |residual|), one-class Fashion-MNIST, the protocol's splits
(vae-train's validation rows + the same 5,000 other-class training images; bench/protocol_data.py),
vae-train's training loop (export/models/training.py) with the images recipe's settings.

    OMP_NUM_THREADS=1 python bench/explore_likelihood.py gaussian 0,1,2,3,4,5,6,7,8,9 0
    OMP_NUM_THREADS=1 python bench/explore_likelihood.py laplace 0,1,2,3,4,5,6,7,8,9 0

Arguments: variant, classes, seed, hidden sizes (default 1024,512). Prints each class's selection and
test AUROC of -ELBO (10 draws, the model's own likelihood) and the means; saves each trained model as
runs/explore/models/VARIANT-SEED-HIDDEN-CLASS.pt for bench/explore_pathway.py, and the AUROCs as
runs/explore/VARIANT-SEED-CLASSES-HIDDEN.json. The gaussian variant reproduces the protocol's served
selection figure of the recipe (92.73, seed 0) to the last digit.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vae_serve.export.models import vae as vae_mod
from vae_serve.export.models.config import TrainConfig
from vae_serve.export.models.training import train_vae
from vae_serve.export.sources.registry import load_source
from vae_serve.export.sources.split_plan import split_indices
from vae_serve.export.sources.splits import make_splits

variant = sys.argv[1]
classes = [int(c) for c in sys.argv[2].split(",")]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
hidden = tuple(int(h) for h in (sys.argv[4] if len(sys.argv) > 4 else "1024,512").split(","))
MIN = vae_mod.MIN_STANDARDIZED_SCALE
G = vae_mod.GaussianDecoder

if variant == "laplace":

    def batch_std(self, x, mean):
        mae = ((x - mean) / self.scaling.scale).abs().mean()
        self._squared_error[0] += float(mae.detach())
        self._squared_error[1] += 1
        return (torch.clamp(torch.log(mae), min=math.log(MIN)) + torch.log(self.scaling.scale)).expand_as(mean)

    @torch.no_grad()
    def fix_scale(self):
        total, batches = self._squared_error
        if batches == 0:
            return
        target = max(total / batches - MIN, 1e-4)
        self.rho.fill_(target + math.log(-math.expm1(-target)))
        self._squared_error = [0.0, 0]

    def log_prob(x, outputs):
        mean, log_scale = outputs
        return (-math.log(2.0) - log_scale - (x - mean).abs() * torch.exp(-log_scale)).sum(-1)

    G._batch_log_scale_standardized = batch_std
    G.fix_scale = fix_scale
    G.log_prob = staticmethod(log_prob)

Path("runs/explore/models").mkdir(parents=True, exist_ok=True)
source = load_source("fashion-mnist")
results = {}
for c in classes:
    torch.set_num_threads(1)
    splits = make_splits(source, (c,), validation_fraction=0.1, test_fraction=0.0, min_validation_rows=10)
    splits = splits.in_model_space()
    config = TrainConfig(
        likelihood="gaussian",
        binarize="none",
        hidden=hidden,
        latent_dim=10,
        epochs=30,
        batch_size=100,
        lr=1e-3,
        kl_warmup_epochs=0.0,
        patience=5,
        seed=seed,
        decoder_scale="standardized",
        feature_std_floor=0.3,
    )
    started = time.time()
    result = train_vae(config, splits.train.x, splits.validation.x, show_progress=False)
    vae = result.vae.eval()
    # selection: class c's validation rows + 5,000 other training images (as bench/protocol_data.py)
    train_y = source.train.y
    _, validation, _ = split_indices(len(train_y), True, 0.1, 0.0, 0)
    normal = np.sort(validation[train_y[validation] == c])
    others = np.flatnonzero(train_y != c)
    anomalies = np.sort(np.random.default_rng([0, c]).choice(others, 5000, False))
    scale = 1.0 / 255.0
    sel_x = (source.train.x[np.concatenate([normal, anomalies])].reshape(-1, 784) * scale).astype(np.float32)
    sel_y = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    test_x = (source.test.x.reshape(-1, 784) * scale).astype(np.float32)
    test_y = (source.test.y != c).astype(int)

    def score(x, vae=vae):
        out = []
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            for s in range(0, len(x), 500):
                _, elbo = vae.log_weights(torch.from_numpy(x[s : s + 500]), 10)
                out.append(-elbo.double().numpy())
        return np.concatenate(out)

    results[c] = dict(
        selection=100 * roc_auc_score(sel_y, score(sel_x)),
        test=100 * roc_auc_score(test_y, score(test_x)),
        best_epoch=result.best_epoch,
        seconds=round(time.time() - started, 1),
    )
    print(variant, c, results[c], flush=True)
    torch.save(vae, f"runs/explore/models/{variant}-{seed}-{'x'.join(map(str, hidden))}-{c}.pt")
print(
    variant,
    "mean selection",
    np.mean([r["selection"] for r in results.values()]),
    "test",
    np.mean([r["test"] for r in results.values()]),
)
Path(f"runs/explore/{variant}-{seed}-{sys.argv[2]}-{'x'.join(map(str, hidden))}.json").write_text(json.dumps(results))
