"""The natural family's primary test (ragged paired bootstrap) and its power simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from ifid_callback.probes.family_stats import (
    measured_noise,
    ragged_correlation,
    ragged_paired_difference,
    ragged_partial_correlation,
    seed_counts_for,
    seed_spread,
    simulate_power,
    stratified_paired_difference,
)

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "digits" / "results.json"


def test_point_estimate_uses_each_vaes_own_seed_mean():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [5.0, 1.0, 4.0, 2.0, 3.0]
    seeds = [[1.0], [3.0, 1.0], [2.5], [4.0, 6.0], [5.5]]  # means 1, 2, 2.5, 5, 5.5
    y = [1.0, 2.0, 2.5, 5.0, 5.5]
    got = ragged_paired_difference(a, b, seeds, num_resamples=200)
    expected = scipy.stats.spearmanr(a, y)[0] - scipy.stats.spearmanr(b, y)[0]
    assert got.difference == pytest.approx(expected)
    assert got.seed_level and got.n == 5 and got.low <= got.high


def test_seed_resampling_widens_the_interval():
    rng = np.random.default_rng(0)
    a = np.arange(20.0)
    b = rng.permutation(20).astype(float)
    calm = [[v] for v in a + rng.normal(0, 2, 20)]
    noisy = [[v[0] - 8, v[0] + 8] for v in calm]  # same means, large seed spread
    width = [
        (r.high - r.low)
        for r in (ragged_paired_difference(a, b, s, num_resamples=2000) for s in (calm, noisy))
    ]
    assert width[1] > width[0]


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="at least one probe seed"):
        ragged_paired_difference([1, 2, 3], [3, 2, 1], [[1.0], [], [2.0]])
    with pytest.raises(ValueError, match="one entry per VAE"):
        ragged_paired_difference([1, 2, 3], [3, 2], [[1.0], [2.0], [3.0]])
    with pytest.raises(ValueError, match="not jointly possible"):
        simulate_power(8, rho_a=0.9, rho_b=-0.9, rho_ab=0.9, sigma_between=1, sigma_seed=1)


def test_second_seeds_for_a_third():
    counts = seed_counts_for(48, 1 / 3, np.random.default_rng(0))
    assert counts.sum() == 48 + 16 and set(counts.tolist()) == {1, 2}


def test_power_is_high_for_a_large_effect_and_low_without_one():
    common = dict(sigma_between=3.0, sigma_seed=0.5, simulations=30, num_resamples=200)
    strong = simulate_power(40, rho_a=0.8, rho_b=0.0, rho_ab=0.3, **common)
    null = simulate_power(40, rho_a=0.4, rho_b=0.4, rho_ab=0.7, **common)
    assert strong["power"] >= 0.8 and null["power"] <= 0.2


def test_measured_noise_of_the_committed_digits_study():
    noise = measured_noise(RESULTS, "A")
    assert noise.n == 8 and noise.seeds_per_vae == 2 and noise.num_samples == 1000
    assert noise.sigma_seed == pytest.approx(2.22, abs=0.01)
    assert noise.sigma_between_observed == pytest.approx(3.52, abs=0.01)
    assert noise.sigma_between < noise.sigma_between_observed


# --- secondary analyses -------------------------------------------------------------------


def _ragged_family(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 3, n)
    a = y + rng.normal(0, 1, n)
    b = rng.normal(0, 1, n)
    seeds = [[v + rng.normal(0, 0.5)] * (1 + (i % 3 == 0)) for i, v in enumerate(y)]
    seeds = [[s[0], s[0] + 0.7] if len(s) == 2 else s for s in seeds]
    return a, b, seeds, np.array([np.mean(s) for s in seeds])


def test_ragged_correlation_is_scipys_on_the_seed_means():
    a, _, seeds, y = _ragged_family()
    for method, ref in (("spearman", scipy.stats.spearmanr), ("pearson", scipy.stats.pearsonr)):
        got = ragged_correlation(a, seeds, method, num_resamples=500)
        value, p = ref(a, y)
        assert got.value == pytest.approx(value) and got.p_value == pytest.approx(p)
        assert got.low <= got.value <= got.high and got.n == 12 and got.resamples == 500


def test_rank_partial_correlation_is_the_correlation_of_rank_residuals():
    a, b, seeds, y = _ragged_family(20, seed=3)
    ra, rb, ry = (scipy.stats.rankdata(v) for v in (a, b, y))

    def residual(v, z):
        design = np.column_stack([np.ones_like(z), z])
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    expected = np.corrcoef(residual(ra, rb), residual(ry, rb))[0, 1]
    got = ragged_partial_correlation(a, b, seeds, "spearman", num_resamples=300)
    assert got.value == pytest.approx(expected) and got.method == "partial-spearman"
    pearson = ragged_partial_correlation(a, b, seeds, "pearson", num_resamples=300)
    expected_p = np.corrcoef(residual(a, b), residual(y, b))[0, 1]
    assert pearson.value == pytest.approx(expected_p)
    # A predictor that is iFID itself adds nothing: its partial correlation given iFID is undefined.
    same = ragged_partial_correlation(a, a, seeds, num_resamples=50)
    assert same.resamples == 0 and np.isnan(same.value)


def test_stratified_difference_pools_within_stratum_ranks_and_ignores_stratum_offsets():
    a, b, seeds, y = _ragged_family(12, seed=5)
    strata = ["s1"] * 6 + ["s2"] * 6
    got = stratified_paired_difference(a, b, seeds, strata, num_resamples=400)

    def pooled(v):
        return np.concatenate([scipy.stats.rankdata(v[:6]), scipy.stats.rankdata(v[6:])])

    ca = scipy.stats.pearsonr(pooled(a), pooled(y))[0]
    cb = scipy.stats.pearsonr(pooled(b), pooled(y))[0]
    assert got.corr_a == pytest.approx(ca) and got.corr_b == pytest.approx(cb)
    assert got.method == "stratified-spearman" and got.low <= got.high and got.n == 12
    # A shape that shifts every gFID (and iFID) of its stratum changes nothing once adjusted.
    shifted = [[v + 100 for v in s] if i >= 6 else s for i, s in enumerate(seeds)]
    a2 = np.where(np.arange(12) >= 6, a - 50, a)
    again = stratified_paired_difference(a2, b, shifted, strata, num_resamples=400)
    assert again.difference == pytest.approx(got.difference)
    assert (again.low, again.high) == pytest.approx((got.low, got.high))
    with pytest.raises(ValueError, match="at least 2 VAEs"):
        stratified_paired_difference(a, b, seeds, ["s1"] * 11 + ["s2"])


def test_seed_spread_by_hand():
    # Within-VAE variances (ddof 1) of [1, 3] and [5, 5]: 2 and 0, pooled std 1; the VAE means
    # 2, 2, 5, 10 have a ddof-1 std of sqrt(14.25).
    got = seed_spread([[1.0, 3.0], [2.0], [5.0, 5.0], [10.0]])
    assert got["seed_std"] == pytest.approx(1.0)
    assert got["vae_std"] == pytest.approx(np.sqrt(14.25))
    assert got["ratio"] == pytest.approx(1 / np.sqrt(14.25))
    assert got["vaes_with_seeds"] == 2 and got["n"] == 4
    assert np.isnan(seed_spread([[1.0], [2.0], [4.0]])["seed_std"])
