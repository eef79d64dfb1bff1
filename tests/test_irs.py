"""Image Retrieval Score and its coupon-collector estimate."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import torch

from ifid_callback.probes.irs import (
    coupon_collector_estimate,
    coupon_log_likelihood,
    image_retrieval_score,
    retrieved_counts,
)


def _train(n=50, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_samples_equal_to_training_images_retrieve_all():
    train = _train()
    res = image_retrieval_score(train.clone(), train)
    assert res.irs == 1.0 and res.retrieved == 50
    assert math.isinf(res.irs_inf) and math.isinf(res.irs_inf_high)
    # 50 distinct in 50 draws is unlikely unless there are many more than 50 coupons.
    assert res.irs_inf_low > 1.0


def test_all_samples_retrieving_one_image():
    train = _train()
    samples = train[7] + 1e-3 * torch.randn(30, 8, generator=torch.Generator().manual_seed(1))
    res = image_retrieval_score(samples, train)
    assert res.irs == pytest.approx(1 / 50)
    assert res.retrieved == 1
    assert res.irs_inf == pytest.approx(1 / 50)  # one coupon explains 30 repeats best
    counts = retrieved_counts(samples, train)
    assert counts[7] == 30 and counts.sum() == 30


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
def test_counts_match_brute_force(distance):
    train, samples = _train(40, 6, 0), _train(25, 6, 5)
    if distance == "sqeuclidean":
        d = ((samples[:, None] - train[None]) ** 2).sum(-1)
    else:
        d = 1 - torch.nn.functional.cosine_similarity(samples[:, None], train[None], dim=-1)
    expected = torch.bincount(d.argmin(1), minlength=40)
    assert torch.equal(retrieved_counts(samples, train, distance=distance), expected)
    res = image_retrieval_score(samples, train, distance=distance)
    assert res.retrieved == int((expected > 0).sum())


def _stirling2(n, k):
    # S(n, k) by the recurrence, independent of the library.
    table = [[0] * (k + 1) for _ in range(n + 1)]
    table[0][0] = 1
    for i in range(1, n + 1):
        for j in range(1, k + 1):
            table[i][j] = j * table[i - 1][j] + table[i - 1][j - 1]
    return table[n][k]


def test_likelihood_is_the_exact_coupon_probability():
    # P(k | n, s) = S(n, k) s! / ((s - k)! s^n); the library drops only the Stirling factor.
    for n, k, s in product([4, 7], [1, 3, 4], [4, 6, 9]):
        exact = _stirling2(n, k) * math.factorial(s) / (math.factorial(s - k) * s**n)
        ll = coupon_log_likelihood(s, n, k)
        assert math.log(exact) == pytest.approx(ll + math.log(_stirling2(n, k)), rel=1e-10)
    # Brute force over small s agrees with the maximiser and the probabilities sum to 1.
    n, s = 6, 5
    assert sum(
        _stirling2(n, k) * math.factorial(s) / (math.factorial(s - k) * s**n)
        for k in range(1, s + 1)
    ) == pytest.approx(1.0)
    n, k = 20, 9
    lls = {s: coupon_log_likelihood(s, n, k) for s in range(k, 400)}
    assert coupon_collector_estimate(n, k)[0] == max(lls, key=lls.get)


def test_coupon_estimate_recovers_the_number_of_coupons():
    rng = np.random.default_rng(0)
    hits = 0
    for _trial in range(20):
        s_true = 150
        draws = rng.integers(0, s_true, 200)
        s_hat, low, high = coupon_collector_estimate(200, len(set(draws.tolist())))
        assert low <= s_hat <= high
        hits += low <= s_true <= high
    assert hits >= 16  # a 95% interval covers the truth in most of 20 trials


def test_coupon_estimate_edges_and_monotonicity():
    assert coupon_collector_estimate(10, 1) == (1.0, 1.0, 1.0)
    s_hat, low, high = coupon_collector_estimate(10, 10)
    assert math.isinf(s_hat) and math.isinf(high) and low >= 10
    estimates = [coupon_collector_estimate(100, k)[0] for k in (20, 40, 60, 80, 95)]
    assert estimates == sorted(estimates)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        coupon_collector_estimate(5, 6)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        coupon_collector_estimate(5, 0)
