"""The training loop: Adam on the negative ELBO (or the IWAE-k bound), optional KL warm-up and
dynamic binarization, early stopping on the validation bound that matches the objective, the best
epoch's weights restored at the end.
"""

import copy
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from vae_serve.export.models.config import TrainConfig
from vae_serve.export.models.evaluate import binarize, evaluate_bounds
from vae_serve.export.models.vae import Vae, build_vae

# Validation ELBO per epoch averages this many posterior draws per example: enough that early
# stopping reacts to the model, not to Monte-Carlo noise.
VALIDATION_SAMPLES = 10
# Fixed seed of the one Bernoulli draw used for every evaluation of binarized models.
EVAL_BINARIZATION_SEED = 20260
# Gaussian likelihood: features are standardized by the training mean and this-floored std.
MIN_FEATURE_STD = 1e-3


@dataclass
class TrainResult:
    vae: Vae
    epochs_run: int
    best_epoch: int
    best_validation_bound: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def evaluation_view(x: np.ndarray, config: TrainConfig) -> np.ndarray:
    """The data metrics are computed on: one fixed binarization if training binarized, else x."""
    return binarize(x, EVAL_BINARIZATION_SEED) if config.binarize == "dynamic" else x


def standardization(
    train_x: np.ndarray, likelihood: str, decoder_scale: str = "per-feature"
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if likelihood != "gaussian":
        return None, None
    if decoder_scale == "shared":
        # One unit for the whole input (pixels): a per-pixel std would blow up near-constant borders.
        loc = np.full(train_x.shape[1], train_x.mean(), dtype=np.float32)
        scale = np.full(train_x.shape[1], max(float(train_x.std()), MIN_FEATURE_STD), dtype=np.float32)
    else:
        loc = train_x.mean(axis=0)
        scale = np.maximum(train_x.std(axis=0), MIN_FEATURE_STD)
    return torch.from_numpy(loc), torch.from_numpy(scale)


def kl_weight(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Linear KL warm-up from 0 to 1 over ``warmup_epochs`` (Sønderby et al. 2016); 1 without warm-up."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))


def train_vae(
    config: TrainConfig,
    train_x: np.ndarray,
    validation_x: np.ndarray,
    show_progress: bool | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> TrainResult:
    """Train from scratch. The same config and data give the same weights (fixed seed, CPU).
    ``input_shape`` is one example's shape (``--arch conv`` needs it)."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    loc, scale = standardization(train_x, config.likelihood, config.decoder_scale)
    # "standardized": per-feature standardization (as "per-feature") with one shared sigma in those units.
    shared = config.decoder_scale in ("shared", "standardized")
    vae = build_vae(
        train_x.shape[1],
        config.hidden,
        config.latent_dim,
        config.likelihood,
        loc,
        scale,
        shared,
        config.arch,
        input_shape,
        standardized_residuals=config.decoder_scale == "standardized",
        conv_decoder=config.conv_decoder,
    )
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    data = torch.from_numpy(train_x)
    validation_view = evaluation_view(validation_x, config)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    best = (-math.inf, 0, copy.deepcopy(vae.state_dict()))
    history = []
    epochs = tqdm(
        range(1, config.epochs + 1),
        desc="training",
        unit="epoch",
        file=sys.stderr,
        disable=None if show_progress is None else not show_progress,
    )
    for epoch in epochs:
        vae.train()
        elbo_sum = 0.0
        for step_in_epoch, rows in enumerate(torch.randperm(len(data)).split(config.batch_size)):
            batch = data[rows]
            if config.binarize == "dynamic":
                batch = torch.bernoulli(batch)
            step = (epoch - 1) * steps_per_epoch + step_in_epoch
            weight = kl_weight(step, steps_per_epoch, config.kl_warmup_epochs)
            loss, elbo = vae.loss(batch, weight, config.train_samples)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            elbo_sum += float(elbo.detach()) * len(rows)
        train_elbo = elbo_sum / len(data)
        if shared:
            vae.decoder.fix_scale()
        bounds = evaluate_bounds(vae, validation_view, VALIDATION_SAMPLES, config.seed)
        validation_elbo, validation_iwae = float(bounds.elbo.mean()), float(bounds.iwae.mean())
        history.append(
            {
                "epoch": epoch,
                "train_elbo_nats": train_elbo,
                "validation_elbo_nats": validation_elbo,
                f"validation_iwae{VALIDATION_SAMPLES}_nats": validation_iwae,
            }
        )
        epochs.set_postfix(train_elbo=f"{train_elbo:.2f}", val_elbo=f"{validation_elbo:.2f}")
        tqdm.write(
            f"epoch {epoch}: train ELBO {train_elbo:.3f} nats, validation ELBO {validation_elbo:.3f} nats, "
            f"validation IWAE-{VALIDATION_SAMPLES} {validation_iwae:.3f} nats",
            file=sys.stderr,
        )
        # An IWAE-trained model is selected on the IWAE bound it optimises, not on its ELBO.
        validation_bound = validation_elbo if config.train_samples == 1 else validation_iwae
        if not math.isfinite(train_elbo):
            raise FloatingPointError(f"training diverged at epoch {epoch} (ELBO {train_elbo}); lower --lr")
        if validation_bound > best[0]:
            best = (validation_bound, epoch, copy.deepcopy(vae.state_dict()))
        elif epoch - best[1] >= config.patience:
            tqdm.write(f"early stop: no validation improvement for {config.patience} epochs", file=sys.stderr)
            break
    epochs.close()
    vae.load_state_dict(best[2])
    vae.eval()
    return TrainResult(vae, epoch, best[1], best[0], time.perf_counter() - started, history)
