"""How well a VAE metric predicts gFID: correlations with bootstrap intervals, selection regret.

Imported as ``ifid_callback.probes.stats``; the package exports its functions by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CorrelationResult",
    "PairedDifference",
    "WilliamsResult",
    "bootstrap_correlation",
    "bootstrap_partial_correlation",
    "correlation",
    "paired_bootstrap_difference",
    "partial_correlation",
    "seed_bootstrap_correlation",
    "selection_regret",
    "top_k_overlap",
    "williams_test",
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
    num_resamples: int = 10_000,
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


# ------------------------------------------------------------------ comparing two predictors


@dataclass
class WilliamsResult:
    """Williams' test of ``r12 = r13`` for two correlations that share variable 1.

    Attributes:
        r12, r13: the two correlations being compared (e.g. gFID with iFID, gFID with rFID).
        r23: the correlation of the two predictors with each other.
        n: number of cases (VAEs).
        t: the test statistic (positive when ``r12 > r13``), ``n - 3`` degrees of freedom.
        df: degrees of freedom.
        p_value: two-sided p-value.
    """

    r12: float
    r13: float
    r23: float
    n: int
    t: float
    df: int
    p_value: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def williams_test(r12: float, r13: float, r23: float, n: int) -> WilliamsResult:
    """Williams' t-test for two dependent correlations with one variable in common.

    Steiger's (1980, eq. 7) recommended form of Williams' (1959) test::

        |R|  = 1 - r12^2 - r13^2 - r23^2 + 2 r12 r13 r23
        rbar = (r12 + r13) / 2
        t    = (r12 - r13) sqrt((n - 1)(1 + r23)
                 / (2 (n - 1)/(n - 3) |R| + rbar^2 (1 - r23)^3)),   df = n - 3

    It assumes multivariate normality; with few cases read it beside a bootstrap interval.
    """
    for name, r in (("r12", r12), ("r13", r13), ("r23", r23)):
        if not (math.isfinite(r) and -1.0 <= r <= 1.0):
            raise ValueError(f"{name} must be a correlation in [-1, 1], got {r!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"n must be an int >= 4 (df = n - 3), got {n!r}")
    import scipy.stats

    det = 1.0 - r12**2 - r13**2 - r23**2 + 2.0 * r12 * r13 * r23
    rbar = (r12 + r13) / 2.0
    denom = 2.0 * (n - 1) / (n - 3) * det + rbar**2 * (1.0 - r23) ** 3
    if denom <= 0:
        t = math.copysign(math.inf, r12 - r13) if r12 != r13 else 0.0
    else:
        t = (r12 - r13) * math.sqrt((n - 1) * (1.0 + r23) / denom)
    df = n - 3
    p = float(2.0 * scipy.stats.t.sf(abs(t), df)) if math.isfinite(t) else 0.0
    return WilliamsResult(float(r12), float(r13), float(r23), n, float(t), df, p)


def partial_correlation(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Pearson partial correlation of ``x`` and ``y`` given ``z``.

    ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))``: the correlation of what is left of
    ``x`` and of ``y`` after each is regressed on ``z`` (e.g. iFID with gFID given rFID: does
    the part of iFID that rFID does not explain predict gFID?). NaN when ``z`` explains ``x`` or
    ``y`` perfectly.
    """
    a, b = _as_pair(x, y)
    _, c = _as_pair(x, z)
    r_xy, r_xz, r_yz = (correlation(a, b), correlation(a, c), correlation(b, c))
    denom = (1.0 - r_xz**2) * (1.0 - r_yz**2)
    if not denom > 1e-15 or any(math.isnan(r) for r in (r_xy, r_xz, r_yz)):
        return float("nan")
    return float(np.clip((r_xy - r_xz * r_yz) / math.sqrt(denom), -1.0, 1.0))


def _rowwise_corr(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = xs - xs.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(1) / np.sqrt((xc**2).sum(1) * (yc**2).sum(1))
    return np.clip(r, -1.0, 1.0)


def _resampled_targets(
    y: np.ndarray, y_seeds: np.ndarray | None, idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Targets of each resample: the means over resampled probe seeds when seeds are given."""
    if y_seeds is None:
        return y[idx]
    s = y_seeds.shape[1]
    # Seeds are resampled within each picked case, so the spread between probe seeds widens
    # the interval as a second level of the bootstrap.
    pick = rng.integers(0, s, size=(*idx.shape, s))
    return y_seeds[idx[..., None], pick].mean(axis=-1)


def _seed_matrix(y_seeds: Sequence[Sequence[float]] | None, n: int) -> np.ndarray | None:
    if y_seeds is None:
        return None
    m = np.asarray(y_seeds, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != n or m.shape[1] < 1 or not np.isfinite(m).all():
        raise ValueError(
            f"y_seeds must be a finite (n={n}, seeds >= 1) array of per-seed targets, "
            f"got shape {m.shape}"
        )
    return m


@dataclass
class PairedDifference:
    """``corr(a, y) - corr(b, y)`` with a paired bootstrap interval.

    Attributes:
        method: ``"pearson"`` or ``"spearman"``.
        corr_a, corr_b: the two correlations on all cases.
        difference: ``corr_a - corr_b``.
        low, high: percentile interval of the difference over paired resamples (one resample
            of the cases serves both correlations).
        prob_positive: fraction of resamples where ``corr_a > corr_b``.
        n, resamples: cases and resamples with a defined difference.
        seed_level: True when per-seed targets were resampled as a second level.
    """

    method: str
    corr_a: float
    corr_b: float
    difference: float
    low: float
    high: float
    prob_positive: float
    n: int
    resamples: int
    seed_level: bool

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return asdict(self)


def paired_bootstrap_difference(
    a: Sequence[float],
    b: Sequence[float],
    y: Sequence[float],
    method: str = "pearson",
    *,
    y_seeds: Sequence[Sequence[float]] | None = None,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of ``corr(a, y) - corr(b, y)`` (e.g. iFID and rFID against gFID).

    Each resample draws the cases with replacement once and computes both correlations on the
    same draw, so the interval accounts for ``a`` and ``b`` being measured on the same VAEs.
    With ``y_seeds`` ``(n, s)`` (the target of each case under ``s`` probe seeds; ``y`` is then
    their mean) each resample also redraws ``s`` seeds per case and uses their mean, which
    propagates probe-seed noise into the interval.
    """
    import scipy.stats

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive int, got {num_resamples!r}")
    xa, yy = _as_pair(a, y)
    xb, _ = _as_pair(b, y)
    seeds = _seed_matrix(y_seeds, xa.size)
    ca, cb = correlation(xa, yy, method), correlation(xb, yy, method)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xa.size, size=(num_resamples, xa.size))
    ys = _resampled_targets(yy, seeds, idx, rng)
    as_, bs = xa[idx], xb[idx]
    if method == "spearman":
        as_, bs, ys = (scipy.stats.rankdata(m, axis=1) for m in (as_, bs, ys))
    d = _rowwise_corr(as_, ys) - _rowwise_corr(bs, ys)
    d = d[np.isfinite(d)]
    diff = ca - cb
    if d.size == 0 or not math.isfinite(diff):
        nan = float("nan")
        return PairedDifference(method, ca, cb, diff, nan, nan, nan, xa.size, 0, seeds is not None)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(d, [tail, 1.0 - tail])
    return PairedDifference(
        method,
        ca,
        cb,
        diff,
        float(low),
        float(high),
        float((d > 0).mean()),
        xa.size,
        int(d.size),
        seeds is not None,
    )


def bootstrap_partial_correlation(
    x: Sequence[float],
    y: Sequence[float],
    z: Sequence[float],
    *,
    y_seeds: Sequence[Sequence[float]] | None = None,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """:func:`partial_correlation` of ``x`` and ``y`` given ``z`` with a percentile bootstrap
    interval (cases resampled; per-seed targets resampled too when ``y_seeds`` is given). The
    p-value is the t-test of a partial correlation with ``n - 3`` degrees of freedom."""
    import scipy.stats

    xa, yy = _as_pair(x, y)
    _, zz = _as_pair(x, z)
    seeds = _seed_matrix(y_seeds, xa.size)
    value = partial_correlation(xa, yy, zz)
    n = xa.size
    p_value = float("nan")
    if math.isfinite(value) and n > 3 and abs(value) < 1:
        t = value * math.sqrt((n - 3) / (1 - value**2))
        p_value = float(2 * scipy.stats.t.sf(abs(t), n - 3))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(num_resamples, n))
    ys = _resampled_targets(yy, seeds, idx, rng)
    xs, zs = xa[idx], zz[idx]
    r_xy, r_xz, r_yz = _rowwise_corr(xs, ys), _rowwise_corr(xs, zs), _rowwise_corr(ys, zs)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    r = np.clip(r[np.isfinite(r)], -1.0, 1.0)
    if r.size == 0 or not math.isfinite(value):
        return CorrelationResult("partial", value, value, value, n, 0, p_value)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(r, [tail, 1.0 - tail])
    return CorrelationResult(
        "partial", value, min(float(low), value), max(float(high), value), n, int(r.size), p_value
    )


def seed_bootstrap_correlation(
    x: Sequence[float],
    y_seeds: Sequence[Sequence[float]],
    method: str = "pearson",
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """Correlation of ``x`` with the seed-mean of ``y_seeds`` ``(n, s)``, with a two-level
    bootstrap interval: cases resampled, then probe seeds resampled within each case."""
    import scipy.stats

    seeds_in = np.asarray(y_seeds, dtype=np.float64)
    if seeds_in.ndim != 2:
        raise ValueError(f"y_seeds must be (n, seeds), got shape {seeds_in.shape}")
    xa, yy = _as_pair(x, seeds_in.mean(axis=1))
    seeds = _seed_matrix(y_seeds, xa.size)
    value = correlation(xa, yy, method)
    if np.isnan(value):
        return CorrelationResult(method, value, value, value, xa.size, 0, float("nan"))
    test = scipy.stats.pearsonr if method == "pearson" else scipy.stats.spearmanr
    p_value = float(test(xa, yy)[1])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xa.size, size=(num_resamples, xa.size))
    ys, xs = _resampled_targets(yy, seeds, idx, rng), xa[idx]
    if method == "spearman":
        xs, ys = scipy.stats.rankdata(xs, axis=1), scipy.stats.rankdata(ys, axis=1)
    r = _rowwise_corr(xs, ys)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return CorrelationResult(method, value, value, value, xa.size, 0, p_value)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(r, [tail, 1.0 - tail])
    return CorrelationResult(
        method, value, min(float(low), value), max(float(high), value), xa.size, r.size, p_value
    )
