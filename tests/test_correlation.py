"""Correlation, bootstrap intervals, selection regret and top-k overlap of the probe study."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from ifid_callback.probes.stats import (
    bootstrap_correlation,
    correlation,
    selection_regret,
    top_k_overlap,
)

X = [3.1, 1.2, 5.5, 2.0, 4.4, 0.3, 2.9, 6.1]
Y = [2.8, 1.9, 6.0, 1.1, 3.9, 0.9, 3.6, 5.2]


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_matches_scipy(method):
    ref = scipy.stats.pearsonr(X, Y)[0] if method == "pearson" else scipy.stats.spearmanr(X, Y)[0]
    assert correlation(X, Y, method) == pytest.approx(ref, abs=1e-12)


def test_correlation_hand_cases():
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert correlation([1, 2, 3], [3, 2, 1], "spearman") == pytest.approx(-1.0)
    # Monotone but not linear: Spearman is exactly 1, Pearson below it.
    x = [1, 2, 3, 4, 5]
    y = [v**4 for v in x]
    assert correlation(x, y, "spearman") == pytest.approx(1.0)
    assert correlation(x, y, "pearson") < 0.99
    assert math.isnan(correlation([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_bootstrap_interval_contains_estimate(method):
    res = bootstrap_correlation(X, Y, method, num_resamples=500, seed=1)
    assert res.low <= res.value <= res.high
    assert -1.0 <= res.low and res.high <= 1.0
    assert res.value == pytest.approx(correlation(X, Y, method))
    test = scipy.stats.pearsonr if method == "pearson" else scipy.stats.spearmanr
    assert res.p_value == pytest.approx(test(X, Y)[1])
    assert res.n == len(X) and 0 < res.resamples <= 500
    again = bootstrap_correlation(X, Y, method, num_resamples=500, seed=1)
    assert (again.low, again.high) == (res.low, res.high)


def test_bootstrap_interval_against_independent_loop():
    # A plain per-resample scipy loop with the same indices gives the same percentiles.
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(X), size=(300, len(X)))
    x, y = np.asarray(X), np.asarray(Y)
    vals = [scipy.stats.spearmanr(x[i], y[i])[0] for i in idx if np.ptp(x[i]) and np.ptp(y[i])]
    low, high = np.quantile(vals, [0.025, 0.975])
    res = bootstrap_correlation(X, Y, "spearman", num_resamples=300, seed=3)
    assert res.resamples == len(vals)
    assert min(low, res.value) == pytest.approx(res.low, abs=1e-9)
    assert max(high, res.value) == pytest.approx(res.high, abs=1e-9)


def test_bootstrap_perfect_correlation_is_degenerate_interval():
    res = bootstrap_correlation([1, 2, 3, 4], [10, 20, 30, 40], num_resamples=200)
    assert res.value == pytest.approx(1.0)
    assert res.low == pytest.approx(1.0) and res.high == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="equal length"):
        correlation([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        correlation([1], [1])
    with pytest.raises(ValueError, match="finite"):
        correlation([1, float("nan"), 3], [1, 2, 3])
    with pytest.raises(ValueError, match="method"):
        correlation(X, Y, "kendall")
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_correlation(X, Y, confidence=1.5)


def test_selection_regret_hand_cases():
    gfid = [10.0, 7.0, 12.0, 9.0]
    assert selection_regret([0.5, 0.1, 0.9, 0.3], gfid) == 0.0  # picks item 1, the best
    assert selection_regret([0.1, 0.5, 0.9, 0.3], gfid) == pytest.approx(3.0)  # picks item 0
    # Higher-is-better metric (PSNR): picks item 2.
    assert selection_regret([20, 25, 30, 22], gfid, lower_is_better=False) == pytest.approx(5.0)


def test_top_k_overlap_hand_cases():
    gfid = [10.0, 7.0, 12.0, 9.0]  # best two: items 1, 3
    assert top_k_overlap([0.2, 0.1, 0.9, 0.15], gfid, 2) == 1.0
    assert top_k_overlap([0.1, 0.8, 0.2, 0.9], gfid, 2) == 0.0
    assert top_k_overlap([0.1, 0.2, 0.9, 0.8], gfid, 2) == 0.5
    assert top_k_overlap([1, 2, 3, 4], gfid, 4) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        top_k_overlap([1, 2], [1, 2], 3)
