"""How well a VAE metric predicts gFID: correlations with bootstrap intervals, selection regret.

Imported as ``ifid_callback.probes.stats``; the package exports its functions by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CorrelationResult",
    "bootstrap_correlation",
    "correlation",
    "selection_regret",
    "top_k_overlap",
]

_METHODS = ("pearson", "spearman")


def _as_pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"x and y must be 1-D sequences of equal length, got shapes {a.shape} and {b.shape}"
        )
    if a.size < 2:
        raise ValueError(f"need at least 2 pairs to correlate, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x and y must be finite (no NaN or Inf); drop the missing entries first")
    return a, b


def correlation(x: Sequence[float], y: Sequence[float], method: str = "pearson") -> float:
    """Pearson or Spearman correlation of two equal-length sequences (``scipy.stats``).

    Returns NaN only when one sequence is constant (the coefficient is undefined there); the
    caller decides how to show it.
    """
    import scipy.stats

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    a, b = _as_pair(x, y)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    if method == "pearson":
        return float(scipy.stats.pearsonr(a, b)[0])
    return float(scipy.stats.spearmanr(a, b)[0])


@dataclass
class CorrelationResult:
    """A correlation and its percentile bootstrap interval.

    Attributes:
        method: ``"pearson"`` or ``"spearman"``.
        value: the coefficient on all pairs, in [-1, 1].
        low, high: the ``confidence`` percentile interval over bootstrap resamples of the pairs
            (resamples where either side is constant are skipped).
        n: number of pairs.
        resamples: bootstrap resamples that gave a defined coefficient.
        p_value: the two-sided p-value from ``scipy.stats`` (small-sample tests assume normality
            for Pearson).
    """

    method: str
    value: float
    low: float
    high: float
    n: int
    resamples: int
    p_value: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def bootstrap_correlation(
    x: Sequence[float],
    y: Sequence[float],
    method: str = "pearson",
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """Correlation of ``x`` and ``y`` with a percentile bootstrap interval over the pairs.

    Pairs are resampled with replacement ``num_resamples`` times (seeded). The interval always
    contains the point estimate: it is widened to include it when the resampled distribution is
    skewed away from it (which happens with very few pairs).
    """
    import scipy.stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive int, got {num_resamples!r}")
    a, b = _as_pair(x, y)
    value = correlation(a, b, method)
    if np.isnan(value):
        return CorrelationResult(method, value, float("nan"), float("nan"), a.size, 0, float("nan"))
    test = scipy.stats.pearsonr if method == "pearson" else scipy.stats.spearmanr
    p_value = float(test(a, b)[1])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(num_resamples, a.size))
    xs, ys = a[idx], b[idx]
    ok = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    xs, ys = xs[ok], ys[ok]
    if xs.shape[0] == 0:
        return CorrelationResult(method, value, value, value, a.size, 0, p_value)
    if method == "spearman":
        xs = scipy.stats.rankdata(xs, axis=1)
        ys = scipy.stats.rankdata(ys, axis=1)
    # Row-wise Pearson (on ranks for Spearman): vectorised over all resamples at once.
    xc = xs - xs.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    r = (xc * yc).sum(1) / np.sqrt((xc**2).sum(1) * (yc**2).sum(1))
    r = np.clip(r, -1.0, 1.0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(r, [tail, 1.0 - tail])
    low, high = min(float(low), value), max(float(high), value)
    return CorrelationResult(method, value, low, high, a.size, int(r.size), p_value)


def selection_regret(
    metric: Sequence[float], target: Sequence[float], *, lower_is_better: bool = True
) -> float:
    """Target of the item the metric would pick minus the best target (both lower-is-better).

    E.g. ``selection_regret(ifid, gfid)`` is the gFID a user loses by choosing the VAE with the
    best iFID instead of the VAE with the best gFID; 0 means the metric picks the best one. Ties in
    the metric are broken by the first item. ``lower_is_better`` refers to ``metric``.
    """
    m, t = _as_pair(metric, target)
    pick = int(np.argmin(m) if lower_is_better else np.argmax(m))
    return float(t[pick] - t.min())


def top_k_overlap(
    metric: Sequence[float], target: Sequence[float], k: int, *, lower_is_better: bool = True
) -> float:
    """Fraction of the target's best ``k`` items that are also among the metric's best ``k``.

    Both rankings are by sorting (stable, so ties keep the input order); ``target`` is
    lower-is-better, ``lower_is_better`` refers to ``metric``. Returns a value in [0, 1].
    """
    m, t = _as_pair(metric, target)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m.size:
        raise ValueError(f"k must be an int in [1, {m.size}], got {k!r}")
    order = np.argsort(m if lower_is_better else -m, kind="stable")[:k]
    best = np.argsort(t, kind="stable")[:k]
    return len(set(order.tolist()) & set(best.tolist())) / k
