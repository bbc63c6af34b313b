"""The score monitor's statistics: the two-sample KS test and the exact Beta-Binomial tails against
scipy, the false-alarm rates of the drift and flag-rate tests under no drift (with the calibration's
own randomness: a fresh calibration sample per simulated window) and their power, and the Monitor
itself (windows, states, the Prometheus exposition) fed real events in-process."""

import asyncio
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from vae_serve.core.calibration import calibration_of, decide
from vae_serve.core.manifest import ScoreCalibration
from vae_serve.core.scores import SCORES
from vae_serve.service.monitor.drift import (
    RowWindow,
    beta_binomial_sf,
    drift_test,
    kolmogorov_tail,
    ks_p_value,
    ks_statistic,
    ranks_of,
)
from vae_serve.service.monitor.events import ScoredEvent
from vae_serve.service.monitor.flag_rate import RateCounts, bucket_label, flag_rate_p_value, rate_bucket
from vae_serve.service.monitor.monitor import Monitor
from vae_serve.service.settings import Settings

SIMULATIONS = 2000
ALPHA = 0.01
# Over 2000 independent windows the alarm count is binomial: its standard deviation at alpha = 0.01
# is sqrt(0.01 * 0.99 / 2000) = 0.0022, so alpha + 3 sd = 0.0167 bounds the rate of a test that
# holds its level, and fails only once in ~700 runs of a test that holds it exactly (seeded: never).
FALSE_ALARM_BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)


def calibrated(values: np.ndarray) -> ScoreCalibration:
    """The manifest's calibration record of ``values``, exactly as the exporter writes it."""
    record = calibration_of({"negative_elbo": values}, 0, "simulated")["scores"]["negative_elbo"]
    return ScoreCalibration(**record)


def fresh_calibrations(rng, n: int, count: int) -> list[ScoreCalibration]:
    """``count`` calibrations of n standard normal draws each, made by ``calibration_of`` five at a
    time (one per registered score name: its list of levels is the slow part, shared by the five)."""
    made = []
    for _ in range(0, count, len(SCORES)):
        records = calibration_of({name: rng.normal(size=n) for name in SCORES}, 0, "simulated")["scores"]
        made += [ScoreCalibration(**record) for record in records.values()]
    return made[:count]


@pytest.fixture(scope="module")
def calibrations_200() -> list[ScoreCalibration]:
    """2000 independent calibrations of 200 rows: each simulated window gets its own."""
    return fresh_calibrations(np.random.default_rng(0), 200, SIMULATIONS)


def window_ranks(window: np.ndarray, calibration: ScoreCalibration) -> np.ndarray:
    """The served path: decide() places the scores, the monitor turns percentiles into ranks."""
    return ranks_of(decide(window, calibration, 0.01, None).percentile, calibration.num_examples)


# --- the tests' numbers against scipy ---------------------------------------------------------------


@pytest.mark.parametrize(("n", "rows", "shift"), [(201, 500, 0.0), (201, 500, 0.2), (101, 2000, 0.1), (251, 300, 0.3)])
def test_ks_statistic_equals_scipy_and_the_p_value_is_close(n, rows, shift):
    # With n - 1 dividing 1000, every calibration score is one of the 1001 stored quantiles, so the
    # ranks recovered from the served percentiles are exact and D is scipy's two-sample D exactly.
    rng = np.random.default_rng(n + rows)
    calibration_values, window = rng.normal(size=n), rng.normal(shift, size=rows)
    statistic = ks_statistic(window_ranks(window, calibrated(calibration_values)), n)
    reference = stats.ks_2samp(window, calibration_values, method="asymp")
    assert statistic == pytest.approx(reference.statistic, abs=1e-12)
    # scipy's "asymp" reads the exact one-sample Kolmogorov law at round(m); ours is the limit law
    # at Stephens' corrected lambda. They agree within 2 % here; 5 % (or 0.005) is the tolerance.
    assert ks_p_value(statistic, rows, n) == pytest.approx(reference.pvalue, rel=0.05, abs=0.005)


def test_kolmogorov_tail_equals_scipy_kstwobign():
    for lam in (0.1, 0.3, 0.5, 0.8, 1.0, 1.17, 1.19, 1.5, 2.0, 3.0):
        assert kolmogorov_tail(lam) == pytest.approx(stats.kstwobign.sf(lam), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("trials", "count", "a", "b"),
    [
        (2000, 30, 2, 199),
        (2000, 5, 2, 199),
        (5000, 400, 7, 138),
        (50_000, 600, 2, 199),
        (10, 3, 1, 1),
        (300, 1, 1, 144),
    ],
)
def test_beta_binomial_tail_equals_scipy(trials, count, a, b):
    assert beta_binomial_sf(count, trials, a, b) == pytest.approx(stats.betabinom.sf(count - 1, trials, a, b), rel=1e-8)


def test_beta_binomial_far_tail_is_precise_where_one_minus_cdf_is_not():
    # scipy's sf is 1 - cdf out here (2.4e-14, all rounding); the sum of its pmf is the truth.
    truth = stats.betabinom.pmf(np.arange(190, 201), 200, 2, 10).sum()
    assert beta_binomial_sf(190, 200, 2, 10) == pytest.approx(truth, rel=1e-8)
    assert beta_binomial_sf(0, 200, 2, 10) == 1.0 and beta_binomial_sf(201, 200, 2, 10) == 0.0


# --- the drift test: level and power ----------------------------------------------------------------


def drift_alarm_rate(rng, calibrations: list[ScoreCalibration], contamination: float, rows: int = 500) -> float:
    alarms = 0
    for calibration in calibrations:  # a fresh calibration per window: its randomness counts
        window = rng.normal(size=rows)
        outliers = rng.random(rows) < contamination
        window[outliers] = rng.normal(6.0, 1.0, size=outliers.sum())  # far out in the upper tail
        alarms += drift_test(window_ranks(window, calibration), calibration.num_examples).p_value < ALPHA
    return alarms / len(calibrations)


def test_drift_test_holds_its_level_under_no_drift(calibrations_200):
    assert drift_alarm_rate(np.random.default_rng(1), calibrations_200, 0.0) <= FALSE_ALARM_BOUND


def test_drift_test_alarms_on_a_fifth_of_far_out_scores(calibrations_200):
    assert drift_alarm_rate(np.random.default_rng(2), calibrations_200[:200], 0.2) >= 0.99


# --- the flag-rate test: level and power ------------------------------------------------------------


def flag_alarm_rate(rng, calibrations: list[ScoreCalibration], rate: float, rows: int, extra_rate: float) -> float:
    """The share of windows whose flag-rate test alarms; ``extra_rate`` of each window's rows lie
    above any threshold, adding that much to its flag rate."""
    alarms = 0
    for calibration in calibrations:
        window = rng.normal(size=rows)
        window[rng.random(rows) < extra_rate] = 10.0
        decision = decide(window, calibration, rate, None)
        counts = RateCounts()
        counts.add(rows, int(decision.is_anomaly.sum()), decision.false_positive_rate)
        counts.evaluate(rate, calibration.num_examples, ALPHA)
        alarms += counts.alarm
    return alarms / len(calibrations)


@pytest.mark.parametrize(("n", "rate"), [(200, 0.01), (144, 0.05), (200, 0.001)])
def test_flag_rate_p_value_holds_its_level_with_the_calibrations_randomness(calibrations_200, n, rate):
    # A z-test around N a alarms here far beyond alpha: the threshold's flag probability is a skewed
    # Beta draw whose mean sits near (1 + a (n - 1)) / (n + 1), not a. The exact test does not. The
    # p-value is valid at any N, so it is checked below the minimum count an alarm needs too.
    rng = np.random.default_rng(3)
    calibrations = calibrations_200 if n == 200 else fresh_calibrations(rng, n, SIMULATIONS)
    alarms = 0
    for calibration in calibrations:
        decision = decide(rng.normal(size=1000), calibration, rate, None)
        flagged = int(decision.is_anomaly.sum())
        alarms += flag_rate_p_value(1000, flagged, decision.false_positive_rate, n) < ALPHA
    assert alarms / SIMULATIONS <= FALSE_ALARM_BOUND


def test_flag_rate_test_alarms_on_a_doubled_rate_with_a_large_enough_calibration():
    # n = 5000 calibration rows: the threshold's own flag probability varies by ~0.0014 around 0.01,
    # so 5000 rows at twice the promise stand ~5 standard deviations out. With n = 200 it varies by
    # ~0.007 and no test that holds its level can tell a doubled rate from an unlucky calibration.
    rng = np.random.default_rng(4)
    calibrations = fresh_calibrations(rng, 5000, 200)
    assert flag_alarm_rate(rng, calibrations, 0.01, 5000, 0.01) >= 0.95
    assert flag_alarm_rate(rng, calibrations, 0.01, 5000, 0.0) <= 0.05  # the same windows, undrifted
    assert flag_alarm_rate(rng, calibrations[:20], 0.01, 500, 0.01) == 0  # below max(100, 10 / a) rows: no alarm


def test_rate_buckets_are_the_nearest_in_log_space():
    assert [bucket_label(rate_bucket(rate)) for rate in (0.01, 0.012, 0.015, 0.0, 1e-9, 0.9, 0.0007)] == [
        "0.01",
        "0.01",
        "0.02",
        "0.0001",
        "0.0001",
        "0.5",
        "0.0005",
    ]


# --- the window and the Monitor in-process ----------------------------------------------------------


def test_window_keeps_the_latest_rows_whatever_the_pieces():
    window = RowWindow(7)
    values = np.arange(20, dtype=np.float64)
    for piece in np.split(values, [3, 4, 12, 13, 19]):
        window.append(piece)
    assert window.rows == 7 and sorted(window.snapshot()) == list(values[-7:])
    window.append(np.arange(100.0, 130.0))  # more than the capacity at once
    assert sorted(window.snapshot()) == list(np.arange(123.0, 130.0))


def event_of(calibration: ScoreCalibration, scores: np.ndarray, rate: float, version: str = "1") -> ScoredEvent:
    decision = decide(scores, calibration, rate, None)
    return ScoredEvent(
        "digits", version, "negative_elbo", calibration.num_examples, scores, decision.percentile,
        decision.p_value, decision.is_anomaly, decision.threshold, decision.false_positive_rate, True, 0, "r", "", 0.0,
    )  # fmt: skip


def scraped(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_monitor_counts_tests_and_exports_then_forgets():
    rng = np.random.default_rng(5)
    calibration = calibrated(rng.normal(size=201))
    registry = CollectorRegistry()
    monitor = Monitor(Settings(bundle="unused", monitor_window_rows=300, monitor_step_rows=50), registry)
    normal = [rng.normal(size=40) for _ in range(10)]
    p_values = np.concatenate([decide(rows, calibration, 0.01, None).p_value for rows in normal])

    async def feed(batches) -> None:
        """Record every batch, then wait (bounded) for the background task's next evaluation."""
        await monitor.start()
        evaluations = sum(state.evaluations for state in monitor.states())
        for rows in batches:
            monitor.record(event_of(calibration, rows, 0.012))
        for _ in range(200):
            if monitor.states()[0].evaluations > evaluations:
                break
            await asyncio.sleep(0.05)
        await monitor.close()

    asyncio.run(feed(normal))
    (state,) = monitor.states()
    assert (state.window_rows, state.window_capacity_rows, state.rows_seen, state.calibration_rows) == (
        300,
        300,
        400,
        201,
    )
    assert state.evaluations >= 1 and not state.drift_alarm and state.drift_p_value > 0.001
    (flag,) = state.flag_rates
    assert (flag.false_positive_rate, flag.rows) == (0.01, 400) and not flag.alarm
    labels = (("model", "digits"), ("score", "negative_elbo"), ("version", "1"))
    metrics = scraped(registry)
    for bound in (0.01, 0.1, 0.5, 1.0):
        le = tuple(sorted((*labels, ("le", str(bound)))))
        assert metrics[("vae_score_p_value_bucket", le)] == np.count_nonzero(p_values <= bound)
    assert metrics[("vae_score_p_value_count", labels)] == 400
    assert metrics[("vae_drift_window_rows", labels)] == 300
    assert metrics[("vae_drift_alarm", labels)] == 0
    rate_labels = tuple(sorted((*labels, ("fpr", "0.01"))))
    assert metrics[("vae_score_rows_total", rate_labels)] == 400
    assert metrics[("vae_score_expected_flags_total", rate_labels)] == pytest.approx(400 * 0.012)

    asyncio.run(feed([rng.normal(6.0, 1.0, size=100) for _ in range(7)]))  # far out; 1100 rows >= 10 / a
    (state,) = monitor.states("digits", "1")
    assert state.drift_alarm and state.flag_rates[0].alarm and state.tail_exceedances[0][2] == 300
    assert scraped(registry)[("vae_drift_alarm", labels)] == 1
    assert monitor.states("digits", "2") == [] and monitor.states("other") == []

    monitor.forget("digits", "1")
    assert monitor.states() == [] and not any(name.startswith("vae_drift") for name, _ in scraped(registry))
