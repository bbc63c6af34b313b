"""``--weight-decay`` (issue 23): AdamW's decoupled weight decay, which the protocol measured on the wide
images MLPs (docs/anomaly.md). Checked: the update is AdamW's, computed here by hand; 0 keeps the plain
Adam of earlier runs bit for bit; the flag's resolution, refusals, manifest record and checkpoints."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.test_checkpoint import CONFIGS, assert_resumes_without_setting, digits  # noqa: F401  (a pytest fixture)
from tests.test_recipes import TINY, resolved, train
from vae_serve.core.bundle import load_bundle
from vae_serve.export.models.config import MAX_WEIGHT_DECAY
from vae_serve.export.models.training import new_model, new_optimizer, train_vae
from vae_serve.export.sources import DataError


def test_one_step_is_adamw_with_decoupled_decay(digits):  # noqa: F811
    """The first AdamW step moves a weight w with gradient g to w (1 - lr wd) - lr g / (|g| + eps) (the bias-
    corrected moments of one step are g and g^2): computed here from the gradient alone."""
    train_x, _ = digits
    config = replace(CONFIGS["gaussian-standardized"], weight_decay=0.5, lr=1e-2)
    torch.manual_seed(0)
    vae = new_model(config, train_x, None)
    optimizer = new_optimizer(config, vae)
    assert isinstance(optimizer, torch.optim.AdamW)
    before = {name: p.detach().clone() for name, p in vae.named_parameters()}
    loss, _ = vae.loss(torch.from_numpy(train_x[:64]), 1.0, 1)
    optimizer.zero_grad()
    loss.backward()
    # A parameter without a gradient (the shared scale, set in closed form) is one AdamW leaves alone.
    grads = {name: p.grad.detach().clone() for name, p in vae.named_parameters() if p.grad is not None}
    assert len(grads) >= 4
    optimizer.step()
    for name, p in vae.named_parameters():
        if name not in grads:
            assert torch.equal(p.detach(), before[name]), name
            continue
        w, g = before[name].double(), grads[name].double()
        expected = w * (1 - config.lr * config.weight_decay) - config.lr * g / (g.abs() + 1e-8)
        np.testing.assert_allclose(p.detach().double().numpy(), expected.numpy(), atol=1e-6, err_msg=name)


def test_no_decay_is_the_plain_adam_of_earlier_runs(digits):  # noqa: F811
    config = replace(CONFIGS["gaussian-standardized"], epochs=2)
    assert config.weight_decay == 0.0
    torch.manual_seed(0)
    assert type(new_optimizer(config, new_model(config, digits[0], None))) is torch.optim.Adam
    first = train_vae(config, *digits, False)
    again = train_vae(config, *digits, False)
    decayed = train_vae(replace(config, weight_decay=5.0), *digits, False)
    for (name, a), b in zip(first.vae.state_dict().items(), again.vae.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    weights = [name for name in first.vae.state_dict() if name.endswith("weight")]
    norm = {
        run: sum(float(result.vae.state_dict()[name].norm() ** 2) for name in weights)
        for run, result in (("plain", first), ("decayed", decayed))
    }
    assert norm["decayed"] < 0.9 * norm["plain"]


def test_no_kind_of_data_decays_unless_asked():
    for dataset in ("digits", "fashion-mnist", "csv:x.csv"):
        assert resolved("--dataset", dataset)[0].weight_decay == 0.0
    assert resolved("--dataset", "digits", "--weight-decay", "0.25")[0].weight_decay == 0.25
    assert resolved("--dataset", "fashion-mnist", "--weight-decay", "0")[0].weight_decay == 0.0


@pytest.mark.parametrize("value", ["-0.1", "nan", "inf", str(MAX_WEIGHT_DECAY * 2)])
def test_bad_decays_are_refused_with_the_reason(value):
    with pytest.raises(DataError, match=r"--weight-decay must be a number in \[0, 10\]"):
        resolved("--dataset", "digits", "--weight-decay", value)


def test_the_manifest_records_the_decay(tmp_path, capsys):
    out = tmp_path / "model"
    code, _, err = train(capsys, "--dataset", "digits", "--out", str(out), "--weight-decay", "0.05", *TINY)
    assert code == 0, err
    training = load_bundle(out).manifest.training
    assert training["weight_decay"] == 0.05


def test_a_checkpoint_without_the_setting_resumes_as_no_decay(tmp_path, digits):  # noqa: F811
    assert_resumes_without_setting(tmp_path, digits, "weight_decay", 0.1)
