"""Debian's ``prometheus`` with deploy's rules against a live vae-serve that scores traffic (issue 22):
held-out normal digits raise no alert; inverted digits (anomalies) then make the server's drift test
alarm and the flag-rate test in PromQL fire, so VaeScoreDrift and VaeFlagRateExcess go pending.

Only the intervals (1 s) and the alerts' ``for:`` (a few seconds) are shortened, in temp copies
(tests/test_prometheus_live.py's write_config); the rules and their windows are deploy's own. The
server's drift window is shortened to 300 rows so a few hundred rows fill it.
"""

import urllib.parse

import numpy as np

from tests.server_process import start_server, tensor
from tests.test_prometheus_live import PROMETHEUS, alerts, api, query, start_prometheus, stop, wait_until, write_config
from vae_serve.api.v1 import vae_pb2
from vae_serve.export.sources import load_source, make_splits

WINDOW_ROWS = 300  # the server's drift window; the test runs from 100 rows, every STEP_ROWS
STEP_ROWS = 100
RATE = 0.05  # the requested false-positive rate: its minimum count is max(100, 10 / 0.05) = 200 rows
CALL_ROWS = 40
SCORE_ALERTS = ("VaeScoreDrift", "VaeFlagRateExcess")
# The latency alert says how loaded the machine is (a CI host), not whether the scores are fine.
IGNORED_ALERTS = ("VaeServeHighLatencyP99",)


def score(server, rows: np.ndarray, seed: int) -> int:
    """Score ``rows`` in calls of CALL_ROWS at RATE; the number of rows flagged."""
    flagged = 0
    for start in range(0, len(rows), CALL_ROWS):
        request = vae_pb2.ScoreAnomalyRequest(
            x=tensor(rows[start : start + CALL_ROWS]), false_positive_rate=RATE, seed=seed + start
        )
        flagged += sum(server.stub.ScoreAnomaly(request, timeout=30).is_anomaly)
    return flagged


def raised(url: str) -> list[str]:
    return [alert["labels"]["alertname"] for alert in api(url, "alerts")["alerts"]
            if alert["labels"]["alertname"] not in IGNORED_ALERTS]  # fmt: skip


def evaluations(url: str) -> float:
    """The server's drift tests so far, as Prometheus last scraped them."""
    return sum(query(url, 'sum(vae_drift_evaluations_total{job="vae-serve"})').values())


def scored_rows(url: str) -> float:
    return sum(query(url, "sum(vae_score_rows_total)").values())


def test_score_alerts_stay_quiet_on_normal_traffic_and_fire_on_anomalies(digits_bundle, tmp_path):
    # The bundle calibrates on the validation split; the test split is held out, from the same rows.
    normal = make_splits(load_source("digits")).test.x  # raw grey levels 0-16, as clients send them
    anomalies = 16.0 - normal  # inverted digits: ink where digits have none
    server = start_server(
        "--bundle", str(digits_bundle), "--monitor-window-rows", str(WINDOW_ROWS), "--monitor-step-rows", str(STEP_ROWS)
    )
    prometheus = None
    try:
        target = urllib.parse.urlparse(server.metrics_url).netloc
        prometheus, url = start_prometheus(PROMETHEUS, write_config(tmp_path, target), tmp_path)

        # One call first, and Prometheus scrapes its series: the rest of the traffic is then an
        # increase over the rules' window, as in production. Then a step of rows at a time, each
        # followed by the server's drift test, so the tests cover 100, 200 and 300 (a full window) rows.
        first = score(server, normal[:CALL_ROWS], seed=0)
        wait_until(lambda: scored_rows(url) == CALL_ROWS, "Prometheus never scraped the first scored rows")
        for start in range(CALL_ROWS, len(normal), STEP_ROWS):
            first += score(server, normal[start : start + STEP_ROWS], seed=start)
            sent = min(start + STEP_ROWS, len(normal))
            tests = sent // STEP_ROWS
            wait_until(lambda tests=tests: evaluations(url) >= tests, f"the drift test did not run {tests} times")
        assert first < len(normal) * 2 * RATE, f"{first} of {len(normal)} normal rows flagged"
        assert evaluations(url) == len(normal) // STEP_ROWS
        wait_until(lambda: scored_rows(url) == len(normal), f"Prometheus never counted {len(normal)} scored rows")

        # The rules evaluate on the live series (every rule healthy) and say "as promised".
        z = wait_until(lambda: query(url, "vae:score_flag_excess:z1h"), "vae:score_flag_excess:z1h never had a value")
        (labels,) = z
        assert dict(labels)["fpr"] == f"{RATE:g}" and max(z.values()) < 3.09, z
        below = query(url, 'vae:score_p_value_below:ratio1h{le="1.0"}')
        assert list(below.values()) == [1.0], below
        rules = [rule for group in api(url, "rules")["groups"] for rule in group["rules"]]
        assert all(rule["health"] == "ok" for rule in rules), [rule for rule in rules if rule["health"] != "ok"]
        assert query(url, "max(vae_drift_alarm)") == {(): 0.0}
        assert raised(url) == []

        # Anomalies: more than a window of them, all far above the calibration.
        flagged = score(server, anomalies, seed=10_000)
        assert flagged > len(anomalies) * 0.9, f"only {flagged} of {len(anomalies)} inverted digits flagged"
        rate_series = {key: value for key, value in labels if key != "__name__"}  # job, model, version, score, fpr
        series = {key: value for key, value in rate_series.items() if key != "fpr"}
        expected = {"VaeScoreDrift": {**series, "instance": target}, "VaeFlagRateExcess": rate_series}
        for name in SCORE_ALERTS:
            (alert,) = wait_until(lambda name=name: alerts(url, name), f"no {name} alert after the anomalies")
            assert alert["state"] in ("pending", "firing"), alert
            assert alert["labels"] == {"alertname": name, "severity": "ticket", **expected[name]}, alert
        assert query(url, "max(vae_drift_p_value)")[()] < 0.001
        assert sorted(set(raised(url))) == sorted(SCORE_ALERTS)
    finally:
        stop(server.process)
        server.channel.close()
        if prometheus is not None:
            stop(prometheus)
