"""Debian's ``prometheus`` against a live vae-serve, with the scrape config and the rules from
deploy/base/prometheus. Only the intervals (1 s) and the alerts' ``for:`` (a few seconds) are
shortened, in temp copies. The test checks that the target is up, that every rule evaluates
without error and no alert is active on a healthy server, and that Prometheus's vae_requests_total
equals the client's own count of calls. It also checks that the not-serving alert goes pending
while the server drains and that VaeServeDown goes pending once the server has exited.
"""

import collections
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from tests.server_process import start_server, tensor
from tests.test_oip import raw_request
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2

PROMETHEUS_CONFIG = Path(__file__).resolve().parents[1] / "deploy/base/prometheus/prometheus.yml"
INTERVAL = "1s"  # scrape and rule evaluation
SHORT_FOR = "5s"  # every alert's `for:`: long enough to see it pending, short enough for a test
STREAM_ROWS = 200_000  # a SampleStream far larger than HTTP/2's flow-control window (see below)
# Prometheus logs the address it actually bound, so it can take a free port itself (:0), no race.
LISTENING = re.compile(r'msg="Listening on" address=\S*:(\d+)')

PROMETHEUS = shutil.which("prometheus")
if PROMETHEUS is None:
    pytest.skip(
        "prometheus not installed (Debian's package; scripts/test.sh installs it when run as root)",
        allow_module_level=True,
    )


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 15.0):
    """Poll ``condition`` until it returns something truthy, and return that; fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} (not within {timeout_s:g} s)"
        time.sleep(0.1)
    return result


def api(base_url: str, path: str, **params: str):
    """The ``data`` of a Prometheus HTTP API answer."""
    url = f"{base_url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def query(base_url: str, expression: str) -> dict[tuple, float]:
    """An instant query's vector, as {sorted label pairs: value}."""
    result = api(base_url, "query", query=expression)["result"]
    return {tuple(sorted(sample["metric"].items())): float(sample["value"][1]) for sample in result}


def alerts(base_url: str, name: str) -> list[dict]:
    return [alert for alert in api(base_url, "alerts")["alerts"] if alert["labels"]["alertname"] == name]


def write_config(folder: Path, target: str) -> Path:
    """deploy's prometheus.yml and the rule files it loads, into ``folder``. The intervals are 1 s,
    the alerts' ``for:`` is SHORT_FOR, and the scrape target is ``target``. Nothing else changes."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval=INTERVAL, scrape_timeout=INTERVAL, evaluation_interval=INTERVAL)
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    for name in config["rule_files"]:  # relative to the config file, so the same names work in folder
        rules = yaml.safe_load((PROMETHEUS_CONFIG.parent / name).read_text())
        for rule in (rule for group in rules["groups"] for rule in group["rules"] if "for" in rule):
            rule["for"] = SHORT_FOR
        (folder / name).write_text(yaml.safe_dump(rules, sort_keys=False))
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(binary: str, config: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    """Run Prometheus on a free loopback port; its process and base URL once it is ready."""
    log_path = folder / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                "--web.listen-address=127.0.0.1:0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def listening() -> str | None:
        assert process.poll() is None, f"prometheus exited with {process.returncode}: {log_path.read_text()}"
        match = LISTENING.search(log_path.read_text())
        return match and f"http://127.0.0.1:{match[1]}"

    try:
        base_url = wait_until(listening, "prometheus never said where it listens")

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base_url}/-/ready", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ready, f"prometheus never became ready: {log_path.read_text()}")
    except BaseException:
        stop(process)
        raise
    return process, base_url


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_calls(server) -> collections.Counter:
    """A few calls of three methods, one of them refused, counted by the client as (method, code)."""
    rng = np.random.default_rng(3)
    oip = oip_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    calls = [("Elbo", server.stub.Elbo, vae_pb2.ElboRequest(x=tensor(rng.random((5, 64))), k=4, seed=seed))
             for seed in range(4)]  # fmt: skip
    calls += [("Encode", server.stub.Encode, vae_pb2.EncodeRequest(x=tensor(rng.random((3, 64)))))] * 3
    calls += [("ModelInfer", oip.ModelInfer, raw_request("digits-elbo", "x", rng.random((2, 64))))] * 2
    calls += [("Elbo", server.stub.Elbo, vae_pb2.ElboRequest(x=tensor(np.zeros((2, 3)))))]  # the wrong width
    counted: collections.Counter = collections.Counter()
    for method, stub, request in calls:
        try:
            stub(request, timeout=30)
            counted[method, "OK"] += 1
        except grpc.RpcError as error:
            counted[method, error.code().name] += 1
    assert counted["Elbo", "INVALID_ARGUMENT"] == 1, counted
    return counted


def test_prometheus_scrapes_counts_and_alerts_on_a_live_server(digits_bundle, tmp_path):
    server = start_server("--bundle", str(digits_bundle), "--grace", "60")
    prometheus, stream = None, None
    try:
        target = urllib.parse.urlparse(server.metrics_url).netloc
        prometheus, url = start_prometheus(PROMETHEUS, write_config(tmp_path, target), tmp_path)
        instance = {"job": "vae-serve", "instance": target}

        def target_up() -> bool:
            active = api(url, "targets", state="active")["activeTargets"]
            return [(item["labels"], item["health"]) for item in active] == [(instance, "up")]

        wait_until(target_up, "the live server never became an up target")

        counted = make_calls(server)
        by_method = 'sum by (method, code) (vae_requests_total{job="vae-serve"})'
        expected = {(("code", code), ("method", method)): float(count) for (method, code), count in counted.items()}
        wait_until(lambda: query(url, by_method) == expected, f"Prometheus never counted {dict(counted)}")
        assert query(url, "sum(vae_requests_total)") == {(): float(counted.total())}

        # The recording rules turn live series into values, every rule evaluates cleanly, and a healthy
        # server raises no alert.
        wait_until(lambda: query(url, "vae:requests:rate5m"), "vae:requests:rate5m never had a value")
        rules = [rule for group in api(url, "rules")["groups"] for rule in group["rules"]]
        assert rules and all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
        # (The p99 latency alert is left out: it says how loaded the machine is, here a CI host.)
        raised = [alert["labels"]["alertname"] for alert in api(url, "alerts")["alerts"]]
        assert [name for name in raised if name != "VaeServeHighLatencyP99"] == []

        # Hold the drain open: a stream whose client stops reading after the first chunk. HTTP/2 flow
        # control then blocks the server's next write, so the call stays in flight until read.
        stream = server.stub.SampleStream(vae_pb2.SampleRequest(n=STREAM_ROWS, chunk_size=4096, seed=1), timeout=60)
        rows = next(stream).x.shape[0]
        server.process.send_signal(signal.SIGTERM)
        (not_ready,) = wait_until(lambda: alerts(url, "VaeServeModelNotReady"), "no VaeServeModelNotReady alert")
        assert not_ready["state"] in ("pending", "firing")
        assert not_ready["labels"] == {"alertname": "VaeServeModelNotReady", "severity": "page", **instance}
        assert server.process.poll() is None, "the server stopped before the alert: the drain was not held open"
        assert query(url, "vae_serving") == {tuple(sorted({**instance, "__name__": "vae_serving"}.items())): 0.0}

        # Let the drain finish: the held call completes in full, the server exits 0 and goes down.
        rows += sum(message.x.shape[0] for message in stream)
        assert rows == STREAM_ROWS
        assert server.process.wait(timeout=30) == 0, server.log()
        (down,) = wait_until(lambda: alerts(url, "VaeServeDown"), "no VaeServeDown alert after the server exited")
        assert down["state"] in ("pending", "firing") and down["labels"]["instance"] == target
    finally:
        if stream is not None:
            stream.cancel()
        stop(server.process)
        server.channel.close()
        if prometheus is not None:
            stop(prometheus)
