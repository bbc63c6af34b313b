"""``--lr-decay`` (issue 23, the likelihood frontier): epoch e trains at lr x GAMMA^(e-1). Checked: the rate
each epoch ran at (from the checkpoint's optimizer), that an epoch at a vanishing rate leaves every weight
where it was, that a resumed run follows the schedule bit for bit, the flag's resolution, refusals and
manifest record, and that a checkpoint written before the setting resumes as a constant rate."""

from dataclasses import replace

import pytest
import torch

from tests.test_checkpoint import CONFIGS, assert_resumes_without_setting, assert_same_run, digits  # noqa: F401
from tests.test_recipes import TINY, resolved, train
from vae_serve.core.bundle import load_bundle
from vae_serve.export.models.checkpoint import load_checkpoint
from vae_serve.export.models.training import train_vae
from vae_serve.export.sources import DataError


@pytest.mark.parametrize("epochs", [1, 3])
def test_each_epoch_runs_at_the_decayed_rate(tmp_path, digits, epochs):  # noqa: F811
    config = replace(CONFIGS["bernoulli"], epochs=epochs, lr=2e-3, lr_decay=0.5)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(config, *digits, False, checkpoint=checkpoint)
    rates = {group["lr"] for group in load_checkpoint(checkpoint)["optimizer"]["param_groups"]}
    assert rates == {2e-3 * 0.5 ** (epochs - 1)}


def test_an_epoch_at_a_vanishing_rate_moves_no_weight(digits):  # noqa: F811
    """GAMMA = 1e-30: epoch 2 steps by about lr x 1e-30, far below float32's resolution of any weight, so
    the two-epoch model is the one-epoch model; with GAMMA = 1 epoch 2 moves the weights."""
    config = replace(CONFIGS["bernoulli"], epochs=1, lr_decay=1e-30)
    one = train_vae(config, *digits, False).vae.state_dict()
    two = train_vae(replace(config, epochs=2), *digits, False).vae.state_dict()
    constant = train_vae(replace(config, epochs=2, lr_decay=1.0), *digits, False).vae.state_dict()
    weights = [name for name in one if name.endswith("weight")]
    assert weights
    for name in weights:
        assert torch.equal(one[name], two[name]), name
    assert any(not torch.equal(one[name], constant[name]) for name in weights)


def test_a_resumed_run_follows_the_schedule(tmp_path, digits):  # noqa: F811
    config = replace(CONFIGS["gaussian-iwae"], lr_decay=0.7)
    uninterrupted = train_vae(config, *digits, False)
    checkpoint = tmp_path / "run.ckpt"
    train_vae(replace(config, epochs=2), *digits, False, checkpoint=checkpoint)
    resumed = train_vae(config, *digits, False, checkpoint=checkpoint, resume=True)
    assert_same_run(uninterrupted, resumed)


def test_the_flag_resolves_and_no_recipe_decays():
    for dataset in ("digits", "fashion-mnist", "csv:x.csv"):
        assert resolved("--dataset", dataset)[0].lr_decay == 1.0
    assert resolved("--dataset", "fashion-mnist", "--lr-decay", "0.99")[0].lr_decay == 0.99


@pytest.mark.parametrize("value", ["0", "-0.5", "1.01", "nan", "inf"])
def test_bad_decays_are_refused_with_the_reason(value):
    with pytest.raises(DataError, match=r"--lr-decay must be a factor in \(0, 1\] per epoch"):
        resolved("--dataset", "digits", "--lr-decay", value)


def test_the_manifest_records_the_decay(tmp_path, capsys):
    out = tmp_path / "model"
    code, _, err = train(capsys, "--dataset", "digits", "--out", str(out), "--lr-decay", "0.9", *TINY)
    assert code == 0, err
    assert load_bundle(out).manifest.training["lr_decay"] == 0.9


def test_a_checkpoint_without_the_setting_resumes_as_a_constant_rate(tmp_path, digits):  # noqa: F811
    assert_resumes_without_setting(tmp_path, digits, "lr_decay", 0.9)
