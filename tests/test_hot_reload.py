"""Hot reload: versions dropped into a served model repository are verified and swapped in while
traffic flows, with no failed call; a damaged version is refused and the old one keeps serving.
"""

import os
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

from tests.server_process import SERVING, start_server, tensor
from tests.test_server_lifecycle import copy_as_version, samples, scrape
from vae_serve.api.v1 import vae_pb2


class Traffic:
    """Elbo calls back to back on a thread; records which version answered and every failure."""

    def __init__(self, server) -> None:
        self.server = server
        self.versions: Counter = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        request = vae_pb2.ElboRequest(x=tensor(np.full((2, 64), 0.5)), k=4, seed=1)
        while not self.stop.is_set():
            try:
                self.versions[self.server.stub.Elbo(request, timeout=10).model.version] += 1
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")

    def wait_for(self, version: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.versions[version] < 20:
            assert time.monotonic() < deadline, f"version {version} never answered: {self.versions}"
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def drop_in(source, repository, name: str, version: str, damage: bool = False) -> None:
    """Copy beside the repository, then rename into place: the watcher never sees half a bundle."""
    staging = repository.parent / f".staging-{version}"
    copy_as_version(source, staging, version)
    if damage:
        encoder = staging / "encoder.onnx"
        data = bytearray(encoder.read_bytes())
        data[len(data) // 2] ^= 0x01
        encoder.write_bytes(bytes(data))
    os.rename(staging, repository / name / version)


def test_new_versions_swap_in_under_traffic_and_a_damaged_one_is_refused(tmp_path, digits_bundle):
    repository = tmp_path / "repository"
    copy_as_version(digits_bundle, repository / "digits" / "1", "1")
    server = start_server("--model-repository", str(repository), "--repository-poll", "0.2")
    traffic = Traffic(server)
    try:
        traffic.wait_for("1")
        drop_in(digits_bundle, repository, "digits", "2")
        traffic.wait_for("2")
        drop_in(digits_bundle, repository, "digits", "3", damage=True)
        deadline = time.monotonic() + 30
        while "refused new model version digits/3" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        served_before = traffic.versions["2"]
        time.sleep(1.0)
        assert traffic.versions["2"] > served_before and traffic.versions["3"] == 0
        assert "encoder.onnx" in server.log()  # the log says which file failed
        assert server.health_status() == SERVING
        pinned = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), model={"version": "1"}))
        assert pinned.model.version == "1"
        counted = samples(scrape(server.metrics_url))
        assert counted[("vae_model_reloads_total", (("result", "loaded"),))] == 1
        assert counted[("vae_model_reloads_total", (("result", "refused"),))] == 1
    finally:
        traffic.finish()
        assert server.stop() == 0
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.versions["1"] >= 20 and traffic.versions["2"] >= 20


def test_an_unloaded_version_loses_its_batchers_and_its_series(tmp_path, digits_bundle):
    repository = tmp_path / "repository"
    for version in ("1", "2"):
        copy_as_version(digits_bundle, repository / "digits" / version, version)
    server = start_server("--model-repository", str(repository), "--repository-poll", "0.2")
    x = tensor(np.full((1, 64), 0.5))
    try:
        assert server.stub.Elbo(vae_pb2.ElboRequest(x=x, model={"version": "1"})).model.version == "1"
        before = samples(scrape(server.metrics_url))
        assert ("vae_queue_rows", (("kind", "elbo"), ("model", "digits:1"))) in before
        os.rename(repository / "digits" / "1", tmp_path / "gone")
        deadline = time.monotonic() + 30
        while "unloaded digits:1: its batchers finish the calls that hold it" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.Elbo(vae_pb2.ElboRequest(x=x, model={"version": "1"}))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert server.stub.Elbo(vae_pb2.ElboRequest(x=x)).model.version == "2"
        after = samples(scrape(server.metrics_url))
        assert not any(dict(labels).get("model") == "digits:1" for _, labels in after)
        assert not any(name == "vae_model_info" and dict(labels).get("version") == "1" for name, labels in after)
        assert (
            "vae_model_info",
            (("likelihood", "bernoulli"), ("name", "digits"), ("providers", "CPUExecutionProvider"), ("version", "2")),
        ) in after
    finally:
        assert server.stop() == 0


def test_a_stream_on_a_version_that_is_unloaded_meanwhile_still_finishes(tmp_path, digits_bundle):
    repository = tmp_path / "repository"
    for version in ("1", "2"):
        copy_as_version(digits_bundle, repository / "digits" / version, version)
    server = start_server("--model-repository", str(repository), "--repository-poll", "0.2")
    try:
        # 100 chunks of 1000 rows: gRPC flow control keeps the server a few chunks ahead of this reader.
        request = vae_pb2.SampleRequest(n=100_000, chunk_size=1000, seed=5, model={"version": "1"})
        stream = server.stub.SampleStream(request, timeout=120)
        first = next(stream)
        os.rename(repository / "digits" / "1", tmp_path / "gone")
        deadline = time.monotonic() + 30
        while "unloaded digits:1" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        rest = list(stream)
        assert [reply.offset for reply in [first, *rest]] == list(range(0, 100_000, 1000))
        assert {reply.model.version for reply in rest} == {"1"}
        unary = server.stub.Sample(vae_pb2.SampleRequest(n=1000, seed=5, model={"version": "2"}))
        assert unary.model.version == "2"
    finally:
        assert server.stop() == 0
