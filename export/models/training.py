"""The training loop: Adam on the negative ELBO (or the IWAE-k bound), optional KL warm-up and
dynamic binarization, early stopping on the validation bound that matches the objective, the best
epoch's weights restored at the end.
"""

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vae_serve.export.models.checkpoint import (
    CheckpointError,
    LoopState,
    data_fingerprint,
    refuse_existing,
    restore_checkpoint,
    save_checkpoint,
)
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
    train_x: np.ndarray, likelihood: str, decoder_scale: str = "per-feature", std_floor: float = 0.0
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(loc, scale) of the Gaussian's feature scaling, None for other likelihoods. ``std_floor``: each
    feature's std is at least this fraction of the std of all training values (a pixel that never
    varies in training would otherwise weigh 1 / MIN_FEATURE_STD, and one stray value swamps the rest)."""
    if likelihood != "gaussian":
        return None, None
    if decoder_scale == "shared":
        # One unit for the whole input (pixels): a per-pixel std would blow up near-constant borders.
        loc = np.full(train_x.shape[1], train_x.mean(), dtype=np.float32)
        scale = np.full(train_x.shape[1], max(float(train_x.std()), MIN_FEATURE_STD), dtype=np.float32)
    else:
        loc = train_x.mean(axis=0)
        floor = max(std_floor * float(train_x.std()), MIN_FEATURE_STD)
        scale = np.maximum(train_x.std(axis=0), floor).astype(np.float32)
    return torch.from_numpy(loc), torch.from_numpy(scale)


def kl_weight(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Linear KL warm-up from 0 to 1 over ``warmup_epochs`` (Sønderby et al. 2016); 1 without warm-up."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))


def new_model(config: TrainConfig, train_x: np.ndarray, input_shape: tuple[int, ...] | None) -> Vae:
    """A freshly initialised VAE for ``config`` (draws its initial weights from the torch RNG)."""
    loc, scale = standardization(train_x, config.likelihood, config.decoder_scale, config.feature_std_floor)
    return build_vae(
        train_x.shape[1],
        config.hidden,
        config.latent_dim,
        config.likelihood,
        loc,
        scale,
        # "standardized": per-feature standardization (as "per-feature") with one shared sigma in those units.
        config.decoder_scale in ("shared", "standardized"),
        config.arch,
        input_shape,
        standardized_residuals=config.decoder_scale == "standardized",
        conv_decoder=config.conv_decoder,
    )


def new_optimizer(config: TrainConfig, vae: Vae) -> torch.optim.Optimizer:
    """Adam, or AdamW where ``config.weight_decay`` is set (decoupled decay; on the wide images MLPs the
    protocol measured it flat, docs/anomaly.md); 0 keeps the plain Adam of earlier runs and checkpoints."""
    if config.weight_decay > 0:
        return torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(vae.parameters(), lr=config.lr)


def train_vae(
    config: TrainConfig,
    train_x: np.ndarray,
    validation_x: np.ndarray,
    show_progress: bool | None = None,
    input_shape: tuple[int, ...] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train from scratch, or resume from a checkpoint. The same config and data give the same weights
    (fixed seed, CPU), whether or not the run was stopped and resumed on the way.

    Args:
        config: the run's settings.
        train_x: the training rows, [N, D] float32.
        validation_x: the validation rows (early stopping and the best epoch are chosen on them).
        show_progress: progress bar on (True), off (False), or only on a terminal (None).
        input_shape: one example's shape (``--arch conv`` needs it).
        checkpoint: a file to write the run's state to before the first epoch and after every epoch
            (atomically), so that a stopped run can go on from it.
        resume: go on from ``checkpoint``, which an earlier run with the same settings (``epochs`` may
            be larger) and the same data wrote. A run that had stopped early returns its best model at once.

    Returns:
        The model of the best validation epoch, and the run's history (all sessions of a resumed run).

    Raises:
        CheckpointError (a ValueError): ``resume`` without a checkpoint or with a missing, corrupt or
            unfitting one; or a new run whose ``checkpoint`` already exists.
        FloatingPointError: the training ELBO diverged.
        OSError: the checkpoint could not be written.
    """
    if resume and checkpoint is None:
        raise CheckpointError("resuming needs the checkpoint file to resume from")
    if checkpoint is not None and not resume:
        refuse_existing(checkpoint)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    vae = new_model(config, train_x, input_shape)
    optimizer = new_optimizer(config, vae)
    data = data_fingerprint(train_x, validation_x) if checkpoint is not None else {}
    if resume:
        loop = restore_checkpoint(checkpoint, config, data, vae, optimizer)
    else:
        loop = LoopState(best_model=copy.deepcopy(vae.state_dict()))

    def save_state() -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, config, data, vae, optimizer, replace(loop, seconds=elapsed_s()))

    def elapsed_s() -> float:
        return loop.seconds + time.perf_counter() - started

    if checkpoint is not None and not resume:
        # Epoch 0: an unwritable path fails now, not after the first (possibly hour-long) epoch.
        save_state()
    run_epochs(
        config, vae, optimizer, (train_x, evaluation_view(validation_x, config)), loop, show_progress, save_state
    )
    vae.load_state_dict(loop.best_model)
    vae.eval()
    return TrainResult(vae, loop.epoch, loop.best_epoch, loop.best_bound, elapsed_s(), loop.history)


def run_epochs(
    config: TrainConfig,
    vae: Vae,
    optimizer: torch.optim.Optimizer,
    splits: tuple[np.ndarray, np.ndarray],
    loop: LoopState,
    show_progress: bool | None,
    after_epoch: Callable[[], None],
) -> None:
    """Epochs ``loop.epoch + 1`` to ``config.epochs``, or until early stopping; updates ``loop`` in place
    and calls ``after_epoch`` once each epoch's state is complete."""
    if loop.stopped_early:
        return
    train_x, validation_view = splits
    epochs = tqdm(
        range(loop.epoch + 1, config.epochs + 1),
        desc="training",
        unit="epoch",
        initial=loop.epoch,
        total=config.epochs,
        file=sys.stderr,
        disable=None if show_progress is None else not show_progress,
    )
    for epoch in epochs:
        set_epoch_lr(optimizer, config, epoch)
        train_elbo = train_epoch(config, vae, optimizer, torch.from_numpy(train_x), epoch)
        if not math.isfinite(train_elbo):
            raise FloatingPointError(f"training diverged at epoch {epoch} (ELBO {train_elbo}); lower --lr")
        record, validation_bound = validate(config, vae, validation_view, epoch, train_elbo)
        loop.history.append(record)
        epochs.set_postfix(train_elbo=f"{train_elbo:.2f}", val_bound=f"{validation_bound:.2f}")
        loop.epoch = epoch
        if validation_bound > loop.best_bound:
            loop.best_bound, loop.best_epoch, loop.best_model = validation_bound, epoch, copy.deepcopy(vae.state_dict())
        elif epoch - loop.best_epoch >= config.patience:
            loop.stopped_early = True
        after_epoch()
        if loop.stopped_early:
            tqdm.write(f"early stop: no validation improvement for {config.patience} epochs", file=sys.stderr)
            break
    epochs.close()


def set_epoch_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int) -> None:
    """The learning rate of ``epoch`` (from 1): ``lr x lr_decay^(epoch - 1)``, set from the epoch alone, so
    that a resumed run (whose optimizer state carries the last epoch's rate) goes on with the same schedule."""
    for group in optimizer.param_groups:
        group["lr"] = config.lr * config.lr_decay ** (epoch - 1)


def train_epoch(
    config: TrainConfig, vae: Vae, optimizer: torch.optim.Optimizer, data: torch.Tensor, epoch: int
) -> float:
    """One pass over ``data`` in a random order; returns the mean training ELBO (nats)."""
    vae.train()
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
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
    if getattr(vae.decoder, "shared_scale", False):
        vae.decoder.fix_scale()
    return elbo_sum / len(data)


def validate(
    config: TrainConfig, vae: Vae, validation_view: np.ndarray, epoch: int, train_elbo: float
) -> tuple[dict, float]:
    """The epoch's history record and the validation bound early stopping watches."""
    bounds = evaluate_bounds(vae, validation_view, VALIDATION_SAMPLES, config.seed)
    validation_elbo, validation_iwae = float(bounds.elbo.mean()), float(bounds.iwae.mean())
    tqdm.write(
        f"epoch {epoch}: train ELBO {train_elbo:.3f} nats, validation ELBO {validation_elbo:.3f} nats, "
        f"validation IWAE-{VALIDATION_SAMPLES} {validation_iwae:.3f} nats",
        file=sys.stderr,
    )
    record = {
        "epoch": epoch,
        "train_elbo_nats": train_elbo,
        "validation_elbo_nats": finite_or_none(validation_elbo),
        f"validation_iwae{VALIDATION_SAMPLES}_nats": finite_or_none(validation_iwae),
    }
    # An IWAE-trained model is selected on the IWAE bound it optimises, not on its ELBO.
    bound = validation_elbo if config.train_samples == 1 else validation_iwae
    return record, bound if math.isfinite(bound) else -math.inf


def finite_or_none(value: float) -> float | None:
    """A bound as the history records it: None where it overflowed (a validation row far outside the
    training rows, e.g. a feature constant in training, can drive a float32 bound to -inf), so that
    the manifest stays JSON with finite numbers; such an epoch never counts as an improvement."""
    return value if math.isfinite(value) else None
