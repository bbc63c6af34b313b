"""Training checkpoints (export/models/checkpoint.py through train_vae): a stopped and resumed run ends
with exactly the model and history of an uninterrupted one, and a checkpoint that does not fit the run
is refused with a message that says what to do."""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from vae_serve.export.models.checkpoint import CheckpointError, load_checkpoint
from vae_serve.export.models.config import TrainConfig
from vae_serve.export.models.training import train_vae

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIGS = {
    # Dynamic binarization draws from the torch RNG besides the batch order and the noise.
    "bernoulli": TrainConfig("bernoulli", "dynamic", (16,), 4, 4, 64, 1e-3, 2.0, 50, 3),
    # The shared sigma is reset from the epoch's squared errors after every epoch (fix_scale).
    "gaussian-standardized": TrainConfig(
        "gaussian", "none", (16,), 4, 4, 64, 1e-3, 2.0, 50, 3, decoder_scale="standardized"
    ),
    # IWAE-trained: selected on the validation IWAE bound.
    "gaussian-iwae": TrainConfig("gaussian", "none", (16,), 4, 4, 64, 1e-3, 0.0, 50, 3, train_samples=3),
}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of scikit-learn's 8x8 digits, scaled into [0, 1]."""
    x = (load_digits().data / 16.0).astype(np.float32)
    return x[:800], x[800:1000]


def assert_resumes_without_setting(tmp_path, digits, setting: str, other_value) -> None:
    """A checkpoint written before ``setting`` existed resumes as the setting's default, and is refused,
    naming the setting, for a run with ``other_value``."""
    config = replace(CONFIGS["gaussian-standardized"], epochs=1)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, *digits, False, checkpoint=checkpoint)
    payload = torch.load(checkpoint, weights_only=True)
    default = payload["config"].pop(setting)  # as written before the setting existed
    torch.save(payload, checkpoint)
    assert train_vae(replace(config, epochs=2), *digits, False, checkpoint=checkpoint, resume=True).epochs_run == 2
    message = re.escape(f"{setting}: checkpoint {default!r}, this run {other_value!r}")
    with pytest.raises(CheckpointError, match=message):
        changed = replace(config, epochs=3, **{setting: other_value})
        train_vae(changed, *digits, False, checkpoint=checkpoint, resume=True)


def assert_same_run(expected, actual) -> None:
    expected_state, actual_state = expected.vae.state_dict(), actual.vae.state_dict()
    assert list(expected_state) == list(actual_state)
    for name, tensor in expected_state.items():
        assert torch.equal(tensor, actual_state[name]), name
    assert actual.history == expected.history
    assert (actual.epochs_run, actual.best_epoch, actual.best_validation_bound) == (
        expected.epochs_run,
        expected.best_epoch,
        expected.best_validation_bound,
    )


@pytest.mark.parametrize("recipe", sorted(CONFIGS))
def test_resumed_run_equals_uninterrupted_run(tmp_path, digits, recipe):
    config = CONFIGS[recipe]
    uninterrupted = train_vae(config, *digits, False)
    checkpoint = tmp_path / "run.ckpt"
    # A run stopped after 2 epochs, resumed to 4: ``epochs`` may grow (see RESUMABLE_FIELDS).
    stopped = train_vae(replace(config, epochs=2), *digits, False, checkpoint=checkpoint)
    assert stopped.epochs_run == 2 and load_checkpoint(checkpoint)["epoch"] == 2
    resumed = train_vae(config, *digits, False, checkpoint=checkpoint, resume=True)
    assert_same_run(uninterrupted, resumed)
    assert load_checkpoint(checkpoint)["epoch"] == config.epochs


def test_killed_run_resumes_to_the_uninterrupted_model(tmp_path, digits):
    """A real stop: the training process is killed (SIGKILL) between epochs or in the middle of one."""
    config = replace(CONFIGS["bernoulli"], hidden=(32,), epochs=10)
    checkpoint = tmp_path / "run.ckpt"
    script = (
        "import sys, torch, numpy as np\n"
        "from sklearn.datasets import load_digits\n"
        "from vae_serve.export.models.config import TrainConfig\n"
        "from vae_serve.export.models.training import train_vae\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "x = (load_digits().data / 16.0).astype(np.float32)\n"
        f"train_vae(TrainConfig(**{asdict(config)!r}), x[:800], x[800:1000], False, "
        f"checkpoint=__import__('pathlib').Path({str(checkpoint)!r}))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPOSITORY, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stderr:  # "epoch 2: ..." comes after the epoch-1 checkpoint
            if line.startswith("epoch 2:") or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    reached = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= reached < config.epochs
    assert [path.name for path in tmp_path.iterdir() if not path.name.endswith(".tmp")] == ["run.ckpt"]
    resumed = train_vae(config, *digits, False, checkpoint=checkpoint, resume=True)
    assert_same_run(train_vae(config, *digits, False), resumed)


def test_resume_after_early_stop_returns_the_best_model_at_once(tmp_path, digits):
    config = replace(CONFIGS["gaussian-standardized"], epochs=20, lr=1e-2, patience=2)
    checkpoint = tmp_path / "run.ckpt"
    first = train_vae(config, *digits, False, checkpoint=checkpoint)
    assert first.epochs_run < config.epochs, "the recipe must stop early for this test"
    assert load_checkpoint(checkpoint)["stopped_early"] is True
    # More epochs do not reopen a run whose patience ran out: it ends as the uninterrupted run did.
    again = train_vae(replace(config, epochs=40), *digits, False, checkpoint=checkpoint, resume=True)
    assert_same_run(first, again)


def test_checkpoint_is_complete_after_every_epoch(tmp_path, digits):
    config = replace(CONFIGS["bernoulli"], epochs=1)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, *digits, False, checkpoint=checkpoint)
    for epoch in range(1, 4):
        payload = load_checkpoint(checkpoint)
        assert payload["epoch"] == epoch and len(payload["history"]) == epoch
        assert [record["epoch"] for record in payload["history"]] == list(range(1, epoch + 1))
        assert payload["epochs_without_improvement"] == epoch - payload["best_epoch"]
        assert os.listdir(tmp_path) == ["run.ckpt"]  # no temporary file left beside it
        train_vae(replace(config, epochs=epoch + 1), *digits, False, checkpoint=checkpoint, resume=True)


def test_other_settings_are_refused_naming_them(tmp_path, digits):
    config = replace(CONFIGS["bernoulli"], epochs=1)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, *digits, False, checkpoint=checkpoint)
    with pytest.raises(CheckpointError) as refused:
        train_vae(replace(config, latent_dim=3, lr=2e-3, epochs=5), *digits, False, checkpoint=checkpoint, resume=True)
    message = str(refused.value)
    assert "latent_dim: checkpoint 4, this run 3" in message and "lr: checkpoint 0.001, this run 0.002" in message
    assert "epochs" not in message and "remove the checkpoint" in message


def test_other_data_are_refused(tmp_path, digits):
    train_x, validation_x = digits
    config = replace(CONFIGS["bernoulli"], epochs=1)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, train_x, validation_x, False, checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="written for other data"):
        train_vae(config, 1.0 - train_x, validation_x, False, checkpoint=checkpoint, resume=True)


def test_epochs_below_the_checkpoint_are_refused(tmp_path, digits):
    config = replace(CONFIGS["bernoulli"], epochs=3)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, *digits, False, checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="at epoch 3, past --epochs 2: resume with --epochs 3 or more"):
        train_vae(replace(config, epochs=2), *digits, False, checkpoint=checkpoint, resume=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other torch file"])
def test_damaged_checkpoint_is_refused_clearly(tmp_path, digits, damage):
    config = replace(CONFIGS["bernoulli"], epochs=1)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, *digits, False, checkpoint=checkpoint)
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
        expected = "is truncated or corrupt"
    elif damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint\n" * 100)
        expected = "is truncated or corrupt"
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
        expected = "is not a checkpoint of this version of vae-train"
    with pytest.raises(CheckpointError, match=expected) as refused:
        train_vae(config, *digits, False, checkpoint=checkpoint, resume=True)
    assert "remove it to start over" in str(refused.value)


def test_missing_checkpoint_and_existing_checkpoint_are_refused(tmp_path, digits):
    config = replace(CONFIGS["bernoulli"], epochs=1)
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*start without --resume"):
        train_vae(config, *digits, False, checkpoint=checkpoint, resume=True)
    with pytest.raises(CheckpointError, match="needs the checkpoint file"):
        train_vae(config, *digits, False, resume=True)
    train_vae(config, *digits, False, checkpoint=checkpoint)
    written = checkpoint.read_bytes()
    # A new run must not overwrite an earlier run's checkpoint.
    with pytest.raises(CheckpointError, match="already exists: resume from it"):
        train_vae(config, *digits, False, checkpoint=checkpoint)
    assert checkpoint.read_bytes() == written
