"""vae.v1.GetMonitoring and `vae-client monitor` against real vae-serve processes: the rows scored
through ScoreAnomaly show up in the drift window and the flag-rate counts, shifted rows raise the
drift alarm, --no-monitor answers enabled=false, bad requests get their status, and the CLI prints
the table and stops its --watch on SIGINT with exit status 0."""

import contextlib
import json
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.server_process import VAE_SERVE, start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.client import VaeClient, VaeClientError
from vae_serve.client.names import SCORE_TYPES
from vae_serve.core.scores import DEFAULT_SCORE
from vae_serve.export.sources import load_source, make_splits

VAE_CLIENT = str(Path(VAE_SERVE).with_name("vae-client"))
WINDOW_ROWS, STEP_ROWS = 120, 20
MONITOR_FLAGS = ("--monitor-window-rows", str(WINDOW_ROWS), "--monitor-step-rows", str(STEP_ROWS))
DEFAULT_SCORE_TYPE = SCORE_TYPES[DEFAULT_SCORE]  # the score ScoreAnomaly computes when the request names none
DEFAULT_RATE = 0.01  # ScoreAnomaly's decision rule when the request names none (vae.proto)
POLL_ROUNDS, POLL_PAUSE_S = 300, 0.1  # a bounded wait for the monitor's background step
GARBAGE = b"\xff\xff\xff\xff not a protobuf message"


@pytest.fixture(scope="module")
def normal_rows() -> np.ndarray:
    """The digits bundle's test rows, raw grey levels 0..16: the data the calibration describes."""
    return make_splits(load_source("digits")).test.x.reshape(-1, 64).astype(np.float32)


@pytest.fixture(scope="module")
def decision_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decisions") / "decisions.jsonl"


@pytest.fixture(scope="module")
def monitored(digits_bundle, decision_log):
    """A monitored server the CLI tests share (they count from whatever came before), with a decision log."""
    process = start_server("--bundle", str(digits_bundle), *MONITOR_FLAGS, "--decision-log", str(decision_log))
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def unmonitored(digits_bundle):
    process = start_server("--bundle", str(digits_bundle), "--no-monitor")
    yield process
    assert process.stop() == 0, process.log()


def score(server, rows: np.ndarray, request_id: str | None = None, **fields) -> vae_pb2.ScoreAnomalyResponse:
    request = vae_pb2.ScoreAnomalyRequest(x=tensor(rows), **fields)
    metadata = () if request_id is None else (("x-request-id", request_id),)
    return server.stub.ScoreAnomaly(request, metadata=metadata, timeout=60)


def monitoring(server, name: str = "", version: str = "") -> vae_pb2.MonitoringResponse:
    request = vae_pb2.GetMonitoringRequest(model=vae_pb2.ModelRef(name=name, version=version))
    return server.stub.GetMonitoring(request, timeout=30)


@contextlib.contextmanager
def serving(bundle: Path, *flags: str):
    """A fresh server of its own, for a test that counts from zero."""
    server = start_server("--bundle", str(bundle), *flags)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def entry_when(server, ready: Callable[[vae_pb2.ScoreMonitor], bool]) -> vae_pb2.ScoreMonitor:
    """The default score's entry once ``ready`` holds for it (a bounded wait: the monitor's drift test
    runs in the background, after the replies)."""
    for _ in range(POLL_ROUNDS):
        entries = [entry for entry in monitoring(server).scores if entry.score == DEFAULT_SCORE_TYPE]
        if entries and ready(entries[0]):
            return entries[0]
        time.sleep(POLL_PAUSE_S)
    raise AssertionError(f"the monitor never reached the state awaited: {monitoring(server)}")


def entry_after(server, rows_seen: int) -> vae_pb2.ScoreMonitor:
    """The default score's entry once it has seen at least ``rows_seen`` rows."""
    return entry_when(server, lambda entry: entry.rows_seen >= rows_seen)


def flag_rate(entry: vae_pb2.ScoreMonitor, rate: float) -> vae_pb2.FlagRateMonitor:
    (found,) = [flags for flags in entry.flag_rates if flags.false_positive_rate == pytest.approx(rate)]
    return found


def test_scored_rows_fill_the_window_and_the_flag_counts(digits_bundle, normal_rows):
    with serving(digits_bundle, *MONITOR_FLAGS) as server:
        before = monitoring(server)
        assert before.enabled and before.alpha == pytest.approx(0.001) and before.step_rows == STEP_ROWS
        assert list(before.scores) == []  # nothing scored yet
        flagged = sum(list(score(server, normal_rows[at : at + 10]).is_anomaly).count(True) for at in range(0, 50, 10))
        entry = entry_after(server, 50)
        assert (entry.model.name, entry.model.version) == ("digits", "1")
        assert entry.rows_seen == 50 and entry.window_rows == 50 and entry.window_capacity_rows == WINDOW_ROWS
        assert entry.calibration_rows > 100  # the digits calibration: its validation split
        rates = flag_rate(entry, DEFAULT_RATE)
        assert (rates.rows, rates.flagged) == (50, flagged)
        assert rates.observed_rate == pytest.approx(flagged / 50)
        assert rates.p_value == 1.0 and not rates.alarm  # far below the minimum count
        assert not entry.HasField("drift_p_value") and entry.evaluations == 0  # fewer than 100 rows yet

        # Past the capacity the window keeps the latest rows; the counts keep them all.
        score(server, normal_rows[50:200], false_positive_rate=0.05)
        entry = entry_after(server, 200)
        assert entry.rows_seen == 200 and entry.window_rows == WINDOW_ROWS
        assert flag_rate(entry, DEFAULT_RATE).rows == 50 and flag_rate(entry, 0.05).rows == 150
        assert [flags.false_positive_rate for flags in entry.flag_rates] == [DEFAULT_RATE, 0.05]
        entry = entry_when(server, lambda entry: entry.evaluations > 0)  # the background test, off the request path
        assert 0.0 <= entry.drift_statistic <= 1.0 and 0.0 <= entry.drift_p_value <= 1.0
        assert not entry.drift_alarm  # normal rows; alpha 0.001
        assert entry.tail_exceedances
        for tail in entry.tail_exceedances:
            assert 0 < tail.level < 1 and 0 <= tail.rows_above <= tail.window_rows <= WINDOW_ROWS

        # A model, or a model and version, selects its entries; here the only ones.
        everything = list(monitoring(server).scores)
        assert list(monitoring(server, "digits").scores) == everything
        assert list(monitoring(server, "digits", "1").scores) == everything
        assert list(monitoring(server, "", "1").scores) == everything


def test_shifted_rows_raise_the_drift_alarm(digits_bundle, normal_rows):
    with serving(digits_bundle, *MONITOR_FLAGS) as server:
        shifted = 16.0 - normal_rows[:WINDOW_ROWS]  # inverted grey levels: in range, but no digits
        for at in range(0, WINDOW_ROWS, 40):
            score(server, shifted[at : at + 40])
        entry = entry_when(server, lambda entry: entry.drift_alarm)
        assert entry.drift_p_value < monitoring(server).alpha and entry.drift_statistic > 0.5
        assert flag_rate(entry, DEFAULT_RATE).flagged > WINDOW_ROWS // 2
        table = run_client(server, "monitor")
        assert table.returncode == 0, table.stderr
        (row,) = [line for line in table.stdout.splitlines() if line.startswith("digits:1 ")]
        assert row.endswith("ALARM")


def test_no_monitor_answers_enabled_false(unmonitored, normal_rows):
    score(unmonitored, normal_rows[:5])
    reply = monitoring(unmonitored)
    assert not reply.enabled and list(reply.scores) == []
    assert reply.alpha == pytest.approx(0.001)
    with VaeClient(f"127.0.0.1:{unmonitored.port}") as client:
        assert not client.monitoring().enabled
    shown = run_client(unmonitored, "monitor")
    assert shown.returncode == 0 and "off" in shown.stdout and "--no-monitor" in shown.stdout
    as_json = json.loads(run_client(unmonitored, "--json", "monitor").stdout)
    assert as_json["enabled"] is False and as_json["scores"] == []


@pytest.mark.parametrize(
    "name, version, pattern",
    [("nope", "", r"unknown model 'nope'"), ("digits", "7", r"no version '7'"), ("", "9", r"no version '9'")],
)
def test_unknown_models_and_versions_are_not_found(unmonitored, name, version, pattern):
    # Checked whether or not monitoring is on: the reference is wrong either way.
    with pytest.raises(grpc.RpcError) as raised:
        monitoring(unmonitored, name, version)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert re.search(pattern, raised.value.details()), raised.value.details()
    shown = run_client(unmonitored, *(("--model", name) if name else ()), "--version", version or "1", "monitor")
    if name == "nope":
        assert shown.returncode == 1 and shown.stderr.startswith("vae-client: NOT_FOUND: unknown model 'nope'")
    else:
        assert shown.returncode == 1 and shown.stderr.startswith("vae-client: NOT_FOUND: model 'digits' has no")


@pytest.mark.parametrize(
    "payload", [GARBAGE, b"\x0a\x05\x0a", b"\x0a\xff\xff\xff\xff\x0f"], ids=["garbage", "truncated", "huge length"]
)
def test_malformed_bytes_are_invalid_argument(unmonitored, payload):
    call = unmonitored.channel.unary_unary("/vae.v1.VaeService/GetMonitoring")
    with pytest.raises(grpc.RpcError) as raised:
        call(payload, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid vae.v1.GetMonitoringRequest message" in raised.value.details()
    assert "Traceback" not in raised.value.details()


def run_client(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VAE_CLIENT, "--target", f"127.0.0.1:{server.port}", *args], capture_output=True, text=True, timeout=120
    )


def test_monitor_prints_the_table(monitored, normal_rows):
    score(monitored, normal_rows[:30])
    entry = entry_after(monitored, 30)
    shown = run_client(monitored, "monitor", "--model", "digits")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "alpha 0.001" in lines[0] and "deploy/base/prometheus/rules.yml" in lines[0]
    (row,) = [line for line in lines if line.startswith("digits:1 ")]
    assert "reconstruction_error" in row and f"{entry.window_rows}/{WINDOW_ROWS}" in row
    rate_lines = [line for line in lines if "flag rate at 0.01:" in line]
    assert len(rate_lines) == 1 and "promised 0.01" in rate_lines[0]
    as_json = json.loads(run_client(monitored, "--json", "monitor").stdout)
    (scored,) = [item for item in as_json["scores"] if item["score"] == "reconstruction_error"]
    assert scored["model"] == {"name": "digits", "version": "1"} and scored["window_capacity_rows"] == WINDOW_ROWS
    assert isinstance(scored["rows_seen"], int) and scored["rows_seen"] >= 30
    assert {item["false_positive_rate"] for item in scored["flag_rates"]} >= {DEFAULT_RATE}


def test_monitor_watch_refreshes_until_sigint(monitored, normal_rows):
    score(monitored, normal_rows[:10])
    process = subprocess.Popen(
        [VAE_CLIENT, "--target", f"127.0.0.1:{monitored.port}", "monitor", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A runner that starts its jobs in the background (`cmd &` without job control) ignores SIGINT,
        # and a child that starts with SIGINT ignored never gets Python's Ctrl-C handler: undo that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    refreshes = 0
    try:
        while refreshes < 2:  # two refreshes printed: the watch goes on by itself
            line = lines.get(timeout=60)
            refreshes += line.startswith("score monitoring:")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0, process.stderr.read()
    assert "Traceback" not in process.stderr.read()


def test_monitor_says_when_the_server_is_unreachable():
    closed = start_listening_then_close()
    for extra in ((), ("--watch", "1")):
        result = subprocess.run(
            [VAE_CLIENT, "--target", closed, "--timeout", "3", "monitor", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # UNAVAILABLE, or DEADLINE_EXCEEDED when gRPC's retries of UNAVAILABLE outlast the deadline.
        assert result.returncode == 1 and result.stdout == ""
        assert re.match(r"vae-client: (UNAVAILABLE|DEADLINE_EXCEEDED): ", result.stderr), result.stderr
        assert len(result.stderr.splitlines()) == 1


def start_listening_then_close() -> str:
    """A loopback address that nothing listens on: a port the kernel gave out and that is closed again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_the_client_raises_not_found(monitored):
    with VaeClient(f"127.0.0.1:{monitored.port}") as client, pytest.raises(VaeClientError) as raised:
        client.monitoring("nope")
    assert raised.value.code_name == "NOT_FOUND"


def test_score_anomaly_passes_the_callers_request_id(monitored, decision_log, normal_rows):
    score(monitored, normal_rows[:3], request_id="caller-id-42")
    score(monitored, normal_rows[3:5])  # no x-request-id: the server makes one
    for _ in range(POLL_ROUNDS):  # the decision log's writer runs after the replies
        text = decision_log.read_text() if decision_log.exists() else ""
        records = [json.loads(line) for line in text.splitlines()]
        if sum(record["request_id"] == "caller-id-42" for record in records) == 3 and len(records) >= 5:
            break
        time.sleep(POLL_PAUSE_S)
    mine = [record for record in records if record["request_id"] == "caller-id-42"]
    assert [record["row"] for record in mine] == [0, 1, 2]
    assert all(record["request_id"] for record in records)


def test_monitoring_needs_a_token_where_the_server_asks_for_one(digits_bundle, tmp_path):
    token = "monitor-test-token-0123456789abcdef"
    (tmp_path / "tokens").write_text(f"{token}\n")
    with serving(digits_bundle, "--auth-tokens-file", str(tmp_path / "tokens")) as server:
        with pytest.raises(grpc.RpcError) as raised:
            monitoring(server)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with VaeClient(f"127.0.0.1:{server.port}", token=token) as client:
            assert client.monitoring().enabled
        shown = run_client(server, "--token", token, "monitor")
        assert shown.returncode == 0 and shown.stdout.startswith("score monitoring:"), shown.stderr
