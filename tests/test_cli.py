"""vae-train end to end: the console script, its JSON line, determinism, and its refusals."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_vae_train
from vae_serve.core.bundle import load_bundle
from vae_serve.export import cli

RESULT_KEYS = {
    "bundle",
    "report",
    "name",
    "version",
    "rows",
    "default_score",
    "test_elbo_nats",
    "test_iwae_nll_nats",
    "iwae_k",
    "bits_per_dim",
    "validation_elbo_nats",
    "epochs",
    "best_epoch",
    "seconds",
}


def console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_console_script_trains_exports_and_verifies(tmp_path):
    out = tmp_path / "models" / "digits"
    command = [console_script("vae-train"), "train", "--dataset", "digits", "--out", str(out), "--epochs", "3"]
    command += ["--test-fraction", "0.2"]  # digits has no test split of its own: keep one, for the test metrics
    result = subprocess.run(
        [*command, "--iwae-k", "50"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == RESULT_KEYS
    assert summary["epochs"] == 3 and summary["iwae_k"] == 50
    assert summary["test_iwae_nll_nats"] <= -summary["test_elbo_nats"]
    assert "epoch 3: train ELBO" in result.stderr and "validation ELBO" in result.stderr
    assert load_bundle(out).manifest.metrics.test.iwae_nll_nats == summary["test_iwae_nll_nats"]
    assert not list(out.parent.glob(".*staging*")), "staging directory left behind"

    verify = subprocess.run(
        [console_script("vae-train"), "verify", "--bundle", str(out)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["verified"] is True


def test_verify_refuses_a_damaged_bundle(bundle_copy):
    (bundle_copy / "decoder.onnx").write_bytes(b"garbage")
    result = subprocess.run(
        [console_script("vae-train"), "verify", "--bundle", str(bundle_copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "decoder.onnx" in result.stderr and "Traceback" not in result.stderr


def test_same_seed_same_model(tmp_path, capsys):
    runs = [
        run_vae_train(capsys, "--dataset", "digits", "--out", str(tmp_path / name), "--seed", "3")
        for name in ("a", "b")
    ]
    for summary in runs:
        summary.pop("seconds"), summary.pop("bundle"), summary.pop("report")
    assert runs[0] == runs[1]
    golden = [load_bundle(tmp_path / name).manifest.golden for name in ("a", "b")]
    assert golden[0] == golden[1]
    different = run_vae_train(capsys, "--dataset", "digits", "--out", str(tmp_path / "c"), "--seed", "4")
    assert different["validation_elbo_nats"] != runs[0]["validation_elbo_nats"]


def test_existing_output_needs_force(tmp_path, digits_bundle, capsys):
    exit_code = cli.main(["train", "--dataset", "digits", "--out", str(digits_bundle), "--epochs", "1"])
    assert exit_code == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--epochs", "0"), ("--latent-dim", "0"), ("--batch-size", "0"), ("--lr", "0"), ("--kl-warmup", "-1")],
)
def test_zero_or_negative_settings_are_refused_not_replaced(tmp_path, capsys, flag, value):
    exit_code = cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "x"), flag, value])
    assert exit_code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bernoulli_refuses_real_valued_data(sensor_npy, tmp_path, capsys):
    records, _ = sensor_npy
    bernoulli = ["--likelihood", "bernoulli"]  # a table's recipe is a Gaussian
    exit_code = cli.main(
        ["train", "--dataset", f"npy:{records}", *bernoulli, "--out", str(tmp_path / "x"), "--epochs", "1"]
    )
    assert exit_code == 2
    assert "--likelihood gaussian" in capsys.readouterr().err


def test_gaussian_bundle_on_real_valued_records(gaussian_bundle, sensor_npy):
    bundle = load_bundle(gaussian_bundle)
    manifest = bundle.manifest
    assert manifest.likelihood.name == "gaussian" and manifest.training["binarize"] == "none"
    assert manifest.metrics.binarization.startswith("none")
    records = np.load(sensor_npy[0])[:50]
    decoded = bundle.vae.decode(bundle.vae.encode(records)[0])
    assert set(decoded) == {"mean", "log_scale"}
    # Standardization lives inside the graphs: reconstructions come back in raw units (~100).
    assert abs(float(decoded["mean"].mean()) - float(records.mean())) < 0.1 * abs(float(records.mean()))
    assert np.all(np.isfinite(bundle.vae.log_likelihood(records, decoded)))
    # Learned scales: noisier features (the later columns) get larger scales.
    scales = np.exp(decoded["log_scale"][0])
    assert scales[-1] > scales[0]


def test_one_class_model_records_its_classes(tmp_path, capsys):
    summary = run_vae_train(
        capsys, "--dataset", "digits", "--classes", "3", "--test-fraction", "0.2", "--out", str(tmp_path / "three")
    )
    manifest = load_bundle(tmp_path / "three").manifest
    assert summary["name"] == "digits-class-3"
    assert manifest.training["data"]["classes"] == [3]
    # About a tenth of the digits are 3s: every split shrank accordingly.
    assert manifest.metrics.test.num_examples < 60


@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist"),
    reason="dataset-fashion-mnist is not installed (optional: apt-get install -y dataset-fashion-mnist)",
)
def test_fashion_mnist_one_class_smoke(tmp_path, capsys):
    summary = run_vae_train(
        capsys,
        "--dataset",
        "fashion-mnist",
        "--classes",
        "7",
        "--out",
        str(tmp_path / "fm"),
        "--epochs",
        "1",
        "--iwae-k",
        "10",
    )
    assert load_bundle(tmp_path / "fm").manifest.input.shape == [28, 28]
    # The images recipe: a Gaussian (continuous density), so the bits per dimension may be of any sign.
    assert np.isfinite(summary["bits_per_dim"]) and summary["rows"]["test"] == 1000


def test_calibrate_writes_a_new_version_with_new_quantiles(digits_bundle, tmp_path, capsys):
    repository = tmp_path / "repository" / "digits"
    repository.mkdir(parents=True)
    shutil.copytree(digits_bundle, repository / "1")
    exit_code = cli.main(
        ["calibrate", "--bundle", str(repository / "1"), "--dataset", "digits", "--split", "test", "--no-progress"]
    )
    captured = capsys.readouterr()
    assert exit_code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["bundle"] == str(repository / "2") and summary["version"] == "2"
    old, new = load_bundle(repository / "1").manifest, load_bundle(repository / "2").manifest  # both verify
    assert new.version == "2" and "test rows" in new.calibration.data
    assert set(new.calibration.scores) == set(old.calibration.scores)
    assert new.calibration.scores["negative_iwae"].quantiles != old.calibration.scores["negative_iwae"].quantiles
    for name in ("encoder.onnx", "decoder.onnx", "bounds.onnx"):
        assert (repository / "2" / name).read_bytes() == (repository / "1" / name).read_bytes()
    assert json.loads((repository / "2" / "manifest.json").read_text())["calibration"]["replaces"]["version"] == "1"
    # Again without --force: refused, nothing replaced.
    again = cli.main(["calibrate", "--bundle", str(repository / "1"), "--dataset", "digits", "--no-progress"])
    assert again == 2 and "already exists" in capsys.readouterr().err


def test_calibrate_keeps_a_bundle_without_a_bounds_graph_loadable(digits_bundle, tmp_path, capsys):
    # A bundle written before the bounds graph existed: recalibrated, it must still verify, with no
    # bounds_graph key (written as absent, sealed as absent).
    from tests.test_bounds_graph import without_bounds_graph

    repository = tmp_path / "repository" / "digits"
    repository.mkdir(parents=True)
    without_bounds_graph(digits_bundle, repository / "1")
    exit_code = cli.main(["calibrate", "--bundle", str(repository / "1"), "--dataset", "digits", "--no-progress"])
    assert exit_code == 0, capsys.readouterr().err
    recalibrated = load_bundle(repository / "2")
    assert recalibrated.vae.bounds is None and recalibrated.manifest.bounds_graph is None
    assert "bounds_graph" not in json.loads((repository / "2" / "manifest.json").read_text())
