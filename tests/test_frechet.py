import numpy as np
import pytest
import scipy.linalg
import torch

from ifid_callback.functional.frechet import frechet_distance, gaussian_statistics, statistics_of


def _scipy_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _random_stats(rng, d, n):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d,n", [(8, 200), (32, 500), (64, 1000)])
def test_matches_scipy_on_random_covariances(d, n):
    rng = np.random.default_rng(d)
    mu1, s1 = _random_stats(rng, d, n)
    mu2, s2 = _random_stats(rng, d, n)
    ours = float(frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2))))
    ref = _scipy_fd(mu1, s1, mu2, s2)
    assert abs(ours - ref) / abs(ref) < 1e-6


def test_matches_scipy_on_rank_deficient_covariances():
    # Fewer samples than dimensions: both covariances are singular.
    rng = np.random.default_rng(0)
    d = 32
    a = rng.standard_normal((12, d))
    b = rng.standard_normal((20, d)) * 1.5 + 0.3
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    ours = float(frechet_distance(*(torch.from_numpy(x) for x in (mu1, s1, mu2, s2))))
    ref = _scipy_fd(mu1, s1, mu2, s2)
    assert abs(ours - ref) / abs(ref) < 1e-6


def test_identical_distributions_give_zero_never_negative():
    rng = np.random.default_rng(1)
    mu, s = _random_stats(rng, 16, 10)  # rank-deficient
    fd = frechet_distance(
        torch.from_numpy(mu), torch.from_numpy(s), torch.from_numpy(mu), torch.from_numpy(s)
    )
    assert fd.dtype == torch.float64
    assert 0.0 <= float(fd) < 1e-8


def test_hand_computed_diagonal_case():
    # 1-D Gaussians: (m1-m2)^2 + (s1 - s2)^2 in terms of standard deviations.
    fd = frechet_distance(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]])
    )
    assert float(fd) == pytest.approx(4.0 + 1.0)


def test_statistics_from_sums_match_numpy():
    x = torch.randn(50, 6, dtype=torch.float64)
    mu, sigma = gaussian_statistics(x.sum(0), x.T @ x, 50)
    np.testing.assert_allclose(mu.numpy(), x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        sigma.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-10, atol=1e-12
    )
    mu2, sigma2 = statistics_of(x)
    torch.testing.assert_close(mu2, mu) and torch.testing.assert_close(sigma2, sigma)


def test_errors():
    with pytest.raises(ValueError, match="At least 2"):
        gaussian_statistics(torch.zeros(3), torch.zeros(3, 3), 1)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.tensor([float("nan")]), torch.eye(1), torch.zeros(1), torch.eye(1))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))
