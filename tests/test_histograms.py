"""The two histograms the model explorer draws, on a real server: GetModelInfo's calibration histogram
of each score (derived from the bundle's recorded quantile grid) against an independent recomputation
from the manifest, and GetMonitoring's p-value histogram against the p-values the client was answered
and against the server's own /metrics (vae_score_p_value), scraped for real."""

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import VAE_SERVE, start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.client.names import SCORE_TYPES
from vae_serve.core.bundle import read_manifest
from vae_serve.export.sources import load_source, make_splits

VAE_CLIENT = str(Path(VAE_SERVE).with_name("vae-client"))
BINS = 30  # the proto's ScoreCalibration.histogram: 30 equal-width bins
SCORED = {"reconstruction_error": 0, "negative_elbo": 1}  # score -> the slice of test rows it scores
POLL_ROUNDS, POLL_PAUSE_S = 100, 0.05  # a bounded wait: a row is counted just after its reply goes out


@pytest.fixture(scope="module")
def server(digits_bundle):
    """A server with monitoring and metrics on (the defaults)."""
    process = start_server("--bundle", str(digits_bundle))
    yield process
    assert process.stop() == 0, process.log()


def test_the_calibration_histogram_is_the_recorded_quantiles_binned(server, digits_bundle):
    calibration = read_manifest(digits_bundle).calibration
    levels = np.asarray(calibration.quantile_levels)
    info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
    assert len(info.calibration) == len(calibration.scores) >= 2
    names = {value: name for name, value in SCORE_TYPES.items()}
    for served in info.calibration:
        stored = calibration.scores[names[served.score]]
        quantiles = np.asarray(stored.quantiles)
        edges, counts = np.asarray(served.histogram.edges), np.asarray(served.histogram.counts)
        assert len(edges) == BINS + 1 and len(counts) == BINS
        np.testing.assert_allclose(edges, np.linspace(quantiles[0], quantiles[-1], BINS + 1), rtol=0, atol=1e-12)
        # The empirical CDF of the 1,001-level grid (linear between its points) at the bin edges.
        expected = np.diff(np.interp(edges, quantiles, levels)) * stored.num_examples
        np.testing.assert_allclose(counts, expected, rtol=1e-9, atol=1e-9 * stored.num_examples)
        assert abs(counts.sum() - stored.num_examples) <= 1e-3 * stored.num_examples  # the grid's resolution
        assert (counts >= 0).all() and counts.max() > 0


def test_vae_client_info_json_carries_the_histograms(server):
    info = server.stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
    command = [VAE_CLIENT, "--target", f"127.0.0.1:{server.port}", "--json", "info"]
    printed = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert len(printed["calibration"]) == len(info.calibration)
    for entry, served in zip(printed["calibration"], info.calibration, strict=True):
        assert entry["histogram"] == {"edges": list(served.histogram.edges), "counts": list(served.histogram.counts)}


def scrape(metrics_url: str) -> dict:
    """vae_score_p_value of a real /metrics scrape: {(score, le or kind): value} for the digits model."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("vae_score_p_value") and sample.labels["model"] == "digits":
                key = sample.labels.get("le", sample.name.removeprefix("vae_score_p_value_"))
                samples[(sample.labels["score"], key)] = sample.value
    return samples


def test_the_p_value_histogram_is_what_the_metric_and_the_replies_say(server):
    rows = make_splits(load_source("digits")).test.x.reshape(-1, 64).astype(np.float32)
    answered = {}
    for name, part in SCORED.items():
        chosen = rows[part::2][:60]
        request = vae_pb2.ScoreAnomalyRequest(x=tensor(chosen), score=SCORE_TYPES[name], false_positive_rate=0.05)
        answered[name] = np.asarray(server.stub.ScoreAnomaly(request, timeout=30).p_value)
    for _ in range(POLL_ROUNDS):  # bounded: until every row is counted
        reply = server.stub.GetMonitoring(vae_pb2.GetMonitoringRequest(), timeout=10)
        if sum(sum(entry.p_value_histogram.counts) for entry in reply.scores) == 120:
            break
        time.sleep(POLL_PAUSE_S)
    metrics = scrape(server.metrics_url)  # nothing is scored between the reply and the scrape
    names = {value: name for name, value in SCORE_TYPES.items()}
    assert sorted(names[entry.score] for entry in reply.scores) == sorted(SCORED)
    for entry in reply.scores:
        name, histogram = names[entry.score], entry.p_value_histogram
        bounds, counts = list(histogram.upper_bounds), np.asarray(histogram.counts)
        assert len(counts) == len(bounds) + 1 and bounds[-1] == 1.0 and counts[-1] == 0
        assert counts.sum() == entry.rows_seen == len(answered[name])
        p_values = answered[name]
        assert counts.tolist() == np.bincount(np.searchsorted(bounds, p_values), minlength=len(counts)).tolist()
        cumulative = np.cumsum(counts)  # the metric's buckets count rows at or below each bound
        for bound, total in zip(bounds, cumulative[:-1], strict=True):
            assert metrics[(name, f"{bound}")] == total, (name, bound)
        assert metrics[(name, "+Inf")] == cumulative[-1] == metrics[(name, "count")]
        assert histogram.sum == pytest.approx(metrics[(name, "sum")], rel=1e-12)
        assert histogram.sum == pytest.approx(p_values.sum(), rel=1e-9)
