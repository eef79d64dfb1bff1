"""FID between two feature sets ``(N, d)`` (or a set and given statistics), in float64.

:func:`fid_from_features` fits the Gaussians with
:func:`~ifid_callback.functional.frechet.statistics_of` and measures them with
:func:`~ifid_callback.functional.frechet.frechet_distance`; when either set has fewer rows than
feature dimensions it takes an exact route through an ``n_a x n_b`` matrix instead of the
``d x d`` ones. gFID (:mod:`~ifid_callback.probes.gfid`), the study's stages, the pair check and
the digit classifier's FID floors (:mod:`~ifid_callback.probes.digit_features`) all use it; it
sits below them, so none of them imports another for it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..functional.frechet import frechet_distance, statistics_of

__all__ = ["fid_from_features"]


def fid_from_features(
    features_a: np.ndarray | Tensor,
    features_b: np.ndarray | Tensor | None = None,
    *,
    stats_b: tuple[Tensor, Tensor] | None = None,
) -> float:
    """FID between two feature sets ``(N, d)`` (or a set and given ``(mu, sigma)``), float64."""
    a = torch.as_tensor(np.asarray(features_a), dtype=torch.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, d), got {tuple(a.shape)}")
    if stats_b is None and features_b is not None:
        b = torch.as_tensor(np.asarray(features_b), dtype=torch.float64)
        if b.ndim != 2 or b.shape[0] < 2 or b.shape[1] != a.shape[1]:
            raise ValueError(f"features_b must be (N >= 2, {a.shape[1]}), got {tuple(b.shape)}")
        if min(a.shape[0], b.shape[0]) < a.shape[1]:
            return _fid_low_rank(a, b)
    mu_a, sigma_a = statistics_of(a)
    if stats_b is None:
        if features_b is None:
            raise ValueError("give features_b or stats_b")
        mu_b, sigma_b = statistics_of(torch.as_tensor(np.asarray(features_b), dtype=torch.float64))
    else:
        mu_b, sigma_b = (s.to(torch.float64) for s in stats_b)
    return float(frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def _fid_low_rank(a: Tensor, b: Tensor) -> float:
    """Exact FID of two sample sets through an ``n_a x n_b`` matrix instead of ``d x d`` ones.

    With centred samples ``A`` ``(n_a, d)`` and ``B`` ``(n_b, d)``, ``Sigma_a = A^T A / (n_a - 1)``
    and the non-zero eigenvalues of ``Sigma_a Sigma_b`` are those of ``M M^T / c`` with
    ``M = A B^T`` and ``c = (n_a - 1)(n_b - 1)``, so ``tr sqrt(Sigma_a Sigma_b)`` is the sum of the
    singular values of ``M`` over ``sqrt(c)``. Same value as the ``d x d`` route, far cheaper
    when there are fewer samples than feature dimensions (2048 for Inception).
    """
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("features contain NaN or Inf")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    na, nb = a.shape[0], b.shape[0]
    tr_a = ca.pow(2).sum() / (na - 1)
    tr_b = cb.pow(2).sum() / (nb - 1)
    singular = torch.linalg.svdvals(ca @ cb.T)
    tr_covmean = singular.sum() / math.sqrt((na - 1) * (nb - 1))
    diff = mu_a - mu_b
    return float((diff.dot(diff) + tr_a + tr_b - 2 * tr_covmean).clamp_min(0.0))
