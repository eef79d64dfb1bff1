"""Image Retrieval Score (IRS): which fraction of the training images do the samples retrieve?

Every generated sample retrieves its nearest training image in feature space; IRS is the number
of distinct training images retrieved divided by the number of training images. With ``n``
samples it can reach at most ``n / N``, so it is reported together with a coupon-collector
estimate of what infinitely many samples would retrieve: if the model drew its samples uniformly
from ``s`` "learned" training images, the number ``k`` of distinct images retrieved by ``n``
samples has probability ``P(k | n, s) = Stirling2(n, k) s! / ((s - k)! s^n)``. The maximum
likelihood ``s`` over integers ``s >= k`` and its likelihood-ratio interval, divided by ``N``,
give ``IRS_inf`` and its bounds. Dividing by the same numbers for real held-out images (which
retrieve imperfectly too, because features collapse) gives the adjusted score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..functional.neighbors import nearest_neighbors

__all__ = [
    "IRSResult",
    "coupon_collector_estimate",
    "coupon_log_likelihood",
    "image_retrieval_score",
    "retrieved_counts",
]

# Half the 95% quantile of chi-square with one degree of freedom: the likelihood-ratio cut-off.
_LR_CUTOFF_95 = 3.841458820694124 / 2.0


@dataclass
class IRSResult:
    """Image Retrieval Score of one sample set.

    Attributes:
        irs: distinct training images retrieved / ``num_train``, in ``[1/num_train, 1]``.
        retrieved: the number of distinct training images retrieved (``k``).
        num_samples: samples used (``n``).
        num_train: training images searched (``N``).
        irs_inf: coupon-collector maximum-likelihood estimate of the fraction that unlimited
            samples would retrieve (``s_hat / N``; ``inf`` when every sample retrieved a
            different image, since the data cannot bound it then).
        irs_inf_low, irs_inf_high: 95% likelihood-ratio interval of ``irs_inf``.
    """

    irs: float
    retrieved: int
    num_samples: int
    num_train: int
    irs_inf: float
    irs_inf_low: float
    irs_inf_high: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def retrieved_counts(
    sample_features: Tensor,
    train_features: Tensor,
    *,
    distance: str = "sqeuclidean",
    chunk_size: int | None = None,
) -> Tensor:
    """How often each training image is some sample's nearest neighbour.

    Args:
        sample_features: ``(n, d)`` features of the generated images.
        train_features: ``(N, d)`` features of the training images, same extractor.
        distance: ``"sqeuclidean"`` or ``"cosine"`` (see
            :func:`~ifid_callback.functional.neighbors.nearest_neighbors`).
        chunk_size: rows per search chunk (bounds memory for large sets).

    Returns:
        int64 ``(N,)`` counts summing to ``n``.
    """
    _, pos = nearest_neighbors(
        sample_features, train_features, k=1, distance=distance, chunk_size=chunk_size
    )
    return torch.bincount(pos[:, 0].cpu(), minlength=train_features.shape[0])


def coupon_log_likelihood(s: int, n: int, k: int) -> float:
    """``log P(k | n, s)`` up to the Stirling term (which does not depend on ``s``).

    ``log s! - log (s - k)! - n log s``; ``-inf`` for ``s < k``.
    """
    if s < k:
        return -math.inf
    return math.lgamma(s + 1) - math.lgamma(s - k + 1) - n * math.log(s)


def _first_true(pred, lo: int, hi: int) -> int:
    """Smallest integer in [lo, hi] where the monotone predicate holds (``hi`` if none before)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def coupon_collector_estimate(n: int, k: int) -> tuple[float, float, float]:
    """Maximum-likelihood number ``s`` of equally likely coupons behind ``k`` distinct in ``n``.

    Returns ``(s_hat, low, high)``: the integer maximising :func:`coupon_log_likelihood` and the
    95% likelihood-ratio interval (all ``s`` whose log-likelihood is within 1.92 of the maximum).
    When ``k == n`` the likelihood grows without bound in ``s``: ``s_hat`` and ``high`` are
    ``inf`` and ``low`` is still finite.
    """
    if isinstance(n, bool) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"need integers 1 <= k <= n, got n={n!r}, k={k!r}")
    ll = lambda s: coupon_log_likelihood(s, n, k)  # noqa: E731
    if k == n:
        # The log-likelihood rises towards 0 as s -> inf; the interval is everything within the
        # cut-off of that supremum.
        near_sup = lambda s: ll(s) >= -_LR_CUTOFF_95  # noqa: E731
        low = _first_true(near_sup, k, _grow(k, near_sup))
        return math.inf, float(low), math.inf
    # The log-likelihood is unimodal in s: find where it stops increasing.
    increasing = lambda s: ll(s + 1) > ll(s)  # noqa: E731
    top = _grow(k, lambda s: not increasing(s))
    s_hat = _first_true(lambda s: not increasing(s), k, top)
    best = ll(s_hat)
    inside = lambda s: ll(s) >= best - _LR_CUTOFF_95  # noqa: E731
    low = _first_true(inside, k, s_hat)
    high_end = _grow(s_hat, lambda s: not inside(s))
    high = _first_true(lambda s: not inside(s), s_hat, high_end) - 1
    return float(s_hat), float(low), float(high)


def _grow(start: int, pred) -> int:
    """A value ``>= start`` where the (eventually true) predicate holds, by doubling."""
    hi = max(2 * start, start + 1)
    while not pred(hi):
        hi *= 2
        if hi > 1 << 62:
            raise ArithmeticError("coupon-collector search did not converge")
    return hi


def image_retrieval_score(
    sample_features: Tensor,
    train_features: Tensor,
    *,
    distance: str = "sqeuclidean",
    chunk_size: int | None = None,
) -> IRSResult:
    """IRS of samples against training images, with the coupon-collector estimate.

    Args:
        sample_features: ``(n, d)`` features of the samples.
        train_features: ``(N, d)`` features of the training images (same extractor).
        distance: nearest-neighbour distance in feature space.
        chunk_size: rows per search chunk.

    Returns:
        an :class:`IRSResult`. Samples equal to the training images give ``irs = 1``; samples that
        all retrieve one image give ``irs = 1 / N``.
    """
    counts = retrieved_counts(
        sample_features, train_features, distance=distance, chunk_size=chunk_size
    )
    n, num_train = int(sample_features.shape[0]), int(train_features.shape[0])
    k = int((counts > 0).sum())
    s_hat, low, high = coupon_collector_estimate(n, k)
    return IRSResult(
        irs=k / num_train,
        retrieved=k,
        num_samples=n,
        num_train=num_train,
        irs_inf=s_hat / num_train,
        irs_inf_low=low / num_train,
        irs_inf_high=high / num_train,
    )
