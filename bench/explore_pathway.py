"""Exploration, offline (not through the served API): score variants of the models bench/explore_likelihood.py
trained and saved, on the protocol's selection split and test rows (AUROC %): -ELBO; the L^p norms of the
standardized residual (p = 1..4) and its maximum; RaPP's SAP (squared difference of the encoder's
activations of x and of its reconstruction, per layer l0 = the standardized input, l1, l2 = the hidden
layers; "norm" divides each layer by its mean on training rows) and NAP (the same difference whitened by
the SVD of 3,000 training rows' differences). What the served ``pathway`` score became: nap_hidden.

    OMP_NUM_THREADS=1 python bench/explore_pathway.py gaussian-0-1024x512 0,1,2,3,4,5,6,7,8,9

Writes runs/explore/scores-TAG-CLASSES.json; prints each class's selection AUROCs.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vae_serve.export.sources.registry import load_source
from vae_serve.export.sources.split_plan import split_indices
from vae_serve.export.sources.splits import make_splits

tag = sys.argv[1]
classes = [int(c) for c in sys.argv[2].split(",")]
torch.set_num_threads(1)
source = load_source("fashion-mnist")
out = {}


def activations(vae, x):
    """standardized input and each ReLU output of the encoder body."""
    h = vae.encoder.scaling.standardize(x)
    acts = [h]
    for layer in vae.encoder.body:
        h = layer(h)
        if isinstance(layer, torch.nn.ReLU):
            acts.append(h)
    return acts


def features(vae, x):
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        res = {"elbo": [], "kl": [], "acts": None}
        acts_all = []
        for s in range(0, len(x), 500):
            xb = torch.from_numpy(x[s : s + 500])
            _, elbo = vae.log_weights(xb, 10)
            mu, logvar = vae.encoder(xb)
            kl = 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)
            mean, _ = vae.decoder(mu)
            a, b = activations(vae, xb), activations(vae, mean)
            acts_all.append([(ai - bi).numpy() for ai, bi in zip(a, b, strict=True)])
            res["elbo"].append(-elbo.double().numpy())
            res["kl"].append(kl.double().numpy())
        res = {k: np.concatenate(v) for k, v in res.items() if k != "acts"}
        res["diffs"] = [np.concatenate([d[i] for d in acts_all]) for i in range(len(acts_all[0]))]
        return res


for c in classes:
    vae = torch.load(f"runs/explore/models/{tag}-{c}.pt", weights_only=False).eval()
    splits = make_splits(source, (c,), validation_fraction=0.1, test_fraction=0.0, min_validation_rows=10)
    train_x = splits.in_model_space().train.x.reshape(-1, 784).astype(np.float32)
    train_y = source.train.y
    _, validation, _ = split_indices(len(train_y), True, 0.1, 0.0, 0)
    normal = np.sort(validation[train_y[validation] == c])
    others = np.flatnonzero(train_y != c)
    anomalies = np.sort(np.random.default_rng([0, c]).choice(others, 5000, False))
    sel_x = (source.train.x[np.concatenate([normal, anomalies])].reshape(-1, 784) / 255.0).astype(np.float32)
    sel_y = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    test_x = (source.test.x.reshape(-1, 784) / 255.0).astype(np.float32)
    test_y = (source.test.y != c).astype(int)
    ref = features(vae, train_x[:3000])
    # NAP reference per layer: mean and SVD of the training rows' differences
    nap = []
    for d in ref["diffs"]:
        mu = d.mean(0)
        _, s, vt = np.linalg.svd(d - mu, full_matrices=False)
        keep = s > s[0] * 1e-3
        nap.append((mu, s[keep], vt[keep]))
    layer_scale = [np.mean((d**2).sum(1)) for d in ref["diffs"]]
    cls = {}
    for split, x, y in (("selection", sel_x, sel_y), ("test", test_x, test_y)):
        f = features(vae, x)
        scores = {"elbo": f["elbo"]}
        r = f["diffs"][0]
        for p in (1, 2, 3, 4):
            scores[f"rec_p{p}"] = (np.abs(r) ** p).sum(1)
        scores["rec_max"] = np.abs(r).max(1)
        sap = [(d**2).sum(1) for d in f["diffs"]]
        scores["sap_all"] = np.sum(sap, 0)
        scores["sap_hidden"] = np.sum(sap[1:], 0)
        scores["sap_norm"] = np.sum([s / ls for s, ls in zip(sap, layer_scale, strict=True)], 0)
        for i, s in enumerate(sap):
            scores[f"sap_l{i}"] = s
        naps = [((((d - mu) @ vt.T) / sv) ** 2).sum(1) for d, (mu, sv, vt) in zip(f["diffs"], nap, strict=True)]
        scores["nap_all"] = np.sum(naps, 0)
        scores["nap_hidden"] = np.sum(naps[1:], 0)
        for i, s in enumerate(naps):
            scores[f"nap_l{i}"] = s
        cls[split] = {k: 100 * roc_auc_score(y, v) for k, v in scores.items()}
    out[c] = cls
    print(c, {k: round(v, 2) for k, v in cls["selection"].items()}, flush=True)
Path(f"runs/explore/scores-{tag}-{sys.argv[2]}.json").write_text(json.dumps(out))
