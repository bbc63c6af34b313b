"""vae-client (the console script) and the typed client against a real vae-serve process."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_serve.client import VaeClient, VaeClientError
from vae_serve.core.scores import DEFAULT_SCORE, SCORES
from vae_serve.export.sources import load_source, make_splits

VAE_CLIENT = str(Path(sys.executable).with_name("vae-client"))


def run_client(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VAE_CLIENT, "--target", f"127.0.0.1:{server.port}", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def digits_npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("client") / "digits.npy"
    np.save(path, make_splits(load_source("digits")).test.x[:6].reshape(6, 8, 8))  # natural shape is accepted
    return path


def test_health_and_info(server):
    assert run_client(server, "health").stdout.strip().endswith("SERVING")
    info = json.loads(run_client(server, "--json", "info").stdout)
    assert info["model"]["name"] == "digits" and info["latent_dim"] == 8
    # The server's score registry, as it reports it: each score's draws and the default score.
    assert {entry["score"]: entry["draws"] for entry in info["scores"]} == {
        name: score.num_samples for name, score in SCORES.items()
    }
    assert info["default_score"] == DEFAULT_SCORE
    human = run_client(server, "info").stdout
    assert f"score        {DEFAULT_SCORE} (0 draws per row, the default)" in human


def test_elbo_and_score_as_json(server, digits_npy, tmp_path):
    result = run_client(server, "elbo", str(digits_npy), "--k", "20", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    elbo = json.loads(result.stdout)
    assert len(elbo["elbo"]) == 6 and elbo["seed"] == 3
    assert np.mean(np.asarray(elbo["iwae"]) - np.asarray(elbo["elbo"])) > 0
    with VaeClient(f"127.0.0.1:{server.port}") as client:
        typed = client.elbo(np.load(digits_npy), k=20, seed=3)
    np.testing.assert_allclose(elbo["elbo"], typed.elbo)
    score = json.loads(run_client(server, "score", str(digits_npy), "--fpr", "0.05", "--json").stdout)
    assert len(score["scores"]) == 6 and score["false_positive_rate"] == pytest.approx(0.05)
    heat = run_client(
        server, "score", str(digits_npy), "--score", "reconstruction_error", "--png", str(tmp_path / "h.png")
    )
    assert heat.returncode == 0 and "wrote" in heat.stdout, heat.stderr
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with VaeClient(f"127.0.0.1:{server.port}") as client:
        scored = client.score(np.load(digits_npy), "reconstruction_error", feature_errors=True)
        plain = client.score(np.load(digits_npy), "reconstruction_error")
    np.testing.assert_allclose(scored.feature_errors.sum(axis=1), scored.scores, rtol=1e-5)
    np.testing.assert_array_equal(scored.scores, plain.scores)  # same score with or without the errors


def test_encode_decode_and_sample_files(server, digits_npy, tmp_path):
    encode = run_client(server, "encode", str(digits_npy), "--samples", "2", "--out", str(tmp_path / "z.npz"))
    assert encode.returncode == 0, encode.stderr
    encoded = np.load(tmp_path / "z.npz")
    assert encoded["z_mean"].shape == (6, 8) and encoded["z_samples"].shape == (2, 6, 8)
    np.save(tmp_path / "z.npy", encoded["z_mean"])
    assert run_client(server, "decode", str(tmp_path / "z.npy"), "--out", str(tmp_path / "x.npz")).returncode == 0
    assert np.load(tmp_path / "x.npz")["x_mean"].shape == (6, 64)
    result = run_client(
        server,
        "sample",
        "--n",
        "300",
        "--stream",
        "--chunk-size",
        "64",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "s.npy"),
    )
    assert result.returncode == 0, result.stderr
    streamed = np.load(tmp_path / "s.npy")
    assert run_client(server, "sample", "--n", "300", "--seed", "1", "--out", str(tmp_path / "u.npy")).returncode == 0
    np.testing.assert_array_equal(streamed, np.load(tmp_path / "u.npy"))
    assert run_client(server, "sample", "--n", "16", "--png", str(tmp_path / "grid.png")).returncode == 0
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_exit_nonzero_with_the_status(server, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((2, 65), dtype=np.float32))
    result = run_client(server, "elbo", str(tmp_path / "wide.npy"))
    assert result.returncode == 1
    assert result.stderr.startswith("vae-client: INVALID_ARGUMENT: x: shape [2, 65]")
    assert "Traceback" not in result.stderr
    result = run_client(server, "--model", "nope", "info")
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr
    missing = run_client(server, "elbo", str(tmp_path / "absent.npy"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    as_json = run_client(server, "--json", "elbo", str(tmp_path / "wide.npy"))
    assert as_json.returncode == 1 and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["message"].startswith("x: shape [2, 65]")
    missing = run_client(server, "--json", "elbo", str(tmp_path / "absent.npy"))
    assert missing.returncode == 2 and json.loads(missing.stderr)["error"]["code"] == "INPUT"
    with VaeClient(f"127.0.0.1:{server.port}") as client, pytest.raises(VaeClientError) as raised:
        client.sample(0)
    assert raised.value.code_name == "INVALID_ARGUMENT"
