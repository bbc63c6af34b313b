"""Training checkpoints: everything the training loop needs to go on after an epoch exactly as if it had
never stopped, written atomically after every epoch, and read back with the checks that make a resumed
run safe (same settings, same data).

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it is read with
``torch.load(weights_only=True)``: opening a checkpoint someone handed you runs no pickled code.
"""

import hashlib
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vae_serve.export.models.config import TrainConfig, config_record, config_record_defaults

# Bumped whenever the payload's keys or their meaning change; another version is refused, not guessed.
CHECKPOINT_FORMAT = 1
# Settings a resumed run may change. ``epochs`` only says where the loop stops: no schedule depends on
# it (the KL warm-up counts its own epochs, the learning rate's decay is a function of the epoch), so a
# run resumed with more epochs follows the very trajectory of an uninterrupted run with that many
# epochs. Resuming to train longer is the point of a checkpoint.
RESUMABLE_FIELDS = frozenset({"epochs"})
# How torch.load reports a truncated or foreign file: its zip reader (RuntimeError, OSError EINVAL),
# the unpickler, or weights_only refusing a pickled object.
UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError)
PAYLOAD_KEYS = frozenset(
    {
        "format",
        "config",
        "data",
        "model",
        "optimizer",
        "torch_rng",
        "epoch",
        "best_bound",
        "best_epoch",
        "best_model",
        "epochs_without_improvement",
        "history",
        "stopped_early",
        "seconds",
    }
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or resumed from; the message says what to change."""


@dataclass
class LoopState:
    """Where the training loop stands after ``epoch`` epochs: what early stopping and the result need."""

    epoch: int = 0
    best_bound: float = -math.inf
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    # Training time of the earlier sessions of a resumed run.
    seconds: float = 0.0


def data_fingerprint(train_x: np.ndarray, validation_x: np.ndarray) -> dict:
    """Shapes and a digest of the training and validation rows: a resumed run must see the same data.

    Args:
        train_x: the training rows.
        validation_x: the validation rows.

    Returns:
        ``{"train_shape", "validation_shape", "blake2b"}``.
    """
    digest = hashlib.blake2b(digest_size=16)
    for rows in (train_x, validation_x):
        digest.update(np.ascontiguousarray(rows).view(np.uint8).reshape(-1).data)
    return {
        "train_shape": list(train_x.shape),
        "validation_shape": list(validation_x.shape),
        "blake2b": digest.hexdigest(),
    }


def refuse_existing(path: Path) -> None:
    """A new run must not overwrite an earlier run's checkpoint (hours of training) at its first epoch.

    Raises:
        CheckpointError: ``path`` exists.
    """
    if path.exists():
        raise CheckpointError(
            f"checkpoint {path} already exists: resume from it (--resume), or remove it to start over"
        )


def save_checkpoint(
    path: Path, config: TrainConfig, data: dict, vae: torch.nn.Module, optimizer: torch.optim.Optimizer, loop: LoopState
) -> None:
    """Write the run's state to ``path`` atomically: a reader sees the previous checkpoint or this one, whole.

    Args:
        path: the checkpoint file; its folder must exist.
        config: the run's settings.
        data: ``data_fingerprint`` of the run's rows.
        vae: the model as it is now (not the best epoch's).
        optimizer: its optimizer.
        loop: the loop's state after ``loop.epoch``.

    Raises:
        OSError: the file could not be written (the previous checkpoint is then left as it was).
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config_record(config),
        "data": data,
        "model": vae.state_dict(),
        "optimizer": optimizer.state_dict(),
        # The only random stream training draws from: batch order (randperm), the dynamic binarization
        # (bernoulli) and the reparameterisation noise. Validation runs under its own forked, seeded RNG.
        "torch_rng": torch.get_rng_state(),
        "epoch": loop.epoch,
        "best_bound": loop.best_bound,
        "best_epoch": loop.best_epoch,
        "best_model": loop.best_model,
        "epochs_without_improvement": loop.epoch - loop.best_epoch,
        "history": loop.history,
        "stopped_early": loop.stopped_early,
        "seconds": loop.seconds,
    }
    # The temporary file is in the same folder, so os.replace is a rename on one file system (atomic).
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); where folders cannot be opened (Windows) the rename stands."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's payload, checked to be one this version of vae-train wrote.

    Raises:
        CheckpointError: no file at ``path``, or a file that is truncated, corrupt, or not a checkpoint.
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: give the file an earlier run wrote, or start without --resume")
    with path.open("rb") as file:  # outside the try: a file the OS refuses is an OSError, said as such
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except UNREADABLE as error:
            # The user needs only to know that this file cannot be used, not torch's traceback.
            raise CheckpointError(
                f"checkpoint {path} is truncated or corrupt ({type(error).__name__}); remove it to start over"
            ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or set(payload) != PAYLOAD_KEYS:
        raise CheckpointError(
            f"{path} is not a checkpoint of this version of vae-train (format {CHECKPOINT_FORMAT}); "
            "remove it to start over"
        )
    return payload


def check_resumable(path: Path, payload: dict, config: TrainConfig, data: dict) -> None:
    """A run resumes only with the settings and data its checkpoint was written with (``epochs`` aside).

    Raises:
        CheckpointError: naming the settings that differ, or saying that the data differ or that the
            checkpoint is already past ``config.epochs``.
    """
    record = config_record(config)
    # A setting added after the checkpoint was written reads as its default (which is what it ran with).
    written = {**config_record_defaults(), **payload["config"]}
    names = (set(record) | set(written)) - RESUMABLE_FIELDS
    differ = sorted(name for name in names if record.get(name) != written.get(name))
    if differ:
        changes = "; ".join(
            f"{name}: checkpoint {written.get(name)!r}, this run {record.get(name)!r}" for name in differ
        )
        raise CheckpointError(
            f"checkpoint {path} was written with other settings ({changes}): "
            "give the flags it was written with, or remove the checkpoint to start over"
        )
    if payload["data"] != data:
        raise CheckpointError(
            f"checkpoint {path} was written for other data (train rows {payload['data']['train_shape']}, "
            f"this run {data['train_shape']}, or the same shape with other values): give the same --dataset, "
            "--classes and split flags, or remove the checkpoint to start over"
        )
    if payload["epoch"] > config.epochs:
        raise CheckpointError(
            f"checkpoint {path} is at epoch {payload['epoch']}, past --epochs {config.epochs}: "
            f"resume with --epochs {payload['epoch']} or more"
        )


def restore_checkpoint(
    path: Path, config: TrainConfig, data: dict, vae: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> LoopState:
    """Load ``path`` into ``vae``, ``optimizer`` and the torch RNG; returns the loop's state to go on from.

    Args:
        path: a checkpoint written by ``save_checkpoint``.
        config: this run's settings; must equal the checkpoint's but for ``RESUMABLE_FIELDS``.
        data: ``data_fingerprint`` of this run's rows; must equal the checkpoint's.
        vae: a freshly built model of the same architecture.
        optimizer: its freshly built optimizer.

    Returns:
        The loop's state after the checkpoint's epoch.

    Raises:
        CheckpointError: see ``load_checkpoint`` and ``check_resumable``.
    """
    payload = load_checkpoint(path)
    check_resumable(path, payload, config, data)
    try:
        vae.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({error}); remove it to start over") from None
    return LoopState(
        epoch=payload["epoch"],
        best_bound=payload["best_bound"],
        best_epoch=payload["best_epoch"],
        best_model=payload["best_model"],
        history=payload["history"],
        stopped_early=payload["stopped_early"],
        seconds=payload["seconds"],
    )
