"""The natural family's primary test (ragged paired bootstrap) and its power simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from ifid_callback.probes.family_stats import (
    measured_noise,
    ragged_paired_difference,
    seed_counts_for,
    simulate_power,
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
