"""The score monitor on a real server: normal rows (the digits bundle's own calibration rows, as
clients send them) fill the p-value histogram and the drift window without an alarm; shifted rows
(the same digits with their grey levels inverted) raise the drift and flag-rate alarms; all read
from real /metrics scrapes. With --no-monitor none of these series exist."""

import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.raw_http import metric
from tests.server_process import start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.export.sources import load_source, make_splits

WINDOW_ROWS = 300
RATE = 0.05  # its flag-rate test may alarm from max(100, 10 / 0.05) = 200 rows on
MONITOR_FAMILIES = ("vae_score_", "vae_drift_", "vae_flag_rate_")  # not vae_scored_examples: that one stays


@pytest.fixture(scope="module")
def calibration_rows() -> np.ndarray:
    """The rows the fixture bundle was calibrated on (vae-train's validation split), raw grey levels."""
    return make_splits(load_source("digits")).validation.x


def score(server, rows: np.ndarray) -> np.ndarray:
    """Score ``rows`` in calls of 30 at the promised RATE; the p-values the server answered."""
    p_values = []
    for start in range(0, len(rows), 30):
        request = vae_pb2.ScoreAnomalyRequest(x=tensor(rows[start : start + 30]), false_positive_rate=RATE)
        p_values += server.stub.ScoreAnomaly(request, timeout=30).p_value
    return np.asarray(p_values)


def wait_for(server, name: str, wanted: float, timeout_s: float = 30.0, **labels) -> float:
    """The sample once it equals ``wanted`` (the monitor tests in the background), or its last value."""
    deadline = time.monotonic() + timeout_s
    while (value := metric(server.metrics_url, name, **labels)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_normal_rows_fill_the_histograms_and_shifted_rows_alarm(digits_bundle, calibration_rows):
    server = start_server(
        "--bundle", str(digits_bundle), "--monitor-window-rows", str(WINDOW_ROWS), "--monitor-step-rows", "50"
    )
    try:
        normal = np.concatenate([calibration_rows] * 3)  # 3 x 144 rows: a full window of normal rows
        p_values = score(server, normal)
        rows = len(normal)
        labels = {"model": "digits", "version": "1", "score": "reconstruction_error"}
        assert metric(server.metrics_url, "vae_score_p_value_count", **labels) == rows
        for bound in (0.01, 0.05, 0.1, 0.5):
            bucket = metric(server.metrics_url, "vae_score_p_value_bucket", le=str(bound), **labels)
            assert bucket == np.count_nonzero(p_values <= bound)
        assert metric(server.metrics_url, "vae_score_calibration_rows", **labels) == len(calibration_rows)
        assert metric(server.metrics_url, "vae_drift_window_rows", **labels) == WINDOW_ROWS
        assert metric(server.metrics_url, "vae_drift_window_capacity_rows", **labels) == WINDOW_ROWS
        assert metric(server.metrics_url, "vae_score_rows_total", fpr="0.05", **labels) == rows
        assert metric(server.metrics_url, "vae_score_expected_flags_total", fpr="0.05", **labels) == pytest.approx(
            rows * RATE
        )
        assert wait_for(server, "vae_drift_evaluations_total", 1, **labels) >= 1
        assert metric(server.metrics_url, "vae_drift_alarm", **labels) == 0
        assert metric(server.metrics_url, "vae_drift_p_value", **labels) > 0.001
        assert metric(server.metrics_url, "vae_flag_rate_alarm", fpr="0.05", **labels) == 0

        shifted = np.concatenate([16.0 - calibration_rows] * 3)  # inverted grey levels: digits no longer
        score(server, shifted)
        assert wait_for(server, "vae_drift_alarm", 1, **labels) == 1
        assert wait_for(server, "vae_flag_rate_alarm", 1, fpr="0.05", **labels) == 1
        assert metric(server.metrics_url, "vae_drift_p_value", **labels) < 0.001
        assert metric(server.metrics_url, "vae_flag_rate_p_value", fpr="0.05", **labels) < 0.001
        assert metric(server.metrics_url, "vae_score_p_value_count", **labels) == rows + len(shifted)
    finally:
        assert server.stop() == 0, server.log()


def test_no_monitor_serves_none_of_its_series(digits_bundle, calibration_rows):
    server = start_server("--bundle", str(digits_bundle), "--no-monitor")
    try:
        score(server, calibration_rows[:30])
        assert metric(server.metrics_url, "vae_scored_examples_total") == 30  # the scrape sees the call
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            families = [family.name for family in text_string_to_metric_families(response.read().decode())]
        assert "vae_scored_examples" in families
        assert [name for name in families if name.startswith(MONITOR_FAMILIES)] == []
    finally:
        assert server.stop() == 0, server.log()
