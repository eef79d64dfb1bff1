"""Fréchet distance between Gaussians and the statistics it needs, in float64."""

from __future__ import annotations

import torch
from torch import Tensor


def frechet_distance(
    mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, *, sqrt_sigma1: Tensor | None = None
) -> Tensor:
    r"""Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    .. math::
        d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2 \operatorname{tr}\bigl(\Sigma_1 \Sigma_2\bigr)^{1/2}

    The trace of the matrix square root is computed as the sum of square roots of the eigenvalues
    of the symmetric positive semi-definite matrix :math:`\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}`,
    which has the same spectrum as :math:`\Sigma_1 \Sigma_2`; this stays real and accurate for the
    rank-deficient covariances of fewer samples than feature dimensions.

    Args:
        mu1, mu2: means, shape (d,).
        sigma1, sigma2: covariances, shape (d, d), symmetric positive semi-definite.
        sqrt_sigma1: optional :func:`psd_sqrt` of ``sigma1`` (d, d), computed once and reused
            when ``sigma1`` is fixed (the real images' statistics): it saves one of the two
            d x d eigendecompositions of each distance.

    Returns:
        A float64 scalar tensor on the CPU, >= 0 (rounding below zero is clipped to 0).
    """
    mu1, mu2, sigma1, sigma2 = (
        torch.as_tensor(t).detach().to("cpu", torch.float64) for t in (mu1, mu2, sigma1, sigma2)
    )
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != mu1.shape or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "frechet_distance expects means of shape (d,) and covariances of shape (d, d); got "
            f"{tuple(mu1.shape)}, {tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}."
        )
    for name, t in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not torch.isfinite(t).all():
            raise ValueError(
                f"{name} contains NaN or Inf; the features it was computed from are not finite."
            )
    if sqrt_sigma1 is None:
        sqrt_s1 = psd_sqrt(sigma1)
    else:
        sqrt_s1 = torch.as_tensor(sqrt_sigma1).detach().to("cpu", torch.float64)
        if sqrt_s1.shape != (d, d) or not torch.isfinite(sqrt_s1).all():
            raise ValueError(
                f"sqrt_sigma1 must be the finite (d, d) = ({d}, {d}) square root of sigma1, got "
                f"shape {tuple(sqrt_s1.shape)}; compute it with psd_sqrt(sigma1)."
            )
    middle = sqrt_s1 @ sigma2 @ sqrt_s1
    middle = (middle + middle.T) / 2
    tr_covmean = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    value = diff.dot(diff) + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_covmean
    return value.clamp_min(0.0)


def psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a positive semi-definite (d, d) matrix, float64 on the CPU.

    Negative eigenvalues (rounding) are clipped to zero.
    """
    sigma = torch.as_tensor(sigma).detach().to("cpu", torch.float64)
    sym = (sigma + sigma.T) / 2
    eigvals, eigvecs = torch.linalg.eigh(sym)
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def gaussian_statistics(
    feature_sum: Tensor, outer_sum: Tensor, count: Tensor | int
) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from running sums.

    Args:
        feature_sum: sum of feature vectors, shape (d,).
        outer_sum: sum of outer products ``f f^T``, shape (d, d).
        count: number of vectors summed; at least 2.

    Returns:
        ``(mu, sigma)`` in float64, shapes (d,) and (d, d).
    """
    n = int(count)
    if n < 2:
        raise ValueError(
            f"At least 2 samples are needed for a covariance, got {n}; add more images."
        )
    feature_sum = feature_sum.to(torch.float64)
    mu = feature_sum / n
    sigma = (outer_sum.to(torch.float64) - n * torch.outer(mu, mu)) / (n - 1)
    return mu, sigma


def statistics_of(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of a (N, d) set of features, in float64."""
    f = features.to(torch.float64)
    return gaussian_statistics(f.sum(0), f.T @ f, f.shape[0])
