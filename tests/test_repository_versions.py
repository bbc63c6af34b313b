"""In a model repository the directories are the name and version (Triton's rule): a bundle copied
into ``REPO/other/7`` is served as other:7 by every protocol and in every metric, also when hot
reload adds it; ``vae-train --out REPO/NAME/N`` writes NAME and N into the manifest.
"""

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from tests.conftest import run_vae_train
from tests.server_process import start_server, tensor
from tests.test_export_api import export
from tests.test_oip import raw_request
from tests.test_server_lifecycle import samples, scrape
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.bundle import load_bundle
from vae_serve.export.commands import calibrate, train


def wait_for_log(server, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_a_copied_bundle_is_served_under_its_directories_and_so_is_a_hot_reloaded_one(tmp_path, digits_bundle):
    # digits_bundle's manifest says digits:1; copied as it is, unsealed and unchanged.
    repository = tmp_path / "repository"
    shutil.copytree(digits_bundle, repository / "other" / "7")
    server = start_server("--model-repository", str(repository), "--repository-poll", "0.2")
    x = tensor(np.full((2, 64), 0.5))
    try:
        info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
        assert (info.model.name, info.model.version, list(info.available_versions)) == ("other", "7", ["7"])
        assert server.stub.Elbo(vae_pb2.ElboRequest(x=x, k=2, seed=1)).model == info.model
        assert "manifest says digits/1, served as other/7" in server.log()
        oip = oip_pb2_grpc.GRPCInferenceServiceStub(server.channel)
        metadata = oip.ModelMetadata(oip_pb2.ModelMetadataRequest(name="other-encoder"))
        assert list(metadata.versions) == ["7"]
        reply = oip.ModelInfer(raw_request("other-elbo", "x", np.full((1, 64), 0.5)), timeout=10)
        assert reply.model_version == "7"
        after = samples(scrape(server.metrics_url))
        assert ("vae_queue_rows", (("kind", "elbo"), ("model", "other:7"))) in after
        info_labels = [dict(labels) for name, labels in after if name == "vae_model_info"]
        assert [(labels["name"], labels["version"]) for labels in info_labels] == [("other", "7")]

        # vae-train's staging folder (hidden) is skipped, not refused; a copy renamed into place is served.
        hidden = repository / "other" / ".9.staging-1"
        shutil.copytree(digits_bundle, hidden)
        staging = tmp_path / "staging-8"
        shutil.copytree(digits_bundle, staging)
        os.rename(staging, repository / "other" / "8")
        wait_for_log(server, "loaded new model version other/8")
        info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
        assert (info.model.version, list(info.available_versions)) == ("8", ["7", "8"])
        pinned = server.stub.Elbo(vae_pb2.ElboRequest(x=x, model={"name": "other", "version": "7"}))
        assert pinned.model.version == "7"
        assert server.stub.Elbo(vae_pb2.ElboRequest(x=x)).model.version == "8"
        assert ("vae_queue_rows", (("kind", "elbo"), ("model", "other:8"))) in samples(scrape(server.metrics_url))
        assert "refused" not in server.log() and ".9.staging" not in server.log()
    finally:
        assert server.stop() == 0


def test_served_as_changes_the_identity_in_memory_only(digits_bundle):
    bundle = load_bundle(digits_bundle)
    assert bundle.served_as("digits", "1") is bundle and bundle.sealed_as is None
    served = bundle.served_as("other", "7")
    assert (served.manifest.name, served.manifest.version, served.sealed_as) == ("other", "7", ("digits", "1"))
    assert served.manifest.manifest_sha256 == bundle.manifest.manifest_sha256 and served.vae is bundle.vae
    assert served.served_as("again", "8").sealed_as == ("digits", "1")
    assert load_bundle(digits_bundle).manifest.name == "digits"  # the file is untouched


def test_a_bad_directory_name_is_refused_with_the_reason(tmp_path, digits_bundle):
    repository = tmp_path / "repository"
    shutil.copytree(digits_bundle, repository / "digits" / "1")
    server = start_server("--model-repository", str(repository), "--repository-poll", "0.2")
    try:
        shutil.copytree(digits_bundle, repository / "digits" / "two words")
        wait_for_log(server, "'two words' is not a model version")
        info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
        assert list(info.available_versions) == ["1"]
    finally:
        assert server.stop() == 0


def test_vae_train_out_repo_name_n_writes_that_name_and_version(tmp_path, capsys):
    out = tmp_path / "repo" / "sneaker" / "3"
    summary = run_vae_train(capsys, "--dataset", "digits", "--out", str(out), "--epochs", "2", "--iwae-k", "10")
    assert (summary["name"], summary["version"]) == ("sneaker", "3")
    manifest = load_bundle(out).manifest
    assert (manifest.name, manifest.version) == ("sneaker", "3")


def test_export_bundle_takes_its_default_version_from_the_directory(tmp_path):
    from sklearn.datasets import load_digits

    raw = load_digits().images.astype(np.float32)[:100, None]
    assert export(tmp_path / "mine" / "4", data=raw).manifest.version == "4"
    assert export(tmp_path / "mine" / "latest", data=raw).manifest.version == "1"


def train_args(out: str, name: str | None = None, version: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(out=Path(out), name=name, version=version)


def test_train_defaults_follow_the_directories_and_a_disagreeing_flag_is_noted(tmp_path, capsys):
    args = train_args(tmp_path / "repo" / "sneaker" / "12")
    train.repository_defaults(args)
    assert (args.name, args.version) == ("sneaker", "12")
    args = train_args(tmp_path / "models" / "digits")  # not REPO/NAME/N: the dataset's name, version 1
    train.repository_defaults(args)
    assert (args.name, args.version) == (None, "1")
    assert capsys.readouterr().err == ""
    args = train_args(tmp_path / "repo" / "sneaker" / "3", version="5")
    train.repository_defaults(args)
    assert (args.name, args.version) == ("sneaker", "5")
    note = capsys.readouterr().err
    assert "--version 5 goes into the manifest" in note and "as sneaker:3" in note


def calibrate_args(bundle: Path, out: Path | None = None, version: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(bundle=bundle, out=out, version=version)


def test_calibrate_takes_its_version_from_the_directories(tmp_path):
    repository = tmp_path / "repo" / "other"
    args = calibrate_args(repository / "7")  # the manifest may say any version: the next is 8
    calibrate.calibrate_version(args)
    assert args.version == "8"
    args = calibrate_args(repository / "7", out=repository / "20")
    calibrate.calibrate_version(args)
    assert args.version == "20"
    args = calibrate_args(repository / "7", version="9")
    calibrate.calibrate_version(args)
    assert args.version == "9"
    args = calibrate_args(tmp_path / "models" / "digits")  # no layout: the manifest's version + 1, later
    calibrate.calibrate_version(args)
    assert args.version is None
