"""Shared fixtures: real bundles trained and exported by vae-train, once per test session."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vae_serve.export import cli

# Small but real: enough epochs that the model is clearly better than chance, few enough to keep
# the whole suite in seconds. IWAE k is lowered from 1000 for the same reason.
FAST_ARGS = ["--epochs", "25", "--iwae-k", "200", "--no-progress"]
# The session bundles keep a fifth of the rows as test rows (vae-train keeps none by default): tests
# check the recorded test metrics, and use make_splits(...).test (test_fraction 0.2) as held-out rows.
HELD_OUT = ["--test-fraction", "0.2"]


def run_vae_train(capsys, *args: str) -> dict:
    """Run vae-train in-process; return its JSON result line (the last line on stdout)."""
    exit_code = cli.main(["train", *args, *FAST_ARGS])
    captured = capsys.readouterr()
    assert exit_code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory) -> Path:
    """A Bernoulli VAE on the embedded digits, as a verified bundle directory."""
    out = tmp_path_factory.mktemp("bundles") / "digits"
    assert cli.main(["train", "--dataset", "digits", "--out", str(out), "--seed", "1", *HELD_OUT, *FAST_ARGS]) == 0
    return out


@pytest.fixture(scope="session")
def sensor_npy(tmp_path_factory) -> tuple[Path, Path]:
    """Real-valued 'sensor records': 3 clusters in 12 dimensions with different offsets and scales."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=600)
    centres = rng.normal(0.0, 5.0, size=(3, 12))
    values = centres[labels] + rng.normal(0.0, 1.0, size=(600, 12)) * np.linspace(0.1, 3.0, 12) + 100.0
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "records.npy", values.astype(np.float32))
    np.save(folder / "labels.npy", labels)
    return folder / "records.npy", folder / "labels.npy"


@pytest.fixture(scope="session")
def gaussian_bundle(tmp_path_factory, sensor_npy) -> Path:
    """A Gaussian-likelihood VAE on the real-valued records."""
    out = tmp_path_factory.mktemp("bundles") / "sensors"
    records, _ = sensor_npy
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                f"npy:{records}",
                "--likelihood",
                "gaussian",
                "--out",
                str(out),
                "--latent-dim",
                "3",
                *HELD_OUT,
                *FAST_ARGS,
            ]
        )
        == 0
    )
    return out


@pytest.fixture
def bundle_copy(tmp_path, digits_bundle) -> Path:
    """A private copy of the digits bundle that a test may damage."""
    return Path(shutil.copytree(digits_bundle, tmp_path / "copy"))


@pytest.fixture(scope="session")
def server(digits_bundle):
    """A real vae-serve process serving the digits bundle, with default settings."""
    from tests.server_process import start_server

    process = start_server("--bundle", str(digits_bundle))
    yield process
    assert process.stop() == 0, process.log()
