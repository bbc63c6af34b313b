"""Operations: metrics scrape, model repository, refusal of damaged bundles, settings, and a
graceful drain under SIGTERM with calls in flight.
"""

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from tests.server_process import SERVING, VAE_SERVE, ServerProcess, launch, start_server, tensor
from tests.test_export_api import Decoder, export
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.core.manifest import MANIFEST_FILE, seal

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


ELBO_IN_FLIGHT = ("vae_requests_in_flight", (("method", "Elbo"),))


def wait_for_elbo_in_flight(server, reached, what: str, timeout_s: float = 30.0) -> None:
    """Poll /metrics until ``reached(Elbo calls in flight)`` holds; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not reached(samples(scrape(server.metrics_url)).get(ELBO_IN_FLIGHT, 0)):
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_metrics_count_every_call(server):
    x = tensor(np.full((5, 64), 0.25))
    before = samples(scrape(server.metrics_url))
    for seed in range(3):
        server.stub.Elbo(vae_pb2.ElboRequest(x=x, k=4, seed=seed))
    with pytest.raises(grpc.RpcError):
        server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.zeros((5, 3)))))
    after = samples(scrape(server.metrics_url))

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("vae_requests_total", method="Elbo", code="OK") == 3
    assert delta("vae_requests_total", method="Elbo", code="INVALID_ARGUMENT") == 1
    assert delta("vae_request_duration_seconds_count", method="Elbo") == 4
    assert delta("vae_batch_duration_seconds_count", kind="elbo") >= 1  # 3 calls, one batch or more
    assert delta("vae_batch_rows_sum", kind="elbo") == 3 * 5 * 4  # rows x k of the 3 accepted calls
    assert delta("vae_examples_total", method="Elbo") == 15
    assert after[ELBO_IN_FLIGHT] == 0
    info = [key for key in after if key[0] == "vae_model_info"]
    assert len(info) == 1 and dict(info[0][1])["name"] == "digits" and dict(info[0][1])["version"] == "1"
    assert after[("vae_serving", ())] == 1


def test_metrics_pass_promtool(server):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (scripts/test.sh installs Debian's prometheus package when run as root)")
    server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape(server.metrics_url), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def copy_as_version(bundle: Path, destination: Path, version: str) -> None:
    shutil.copytree(bundle, destination)
    path = destination / MANIFEST_FILE
    document = json.loads(path.read_text())
    document["version"] = version
    path.write_text(json.dumps(seal(document)))


def test_model_repository_serves_every_version_latest_by_default(tmp_path, digits_bundle, gaussian_bundle):
    repository = tmp_path / "repository"
    copy_as_version(digits_bundle, repository / "digits" / "1", "1")
    copy_as_version(digits_bundle, repository / "digits" / "2", "2")
    shutil.copytree(gaussian_bundle, repository / "records" / "1")
    server = start_server(env={"VAE_MODEL_REPOSITORY": str(repository)})  # settings from the environment
    try:
        info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest())
        assert (info.model.name, info.model.version) == ("digits", "2")
        assert list(info.available_versions) == ["1", "2"]
        x = tensor(np.full((2, 64), 0.5))
        old = server.stub.Encode(vae_pb2.EncodeRequest(x=x, model=vae_pb2.ModelRef(name="digits", version="1")))
        assert old.model.version == "1"
        z = tensor(np.zeros((3, 3)))
        decoded = server.stub.Decode(vae_pb2.DecodeRequest(z=z, model=vae_pb2.ModelRef(name="records")))
        assert decoded.WhichOneof("params") == "gaussian" and decoded.model.name == "records"
        assert np.all(np.frombuffer(decoded.gaussian.scale.data, "<f4") > 0)
        text = scrape(server.metrics_url)
        assert "vae_model_info{" in text and 'name="records"' in text and 'version="2"' in text
    finally:
        assert server.stop() == 0


def wait_exit(process: subprocess.Popen, timeout_s: float = 60) -> int:
    return process.wait(timeout=timeout_s)


def test_damaged_bundle_is_never_served(bundle_copy):
    path = bundle_copy / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    process, lines, log_path = launch("--bundle", str(bundle_copy), metrics=False)
    assert wait_exit(process) == 1
    log = log_path.read_text()
    assert "decoder.onnx: sha256" in log and "Traceback" not in log
    printed = []
    while (line := lines.get(timeout=5)) is not None:
        printed.append(line)
    assert printed and printed[0].startswith("vae-serve listening on ")  # bound, but never SERVING


def repository_of_copies(bundle: Path, root: Path, versions: int) -> Path:
    """``versions`` resealed copies of one bundle as digits/1 .. digits/N."""
    for version in range(1, versions + 1):
        target = root / "digits" / str(version)
        shutil.copytree(bundle, target)
        manifest = target / MANIFEST_FILE
        document = json.loads(manifest.read_text())
        document["version"] = str(version)
        manifest.write_text(json.dumps(seal(document)))
    return root


def test_not_serving_and_unavailable_until_every_bundle_is_verified(digits_bundle, tmp_path):
    # 100 bundles take ~1 s to verify here (~15 ms each), against ~20 ms from the "listening" line
    # to the first health answer: the loading window is observed, not guessed.
    repository = repository_of_copies(digits_bundle, tmp_path / "repo", 100)
    process, lines, log_path = launch("--model-repository", str(repository), metrics=False)
    line = lines.get(timeout=60)
    assert line is not None and line.startswith("vae-serve listening on "), log_path.read_text()
    server = ServerProcess(process, int(line.rsplit(":", 1)[1]), None, log_path, None)
    try:
        assert server.health_status() == NOT_SERVING
        assert server.health_status("vae.v1.VaeService") == NOT_SERVING
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading and verifying" in raised.value.details()
        deadline = time.monotonic() + 60
        while server.health_status() != SERVING:
            assert time.monotonic() < deadline and process.poll() is None, server.log()
            time.sleep(0.02)
        info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
        assert info.model.version == "100" and len(info.available_versions) == 100
    finally:
        assert server.stop() == 0


def test_cuda_asked_but_unavailable_is_a_clear_error(digits_bundle):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA; the GPU path is exercised on a GPU machine")
    result = subprocess.run(
        [VAE_SERVE, "--bundle", str(digits_bundle), "--port", "0", "--no-metrics", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "device cuda (--device / VAE_DEVICE)" in result.stderr and "CUDAExecutionProvider" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout, "refused before binding the port"


def test_device_auto_without_cuda_says_it_serves_on_the_cpu(digits_bundle):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA; auto picks it (exercised on a GPU machine)")
    process = start_server("--bundle", str(digits_bundle), "--device", "auto")
    try:
        assert process.health_status() == SERVING
        assert "device auto: this onnxruntime build has no CUDAExecutionProvider" in process.log()
        reply = process.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=30)
        assert list(reply.providers) == ["CPUExecutionProvider"]
    finally:
        assert process.stop() == 0


def test_settings_are_validated_before_start():
    result = subprocess.run([VAE_SERVE, "--port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "exactly one of --bundle" in result.stderr
    result = subprocess.run([VAE_SERVE, "--bundle", "x", "--device", "tpu"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "device" in result.stderr


def test_sigterm_drains_50_in_flight_calls(digits_bundle, server):
    # One inference thread busy with three heavy calls (1024 rows x 256 samples, ~2 s in all), and
    # 50 lighter calls queued behind them: all 53 are in flight when SIGTERM arrives.
    grace_s = 60
    draining = start_server("--bundle", str(digits_bundle), "--worker-threads", "1", "--grace", str(grace_s))
    heavy = vae_pb2.ElboRequest(x=tensor(np.random.default_rng(1).random((1024, 64))), k=256, seed=0)
    x = np.random.default_rng(0).random((256, 64), dtype=np.float32)
    requests = [vae_pb2.ElboRequest(x=tensor(x), k=16, seed=seed) for seed in range(50)]
    watch = draining.health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    with ThreadPoolExecutor(max_workers=53) as pool:
        blockers = [pool.submit(draining.stub.Elbo, heavy, timeout=120) for _ in range(3)]
        futures = [pool.submit(draining.stub.Elbo, request, timeout=120) for request in requests]
        wait_for_elbo_in_flight(draining, lambda calls: calls >= 53, "calls never arrived")
        started = time.monotonic()
        draining.process.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING  # at once, before the calls finish
        with pytest.raises(grpc.RpcError) as refused:
            draining.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        replies = [future.result() for future in futures]
        assert all(len(blocker.result().elbo) == 1024 for blocker in blockers)
    assert draining.process.wait(timeout=grace_s) == 0
    assert time.monotonic() - started < grace_s
    # Every drained call completed with the right answer: the same as a healthy server's.
    for request, reply in zip(requests, replies, strict=True):
        assert reply.SerializeToString() == server.stub.Elbo(request, timeout=120).SerializeToString()
    assert "draining: 53 in-flight calls" in draining.log()


def test_calls_left_at_the_end_of_the_grace_are_answered_unavailable(digits_bundle):
    # 8 calls of 128 rows x 1000 samples (~0.15 s each on one runner) against a 0.5 s grace: some
    # finish, the rest are answered UNAVAILABLE with the reason, none is cancelled by gRPC.
    grace_s = 0.5
    draining = start_server("--bundle", str(digits_bundle), "--grace", str(grace_s))
    request = vae_pb2.ElboRequest(x=tensor(np.random.default_rng(2).random((128, 64))), k=1000, seed=1)

    def call() -> str:
        try:
            return "OK" if len(draining.stub.Elbo(request, timeout=60).elbo) == 128 else "wrong reply"
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [pool.submit(call) for _ in range(8)]
        wait_for_elbo_in_flight(draining, lambda calls: calls >= 8, "calls never arrived")
        started = time.monotonic()
        draining.process.send_signal(signal.SIGTERM)
        assert draining.process.wait(timeout=30) == 0
        stopped_s = time.monotonic() - started
        outcomes = [outcome.result() for outcome in outcomes]
    unavailable = [outcome for outcome in outcomes if outcome != "OK"]
    assert unavailable, f"every call finished within {grace_s} s: make them heavier ({outcomes})"
    reason = "UNAVAILABLE: the server is shutting down and its 0.5 s grace period ended before this call finished"
    assert all(outcome.startswith(reason) for outcome in unavailable), outcomes
    assert stopped_s < grace_s + 5  # the grace, the answers' margin, and process exit
    log = draining.log()
    assert f"grace period over: {len(unavailable)} calls still waiting answered UNAVAILABLE" in log
    assert "Traceback" not in log and "CancelledError" not in log


def test_reflection_on_by_default_and_off_by_flag(server, digits_bundle):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    services = ProtoReflectionDescriptorDatabase(server.channel).get_services()
    assert {"vae.v1.VaeService", "grpc.health.v1.Health"} <= set(services)
    quiet = start_server("--bundle", str(digits_bundle), "--no-reflection", metrics=False)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            ProtoReflectionDescriptorDatabase(quiet.channel).get_services()
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert quiet.stop() == 0


def test_non_finite_model_output_is_internal_never_ok(tmp_path):
    # A decoder whose mean is exp(sum z): finite for every code near the prior (calibration), infinite
    # in float32 for a valid code of 1,000 (inside the +-1e6 the server decodes). The server must answer
    # INTERNAL (counted), not return the non-finite values with OK.
    class ExponentialDecoder(Decoder):
        def forward(self, z):
            mean, log_scale = super().forward(z)
            return mean + torch.exp(z.sum(dim=1)).reshape(-1, 1, 1, 1), log_scale

    raw = load_digits().images.astype(np.float32)[:100, None]
    bundle = export(tmp_path / "overflows", decoder=ExponentialDecoder(gaussian=True), data=raw, likelihood="gaussian")
    server = start_server("--bundle", str(bundle.path))
    try:
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.Decode(vae_pb2.DecodeRequest(z=tensor(np.full((2, 4), 1000.0))))
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert "non-finite" in raised.value.details()
        reply = server.stub.Decode(vae_pb2.DecodeRequest(z=tensor(np.zeros((2, 4)))))
        assert np.all(np.isfinite(np.frombuffer(reply.gaussian.mean.data, "<f4")))
        counted = samples(scrape(server.metrics_url))
        assert counted[("vae_requests_total", (("code", "INTERNAL"), ("method", "Decode")))] == 1
    finally:
        assert server.stop() == 0


def test_ports_in_use_are_clear_errors(server, digits_bundle):
    metrics_port = int(server.metrics_url.rsplit(":", 1)[1].split("/")[0])
    for flags, expected in (
        (["--port", str(server.port), "--no-metrics"], f"cannot bind gRPC to 127.0.0.1:{server.port}"),
        (["--port", "0", "--metrics-port", str(metrics_port)], f"cannot serve metrics on 127.0.0.1:{metrics_port}"),
    ):
        result = subprocess.run(
            [VAE_SERVE, "--bundle", str(digits_bundle), "--host", "127.0.0.1", *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr


def test_several_processes_share_the_port(digits_bundle):
    # --processes 2: two complete servers on one port (SO_REUSEPORT); each connection lands on one
    # of them. Both must serve, and SIGTERM to the supervisor must stop both with exit 0.
    server = start_server("--bundle", str(digits_bundle), "--processes", "2")
    try:
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(8)
        ]
        for channel in channels:
            reply = vae_pb2_grpc.VaeServiceStub(channel).Elbo(vae_pb2.ElboRequest(x=tensor(np.zeros((2, 64))), seed=1))
            assert len(reply.elbo) == 2
        children = subprocess.run(
            ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
    finally:
        assert server.stop() == 0
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()


def test_a_score_the_bundle_was_not_calibrated_for_is_a_failed_precondition(bundle_copy):
    path = bundle_copy / MANIFEST_FILE
    document = json.loads(path.read_text())
    del document["calibration"]["scores"]["complexity_corrected"]  # as in a bundle made before the score
    path.write_text(json.dumps(seal(document)))
    older = start_server("--bundle", str(bundle_copy))
    try:
        request = vae_pb2.ScoreAnomalyRequest(
            x=tensor(np.full((2, 64), 0.5)), score=vae_pb2.SCORE_TYPE_COMPLEXITY_CORRECTED, seed=1
        )
        with pytest.raises(grpc.RpcError) as raised:
            older.stub.ScoreAnomaly(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no calibration for it; recalibrate it with `vae-train calibrate`" in raised.value.details()
        request.score = vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR  # the scores it has still work
        assert len(older.stub.ScoreAnomaly(request, timeout=30).scores) == 2
    finally:
        assert older.stop() == 0
