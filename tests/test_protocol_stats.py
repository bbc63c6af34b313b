"""bench/protocol.py's statistics and splits: the bootstrap AUROC against scikit-learn, and the
promise that no test row is ever a training or selection row."""

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from protocol_data import load_table_data, table_task, table_test_rows
from protocol_report import summarize_column
from protocol_stats import (
    auroc_percent,
    bootstrap_counts,
    cauchy_combination,
    min_p,
    weighted_auroc,
)


def tied_scores(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.3).astype(np.int64)
    return np.round(rng.normal(size=rows) + labels, 1), labels  # rounding makes many ties


def test_plain_auroc_equals_scikit_learns_with_ties():
    scores, labels = tied_scores(2000, 1)
    assert auroc_percent(scores, labels) == pytest.approx(roc_auc_score(labels, scores) * 100, abs=1e-9)


def test_each_bootstrap_resample_equals_scikit_learn_on_the_resampled_rows():
    scores, labels = tied_scores(300, 2)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 300, size=(5, 300))
    counts = np.stack([np.bincount(row, minlength=300) for row in draws]).astype(np.float64)
    expected = [roc_auc_score(labels[row], scores[row]) for row in draws]
    np.testing.assert_allclose(weighted_auroc(scores, labels, counts), expected, atol=1e-12)


def test_bootstrap_counts_are_seeded_and_sum_to_the_rows():
    first = np.concatenate(list(bootstrap_counts(50, resamples=250)))
    again = np.concatenate(list(bootstrap_counts(50, resamples=250)))
    assert first.shape == (250, 50)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first.sum(axis=1), np.full(250, 50.0))


def test_a_columns_seed_means_and_intervals():
    rows = 400
    labels = {c: {"test_y": tied_scores(rows, 10 + c)[1]} for c in (0, 1)}
    cells = {(s, c): {"test": tied_scores(rows, 10 + c)[0] + 0.1 * s} for s in (0, 1) for c in (0, 1)}
    figures = summarize_column(cells, labels, list(bootstrap_counts(rows, resamples=200)))
    for seed in (0, 1):
        expected = np.mean([roc_auc_score(labels[c]["test_y"], cells[(seed, c)]["test"]) * 100 for c in (0, 1)])
        assert figures["per_seed_mean"][seed] == pytest.approx(expected, abs=0.01)
    assert figures["mean"]["low"] <= figures["mean"]["auroc"] <= figures["mean"]["high"]
    for c in (0, 1):
        assert figures["per_class"][c]["low"] <= figures["per_class"][c]["auroc"] <= figures["per_class"][c]["high"]
    # the mean over two classes varies less than one class alone
    one_class = figures["per_class"][0]["high"] - figures["per_class"][0]["low"]
    assert figures["mean"]["high"] - figures["mean"]["low"] < one_class


def test_combinations_rank_a_smaller_p_value_as_more_anomalous():
    p_values = [np.array([0.5, 0.01, 0.2]), np.array([0.5, 0.02, 0.9])]
    assert np.argmax(cauchy_combination(p_values)) == 1
    assert np.argmax(min_p(p_values)) == 1
    assert np.isfinite(cauchy_combination([np.array([0.0, 1.0])])).all()


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_no_test_row_is_fitted_or_used_for_selection(name):
    table = load_table_data(name)
    test = table_test_rows(table)
    assert test.sum() == pytest.approx(0.4 * len(test), abs=2)
    test_rows = {row.tobytes() for row in table.x[test].astype(np.float32)}
    for normal in table.normal_classes:
        rows = table_task(table, normal)
        assert {row.tobytes() for row in rows.test_x} == test_rows  # the same test rows for every class
        fitted = {row.tobytes() for row in rows.fit_x.astype(np.float32)}
        selection_normal = {row.tobytes() for row in rows.selection_x[rows.selection_y == 0]}
        assert not fitted & test_rows
        assert not selection_normal & test_rows
        assert not selection_normal & fitted
        assert len(selection_normal) == round(0.25 * (len(fitted) + len(selection_normal)))
